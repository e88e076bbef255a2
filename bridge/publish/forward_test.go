package publish_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/publish"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/internal/brokerurl"
	"github.com/sensorfarm/sensorfarm/wire"
)

var node = wire.Node{Prefix: "sensorfarm", Site: "test", Node: "pizero-01"}

// runBoth runs a publisher and its forwarder until the returned stop is
// called, which waits for both.
func runBoth(ctx context.Context, pub *publish.Publisher, fwd *publish.Forwarder) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = pub.Run(ctx) }()
	go func() { defer wg.Done(); fwd.Run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

func brokers(t *testing.T, list string) []*url.URL {
	t.Helper()
	u, err := brokerurl.ParseList(list)
	require.NoError(t, err)
	return u
}

type received struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (r *received) all() []paho.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]paho.Message(nil), r.msgs...)
}

func subscribe(t *testing.T, addr string) *received {
	t.Helper()
	r := &received{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sub-" + t.Name()))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	tok = c.Subscribe("sensorfarm/#", 1, func(_ paho.Client, m paho.Message) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return r
}

func appendReading(t *testing.T, sp *spool.Spool) spool.Record {
	t.Helper()
	rec, err := sp.AppendLive(wire.StreamEnv, func(seq uint64) ([]byte, error) {
		return json.Marshal(wire.Env{Header: wire.Header{Site: node.Site, Node: node.Node, Seq: seq}})
	})
	require.NoError(t, err)
	return rec
}

func seqOf(t *testing.T, m paho.Message) uint64 {
	var h wire.Header
	require.NoError(t, json.Unmarshal(m.Payload(), &h))
	return h.Seq
}

// TestForwarderReplaysBacklogThenAcks: readings taken before the broker was
// reachable go out on the backlog topic, oldest first and not retained; a
// reading taken once connected goes out live and retained; each leaves the
// spool only once acknowledged.
func TestForwarderReplaysBacklogThenAcks(t *testing.T) {
	addr, _, _ := serve(t)
	sub := subscribe(t, addr)
	sp, err := spool.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer sp.Close()

	quiet := slog.New(slog.DiscardHandler)
	connected := make(chan struct{}, 1)
	var fwd *publish.Forwarder
	pub := publish.New(publish.Options{Brokers: brokers(t, "tcp://"+addr), Node: node, Log: quiet,
		OnConnect: func() { fwd.Connected(); connected <- struct{}{} }})
	fwd = publish.NewForwarder(pub, sp, node, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Not connected yet: Live leaves every reading in the spool.
	const outage = 3 * publish.ReplayWindow
	for i := 0; i < outage; i++ {
		fwd.Live(ctx, appendReading(t, sp))
	}
	require.Equal(t, outage, sp.Stats().Depth)

	stop := runBoth(ctx, pub, fwd)
	defer stop()
	<-connected

	live := appendReading(t, sp)
	fwd.Live(ctx, live)
	require.Eventually(t, func() bool { return sp.Stats().Depth == 0 }, 10*time.Second, 20*time.Millisecond, "all acknowledged")
	// mochi sends the PUBACK before it delivers to subscribers: wait for
	// the subscriber to have every reading, not just for the acks.
	require.Eventually(t, func() bool {
		n := 0
		for _, m := range sub.all() {
			if m.Topic() == node.Backlog(wire.StreamEnv) || m.Topic() == node.Live(wire.StreamEnv) {
				n++
			}
		}
		return n >= outage+1
	}, 10*time.Second, 20*time.Millisecond, "all delivered")

	var backlog []uint64
	var gotLive bool
	for _, m := range sub.all() {
		switch m.Topic() {
		case node.Backlog(wire.StreamEnv):
			require.False(t, m.Retained())
			backlog = append(backlog, seqOf(t, m))
		case node.Live(wire.StreamEnv):
			require.Equal(t, live.Seq, seqOf(t, m))
			gotLive = true
		}
	}
	want := make([]uint64, outage)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	require.Equal(t, want, backlog, "the backlog comes oldest first, each once")
	require.True(t, gotLive, "the live reading went out on the live topic")
	require.Equal(t, uint64(outage+1), live.Seq)
}

// TestDirectDoesNotWaitForTheBroker: on a full disk each reading goes
// straight to the broker. The sensor goroutine that hands it over must not
// wait for the PUBACK (a GPS receiver's buffer overruns meanwhile); a reading
// the broker never acknowledges is counted dropped, one it does counts as
// delivered.
func TestDirectDoesNotWaitForTheBroker(t *testing.T) {
	stall := &stallPublishes{release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(stall.release) })
	addr, _, _ := serve(t, stall)
	t.Cleanup(release) // before the broker stops, whatever the outcome
	sp, err := spool.Open(t.TempDir(), nil)
	require.NoError(t, err)
	defer sp.Close()
	quiet := slog.New(slog.DiscardHandler)
	connected := make(chan struct{}, 1)
	pub := publish.New(publish.Options{Brokers: brokers(t, "tcp://"+addr), Node: node, Log: quiet, AckTimeout: time.Second,
		OnConnect: func() { connected <- struct{}{} }})
	fwd := publish.NewForwarder(pub, sp, node, quiet)
	var delivered, dropped atomic.Int32
	fwd.Delivered = func() { delivered.Add(1) }
	fwd.Dropped = func() { dropped.Add(1) }
	ctx := context.Background()
	stop := runBoth(ctx, pub, fwd)
	defer stop()
	<-connected

	rec := spool.Record{Stream: wire.StreamEnv, Seq: 1, Payload: []byte(`{"seq":1}`)}
	start := time.Now()
	fwd.Direct(ctx, rec)
	require.Less(t, time.Since(start), 500*time.Millisecond, "Direct returned without waiting for the PUBACK")
	require.Eventually(t, func() bool { return dropped.Load() == 1 }, 10*time.Second, 10*time.Millisecond, "no PUBACK within the ack timeout: dropped")
	require.Equal(t, uint64(1), sp.Stats().Dropped)
	release()
	// The connection may have been closed over the stalled publish; the
	// next direct reading goes through once it is back.
	require.Eventually(t, func() bool {
		fwd.Direct(ctx, spool.Record{Stream: wire.StreamEnv, Seq: 2, Payload: []byte(`{"seq":2}`)})
		time.Sleep(100 * time.Millisecond)
		return delivered.Load() > 0
	}, 20*time.Second, 10*time.Millisecond)
}
