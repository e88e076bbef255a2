package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// TestBridgeFailsOverBetweenBrokers: the bridge is given four brokers in
// order: one that is down, one that refuses it (it has users, the bridge no
// account), and two of ours in demo mode. It skips the first two and
// publishes through the third; when that one is SIGKILLed, its readings
// arrive live through the fourth within seconds, not after the dead broker
// comes back.
func TestBridgeFailsOverBetweenBrokers(t *testing.T) {
	need(t, "mosquitto_sub")
	down := freeAddr(t)
	users := filepath.Join(t.TempDir(), "users.yaml")
	userAdd(t, users, account{name: "grafana", password: "a-reader-password", role: "reader"})
	_, refusing := startBrokerWithUsers(t, users)
	first, firstAddr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	_, secondAddr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	atFirst := subscribe(t, firstAddr, "-t", "sensorfarm/#")
	atSecond := subscribe(t, secondAddr, "-t", "sensorfarm/#")

	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "failover", Node: "pizero-07"}
	list := strings.Join([]string{"tcp://" + down, "tcp://" + refusing, "tcp://" + firstAddr, "tcp://" + secondAddr}, ",")
	b := start(t, "bridge", filepath.Join(bin, "bridge"), "--broker", list, "--site", node.Site, "--node", node.Node,
		"--spool", filepath.Join(t.TempDir(), "spool"), "--interval", "300ms", "--sim", "--gps=false")
	b.waitLog(`msg="connected to broker" .*broker=tcp://`+regexp.QuoteMeta(firstAddr), 30*time.Second)
	atFirst.next(node.Live(wire.StreamEnv), 10*time.Second)
	require.Empty(t, atSecond.history(node.Live(wire.StreamEnv)), "only the first broker that takes the bridge gets its readings")

	first.kill()
	killed := time.Now()
	atSecond.next(node.Live(wire.StreamEnv), 15*time.Second)
	took := time.Since(killed)
	t.Logf("live again through the next broker %s after the SIGKILL", took.Round(time.Millisecond))
	require.Less(t, took, 10*time.Second)
	b.waitLog(`msg="connected to broker" .*broker=tcp://`+regexp.QuoteMeta(secondAddr), 5*time.Second)
	require.Equal(t, wire.StatusOnline, atSecond.history(node.Status())[0].Payload)
	require.Equal(t, 0, b.stop())
}
