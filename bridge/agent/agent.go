// Package agent runs the bridge's data flow: sensor -> reading -> spool ->
// publisher. It owns the timing (one reading per interval, slow retries of a
// missing sensor) and nothing else: each stage lives in its own package.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/bridge/publish"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Options wire the agent to its surroundings.
type Options struct {
	Config config.Config
	// OpenBus opens the I2C bus the sensors hang on: the real one through
	// periph's registry, or the simulator's.
	OpenBus func() (i2c.BusCloser, error)
	Log     *slog.Logger
}

// Run reads and publishes until ctx ends. It returns an error only for what
// retrying cannot fix (an unusable spool directory); a missing sensor or an
// absent broker is logged, counted and retried.
func Run(ctx context.Context, o Options) error {
	seq, err := spool.OpenSeq(o.Config.Spool)
	if err != nil {
		return err
	}
	pub := publish.New(publish.Options{
		Broker:   o.Config.Broker,
		Username: o.Config.Username,
		Password: o.Config.Password,
		Node:     o.Config.Node,
		Log:      o.Log,
	})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = pub.Run(ctx)
	}()

	env := &envStream{opts: o, seq: seq, pub: pub}
	defer env.close()
	tick := time.NewTicker(o.Config.Interval)
	defer tick.Stop()
	for {
		env.sample(ctx)
		select {
		case <-ctx.Done():
			// Let the publisher say offline and disconnect before returning.
			wg.Wait()
			return nil
		case <-tick.C:
		}
	}
}

// envStream turns BME280 measurements into env readings.
type envStream struct {
	opts Options
	seq  *spool.Seq
	pub  *publish.Publisher

	bus      i2c.BusCloser
	dev      *bme280.Dev
	nextOpen time.Time // when a missing sensor may be tried again
	lastErr  string    // last sensor error logged, so a repeat is not logged again
	errors   uint64    // sensor errors since start
	undeliv  bool      // whether the last reading failed to reach the broker
}

func (s *envStream) sample(ctx context.Context) {
	if s.dev == nil && !s.open() {
		return
	}
	var r wire.Env
	r.Site, r.Node = s.opts.Config.Node.Site, s.opts.Config.Node.Node
	r.TS = wire.Time{Time: time.Now()}
	if err := s.dev.Read(&r); err != nil {
		s.fail(fmt.Errorf("read: %w", err))
		s.close()
		return
	}
	if s.lastErr != "" {
		s.opts.Log.Info("bme280 is back", "after_errors", s.errors)
		s.lastErr = ""
	}
	n, err := s.seq.Next(wire.StreamEnv)
	if err != nil {
		s.opts.Log.Error("reading not taken: sequence number could not be saved", "err", err)
		return
	}
	r.Seq = n
	b, err := json.Marshal(r)
	if err != nil {
		s.opts.Log.Error("reading not encoded", "seq", n, "err", err)
		return
	}
	err = s.pub.Publish(ctx, s.opts.Config.Node.Live(wire.StreamEnv), b, true)
	switch {
	case err == nil:
		s.opts.Log.Debug("published", "stream", wire.StreamEnv, "seq", n)
		s.undeliv = false
	case errors.Is(err, context.Canceled):
	case !s.undeliv:
		// Until the disk spool keeps undelivered readings, the gap in seq
		// is how a consumer sees what was lost; say it once per outage.
		s.opts.Log.Warn("readings not delivered while the broker is unreachable", "first_seq", n, "err", err)
		s.undeliv = true
	}
}

// open tries the bus and the sensor at most once per SensorRetry.
func (s *envStream) open() bool {
	now := time.Now()
	if now.Before(s.nextOpen) {
		return false
	}
	s.nextOpen = now.Add(s.opts.Config.SensorRetry)
	if s.bus == nil {
		bus, err := s.opts.OpenBus()
		if err != nil {
			name := strconv.Quote(s.opts.Config.I2CBus)
			if s.opts.Config.I2CBus == "" {
				name = "(the first one)"
			}
			s.fail(fmt.Errorf("bme280 at %#x: I2C bus %s cannot be opened: %w (is I2C enabled? sudo raspi-config nonint do_i2c 0)",
				s.opts.Config.BME280, name, err))
			return false
		}
		s.bus = bus
	}
	dev, err := bme280.Open(s.bus, s.opts.Config.BME280, &bme280.DefaultOpts)
	if err != nil {
		s.fail(err)
		return false
	}
	s.dev = dev
	s.opts.Log.Info("sensor ready", "sensor", dev.String(), "bus", s.bus.String(), "addr", fmt.Sprintf("%#x", s.opts.Config.BME280))
	return true
}

// fail counts a sensor error and logs it when it differs from the last one.
func (s *envStream) fail(err error) {
	s.errors++
	if msg := err.Error(); msg != s.lastErr {
		s.opts.Log.Error("bme280 unavailable; retrying", "err", err, "errors", s.errors, "retry_in", s.opts.Config.SensorRetry)
		s.lastErr = msg
	}
}

func (s *envStream) close() {
	if s.dev != nil {
		_ = s.dev.Halt()
		s.dev = nil
	}
	if s.bus != nil {
		_ = s.bus.Close()
		s.bus = nil
	}
}
