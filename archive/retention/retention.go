// Package retention keeps the archive within a Pi 4's disk: once an hour it
// sums readings older than --downsample-after into readings_rollup and
// deletes them, and deletes everything older than --retention.
package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/store"
)

// Policy is what is kept.
type Policy struct {
	// Retention: nothing older is kept (0: keep all).
	Retention time.Duration
	// DownsampleAfter: older readings are kept only as rollups of
	// DownsampleTo (0: never).
	DownsampleAfter, DownsampleTo time.Duration
}

// Every is how often the policy is applied.
const Every = time.Hour

// Run applies p at once and then every Every until ctx ends.
func Run(ctx context.Context, st *store.Store, p Policy, log *slog.Logger) {
	for {
		Apply(ctx, st, p, time.Now(), log)
		select {
		case <-ctx.Done():
			return
		case <-time.After(Every):
		}
	}
}

// Apply applies p once, as at now.
func Apply(ctx context.Context, st *store.Store, p Policy, now time.Time, log *slog.Logger) {
	var forget time.Time
	if p.Retention > 0 {
		forget = now.Add(-p.Retention)
	}
	cutoff, rollup := forget, time.Duration(0)
	if p.DownsampleAfter > 0 {
		// Whole buckets only, so that a bucket is summed once.
		cutoff, rollup = now.Add(-p.DownsampleAfter).Truncate(p.DownsampleTo), p.DownsampleTo
	}
	if cutoff.IsZero() {
		return
	}
	start := time.Now()
	n, err := st.Prune(ctx, cutoff, rollup, forget)
	if err != nil {
		log.Error("retention failed; tried again in an hour", "err", err)
		return
	}
	log.Info("retention applied", "readings_deleted", n.Readings, "rolled_up", n.RolledUp, "health_deleted", n.Health,
		"dead_letters_deleted", n.DeadLetters, "rollups_deleted", n.Rollups, "took", time.Since(start).Round(time.Millisecond))
}
