package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/wire"
)

// envLoop takes one BME280 reading per interval.
func (a *agent) envLoop(ctx context.Context, s *sensorState) {
	var dev *bme280.Dev
	defer func() {
		if dev != nil {
			_ = dev.Halt()
		}
	}()
	tick := time.NewTicker(a.opts.Config.Interval)
	defer tick.Stop()
	for {
		if dev == nil {
			if bus, ok := s.bus(); ok {
				d, err := bme280.Open(bus, a.opts.Config.BME280, &bme280.DefaultOpts)
				if err != nil {
					s.fail(err)
				} else {
					dev = d
					s.ready(d.String())
				}
			}
		}
		if dev != nil {
			var r wire.Env
			ts, src := a.clock.Now()
			r.TS, r.TimeSource = wire.Time{Time: ts}, src
			if err := dev.Read(&r); err != nil {
				s.fail(fmt.Errorf("read: %w", err))
				_ = dev.Halt()
				dev = nil
			} else {
				a.emit(ctx, wire.StreamEnv, &r)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
