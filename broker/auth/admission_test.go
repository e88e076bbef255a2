package auth

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAdmission(t *testing.T) {
	g := newAdmission(Admission{Slots: 1, Wait: 200 * time.Millisecond})
	require.True(t, g.enter(), "a free slot is taken at once")

	// Taken: a second waits for Wait, then is refused.
	start := time.Now()
	require.False(t, g.enter())
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)

	// A slot freed while waiting is taken.
	got := make(chan bool)
	go func() { got <- g.enter() }()
	time.Sleep(20 * time.Millisecond)
	g.leave(time.Second)
	require.True(t, <-got)

	// With a check measured at 1 s, a queue that cannot be served within
	// Wait is refused at once, without waiting.
	start = time.Now()
	require.False(t, g.enter())
	require.Less(t, time.Since(start), 150*time.Millisecond)
	g.leave(time.Second)

	// The cost is a moving average.
	checks(t, g, 100*time.Millisecond, 50)
	require.InDelta(t, float64(100*time.Millisecond), float64(g.cost.Load()), float64(5*time.Millisecond))
}

// checks runs n checks through g, each taking took.
func checks(t *testing.T, g *admission, took time.Duration, n int) {
	for range n {
		require.True(t, g.enter())
		g.leave(took)
	}
}
