package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// TestBridgeOutlivesBroker: a broker that is down at start, and one that is
// killed and comes back, leave the bridge running; it logs each change of
// state once, keeps every reading in its spool, comes back by itself, says
// online again and replays what the broker missed on the backlog topics, so
// that a subscriber sees every seq.
func TestBridgeOutlivesBroker(t *testing.T) {
	need(t, "mosquitto_sub")
	addr := freeAddr(t)
	data := t.TempDir()
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "outage", Node: "pizero-03"}
	b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, node.Site, node.Node, "--sim")...)...)
	b.waitLog(`broker unreachable`, 10*time.Second)
	time.Sleep(3 * time.Second) // several failed attempts and readings
	require.Equal(t, 1, strings.Count(b.out.String(), "broker unreachable"), "logged once, not per attempt")

	// Each time the broker comes back, the bridge waits (SIGSTOP) until a
	// fresh subscriber is in, so that what it sends next is all seen.
	comeBack := func() (*process, *subscriber) {
		require.NoError(t, b.cmd.Process.Signal(syscall.SIGSTOP))
		broker, _ := startBroker(t, data, addr)
		sub := subscribe(t, addr, "-t", "sensorfarm/#")
		publish(t, addr, "sensorfarm/probe/probe/status", "probe")
		sub.next("sensorfarm/probe/probe/status", 10*time.Second)
		require.NoError(t, b.cmd.Process.Signal(syscall.SIGCONT))
		return broker, sub
	}
	broker, first := comeBack()
	require.Equal(t, wire.StatusOnline, first.next(node.Status(), 20*time.Second).Payload)
	require.Eventually(t, func() bool { return len(first.history(node.Backlog(wire.StreamEnv))) >= 5 }, 10*time.Second, 50*time.Millisecond,
		"readings taken while the broker was down are replayed on the backlog topic")

	// The first subscriber has a clean session: what the broker acknowledged
	// and had not yet passed on dies with it. Pause the bridge until the
	// subscriber has everything, so the kill loses nothing a subscriber could
	// have seen (the bridge's spool covers the rest).
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGSTOP))
	quiet(first, 300*time.Millisecond, 5*time.Second)
	broker.kill()
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGCONT))
	b.waitLog(`connection to broker lost`, 10*time.Second)
	time.Sleep(2 * time.Second)
	_, second := comeBack()
	b.waitLog(`(?s)connection to broker lost.*connected to broker`, 40*time.Second)
	require.Equal(t, wire.StatusOnline, second.next(node.Status(), 20*time.Second).Payload)
	time.Sleep(2 * time.Second)
	require.Equal(t, 1, strings.Count(b.out.String(), "connection to broker lost"))
	require.True(t, b.running())

	// Stop the bridge cleanly: everything it took is delivered by then.
	require.Equal(t, 0, b.stop())
	time.Sleep(time.Second)
	for _, stream := range []string{wire.StreamEnv, wire.StreamGPS} {
		seqs := seqsSeen(t, first, node, stream)
		for seq, n := range seqsReceived(t, second, node, stream, false) {
			seqs[seq] += n
		}
		require.NotEmpty(t, seqs)
		requireEverySeq(t, stream, seqs)
	}
}

// archiver is a mosquitto_sub with a persistent session on the whole farm,
// as a consumer that wants every reading runs it.
func archiver(t *testing.T, addr string) *subscriber {
	t.Helper()
	return subscribe(t, addr, "-c", "-i", "archiver-"+strings.ToLower(t.Name()), "-t", "sensorfarm/#")
}

// seqsSeen returns every seq of a stream the subscriber received, live or
// replayed, and checks that the backlog came in seq order.
func seqsSeen(t *testing.T, s *subscriber, node wire.Node, stream string) map[uint64]int {
	t.Helper()
	return seqsReceived(t, s, node, stream, true)
}

// seqsReceived is seqsSeen, with the backlog order checked only if ordered:
// after a crash, at-least-once delivery legitimately sends a reading again
// after later ones.
func seqsReceived(t *testing.T, s *subscriber, node wire.Node, stream string, ordered bool) map[uint64]int {
	t.Helper()
	seen := map[uint64]int{}
	for _, topic := range []string{node.Live(stream), node.Backlog(stream)} {
		var last uint64
		for _, m := range s.history(topic) {
			var h wire.Header
			require.NoError(t, json.Unmarshal([]byte(m.Payload), &h), m.Payload)
			require.Equal(t, node.Node, h.Node)
			if topic == node.Backlog(stream) {
				require.False(t, m.Retained, "backlog is never retained")
				if ordered {
					require.GreaterOrEqual(t, h.Seq, last, "backlog is replayed oldest first")
				}
				last = h.Seq
			}
			seen[h.Seq]++
		}
	}
	return seen
}

// requireEverySeq checks that seqs holds 1 to its largest, with no gap.
func requireEverySeq(t *testing.T, stream string, seqs map[uint64]int) {
	t.Helper()
	var top uint64
	for s := range seqs {
		top = max(top, s)
	}
	require.Empty(t, gaps(seqs), "%s: every seq from 1 to %d arrives at least once", stream, top)
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
