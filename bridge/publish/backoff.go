package publish

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff paces retries with "full jitter" (AWS Architecture Blog,
// "Exponential Backoff And Jitter"): the n-th wait is drawn uniformly from
// [0, min(max, base·2^n)). After a broker restart a whole fleet loses its
// connection at the same instant; with a fixed 1, 2, 4 s schedule every
// bridge would come back in the same instant again, each time, and the
// broker's password checks would all share the CPU and time out together.
// Drawn waits spread the fleet over the whole interval instead.
type backoff struct {
	base, max time.Duration
	// rand returns a uniform int64 in [0, n); it must be safe for
	// concurrent use when the backoff's owner shares it.
	rand func(n int64) int64
	n    int // waits since the last reset
}

func newBackoff(o Options) *backoff {
	return &backoff{base: o.BaseBackoff, max: o.MaxBackoff, rand: o.Rand}
}

// ceiling is the longest the next wait may be.
func (b *backoff) ceiling() time.Duration {
	c := b.base
	for i := 0; i < b.n && c < b.max; i++ {
		c *= 2 // stops at max, so it cannot overflow
	}
	return min(c, b.max)
}

// next draws the next wait.
func (b *backoff) next() time.Duration {
	c := b.ceiling()
	b.n++
	if c <= 0 {
		return 0
	}
	return time.Duration(b.rand(int64(c)))
}

// reset starts the schedule again after a success.
func (b *backoff) reset() { b.n = 0 }

// sleep waits d and reports whether ctx was still running at its end.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// defaultRand is the process's own randomly seeded source: bridges started
// together still draw different waits.
func defaultRand(n int64) int64 { return rand.Int64N(n) }
