package agent

import (
	"context"
	"errors"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/wire"
)

// gpsLoop publishes one gps reading per valid fix and gives the clock the
// receiver's time.
func (a *agent) gpsLoop(ctx context.Context, s *sensorState) {
	opts := a.opts.Config.GPSOpts
	for ctx.Err() == nil {
		bus, ok := s.bus()
		if !ok {
			s.wait(ctx)
			continue
		}
		dev, err := pa1010d.Open(bus, pa1010d.Addr, &opts)
		if err != nil {
			s.fail(err)
			continue
		}
		s.ready(dev.String())
		a.setGPS(dev)
		for {
			fix, err := dev.Next(ctx)
			if err != nil {
				if !errors.Is(err, ctx.Err()) {
					s.fail(err)
				}
				break
			}
			a.clock.SetGPS(fix.Time, fix.Received)
			var g wire.GPS
			fix.Fill(&g)
			// Stamped as every reading is: the system time when NTP has
			// set it, else GPS time, which at the fix's own instant is the
			// fix's time exactly.
			ts, src := a.clock.At(fix.Received)
			g.TS, g.TimeSource = wire.Time{Time: ts}, src
			a.emit(ctx, wire.StreamGPS, &g)
		}
		a.setGPS(nil)
	}
}

// setGPS makes dev the receiver whose counters health reports; nil when
// there is none. The counters of a receiver that is given up are kept.
func (a *agent) setGPS(dev *pa1010d.Dev) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gps != nil {
		a.gpsErrorsBefore += gpsErrors(a.gps.Stats())
	}
	a.gps = dev
}

// gpsErrors are the receiver's errors that health counts besides the
// sensor's own failures: corrupted or unreadable sentences. A failed bus
// transaction is not among them: Next returns it, and gpsLoop counts it as
// the sensor's failure (the driver's I2CErrors counts the same event).
func gpsErrors(st pa1010d.Stats) uint64 {
	return st.ChecksumErrors + st.Overlong + st.Garbage + st.Malformed
}
