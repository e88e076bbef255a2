package publish

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// seeded is a deterministic source for the draws: the test checks one fixed
// sequence, so it cannot flake, yet the figures hold for any seed.
func seeded(seed uint64) func(int64) int64 {
	r := rand.New(rand.NewPCG(seed, 1))
	return r.Int64N
}

// TestBackoffCeilingDoublesToTheCap: the ceilings follow base·2^n and stop
// at the cap, also after many attempts (no overflow).
func TestBackoffCeilingDoublesToTheCap(t *testing.T) {
	b := &backoff{base: time.Second, max: 30 * time.Second, rand: seeded(1)}
	var got []time.Duration
	for range 8 {
		got = append(got, b.ceiling())
		b.next()
	}
	s := time.Second
	require.Equal(t, []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s, 30 * s}, got)
	b.n = 1000
	require.Equal(t, 30*time.Second, b.ceiling())
	b.reset()
	require.Equal(t, time.Second, b.ceiling())
}

// TestBackoffFullJitterIsUniform: every wait lies in [0, ceiling), and over
// many draws each tenth of the range gets about a tenth of them: a fleet is
// spread over the whole interval, not bunched at its end as with plain
// exponential backoff, nor at half as with "equal jitter".
func TestBackoffFullJitterIsUniform(t *testing.T) {
	const draws, bins = 20000, 10
	for attempt := range 7 {
		b := &backoff{base: time.Second, max: 30 * time.Second, rand: seeded(uint64(attempt))}
		var hist [bins]int
		var ceil time.Duration
		for range draws {
			b.n = attempt
			ceil = b.ceiling()
			d := b.next()
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.Less(t, d, ceil)
			hist[int(d*bins/ceil)]++
		}
		for i, n := range hist {
			// A binomial(20000, 0.1) bin has a standard deviation of
			// about 42; 200 is almost 5 of them.
			require.InDelta(t, draws/bins, n, 200, "attempt %d (ceiling %s): tenth %d has %d of %d draws", attempt, ceil, i, n, draws)
		}
	}
}

// TestBackoffSpreadsAFleet: 1,000 bridges cut off by the same broker restart
// draw their first retry over the whole first second; with the old fixed
// schedule all 1,000 came back at exactly 1 s. No 100 ms slot gets more than
// twice its share.
func TestBackoffSpreadsAFleet(t *testing.T) {
	const fleet, slots = 1000, 10
	src := seeded(42)
	var hist [slots]int
	for range fleet {
		b := &backoff{base: time.Second, max: 30 * time.Second, rand: src}
		hist[int(b.next()/(time.Second/slots))]++
	}
	for i, n := range hist {
		require.LessOrEqual(t, n, 2*fleet/slots, "slot %d of the first second: %d of %d bridges", i, n, fleet)
		require.Positive(t, n, "slot %d of the first second is empty", i)
	}
}
