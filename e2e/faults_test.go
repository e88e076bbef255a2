package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// TestBridgeOutlivesBroker: a broker that is down at start, and one that goes
// away, leave the bridge running; it logs each change of state once, comes
// back by itself and says online again.
func TestBridgeOutlivesBroker(t *testing.T) {
	need(t, "mosquitto_sub")
	addr := freeAddr(t)
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "outage", Node: "pizero-03"}
	b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, node.Site, node.Node, "--sim")...)...)
	b.waitLog(`broker unreachable`, 10*time.Second)
	time.Sleep(3 * time.Second) // several failed attempts and readings
	require.Equal(t, 1, strings.Count(b.out.String(), "broker unreachable"), "logged once, not per attempt")
	require.Equal(t, 1, strings.Count(b.out.String(), "readings not delivered"), "logged once per outage")

	data := t.TempDir()
	broker, _ := startBroker(t, data, addr)
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	require.Equal(t, wire.StatusOnline, sub.next(node.Status(), 20*time.Second).Payload)
	first := checkEnv(t, sub.next(node.Live(wire.StreamEnv), 5*time.Second).Payload, node.Site, node.Node)
	require.Greater(t, first, uint64(1), "readings taken while the broker was down used up their seq: the gap shows them")

	broker.kill()
	sub.kill()
	b.waitLog(`connection to broker lost`, 10*time.Second)
	broker, _ = startBroker(t, data, addr)
	sub = subscribe(t, addr, "-t", node.Status())
	// The retained status may still say online from before; the birth after
	// the reconnection is a second, live online.
	deadline := time.Now().Add(40 * time.Second)
	for {
		m := sub.next(node.Status(), time.Until(deadline))
		if !m.Retained && m.Payload == wire.StatusOnline {
			break
		}
	}
	require.Equal(t, 1, strings.Count(b.out.String(), "connection to broker lost"))
	require.True(t, b.running())
	_ = broker
}

// TestMissingSensor: nothing at the configured address is an error naming bus
// and address, retried slowly and counted; the bridge stays up and online.
func TestMissingSensor(t *testing.T) {
	need(t, "mosquitto_sub")
	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "faults", Node: "pizero-04"}
	// The simulated board carries its BME280 at 0x76; 0x77 finds nothing.
	b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")},
		bridgeArgs(t, addr, node.Site, node.Node, "--sim", "--bme280-addr", "0x77", "--sensor-retry", "200ms")...)...)
	m := b.waitLog(`msg="bme280 unavailable; retrying" [^\n]*?err="((?:[^"\\]|\\.)*)"`, 10*time.Second)
	require.Contains(t, m[1], "sim-i2c")
	require.Contains(t, m[1], "0x77")
	require.Equal(t, wire.StatusOnline, sub.next(node.Status(), 10*time.Second).Payload)
	time.Sleep(time.Second)
	require.Equal(t, 1, strings.Count(b.out.String(), "bme280 unavailable"), "the same error is logged once")
	require.Empty(t, sub.history(node.Live(wire.StreamEnv)), "no reading without a sensor")
	require.True(t, b.running())

	// Real hardware path on a machine without that bus.
	hw := start(t, "bridge hw", append([]string{filepath.Join(bin, "bridge")},
		bridgeArgs(t, addr, node.Site, "pizero-05", "--i2c-bus", "7")...)...)
	m = hw.waitLog(`msg="bme280 unavailable; retrying" [^\n]*?err="((?:[^"\\]|\\.)*)"`, 10*time.Second)
	require.Contains(t, m[1], `bme280 at 0x76: I2C bus \"7\" cannot be opened`)
	m = hw.waitLog(`msg="pa1010d unavailable; retrying" [^\n]*?err="((?:[^"\\]|\\.)*)"`, 10*time.Second)
	require.Contains(t, m[1], `pa1010d at 0x10: I2C bus \"7\" cannot be opened`)
	require.True(t, hw.running())
}

// TestBridgeRefusesBadConfig: a bad setting stops the bridge at start with exit
// code 2 and a message naming the setting.
func TestBridgeRefusesBadConfig(t *testing.T) {
	spool := t.TempDir()
	tt := []struct {
		desc string
		args []string
		env  []string
		want string
	}{
		{"upper-case node", []string{"--site", "s", "--node", "PiZero", "--spool", spool}, nil, `--node "PiZero" has 'P'`},
		{"site with a wildcard", []string{"--site", "a+b", "--node", "n", "--spool", spool}, nil, `--site "a+b" has '+'`},
		{"no site", []string{"--node", "n", "--spool", spool}, nil, "--site is not set"},
		{"bad address", []string{"--site", "s", "--node", "n", "--spool", spool, "--bme280-addr", "0x50"}, nil, "0x50 is not a BME280 address"},
		{"bad env", []string{"--site", "s", "--node", "n", "--spool", spool}, []string{"SENSORFARM_INTERVAL=often"}, `SENSORFARM_INTERVAL="often"`},
		{"no spool", []string{"--site", "s", "--node", "n"}, nil, "--spool is not set"},
		{"bad broker", []string{"--site", "s", "--node", "n", "--spool", spool, "--broker", "http://x:1"}, nil, `scheme "http" is not supported`},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			code, out := runOnce(t, append([]string{"PATH=/usr/bin:/bin"}, tc.env...), append([]string{filepath.Join(bin, "bridge")}, tc.args...)...)
			require.Equal(t, 2, code, out)
			require.Contains(t, out, tc.want)
		})
	}
}
