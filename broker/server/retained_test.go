package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNodeLimitsDecide(t *testing.T) {
	l := nodeLimits{count: 3, bytes: 100, packet: 50}
	held := map[string]int{"a": 10, "b": 20}
	for _, tc := range []struct {
		desc, topic string
		size        int
		retain      bool
		held        map[string]int
		want        verdict
	}{
		{"a new retained topic within the limits", "c", 30, true, held, publishAsIs},
		{"one topic too many", "d", 1, true, map[string]int{"a": 1, "b": 1, "c": 1}, publishNotRetained},
		{"replacing a held topic does not add one", "c", 1, true, map[string]int{"a": 1, "b": 1, "c": 1}, publishAsIs},
		{"too many bytes", "c", 45, true, map[string]int{"a": 30, "b": 30}, publishNotRetained},
		{"replacing counts the new size only", "a", 45, true, map[string]int{"a": 30, "b": 30}, publishAsIs},
		{"not retained: no budget", "z", 40, false, map[string]int{"a": 1, "b": 1, "c": 1}, publishAsIs},
		{"an empty retained payload deletes", "z", 0, true, map[string]int{"a": 1, "b": 1, "c": 1}, publishAsIs},
		{"too large for a bridge", "a", 51, false, nil, refuseTooLarge},
		{"too large, retained", "a", 51, true, nil, refuseTooLarge},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, tc.want, l.decide(tc.topic, tc.size, tc.retain, tc.held))
		})
	}
}

// A bridge that publishes retained messages on ever new per-field topics
// fills its budget, and no more: the rest are delivered but not retained.
// Without the limit every one of them stays retained (and in RAM at every
// start).
func TestNodeRetainedLimit(t *testing.T) {
	b := startWithUsers(t, usersFile(t, farm(t)))
	b1, err := connectAs(t, b.Addr(), "bridge:farm1:node1", "b1", "pw-b1")
	require.NoError(t, err)
	reader, err := connectAs(t, b.Addr(), "grafana-1", "grafana", "pw-grafana")
	require.NoError(t, err)
	live := subscribe(t, reader, "sensorfarm/farm1/node1/#")

	const n = 100
	for i := range n {
		publish(t, b1, fmt.Sprintf("sensorfarm/farm1/node1/env/f%03d", i), "1.5", true)
	}
	for range n {
		receive(t, live) // every one is delivered
	}
	require.Contains(t, b.Log.String(), "a bridge's retained messages are at their limit")
	require.EqualValues(t, n-defaultNodeLimits.count, b.nodeLims.NotRetainedCount())

	// A new subscriber sees the retained ones: the budget, not all.
	late, err := connectAs(t, b.Addr(), "grafana-2", "grafana", "pw-grafana")
	require.NoError(t, err)
	retained := subscribe(t, late, "sensorfarm/farm1/node1/#")
	got := 0
	for done := false; !done; {
		select {
		case <-retained:
			got++
		case <-time.After(time.Second):
			done = true
		}
	}
	require.Equal(t, defaultNodeLimits.count, got)

	// A message larger than a bridge may send is acknowledged, dropped and
	// counted; the bridge stays connected.
	publish(t, b1, "sensorfarm/farm1/node1/env", strings.Repeat("x", defaultNodeLimits.packet+1), false)
	require.True(t, b1.IsConnectionOpen())
	require.EqualValues(t, 1, b.nodeLims.TooLargeCount())
	// QoS 1 is at least once: a redelivered earlier reading may still come
	// (seen with the durable hook in place); the oversize one must not.
	for deadline := time.After(300 * time.Millisecond); ; {
		select {
		case m := <-live:
			if len(m.Payload()) > defaultNodeLimits.packet {
				t.Fatalf("an oversize message was delivered: %d bytes on %s", len(m.Payload()), m.Topic())
			}
			t.Logf("delivered again: %s (%d bytes)", m.Topic(), len(m.Payload()))
		case <-deadline:
			return
		}
	}
}

// A bridge whose readings grow a few bytes at a time (a longer value, one
// more digit in seq) reaches its byte budget exactly where a count of its
// retained messages at every publish would: the headroom that spares the
// count must never let the node past its limit.
func TestNodeRetainedBytesGrow(t *testing.T) {
	b := startWithUsers(t, usersFile(t, farm(t)))
	b1, err := connectAs(t, b.Addr(), "bridge:farm1:node1", "b1", "pw-b1")
	require.NoError(t, err)

	l := defaultNodeLimits
	model := map[string]int{} // what a count at every publish holds
	wantNotRetained := 0
	for round := 1; round <= 100; round++ {
		for f := range 10 {
			topic := fmt.Sprintf("sensorfarm/farm1/node1/env/f%d", f)
			size := 40*round + f
			if l.decide(topic, size, true, model) == publishAsIs {
				model[topic] = size
			} else {
				wantNotRetained++
			}
			publish(t, b1, topic, strings.Repeat("x", size), true)
		}
	}
	require.Positive(t, wantNotRetained, "the test reaches the limit")
	require.EqualValues(t, wantNotRetained, b.nodeLims.NotRetainedCount())
	total := 0
	for _, m := range b.mqtt.Topics.Messages("sensorfarm/farm1/node1/#") {
		total += len(m.Payload)
		require.Equal(t, model[m.TopicName], len(m.Payload), m.TopicName)
	}
	require.LessOrEqual(t, total, l.bytes)
}
