package gaps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

func reading(site, node string, seq uint64) []byte {
	return fmt.Appendf(nil, `{"site":%q,"node":%q,"seq":%d,"ts":"2026-11-24T10:15:04.123Z","temperature_c":21.43}`, site, node, seq)
}

// stats returns one stream's stats from a snapshot.
func stats(t *testing.T, snap Snapshot, site, node, stream string) Stats {
	t.Helper()
	for _, s := range snap.Streams {
		if s.Site == site && s.Node == node && s.Stream == stream {
			return s
		}
	}
	t.Fatalf("no stream %s/%s/%s in %+v", site, node, stream, snap.Streams)
	return Stats{}
}

func TestTopics(t *testing.T) {
	h := New(Options{})
	tt := []struct {
		topic  string
		stream string // "" if not a reading topic
		live   bool
	}{
		{"sensorfarm/rpi4/pizero-01/env", wire.StreamEnv, true},
		{"sensorfarm/rpi4/pizero-01/gps", wire.StreamGPS, true},
		{"sensorfarm/rpi4/pizero-01/backlog/env", wire.StreamEnv, false},
		{"sensorfarm/rpi4/pizero-01/backlog/gps", wire.StreamGPS, false},
		{"sensorfarm/rpi4/pizero-01/status", "", false},
		{"sensorfarm/rpi4/pizero-01/health", "", false},
		{"sensorfarm/rpi4/pizero-01/env/temperature_c", "", false},
		{"sensorfarm/rpi4/pizero-01/backlog/health", "", false},
		{"sensorfarm/rpi4/pizero-01/backlog", "", false},
		{"sensorfarm/rpi4/pizero-01/backlog/env/x", "", false},
		{"sensorfarm/rpi4/env", "", false},
		{"sensorfarm//pizero-01/env", "", false},
		{"sensorfarm/rpi4//env", "", false},
		{"other/rpi4/pizero-01/env", "", false},
		{"sensorfarmx/rpi4/pizero-01/env", "", false},
		{"sensorfarm/$broker/gaps", "", false},
		{"sensorfarm/$broker/gaps/env/rpi4/pizero-01", "", false},
		{"homeassistant/sensor/x/config", "", false},
	}
	for _, tc := range tt {
		site, node, stream, live, ok := h.parse(tc.topic)
		require.Equal(t, tc.stream != "", ok, tc.topic)
		if ok {
			require.Equal(t, "rpi4", site, tc.topic)
			require.Equal(t, "pizero-01", node, tc.topic)
			require.Equal(t, tc.stream, stream, tc.topic)
			require.Equal(t, tc.live, live, tc.topic)
		}
	}

	h = New(Options{Prefix: "farm"})
	_, _, _, _, ok := h.parse("farm/a/b/env")
	require.True(t, ok)
	_, _, _, _, ok = h.parse("sensorfarm/a/b/env")
	require.False(t, ok)
}

func TestHookCounts(t *testing.T) {
	h := New(Options{})
	env := "sensorfarm/rpi4/pizero-01/env"
	for _, q := range []uint64{1, 2, 3, 7} {
		h.observe(env, reading("rpi4", "pizero-01", q), false)
	}
	h.observe("sensorfarm/rpi4/pizero-01/backlog/env", reading("rpi4", "pizero-01", 5), false)
	h.observe("sensorfarm/rpi4/pizero-01/backlog/env", reading("rpi4", "pizero-01", 2), false)
	h.observe("sensorfarm/rpi4/pizero-01/gps", reading("rpi4", "pizero-01", 10), false)
	h.observe("sensorfarm/rpi4/pizero-01/gps", []byte(`{"seq":"x"}`), false)
	h.observe("sensorfarm/rpi4/pizero-01/gps", []byte(`not json`), false)
	h.observe("sensorfarm/rpi4/pizero-01/gps", nil, false) // a retained message cleared: ignored
	h.observe("sensorfarm/rpi4/pizero-01/status", []byte("online"), false)
	h.observe("sensorfarm/rpi4/pizero-01/health", reading("rpi4", "pizero-01", 99), false)
	h.observe("sensorfarm/a/pizero-02/env", reading("a", "pizero-02", 1), false)

	snap := h.Snapshot()
	require.Len(t, snap.Streams, 3)
	// Sorted by site, node, stream.
	require.Equal(t, []string{"a/pizero-02/env", "rpi4/pizero-01/env", "rpi4/pizero-01/gps"},
		[]string{snap.Streams[0].Site + "/" + snap.Streams[0].Node + "/" + snap.Streams[0].Stream,
			snap.Streams[1].Site + "/" + snap.Streams[1].Node + "/" + snap.Streams[1].Stream,
			snap.Streams[2].Site + "/" + snap.Streams[2].Node + "/" + snap.Streams[2].Stream})

	e := stats(t, snap, "rpi4", "pizero-01", wire.StreamEnv)
	require.Equal(t, Counts{Received: 6, Missing: 2, Duplicates: 1}, e.Counts)
	require.Equal(t, uint64(7), e.LastSeq)
	require.Equal(t, 2, e.OpenGaps) // 4 and 6
	g := stats(t, snap, "rpi4", "pizero-01", wire.StreamGPS)
	require.Equal(t, Counts{Received: 1, Invalid: 2}, g.Counts)
	require.Equal(t, Counts{Received: 8, Missing: 2, Duplicates: 1, Invalid: 2}, snap.Total())
	require.Zero(t, snap.Untracked)
}

