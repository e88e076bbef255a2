package e2e

// The bridge's store-and-forward under faults: the broker killed, the bridge
// killed, the spool's size cap reached, a full disk, a damaged segment. Every
// test ends with the same accounting (bridge.account): the bridge is stopped
// with SIGTERM and started once more to report its health; an archiver with a
// persistent session must then hold every seq from 1 to the last of each
// stream, except exactly as many as that health counts in `dropped`.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

var bothStreams = []string{wire.StreamEnv, wire.StreamGPS}

// TestSpoolBrokerKilled: three bridges stream fast while the broker is killed
// with SIGKILL twice and comes back on the same data directory and port.
// Stopped with SIGTERM at the end, the bridges have delivered every reading:
// the archiver holds every seq from 1 to the last of every node and stream,
// and each bridge's health says dropped 0.
func TestSpoolBrokerKilled(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	addr := freeAddr(t)
	data := t.TempDir()
	broker, _ := startBroker(t, data, addr)
	arch := startArchiver(t, addr)
	var bridges []*bridge
	for i := 1; i <= 3; i++ {
		node := wire.Node{Prefix: wire.DefaultPrefix, Site: "brokerkill", Node: fmt.Sprintf("pizero-k%d", i)}
		b := newBridge(t, addr, node, "--sim", "--interval", "100ms")
		b.start()
		bridges = append(bridges, b)
	}
	for _, b := range bridges {
		waitSeq(t, arch, b.node, wire.StreamEnv, 5, 15*time.Second)
	}

	for round := 1; round <= 2; round++ {
		for _, b := range bridges { // streaming: readings are in flight when it dies
			waitSeq(t, arch, b.node, wire.StreamEnv, maxSeq(arch, b.node, wire.StreamEnv)+8, 10*time.Second)
		}
		broker.kill()
		for _, b := range bridges {
			b.p.waitLog(`connection to broker lost`, 10*time.Second)
		}
		time.Sleep(time.Second) // the outage: readings go to the spool only
		broker = restartBroker(t, data, addr, arch, bridges...)
		for _, b := range bridges {
			b.waitConnects(round+1, 40*time.Second)
		}
	}
	for _, b := range bridges {
		waitSeq(t, arch, b.node, wire.StreamEnv, maxSeq(arch, b.node, wire.StreamEnv)+10, 10*time.Second)
	}

	for _, b := range bridges {
		require.Equal(t, 0, b.p.stop(), "%s: exit code after SIGTERM", b.node.Node)
	}
	for _, b := range bridges {
		missing, h := b.account(arch, wire.StreamEnv)
		requireDelivered(t, b.node, missing, h)
		require.Zero(t, h.Dropped, "%s: the broker's outages cost no reading", b.node.Node)
	}
}

// TestSpoolBrokerKilledWithReadingsInFlight: the broker stalls (SIGSTOP,
// as a dead link does) while live readings are on their way, then dies
// (SIGKILL) and comes back. The live topics say what is current: once the
// broker is back, a reading taken before it came back may arrive only on the
// backlog topics, never on a live one, where Home Assistant and Grafana
// would take it for the current value.
func TestSpoolBrokerKilledWithReadingsInFlight(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	addr := freeAddr(t)
	data := t.TempDir()
	broker, _ := startBroker(t, data, addr)
	arch := startArchiver(t, addr)
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "brokerkill", Node: "pizero-k4"}
	b := newBridge(t, addr, node, "--sim", "--interval", "100ms", "--gps=false")
	b.start()
	waitSeq(t, arch, node, wire.StreamEnv, 5, 15*time.Second)

	require.NoError(t, broker.cmd.Process.Signal(syscall.SIGSTOP))
	time.Sleep(350 * time.Millisecond) // three readings sent, not acknowledged
	broker.kill()
	b.p.waitLog(`connection to broker lost`, 10*time.Second)
	time.Sleep(time.Second) // the outage
	// The bridge is held until the archiver and a plain subscriber (no
	// session: it sees only what is sent from now on) are subscribed.
	require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGSTOP))
	restartBroker(t, data, addr, arch)
	watch := subscribe(t, addr, "-t", node.Live(wire.StreamEnv), "-t", node.Backlog(wire.StreamEnv), "-t", probeTopic)
	watch.next(probeTopic, 10*time.Second) // subscribed: the retained probe is in
	require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGCONT))
	b.waitDrained(watch, 2, 30*time.Second, wire.StreamEnv)
	waitSeq(t, watch, node, wire.StreamEnv, maxSeq(watch, node, wire.StreamEnv)+3, 10*time.Second)

	backlog := seqsOn(t, watch, node.Backlog(wire.StreamEnv))
	require.NotEmpty(t, backlog, "the readings of the outage are replayed")
	newest := slices.Max(backlog)
	var stale []uint64
	for _, m := range watch.history(node.Live(wire.StreamEnv)) {
		if m.Retained {
			continue // the broker's retained value, handed to a new subscriber
		}
		var h wire.Header
		require.NoError(t, json.Unmarshal([]byte(m.Payload), &h), m.Payload)
		if h.Seq <= newest {
			stale = append(stale, h.Seq)
		}
	}
	assert.Empty(t, stale, "readings older than the replayed backlog (up to seq %d) were published on the live topic after the reconnection", newest)
	require.Equal(t, 0, b.p.stop())
	missing, h := b.account(arch, wire.StreamEnv)
	requireDelivered(t, node, missing, h)
}

