// Package clock decides what time a reading is stamped with. A Pi Zero has no
// real-time clock: until NTP has synchronised it, the system clock says 1970
// or whatever fake-hwclock saved at the last shutdown. A reading must not pass
// off such a time as true, so each stamp says where it came from.
package clock

import (
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Plausible is the earliest time a synchronised clock can show: before it the
// system clock is wrong whatever the kernel says (a bad NTP answer, a clock
// set by hand). Any build of this code is younger.
var Plausible = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Clock stamps readings: with the system time while the kernel says it is
// synchronised, else with GPS time carried forward from the last valid fix,
// else with the system time marked unsynced.
type Clock struct {
	synced func() bool
	now    func() time.Time

	mu      sync.Mutex
	gpsTime time.Time // receiver time of the last fix
	gpsAt   time.Time // system time (with its monotonic reading) when it came
}

// New returns a Clock that asks the kernel whether the system clock is
// synchronised.
func New() *Clock { return &Clock{synced: kernelSynced, now: time.Now} }

// Now returns the time to stamp a reading with and its source, one of
// wire.TimeSystem, wire.TimeGPS and wire.TimeUnsynced.
func (c *Clock) Now() (time.Time, string) { return c.At(c.now()) }

// At stamps the instant t, a system time with its monotonic reading taken
// earlier, as the clock says now: the elapsed time is measured on the
// monotonic clock, so a step of the wall clock in between (NTP's first
// setting, fake-hwclock) does not leak into the stamp.
func (c *Clock) At(t time.Time) (time.Time, string) {
	now := c.now()
	back := t.Sub(now)
	if c.synced() && !now.Before(Plausible) {
		return now.Add(back), wire.TimeSystem
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.gpsAt.IsZero() {
		// The monotonic reading in gpsAt makes the elapsed time immune to
		// steps of the wall clock (fake-hwclock, a late NTP step).
		return c.gpsTime.Add(t.Sub(c.gpsAt)), wire.TimeGPS
	}
	return now.Add(back), wire.TimeUnsynced
}

// SetGPS records the time of a valid fix, received at the system time at
// (with its monotonic reading): the time its epoch's first sentence arrived.
func (c *Clock) SetGPS(fix, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gpsTime, c.gpsAt = fix, at
}