func TestHookBounds(t *testing.T) {
	h := New(Options{MaxStreams: 2})
	h.observe("sensorfarm/s/n1/env", reading("s", "n1", 1), false)
	h.observe("sensorfarm/s/n1/gps", reading("s", "n1", 1), false)
	h.observe("sensorfarm/s/n2/env", reading("s", "n2", 1), false) // a third stream: untracked
	h.observe("sensorfarm/s/n1/env", reading("s", "n1", 2), false) // known streams go on
	h.observe("sensorfarm/S/n1/env", reading("S", "n1", 1), false) // not a valid name
	snap := h.Snapshot()
	require.Len(t, snap.Streams, 2)
	require.Equal(t, uint64(2), snap.Untracked)
	require.Equal(t, uint64(2), stats(t, snap, "s", "n1", wire.StreamEnv).Received)

	// Names that fail validation are never tracked, even with room.
	h = New(Options{})
	h.observe("sensorfarm/Site/n/env", reading("x", "n", 1), false)
	h.observe("sensorfarm/s/"+string(make([]byte, 65))+"/env", reading("x", "n", 1), false)
	require.Empty(t, h.Snapshot().Streams)
	require.Equal(t, uint64(2), h.Snapshot().Untracked)
}

func TestOnPublishedSkipsInlineAndIgnored(t *testing.T) {
	h := New(Options{})
	pk := packets.Packet{TopicName: "sensorfarm/s/n/env", Payload: reading("s", "n", 1)}
	inline := &mqtt.Client{}
	inline.Net.Inline = true
	h.OnPublished(inline, pk)
	ignored := pk
	ignored.Ignore = true
	h.OnPublished(&mqtt.Client{}, ignored)
	require.Empty(t, h.Snapshot().Streams)

	h.OnPublished(&mqtt.Client{}, pk)
	dup := pk
	dup.Payload = reading("s", "n", 1)
	dup.FixedHeader.Dup = true
	h.OnPublished(&mqtt.Client{}, dup)
	require.Equal(t, Counts{Received: 2, Duplicates: 1}, h.Snapshot().Streams[0].Counts)
}

func TestInit(t *testing.T) {
	h := New(Options{})
	require.True(t, h.Provides(mqtt.OnPublished))
	for _, b := range []byte{mqtt.OnPublish, mqtt.OnACLCheck, mqtt.OnConnectAuthenticate, mqtt.OnDisconnect} {
		require.False(t, h.Provides(b), "must provide only OnPublished")
	}
	require.NoError(t, h.Init(nil))
	require.NoError(t, h.Init(&Options{Prefix: "farm", MaxGaps: 3}))
	require.Equal(t, Options{Prefix: "farm", MaxGaps: 3, MaxStreams: DefaultMaxStreams}, h.opts)
	require.ErrorIs(t, h.Init(Options{}), mqtt.ErrInvalidConfigType)
	require.ErrorIs(t, h.Init((*Options)(nil)), mqtt.ErrInvalidConfigType)
	require.ErrorIs(t, h.Init("x"), mqtt.ErrInvalidConfigType)
}

func TestConcurrent(t *testing.T) {
	h := New(Options{})
	const nodes, per = 8, 500
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("n%d", n)
			for q := uint64(1); q <= per; q++ {
				if q%50 == 0 {
					continue // lost live, replayed below
				}
				h.observe("sensorfarm/s/"+node+"/env", reading("s", node, q), false)
			}
			for q := uint64(50); q <= per; q += 50 {
				h.observe("sensorfarm/s/"+node+"/backlog/env", reading("s", node, q), false)
			}
		}()
	}
	wg.Add(1)
	go func() { // scrapes and summaries beside the readings
		defer wg.Done()
		for range 50 {
			_ = h.Snapshot()
			_, _ = h.PublishSummaries(&recorder{})
		}
	}()
	wg.Wait()
	snap := h.Snapshot()
	require.Len(t, snap.Streams, nodes)
	// The last 500 was lost live and is the last seq: the live 499 is the
	// highest until the backlog brings 500 (a jump, nothing missing).
	require.Equal(t, Counts{Received: nodes * per}, snap.Total())
}

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu   sync.Mutex
	msgs []msg
	fail error
}

type msg struct {
	topic   string
	payload []byte
	retain  bool
	qos     byte
}

func (r *recorder) Publish(topic string, payload []byte, retain bool, qos byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.msgs = append(r.msgs, msg{topic, payload, retain, qos})
	return nil
}