// TestSpoolBridgeKilled: the bridge is killed with SIGKILL twenty times at
// random moments, 100 to 700 ms apart, and started again on the same spool
// each time. A crash of the process loses nothing (what the spool wrote is
// in the page cache): the archiver holds every seq from 1 to the last, and
// health says dropped 0. (Were something dropped, exactly that many seqs
// could be missing: the accounting checks that first.) E2E_SEED=<seed>
// repeats a run's kill times.
func TestSpoolBridgeKilled(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	arch := startArchiver(t, addr)
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "bridgekill", Node: "pizero-b1"}
	b := newBridge(t, addr, node, "--sim", "--interval", "100ms")

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "E2E_SEED")
		seed = v
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	for i := 0; i < 20; i++ {
		b.start()
		time.Sleep(time.Duration(100+rng.IntN(600)) * time.Millisecond)
		b.p.kill()
	}
	b.start()
	b.waitDrained(arch, 1, 20*time.Second, bothStreams...)
	require.Equal(t, 0, b.p.stop())

	missing, h := b.account(arch, wire.StreamEnv)
	requireDelivered(t, node, missing, h)
	require.Zero(t, h.Dropped, "a killed process loses nothing the spool took")
}

// TestSpoolCapEvictsOldest: the broker stays down longer than the spool's
// size cap can hold (--spool-max-bytes 64KiB, the minimum; segments of
// 8 KiB). The spool evicts its oldest segments and counts them; with the
// broker back and the backlog drained, the readings missing at the archiver
// are exactly as many as dropped says, and they are the oldest of the
// outage: per stream one run, right after what was delivered before it.
//
// The bridge is stopped cleanly at the cap and started again, slowly, once
// the broker is back, so that no eviction can race the replay; that race is
// TestSpoolCapEvictionWhileReplaying.
func TestSpoolCapEvictsOldest(t *testing.T) {
	t.Parallel() // with the other cap test: both mostly wait for the spool to fill
	c := fillPastCap(t, "pizero-c1")
	restartBroker(t, c.data, c.addr, c.arch)
	c.b.setArgs("--sim", "--gps=false", "--interval", "10s", "--spool-max-bytes", "64KiB")
	c.b.start()
	c.b.waitDrained(c.arch, 1, 30*time.Second, bothStreams...)
	require.Equal(t, 0, c.b.p.stop())

	missing, h := c.b.account(c.arch, wire.StreamEnv)
	requireDelivered(t, c.b.node, missing, h)
	require.NotZero(t, h.Dropped, "the outage outlasted the cap: readings were evicted")
	requireOneRunAfter(t, missing, c.before)
}

