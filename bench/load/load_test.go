package load

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// exact is the nearest-rank quantile of sorted samples, what Quantile must
// approximate.
func exact(sorted []time.Duration, q float64) time.Duration {
	rank := int(q*float64(len(sorted)) + 0.999999999)
	return sorted[max(rank, 1)-1]
}

func TestHistogramQuantilesWithinPrecision(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tt := []struct {
		desc string
		gen  func() time.Duration
	}{
		{"uniform 0-1ms", func() time.Duration { return time.Duration(rng.IntN(1e6)) }},
		{"log-normal around 200µs", func() time.Duration {
			return time.Duration(200e3 * (1 + rng.NormFloat64()*0.3) * (1 + rng.ExpFloat64()))
		}},
		{"bimodal with a 2 s tail", func() time.Duration {
			if rng.IntN(100) == 0 {
				return 2*time.Second + time.Duration(rng.IntN(1e8))
			}
			return time.Duration(50e3 + rng.IntN(10e3))
		}},
		{"small exact values", func() time.Duration { return time.Duration(rng.IntN(200)) }},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			var h Histogram
			samples := make([]time.Duration, 20000)
			for i := range samples {
				samples[i] = max(tc.gen(), 0)
				h.Record(samples[i])
			}
			slices.Sort(samples)
			require.EqualValues(t, len(samples), h.Count())
			require.Equal(t, samples[len(samples)-1], h.Max())
			for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exact(samples, q)
				got := h.Quantile(q)
				// Never below the true value, at most 1/128 above it.
				require.GreaterOrEqual(t, got, want, "q=%v", q)
				require.LessOrEqual(t, float64(got), float64(want)*(1+1.0/128)+1, "q=%v", q)
			}
		})
	}
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	require.Zero(t, h.Quantile(0.99))
	h.Record(-time.Second) // a clock step counts as zero, never as a huge value
	require.Zero(t, h.Max())
	h.Record(time.Duration(1<<62 + 12345))
	require.Equal(t, time.Duration(1<<62+12345), h.Quantile(1))
	require.Zero(t, h.Quantile(0.5))

	var a, b Histogram
	for i := range 100 {
		a.Record(time.Duration(i) * time.Millisecond)
		b.Record(time.Duration(i+100) * time.Millisecond)
	}
	a.Merge(&b)
	require.EqualValues(t, 200, a.Count())
	require.InEpsilon(t, float64(99*time.Millisecond), float64(a.Quantile(0.5)), 1.0/128)
	require.Equal(t, 199*time.Millisecond, a.Max())
}

func TestBucketsRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1e6, 1<<40 + 3, 1<<63 - 1} {
		i := bucketOf(v)
		require.Less(t, i, buckets)
		require.GreaterOrEqual(t, highest(i), v, "v=%d", v)
		if i > 0 {
			require.Less(t, highest(i-1), v, "v=%d lies past its bucket's start", v)
		}
	}
}

// An open-loop sender that stalls keeps its timetable: the messages it sends
// late carry their due times, so the stall shows in their latency instead of
// vanishing, as it would if each were stamped when it was finally sent.
func TestScheduleKeepsTimetableThroughStall(t *testing.T) {
	const interval = 5 * time.Millisecond
	const stall = 60 * time.Millisecond
	s := Schedule{Start: time.Now().Add(10 * time.Millisecond), Interval: interval}
	var h Histogram
	var sentAt []time.Time
	for i := range 30 {
		due, err := s.Wait(context.Background(), i)
		require.NoError(t, err)
		require.Equal(t, s.Start.Add(time.Duration(i)*interval), due)
		now := time.Now()
		require.False(t, now.Before(due), "message %d sent before it was due", i)
		sentAt = append(sentAt, now)
		if i == 5 {
			time.Sleep(stall) // the broker stalls this send
		}
		h.Record(time.Since(due))
	}
	// The messages due during the stall went out back to back right after it.
	require.Less(t, sentAt[7].Sub(sentAt[6]), interval/2)
	// 60 ms of stall at 5 ms a message delays about 12 messages; the one
	// stalled and those queued behind it have latencies up to the stall.
	require.GreaterOrEqual(t, h.Max(), stall)
	require.GreaterOrEqual(t, h.Quantile(0.75), 10*time.Millisecond,
		"the stall must show in many latencies, not one: %s", &h)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Schedule{Start: time.Now().Add(time.Hour), Interval: time.Second}.Wait(ctx, 0)
	require.ErrorIs(t, err, context.Canceled)
}

func TestProbeRoundTrip(t *testing.T) {
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "bench", Node: "n00042"}
	sent := time.Unix(1_790_000_000, 123_456_789)
	b, err := encodeProbe(node, 42, 9_876_543, sent)
	require.NoError(t, err)
	p, err := DecodeProbe(b)
	require.NoError(t, err)
	require.Equal(t, Probe{Sent: sent, Pub: 42, Seq: 9_876_543}, Probe{Sent: p.Sent, Pub: p.Pub, Seq: p.Seq})
	require.True(t, p.Sent.Equal(sent))
	// It is a reading of the contract: valid JSON whose seq and node the
	// broker's gap detector and any consumer read.
	var r wire.Env
	require.NoError(t, json.Unmarshal(b, &r))
	require.EqualValues(t, 9_876_543, r.Seq)
	require.Equal(t, "n00042", r.Node)

	_, err = DecodeProbe([]byte(`{"site":"x"}`))
	require.ErrorIs(t, err, errNotProbe)
}

func TestLoopbackOnly(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:1883", "127.9.9.9:1", "[::1]:1883", "localhost:1883"} {
		require.NoError(t, Loopback(ok), ok)
	}
	for _, bad := range []string{"10.0.0.1:1883", "0.0.0.0:1883", "example.com:1883", "[::]:1883", "127.0.0.1"} {
		require.Error(t, Loopback(bad), bad)
	}
	_, err := Run(context.Background(), Flow{Addr: "192.0.2.1:1883", Publishers: []Publisher{{}}, Subscribers: []Subscriber{{}},
		Mode: ClosedLoop, Count: 1, Limit: time.Second})
	require.ErrorContains(t, err, "loopback")
}
