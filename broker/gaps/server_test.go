package gaps

import (
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

const waitFor = 5 * time.Second

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// startServer runs mochi on a free loopback port with the inline client (for
// the summaries), anonymous access and h; it returns the server and address.
func startServer(t *testing.T, h *Hook) (*mqtt.Server, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: discard()})
	require.NoError(t, srv.AddHook(new(auth.AllowHook), nil))
	require.NoError(t, srv.AddHook(h, nil))
	tcp := listeners.NewTCP(listeners.Config{Type: listeners.TypeTCP, ID: "t", Address: "127.0.0.1:0"})
	require.NoError(t, srv.AddListener(tcp))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	return srv, tcp.Address()
}

func connect(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func publish(t *testing.T, c paho.Client, topic string, payload []byte, retained bool) {
	t.Helper()
	tok := c.Publish(topic, wire.QoS, retained, payload)
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
}

// TestThroughBroker publishes as a bridge would, through a real mochi server:
// live readings with a lost one, the backlog replay that makes up for it, a
// duplicate, then reads the counts and the retained summaries as a reader
// subscribed to <prefix>/# would.
func TestThroughBroker(t *testing.T) {
	h := New(Options{})
	srv, addr := startServer(t, h)
	n := wire.Node{Prefix: wire.DefaultPrefix, Site: "rpi4", Node: "pizero-01"}

	bridge := connect(t, addr, n.ClientID())
	publish(t, bridge, n.Status(), []byte(wire.StatusOnline), true)
	for _, q := range []uint64{1, 2, 3, 6, 7} { // 4 and 5 lost live
		publish(t, bridge, n.Live(wire.StreamEnv), reading(n.Site, n.Node, q), true)
	}
	publish(t, bridge, n.Backlog(wire.StreamEnv), reading(n.Site, n.Node, 4), false) // a fill
	publish(t, bridge, n.Backlog(wire.StreamEnv), reading(n.Site, n.Node, 2), false) // a duplicate
	publish(t, bridge, n.Live(wire.StreamGPS), reading(n.Site, n.Node, 40), true)
	publish(t, bridge, n.Health(), []byte(`{"site":"rpi4","node":"pizero-01","seq":1}`), true) // not a reading

	// A PUBACK is written before mochi calls OnPublished: wait for the count.
	require.Eventually(t, func() bool { return h.Snapshot().Total().Received == 8 }, waitFor, 5*time.Millisecond)
	snap := h.Snapshot()
	require.Len(t, snap.Streams, 2)
	env := stats(t, snap, n.Site, n.Node, wire.StreamEnv)
	require.Equal(t, Counts{Received: 7, Missing: 1, Duplicates: 1}, env.Counts)
	require.Equal(t, uint64(7), env.LastSeq)
	require.Equal(t, 1, env.OpenGaps)

	// The summaries, through the server's inline client; the gaps hook does
	// not count its own publishes.
	published, err := h.PublishSummaries(srv)
	require.NoError(t, err)
	require.Equal(t, 3, published)
	require.Equal(t, uint64(8), h.Snapshot().Total().Received)

	// A reader subscribing to <prefix>/# afterwards gets them retained.
	type got struct {
		mu   sync.Mutex
		msgs map[string][]byte
	}
	g := &got{msgs: map[string][]byte{}}
	reader := connect(t, addr, "reader")
	tok := reader.Subscribe(wire.AllReadings(wire.DefaultPrefix), 1, func(_ paho.Client, m paho.Message) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.msgs[m.Topic()] = m.Payload()
	})
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	farmTopic := SummaryTopic(wire.DefaultPrefix)
	envTopic := StreamSummaryTopic(wire.DefaultPrefix, wire.StreamEnv, n.Site, n.Node)
	require.Equal(t, "sensorfarm/$broker/gaps/env/rpi4/pizero-01", envTopic)
	var farmMsg, envMsg []byte
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		farmMsg, envMsg = g.msgs[farmTopic], g.msgs[envTopic]
		return farmMsg != nil && envMsg != nil && g.msgs[StreamSummaryTopic(wire.DefaultPrefix, wire.StreamGPS, n.Site, n.Node)] != nil
	}, waitFor, 5*time.Millisecond)

	var farm FarmSummary
	require.NoError(t, json.Unmarshal(farmMsg, &farm))
	require.Equal(t, 2, farm.Streams)
	require.Equal(t, Counts{Received: 8, Missing: 1, Duplicates: 1}, farm.Counts)
	var es StreamSummary
	require.NoError(t, json.Unmarshal(envMsg, &es))
	require.Equal(t, StreamSummary{
		Site: n.Site, Node: n.Node, Stream: wire.StreamEnv, TS: es.TS, Since: es.Since,
		LastSeq: 7, OpenGaps: 1, Counts: Counts{Received: 7, Missing: 1, Duplicates: 1},
	}, es)
	require.WithinDuration(t, time.Now(), es.TS.Time, time.Minute)

	// The bridge's spool was deleted: it starts again at 1 on the live topic.
	publish(t, bridge, n.Live(wire.StreamEnv), reading(n.Site, n.Node, 1), true)
	require.Eventually(t, func() bool {
		return stats(t, h.Snapshot(), n.Site, n.Node, wire.StreamEnv).Resets == 1
	}, waitFor, 5*time.Millisecond)
	env = stats(t, h.Snapshot(), n.Site, n.Node, wire.StreamEnv)
	require.Equal(t, Counts{Received: 8, Missing: 1, Duplicates: 1, Resets: 1}, env.Counts)
	require.Equal(t, uint64(1), env.LastSeq)
}