// TestSpoolCapEvictionWhileReplaying: the broker comes back while the spool
// is at its cap and the bridge takes readings fast. Right after the bridge
// connects, the broker stalls for 2.5 s (SIGSTOP: a busy broker, a slow
// link) with backlog readings in flight, and the spool evicts meanwhile.
// Readings evicted while in flight whose PUBACK still comes were delivered:
// what the archiver is missing must still be exactly what dropped says, and
// the health sent while running must say it too.
func TestSpoolCapEvictionWhileReplaying(t *testing.T) {
	t.Parallel() // with the other cap test: both mostly wait for the spool to fill
	c := fillPastCap(t, "pizero-c2")
	broker := restartBroker(t, c.data, c.addr, c.arch)
	healths := len(c.arch.history(c.b.node.Health()))
	c.b.start()
	// The bridge sends health on connecting and once more on its first
	// delivery; the stall comes after that, with the replay under way.
	require.Eventually(t, func() bool {
		for _, m := range c.arch.history(c.b.node.Health())[healths:] {
			var h wire.Health
			if json.Unmarshal([]byte(m.Payload), &h) == nil && h.LastPublishTS != nil {
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the bridge delivers its first reading")
	require.NoError(t, broker.cmd.Process.Signal(syscall.SIGSTOP))
	time.Sleep(2500 * time.Millisecond) // the stall: ~16 KB of readings, two segments
	require.NoError(t, broker.cmd.Process.Signal(syscall.SIGCONT))
	c.b.waitDrained(c.arch, 1, 30*time.Second, bothStreams...)
	// A change of dropped is reported within the bridge's 2 s state check.
	quietTopics(c.arch, []string{c.b.node.Health()}, 2500*time.Millisecond, 15*time.Second)
	running := lastHealth(t, c.arch, c.b.node)
	require.Equal(t, 0, c.b.p.stop())

	missing, h := c.b.account(c.arch, bothStreams...)
	require.NotZero(t, h.Dropped, "the outage and the stall made the spool evict")
	requireDelivered(t, c.b.node, missing, h)
	require.Equal(t, h.Dropped, running.Dropped, "the health sent while running counts every evicted reading, and only those")
}

// TestSpoolFullDisk: the spool lives on a 1 MiB tmpfs that a filler file
// fills until writes fail with ENOSPC. The bridge keeps running and
// publishing live, logs the disk-full state once, and loses nothing while
// the broker is up (dropped 0, no gap). Once the filler is deleted it finds
// out by itself ("spool writable again") and keeps readings in the spool
// again: an outage after that is replayed on the backlog topics.
func TestSpoolFullDisk(t *testing.T) {
	r := onFullDisk(t, "pizero-d1")
	broker, arch, b, node, addr, data := r.broker, r.arch, r.b, r.b.node, r.addr, r.data
	waitSeq(t, arch, node, wire.StreamEnv, maxSeq(arch, node, wire.StreamEnv)+10, 10*time.Second)
	require.True(t, b.p.running())
	assert.Equal(t, 1, strings.Count(b.p.out.String(), `msg="disk full`), "the disk-full state is logged once, not once per reading that fits")
	require.Zero(t, lastHealth(t, arch, node).Dropped, "the broker took every reading")
	require.Empty(t, arch.history(node.Backlog(wire.StreamEnv)), "nothing went to the backlog")

	mark := len(b.p.out.String())
	require.NoError(t, os.Remove(r.filler))
	waitLogAfter(b.p, mark, `spool writable again`, 10*time.Second)
	waitSeq(t, arch, node, wire.StreamEnv, maxSeq(arch, node, wire.StreamEnv)+5, 10*time.Second)
	fullLogs := strings.Count(b.p.out.String(), `msg="disk full`)

	// Readings are kept again: an outage now is replayed.
	b.pause(arch)
	broker.kill()
	b.resume()
	lastLive := maxSeq(arch, node, wire.StreamEnv)
	b.p.waitLog(`connection to broker lost`, 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // the outage
	restartBroker(t, data, addr, arch, b)
	b.waitDrained(arch, 2, 30*time.Second, bothStreams...)
	backlog := seqsOn(t, arch, node.Backlog(wire.StreamEnv))
	require.GreaterOrEqual(t, len(backlog), 5, "the readings of the outage were kept and replayed")
	for _, seq := range backlog {
		require.Greater(t, seq, lastLive, "only readings of the outage are replayed")
	}
	require.Equal(t, fullLogs, strings.Count(b.p.out.String(), `msg="disk full`), "the disk is not full any more")
	require.Equal(t, 0, b.p.stop())

	missing, h := b.account(arch, bothStreams...)
	requireDelivered(t, node, missing, h)
	require.Zero(t, h.Dropped)
}

// TestSpoolFullDiskBrokerDown: with the disk full, the broker goes down.
// Readings taken then that the disk cannot keep are not delivered either:
// exactly those are missing at the archiver, all from the outage, and
// dropped counts exactly them. (A reading that still fits in the last page
// of the segment is kept, and replayed: so not necessarily the whole
// outage is missing.)
func TestSpoolFullDiskBrokerDown(t *testing.T) {
	r := onFullDisk(t, "pizero-d2")
	broker, arch, b, node, addr, data := r.broker, r.arch, r.b, r.b.node, r.addr, r.data
	waitSeq(t, arch, node, wire.StreamEnv, maxSeq(arch, node, wire.StreamEnv)+5, 10*time.Second)

	b.pause(arch)
	broker.kill()
	b.resume()
	before := map[string]uint64{}
	for _, stream := range bothStreams {
		before[stream] = maxSeq(arch, node, stream)
		require.Empty(t, gaps(seqs(t, arch, node, stream)), "%s: everything before the outage was delivered", stream)
	}
	b.p.waitLog(`connection to broker lost`, 10*time.Second)
	time.Sleep(2 * time.Second) // the outage: readings are lost, and counted
	restartBroker(t, data, addr, arch, b)
	b.waitConnects(2, 40*time.Second)
	waitSeq(t, arch, node, wire.StreamEnv, maxSeq(arch, node, wire.StreamEnv)+5, 10*time.Second)
	require.Equal(t, 0, b.p.stop())

	missing, h := b.account(arch, bothStreams...) // the disk is still full
	requireDelivered(t, node, missing, h)
	require.NotZero(t, h.Dropped, "readings were taken during the outage")
	for _, stream := range bothStreams {
		for _, seq := range missing[stream] {
			require.Greater(t, seq, before[stream], "%s seq %d, delivered before the outage, is missing", stream, seq)
		}
	}
}

// TestSpoolTornWrite: the bridge is killed while the broker is down, with
// readings in its spool, and the newest segment's last record is damaged:
// cut 3 bytes short (a torn write), or a byte in its middle flipped. The
// bridge starts, logs the recovery with the bytes it cut, delivers every
// reading before the damaged one, and what is missing at the archiver is
// exactly what dropped says.
func TestSpoolTornWrite(t *testing.T) {
	for i, tc := range []struct {
		name string
		// damage damages the last record of the segment at path and returns
		// how many bytes recovery must cut.
		damage func(t *testing.T, path string, last segRecord) int64
	}{
		{"truncated", func(t *testing.T, path string, last segRecord) int64 {
			require.NoError(t, os.Truncate(path, int64(last.off+last.size-3)))
			return int64(last.size - 3)
		}},
		{"flipped", func(t *testing.T, path string, last segRecord) int64 {
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			b[last.off+last.size/2] ^= 0x5a
			require.NoError(t, os.WriteFile(path, b, 0o640))
			return int64(last.size)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			need(t, "mosquitto_sub", "mosquitto_pub")
			addr := freeAddr(t) // nothing listens there yet
			node := wire.Node{Prefix: wire.DefaultPrefix, Site: "torn", Node: fmt.Sprintf("pizero-t%d", i+1)}
			b := newBridge(t, addr, node, "--sim", "--interval", "100ms")
			b.start()
			var readings []segReading
			require.Eventually(t, func() bool {
				if names := segments(t, b.spool); len(names) > 0 {
					readings = segmentReadings(t, filepath.Join(b.spool, names[len(names)-1]))
				}
				return len(readings) >= 25
			}, 15*time.Second, 50*time.Millisecond, "readings pile up in the spool")
			b.p.kill()

			names := segments(t, b.spool)
			path := filepath.Join(b.spool, names[len(names)-1])
			recs := segmentRecords(t, path)
			readings = segmentReadings(t, path)
			last, damaged := recs[len(recs)-1], readings[len(readings)-1]
			require.Equal(t, last, damaged.rec, "the segment ends with a reading")
			onDisk := map[string]uint64{} // the last undamaged seq of each stream
			for _, r := range readings[:len(readings)-1] {
				onDisk[r.stream] = max(onDisk[r.stream], r.seq)
			}
			wantCut := tc.damage(t, path, last)
			t.Logf("damaged %s seq %d, the last of %d readings in %s; recovery must cut %d bytes",
				damaged.stream, damaged.seq, len(readings), names[len(names)-1], wantCut)

			startBroker(t, t.TempDir(), addr)
			arch := startArchiver(t, addr)
			b.start()
			m := b.p.waitLog(`msg="spool recovered after an unclean stop"[^\n]* cut_bytes=(\d+)`, 10*time.Second)
			require.Equal(t, strconv.FormatInt(wantCut, 10), m[1], "recovery cuts exactly the damaged record")
			b.waitDrained(arch, 1, 20*time.Second, bothStreams...)
			require.Equal(t, 0, b.p.stop())

			missing, h := b.account(arch, bothStreams...)
			for stream, last := range onDisk {
				seen := seqs(t, arch, node, stream)
				for seq := uint64(1); seq <= last; seq++ {
					require.NotZero(t, seen[seq], "%s seq %d, before the damaged record, is delivered", stream, seq)
				}
			}
			requireDelivered(t, node, missing, h)
			// The first run never reached a broker, so the damaged reading
			// could only come on the backlog; a live one with its seq is a
			// later reading given the same number, and the loss is hidden.
			for _, seq := range seqsOn(t, arch, node.Live(damaged.stream)) {
				assert.NotEqual(t, damaged.seq, seq, "%s seq %d, lost with the damaged record, is handed out again to a new reading: "+
					"the loss shows neither as a gap nor in dropped", damaged.stream, damaged.seq)
			}
		})
	}
}

// bridge is one node's bridge, started again on its own spool as often as a
// test needs.
type bridge struct {
	t     *testing.T
	addr  string
	node  wire.Node
	argv  []string
	spool string
	p     *process // the current (or last) run
	runs  int
}

// newBridge prepares a bridge with bridgeArgs and extra; a flag in extra
// overrides bridgeArgs' (the spool directory among them).
func newBridge(t *testing.T, addr string, node wire.Node, extra ...string) *bridge {
	t.Helper()
	args := bridgeArgs(t, addr, node.Site, node.Node, extra...)
	b := &bridge{t: t, addr: addr, node: node, argv: append([]string{filepath.Join(bin, "bridge")}, args...)}
	for i, a := range args {
		if a == "--spool" && i+1 < len(args) {
			b.spool = args[i+1]
		}
	}
	return b
}

// setArgs replaces the flags of the next runs; the spool stays.
func (b *bridge) setArgs(extra ...string) {
	b.argv = append([]string{filepath.Join(bin, "bridge")},
		bridgeArgs(b.t, b.addr, b.node.Site, b.node.Node, append(extra, "--spool", b.spool)...)...)
}

func (b *bridge) start() {
	b.t.Helper()
	b.runs++
	b.p = start(b.t, fmt.Sprintf("bridge %s (run %d)", b.node.Node, b.runs), b.argv...)
}

// waitConnects waits until the current run has logged n connections.
func (b *bridge) waitConnects(n int, limit time.Duration) {
	b.t.Helper()
	b.p.waitLog(`(?s)`+strings.Repeat(`connected to broker.*`, n), limit)
}

// waitDrained waits until the current run, after its nth connection, has
// sent its whole backlog and the subscriber has received it.
func (b *bridge) waitDrained(s *subscriber, n int, limit time.Duration, streams ...string) {
	b.t.Helper()
	b.p.waitLog(`(?s)`+strings.Repeat(`connected to broker.*`, n)+`backlog replayed`, limit)
	var topics []string
	for _, stream := range streams {
		topics = append(topics, b.node.Backlog(stream))
	}
	quietTopics(s, topics, 500*time.Millisecond, limit)
}

// pause stops the bridge with SIGSTOP and lets the broker settle what the
// bridge sent; resume continues it. Paused, the bridge sends nothing, so an
// outage begun then starts with nothing in flight: every reading before it is
// acknowledged, and the accounting can be exact.
func (b *bridge) pause(arch *subscriber) {
	b.t.Helper()
	require.NoError(b.t, b.p.cmd.Process.Signal(syscall.SIGSTOP))
	quiet(arch, 300*time.Millisecond, 5*time.Second)
}

func (b *bridge) resume() {
	b.t.Helper()
	require.NoError(b.t, b.p.cmd.Process.Signal(syscall.SIGCONT))
}

// account is the end of every test. The bridge, stopped, is started once
// more with the broker up: the health it sends on connecting carries the
// dropped count kept in its spool, which includes everything earlier runs
// counted. It runs until it has delivered a new reading of each of fresh
// (so that a reading lost at the end of a stream shows as a gap), and is
// stopped again. What it replays must all have been delivered before (a
// duplicate is fine): the clean stop before it left nothing undelivered.
// account returns the health and, per stream, the seqs from 1 to the
// largest received that the archiver never got.
func (b *bridge) account(arch *subscriber, fresh ...string) (map[string][]uint64, wire.Health) {
	b.t.Helper()
	require.False(b.t, b.p.running())
	quiet(arch, 300*time.Millisecond, 10*time.Second)
	seen, replayed := map[string]map[uint64]int{}, map[string]int{}
	for _, stream := range bothStreams {
		seen[stream] = seqs(b.t, arch, b.node, stream)
		replayed[stream] = len(arch.history(b.node.Backlog(stream)))
	}
	healths := len(arch.history(b.node.Health()))
	tops := map[string]uint64{}
	for _, stream := range fresh {
		tops[stream] = maxSeq(arch, b.node, stream)
	}

	b.start()
	require.Eventually(b.t, func() bool { return len(arch.history(b.node.Health())) > healths }, 15*time.Second, 20*time.Millisecond,
		"%s sends health when it connects", b.node.Node)
	var h wire.Health
	m := arch.history(b.node.Health())[healths]
	require.NoError(b.t, json.Unmarshal([]byte(m.Payload), &h), m.Payload)
	for _, stream := range fresh {
		waitSeq(b.t, arch, b.node, stream, tops[stream]+1, 15*time.Second)
	}
	require.Equal(b.t, 0, b.p.stop(), "%s: exit code after SIGTERM", b.node.Node)
	quiet(arch, 300*time.Millisecond, 10*time.Second)
	b.t.Logf("%s health: dropped %d, spool_depth %d, spool_bytes %d", b.node.Node, h.Dropped, h.SpoolDepth, h.SpoolBytes)

	missing := map[string][]uint64{}
	for _, stream := range bothStreams {
		var late []uint64
		for _, seq := range seqsOn(b.t, arch, b.node.Backlog(stream))[replayed[stream]:] {
			if seen[stream][seq] == 0 {
				late = append(late, seq)
			}
		}
		require.Empty(b.t, late, "%s %s: readings the clean stop left undelivered in the spool", b.node.Node, stream)
		all := seqs(b.t, arch, b.node, stream)
		missing[stream] = gaps(all)
		b.t.Logf("%s %s: %d distinct seqs received, largest %d, missing %s",
			b.node.Node, stream, len(all), maxSeq(arch, b.node, stream), fmtSeqs(missing[stream]))
	}
	return missing, h
}

// requireDelivered: what the archiver is missing is exactly as many readings
// as health's dropped says.
func requireDelivered(t *testing.T, node wire.Node, missing map[string][]uint64, h wire.Health) {
	t.Helper()
	require.Equal(t, h.Dropped, total(missing), "%s: the readings missing at the archiver are exactly the ones counted in dropped", node.Node)
}

// requireOneRunAfter: per stream, the missing readings are one run that
// starts right after the last one delivered before the outage.
func requireOneRunAfter(t *testing.T, missing map[string][]uint64, before map[string]uint64) {
	t.Helper()
	for stream, ms := range missing {
		if len(ms) > 0 {
			require.Equal(t, before[stream]+1, ms[0], "%s: the first missing reading is the first of the outage", stream)
			require.Equal(t, uint64(len(ms)-1), ms[len(ms)-1]-ms[0], "%s: the missing readings are one run: %s", stream, fmtSeqs(ms))
		}
	}
}

func total(missing map[string][]uint64) uint64 {
	n := uint64(0)
	for _, ms := range missing {
		n += uint64(len(ms))
	}
	return n
}

// diskRig is a bridge whose spool is on a filesystem that is full.
type diskRig struct {
	addr, data string
	broker     *process
	arch       *subscriber
	b          *bridge
	filler     string // the file that fills the disk
}

// onFullDisk runs a broker, an archiver and a bridge with its spool on a
// 1 MiB tmpfs (GPS at 10 fixes a second), and returns once the bridge has
// delivered readings and then found the disk full, filled by a file.
func onFullDisk(t *testing.T, name string) *diskRig {
	t.Helper()
	need(t, "mosquitto_sub", "mosquitto_pub")
	fs := mountTmpfs(t, "1m")
	r := &diskRig{addr: freeAddr(t), data: t.TempDir()}
	r.broker, _ = startBroker(t, r.data, r.addr)
	r.arch = startArchiver(t, r.addr)
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "diskfull", Node: name}
	r.b = newBridge(t, r.addr, node, "--sim", "--interval", "100ms", "--gps-interval", "100ms", "--spool", filepath.Join(fs, "spool"))
	r.b.start()
	r.b.waitConnects(1, 15*time.Second)
	waitSeq(t, r.arch, node, wire.StreamEnv, 5, 10*time.Second)
	r.filler = fillDisk(t, fs)
	r.b.p.waitLog(`msg="disk full`, 30*time.Second)
	return r
}

// capRig is a bridge whose spool went past its size cap while the broker
// was down.
type capRig struct {
	addr, data string
	arch       *subscriber
	b          *bridge
	before     map[string]uint64 // per stream, the last seq delivered before the outage
}

// fillPastCap runs a bridge with --spool-max-bytes 64KiB (segments of 8 KiB)
// until the broker is killed, with nothing in flight, and then until the
// spool has evicted a segment written during the outage; the bridge is then
// stopped cleanly, the broker still down.
//
// Readings take about 55 bytes on disk: at the shortest --interval (100ms)
// with the GPS at 1 Hz that is ~0.45 KB/s, and 64 KiB would take ~140 s. So
// the GPS runs at 100 fixes/s (--gps-interval 100ms, the simulated receiver
// 10 times faster): ~6.5 KB/s, the cap in ~10 s. That is more NMEA than an
// I2C bus carries (--sim-i2c-hz 0: the simulated bus takes no time).
func fillPastCap(t *testing.T, name string) *capRig {
	t.Helper()
	need(t, "mosquitto_sub", "mosquitto_pub")
	c := &capRig{addr: freeAddr(t), data: t.TempDir(), before: map[string]uint64{}}
	broker, _ := startBroker(t, c.data, c.addr)
	c.arch = startArchiver(t, c.addr)
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "cap", Node: name}
	c.b = newBridge(t, c.addr, node, "--sim", "--sim-i2c-hz", "0", "--interval", "100ms", "--gps-interval", "100ms", "--gps-replay-speed", "10",
		"--spool-max-bytes", "64KiB")
	c.b.start()
	c.b.waitConnects(1, 15*time.Second)
	waitSeq(t, c.arch, node, wire.StreamEnv, 5, 10*time.Second)
	waitSeq(t, c.arch, node, wire.StreamGPS, 5, 10*time.Second)

	c.b.pause(c.arch)
	broker.kill()
	c.b.resume()
	for _, stream := range bothStreams {
		c.before[stream] = maxSeq(c.arch, node, stream)
		require.Empty(t, gaps(seqs(t, c.arch, node, stream)), "%s: everything before the outage was delivered", stream)
	}
	// Only the cap deletes a segment that holds unacknowledged readings.
	took := waitEviction(t, c.b.spool, 60*time.Second)
	t.Logf("a segment written during the outage was evicted %s after it began", took.Round(100*time.Millisecond))
	require.Equal(t, 0, c.b.p.stop())
	return c
}

// waitEviction waits until a segment file created after the call is deleted
// again, and returns how long that took.
func waitEviction(t *testing.T, dir string, limit time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	old := map[string]bool{}
	for _, name := range segments(t, dir) {
		old[name] = true
	}
	fresh := map[string]bool{}
	for time.Since(begin) < limit {
		present := map[string]bool{}
		for _, name := range segments(t, dir) {
			present[name] = true
			if !old[name] {
				fresh[name] = true
			}
		}
		for name := range fresh {
			if !present[name] {
				return time.Since(begin)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no segment evicted within %s; segments now: %v", limit, segments(t, dir))
	return 0
}

// segments lists the spool's segment files, oldest (lowest first id) first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	sort.Strings(names) // the first id has 16 hex digits: text order is id order
	return names
}

// segRecord is one record of a spool segment, framed as bridge/spool's
// record.go writes it: crc32c (4 bytes, LE) | n (uvarint) | type | body (n-1).
type segRecord struct {
	off, size int
	typ       byte
	body      []byte
}

// segmentRecords reads the intact records of a segment file, up to the
// first one that is not.
func segmentRecords(t *testing.T, path string) []segRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	var out []segRecord
	for off := 0; off+6 <= len(b); {
		n, k := binary.Uvarint(b[off+4:])
		if k <= 0 || n == 0 || off+4+k+int(n) > len(b) {
			break
		}
		end := off + 4 + k + int(n)
		if crc32.Checksum(b[off+4:end], castagnoli) != binary.LittleEndian.Uint32(b[off:]) {
			break
		}
		out = append(out, segRecord{off: off, size: end - off, typ: b[off+4+k], body: b[off+4+k+1 : end]})
		off = end
	}
	return out
}

// segReading is a DATA record: its stream (named by the segment's DICT
// records) and seq.
type segReading struct {
	rec    segRecord
	stream string
	seq    uint64
}

func segmentReadings(t *testing.T, path string) []segReading {
	t.Helper()
	const recDict, recData = 2, 3
	uvarints := func(b []byte, n int) []uint64 {
		var v []uint64
		for range n {
			x, k := binary.Uvarint(b)
			require.Positive(t, k, "a field of a record")
			v, b = append(v, x), b[k:]
		}
		return v
	}
	names := map[uint64]string{}
	var out []segReading
	for _, r := range segmentRecords(t, path) {
		switch r.typ {
		case recDict: // index, name length, name, reference
			v := uvarints(r.body, 1)
			_, k := binary.Uvarint(r.body)
			n, k2 := binary.Uvarint(r.body[k:])
			names[v[0]] = string(r.body[k+k2 : k+k2+int(n)])
		case recData: // index<<1 | delta, id - first id, seq, ...
			v := uvarints(r.body, 3)
			out = append(out, segReading{rec: r, stream: names[v[0]>>1], seq: v[2]})
		}
	}
	return out
}

// restartBroker starts the broker again on its data directory and address
// and returns once the archiver has subscribed again. The bridges in hold
// are stopped (SIGSTOP) meanwhile: mochi refuses a SUBSCRIBE whose packet id
// equals that of one of its own in-flight messages to the client ("packet
// identifier in use"), and mosquitto_sub exits on that, so the archiver must
// be back before readings are queued for it.
func restartBroker(t *testing.T, data, addr string, arch *subscriber, hold ...*bridge) *process {
	t.Helper()
	for _, b := range hold {
		require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGSTOP))
	}
	probes := func() int {
		n := 0
		for _, m := range arch.history(probeTopic) {
			if m.Retained {
				n++
			}
		}
		return n
	}
	before := probes()
	broker, _ := startBroker(t, data, addr)
	require.Eventually(t, func() bool { return probes() > before }, 15*time.Second, 20*time.Millisecond,
		"the archiver subscribes again (and gets the retained probe)")
	for _, b := range hold {
		require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGCONT))
	}
	return broker
}

