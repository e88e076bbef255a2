package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

func TestSources(t *testing.T) {
	sys := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	synced := true
	c := &Clock{synced: func() bool { return synced }, now: func() time.Time { return sys }}

	ts, src := c.Now()
	require.Equal(t, wire.TimeSystem, src)
	require.Equal(t, sys, ts)

	synced = false
	ts, src = c.Now()
	require.Equal(t, wire.TimeUnsynced, src, "no NTP and no fix yet: say so")
	require.Equal(t, sys, ts)

	gps := time.Date(2026, 11, 27, 12, 0, 5, 0, time.UTC)
	c.SetGPS(gps, sys)
	sys = sys.Add(3 * time.Second)
	ts, src = c.Now()
	require.Equal(t, wire.TimeGPS, src)
	require.Equal(t, gps.Add(3*time.Second), ts, "GPS time carried forward by the elapsed time")

	// A synchronised kernel with a clock before Plausible is still wrong.
	synced = true
	sys = time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC)
	_, src = c.Now()
	require.Equal(t, wire.TimeGPS, src)
}

// TestAtMeasuresOnTheMonotonicClock: an earlier instant is stamped by the
// clock of now, moved back by the monotonic time elapsed (so a wall clock
// step in between, NTP's first setting, does not leak in).
func TestAtMeasuresOnTheMonotonicClock(t *testing.T) {
	real := time.Now() // carries a monotonic reading
	then := real.Add(-2 * time.Second)
	synced := true
	c := &Clock{synced: func() bool { return synced }, now: func() time.Time { return real }}
	ts, src := c.At(then)
	require.Equal(t, wire.TimeSystem, src)
	require.WithinDuration(t, real.Add(-2*time.Second), ts, time.Millisecond)

	// A fix whose first sentence came at gpsAt is stamped with its own
	// time exactly while NTP is not there.
	synced = false
	fix := time.Date(2026, 11, 27, 12, 0, 5, 0, time.UTC)
	c.SetGPS(fix, then)
	ts, src = c.At(then)
	require.Equal(t, wire.TimeGPS, src)
	require.True(t, fix.Equal(ts), "%s", ts)
	ts, _ = c.Now()
	require.True(t, fix.Add(2*time.Second).Equal(ts), "%s", ts)
}