func (r *recorder) take() []msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs
	r.msgs = nil
	return m
}

func topics(ms []msg) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.topic)
	}
	return out
}

func TestPublishSummaries(t *testing.T) {
	h := New(Options{})
	clock := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return clock }
	h.since = clock
	rec := &recorder{}

	// The first call publishes the farm summary even with nothing counted.
	n, err := h.PublishSummaries(rec)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	ms := rec.take()
	require.Equal(t, []string{"sensorfarm/$broker/gaps"}, topics(ms))
	require.True(t, ms[0].retain)
	require.Equal(t, byte(wire.QoS), ms[0].qos)
	require.JSONEq(t, `{"ts":"2026-11-24T10:00:00.000Z","since":"2026-11-24T10:00:00.000Z","streams":0,
		"received":0,"missing":0,"duplicates":0,"resets":0,"stale":0,"invalid":0,"untracked":0}`, string(ms[0].payload))

	// Nothing changed: nothing published.
	n, err = h.PublishSummaries(rec)
	require.NoError(t, err)
	require.Zero(t, n)

	// New streams are published once, with the farm summary.
	clock = clock.Add(30 * time.Second)
	h.observe("sensorfarm/rpi4/pizero-01/env", reading("rpi4", "pizero-01", 10), false)
	h.observe("sensorfarm/rpi4/pizero-01/env", reading("rpi4", "pizero-01", 13), false)
	h.observe("sensorfarm/rpi4/pizero-01/gps", reading("rpi4", "pizero-01", 1), false)
	_, err = h.PublishSummaries(rec)
	require.NoError(t, err)
	ms = rec.take()
	require.Equal(t, []string{
		"sensorfarm/$broker/gaps/env/rpi4/pizero-01",
		"sensorfarm/$broker/gaps/gps/rpi4/pizero-01",
		"sensorfarm/$broker/gaps",
	}, topics(ms))
	require.JSONEq(t, `{"site":"rpi4","node":"pizero-01","stream":"env","ts":"2026-11-24T10:00:30.000Z",
		"since":"2026-11-24T10:00:30.000Z","last_seq":13,"open_gaps":1,
		"received":2,"missing":2,"duplicates":0,"resets":0,"stale":0,"invalid":0}`, string(ms[0].payload))
	var farm FarmSummary
	require.NoError(t, json.Unmarshal(ms[2].payload, &farm))
	require.Equal(t, 2, farm.Streams)
	require.Equal(t, Counts{Received: 3, Missing: 2}, farm.Counts)

	// A reading that changes only received and last_seq: the farm summary only.
	h.observe("sensorfarm/rpi4/pizero-01/gps", reading("rpi4", "pizero-01", 2), false)
	_, err = h.PublishSummaries(rec)
	require.NoError(t, err)
	require.Equal(t, []string{"sensorfarm/$broker/gaps"}, topics(rec.take()))

	// A fill changes a loss counter: that stream and the farm.
	h.observe("sensorfarm/rpi4/pizero-01/backlog/env", reading("rpi4", "pizero-01", 11), false)
	_, err = h.PublishSummaries(rec)
	require.NoError(t, err)
	require.Equal(t, []string{"sensorfarm/$broker/gaps/env/rpi4/pizero-01", "sensorfarm/$broker/gaps"}, topics(rec.take()))

	// A failed round is tried again whole on the next call.
	h.observe("sensorfarm/rpi4/pizero-01/backlog/env", reading("rpi4", "pizero-01", 11), false) // duplicate
	rec.fail = errors.New("boom")
	_, err = h.PublishSummaries(rec)
	require.ErrorContains(t, err, "boom")
	rec.fail = nil
	_, err = h.PublishSummaries(rec)
	require.NoError(t, err)
	require.Equal(t, []string{"sensorfarm/$broker/gaps/env/rpi4/pizero-01", "sensorfarm/$broker/gaps"}, topics(rec.take()))
}

func TestRunSummariesNeedsInlineClient(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{Logger: discard()})
	h := New(Options{})
	err := h.RunSummaries(t.Context(), srv, time.Millisecond)
	require.ErrorIs(t, err, mqtt.ErrInlineClientNotEnabled)
}

func TestRunSummaries(t *testing.T) {
	h := New(Options{})
	h.observe("sensorfarm/s/n/env", reading("s", "n", 1), false)
	rec := &recorder{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.RunSummaries(ctx, rec, 10*time.Millisecond) }()

	// At once: the farm and the new stream.
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.msgs) == 2
	}, waitFor, time.Millisecond)
	// A later change goes out on a later tick.
	h.observe("sensorfarm/s/n/env", reading("s", "n", 3), false)
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.msgs) == 4
	}, waitFor, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []string{
		"sensorfarm/$broker/gaps/env/s/n", "sensorfarm/$broker/gaps",
		"sensorfarm/$broker/gaps/env/s/n", "sensorfarm/$broker/gaps",
	}, topics(rec.take()))
}