const probeTopic = "sensorfarm/probe/probe/status"

// startArchiver starts the archiver (a persistent session on the whole farm)
// and returns once its subscription is in place.
func startArchiver(t *testing.T, addr string) *subscriber {
	t.Helper()
	arch := archiver(t, addr)
	publish(t, addr, probeTopic, "probe")
	arch.next(probeTopic, 10*time.Second)
	return arch
}

// mountTmpfs mounts a tmpfs of the given size on a new directory, and
// unmounts it when the test ends (after the processes it started are gone).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	need(t, "mount", "umount")
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, "mount -t tmpfs (the test needs root): %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full, and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			return path
		}
	}
}

// waitLogAfter is waitLog for what the process logs after the first mark bytes.
func waitLogAfter(p *process, mark int, re string, limit time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(p.out.String()[mark:], re) {
		if !p.running() {
			p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, re)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %s", p.name, re, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// count is how many messages the subscriber has received.
func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

// quiet waits until the subscriber has received nothing new for d.
func quiet(s *subscriber, d, limit time.Duration) {
	s.t.Helper()
	quietWhile(s, s.count, d, limit)
}

// quietTopics waits until the subscriber has received nothing on topics for d.
func quietTopics(s *subscriber, topics []string, d, limit time.Duration) {
	s.t.Helper()
	quietWhile(s, func() int {
		n := 0
		for _, topic := range topics {
			n += len(s.history(topic))
		}
		return n
	}, d, limit)
}

func quietWhile(s *subscriber, count func() int, d, limit time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(limit)
	n, since := count(), time.Now()
	for time.Since(since) < d {
		if time.Now().After(deadline) {
			s.t.Fatalf("messages still arriving after %s", limit)
		}
		time.Sleep(20 * time.Millisecond)
		if m := count(); m != n {
			n, since = m, time.Now()
		}
	}
}

// lastHealth is the newest health message the subscriber received.
func lastHealth(t *testing.T, s *subscriber, node wire.Node) wire.Health {
	t.Helper()
	hs := s.history(node.Health())
	require.NotEmpty(t, hs, "%s sent no health", node.Node)
	var h wire.Health
	require.NoError(t, json.Unmarshal([]byte(hs[len(hs)-1].Payload), &h))
	return h
}

// seqs returns the seqs of a stream the subscriber received, live and
// backlog, without judging their order.
func seqs(t *testing.T, s *subscriber, node wire.Node, stream string) map[uint64]int {
	t.Helper()
	return seqsReceived(t, s, node, stream, false)
}

// seqsOn returns the seqs of the readings received on topic, in order.
func seqsOn(t *testing.T, s *subscriber, topic string) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range s.history(topic) {
		var h wire.Header
		require.NoError(t, json.Unmarshal([]byte(m.Payload), &h), m.Payload)
		out = append(out, h.Seq)
	}
	return out
}

// maxSeq is the largest seq of a stream the subscriber received.
func maxSeq(s *subscriber, node wire.Node, stream string) uint64 {
	var top uint64
	for _, topic := range []string{node.Live(stream), node.Backlog(stream)} {
		for _, m := range s.history(topic) {
			var h wire.Header
			if json.Unmarshal([]byte(m.Payload), &h) == nil {
				top = max(top, h.Seq)
			}
		}
	}
	return top
}

// waitSeq waits until the subscriber has received a seq of at least want.
func waitSeq(t *testing.T, s *subscriber, node wire.Node, stream string, want uint64, limit time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return maxSeq(s, node, stream) >= want }, limit, 20*time.Millisecond,
		"%s: no %s reading with seq %d or more within %s", node.Node, stream, want, limit)
}

// gaps lists the numbers from 1 to the largest in seen that are not in it.
func gaps(seen map[uint64]int) []uint64 {
	var top uint64
	for s := range seen {
		top = max(top, s)
	}
	var missing []uint64
	for s := uint64(1); s <= top; s++ {
		if seen[s] == 0 {
			missing = append(missing, s)
		}
	}
	return missing
}

// fmtSeqs prints seqs as ranges: [3,7-9].
func fmtSeqs(ss []uint64) string {
	var b strings.Builder
	for i := 0; i < len(ss); {
		j := i
		for j+1 < len(ss) && ss[j+1] == ss[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(",")
		}
		if i == j {
			fmt.Fprintf(&b, "%d", ss[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ss[i], ss[j])
		}
		i = j + 1
	}
	return "[" + b.String() + "]"
}
