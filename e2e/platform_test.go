package e2e

import (
	"debug/elf"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// TestARMv6BridgeUnderQEMU runs the Pi Zero build on an emulated ARM1176, the
// Pi Zero's core, which rejects ARMv7 instructions: a wrong GOARM would die
// with SIGILL here instead of on the board.
func TestARMv6BridgeUnderQEMU(t *testing.T) {
	need(t, "qemu-arm-static", "mosquitto_sub")
	path := filepath.Join(bin, "linux-arm6", "bridge")
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, elf.EM_ARM, f.Machine)
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "static: no dynamic loader")
	}
	require.Nil(t, f.Section(".symtab"), "stripped")
	st, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("bin/linux-arm6/bridge: %.2f MB", float64(st.Size())/1e6)

	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "qemu", Node: "pizero-arm6"}
	start(t, "arm6 bridge", append([]string{"qemu-arm-static", "-cpu", "arm1176", path},
		bridgeArgs(t, addr, node.Site, node.Node, "--sim")...)...)
	require.Equal(t, wire.StatusOnline, sub.next(node.Status(), 30*time.Second).Payload)
	for want := uint64(1); want <= 3; want++ {
		m := sub.next(node.Live(wire.StreamEnv), 30*time.Second)
		require.Equal(t, want, checkEnv(t, m.Payload, node.Site, node.Node))
	}
}

// TestBridgeOnMosquitto publishes to Debian's mosquitto: the bridge speaks
// plain MQTT, not something only our broker understands.
func TestBridgeOnMosquitto(t *testing.T) {
	need(t, "mosquitto", "mosquitto_sub")
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence false\n", port, host)), 0o600))
	m := start(t, "mosquitto", "mosquitto", "-c", conf)
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "mosquitto listening: %s", m.out)

	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "peer", Node: "pizero-07"}
	b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, node.Site, node.Node, "--sim")...)...)
	require.Equal(t, wire.StatusOnline, sub.next(node.Status(), 10*time.Second).Payload)
	for want := uint64(1); want <= 3; want++ {
		m := sub.next(node.Live(wire.StreamEnv), 10*time.Second)
		require.Equal(t, want, checkEnv(t, m.Payload, node.Site, node.Node))
	}
	b.kill()
	require.Equal(t, wire.StatusOffline, sub.next(node.Status(), 10*time.Second).Payload, "mosquitto sends our will")
}
