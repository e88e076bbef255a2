// Package agent runs the bridge's data flow: sensor -> reading -> spool ->
// publisher. It owns the timing (one reading per interval, slow retries of a
// missing sensor) and the bridge's health report; each stage lives in its own
// package.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/sensorfarm/sensorfarm/bridge/clock"
	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/bridge/publish"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/wire"
)

// HealthEvery is how often health is sent when nothing changes.
const HealthEvery = time.Minute

// Options wire the agent to its surroundings.
type Options struct {
	Config  config.Config
	Version string
	// OpenBus opens the I2C bus the sensors hang on: the real one through
	// periph's registry, or the simulator's.
	OpenBus func() (i2c.BusCloser, error)
	Log     *slog.Logger
}

// agent is the state one Run shares between its streams.
type agent struct {
	opts    Options
	node    wire.Node
	log     *slog.Logger
	seq     *spool.Seq
	pub     *publish.Publisher
	clock   *clock.Clock
	bus     *sharedBus
	started time.Time
	changed chan struct{} // a state change worth a health report

	mu          sync.Mutex
	dropped     uint64
	undelivered bool // the last reading did not reach the broker
	lastPublish *wire.Time
	sensors     []*sensorState
	// gps is the receiver being read, nil while there is none;
	// gpsErrorsBefore keeps the error counts of receivers given up.
	gps             *pa1010d.Dev
	gpsErrorsBefore uint64
}

// Run reads and publishes until ctx ends. It returns an error only for what
// retrying cannot fix (an unusable spool directory); a missing sensor or an
// absent broker is logged, counted and retried.
func Run(ctx context.Context, o Options) error {
	seq, err := spool.OpenSeq(o.Config.Spool)
	if err != nil {
		return err
	}
	a := &agent{
		opts:    o,
		node:    o.Config.Node,
		log:     o.Log,
		seq:     seq,
		clock:   clock.New(),
		bus:     &sharedBus{open: o.OpenBus},
		started: time.Now(),
		changed: make(chan struct{}, 1),
	}
	a.pub = publish.New(publish.Options{
		Broker:    o.Config.Broker,
		Username:  o.Config.Username,
		Password:  o.Config.Password,
		Node:      o.Config.Node,
		Log:       o.Log,
		OnConnect: a.stateChanged,
	})
	defer a.bus.close()

	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	streams, cancelStreams := context.WithCancel(ctx)
	defer cancelStreams()
	var streamsWG sync.WaitGroup
	runStream := func(f func(context.Context)) {
		streamsWG.Add(1)
		go func() {
			defer streamsWG.Done()
			f(streams)
		}()
	}
	env := a.newSensor(wire.SensorBME280, o.Config.BME280)
	runStream(func(ctx context.Context) { a.envLoop(ctx, env) })
	if o.Config.GPS {
		gps := a.newSensor(wire.SensorPA1010D, pa1010d.Addr)
		runStream(func(ctx context.Context) { a.gpsLoop(ctx, gps) })
	}
	run(a.healthLoop)
	run(func(ctx context.Context) { _ = a.pub.Run(ctx) })

	<-ctx.Done()
	streamsWG.Wait()
	// The publisher says offline and disconnects before Run returns.
	wg.Wait()
	return nil
}

// emit stamps a reading with its sequence number and publishes it on the
// stream's live topic. Its header already carries its time and time source.
func (a *agent) emit(ctx context.Context, stream string, reading wire.Reading) {
	h := reading.Head()
	n, err := a.seq.Next(stream)
	if err != nil {
		a.log.Error("reading not taken: sequence number could not be saved", "stream", stream, "err", err)
		return
	}
	h.Site, h.Node, h.Seq = a.node.Site, a.node.Node, n
	b, err := json.Marshal(reading)
	if err != nil {
		a.log.Error("reading not encoded", "stream", stream, "seq", n, "err", err)
		return
	}
	err = a.pub.Publish(ctx, a.node.Live(stream), b, true)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil:
		a.log.Debug("published", "stream", stream, "seq", n)
		if a.lastPublish == nil || a.undelivered {
			a.stateChanged()
		}
		now, _ := a.clock.Now()
		a.lastPublish = &wire.Time{Time: now}
		a.undelivered = false
	case errors.Is(err, context.Canceled):
	default:
		// Until the disk spool keeps undelivered readings, a reading the
		// broker did not take is lost: counted, and the gap in seq shows it.
		a.dropped++
		if !a.undelivered {
			a.stateChanged()
			a.log.Warn("readings not delivered while the broker is unreachable", "stream", stream, "first_seq", n, "err", err)
			a.undelivered = true
		}
	}
}

// stateChanged asks for a health report now rather than at the next minute.
func (a *agent) stateChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// fixCheck is how often the receiver's fix mode is compared with the last
// report: a lost or regained fix is a change of state that health reports.
const fixCheck = 2 * time.Second

func (a *agent) healthLoop(ctx context.Context) {
	tick := time.NewTicker(HealthEvery)
	defer tick.Stop()
	check := time.NewTicker(fixCheck)
	defer check.Stop()
	reported := -1
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.changed:
		case <-check.C:
			if a.gpsFix() == reported {
				continue
			}
		}
		reported = a.publishHealth(ctx)
	}
}

func (a *agent) gpsFix() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gps == nil {
		return 0
	}
	return a.gps.Stats().FixMode
}

// publishHealth sends the health report and returns the fix mode it gave.
func (a *agent) publishHealth(ctx context.Context) int {
	ts, src := a.clock.Now()
	h := wire.Health{
		Site: a.node.Site, Node: a.node.Node, TS: wire.Time{Time: ts}, TimeSource: src,
		Version: a.opts.Version, UptimeS: int64(time.Since(a.started).Seconds()),
		SensorErrors: map[string]uint64{},
	}
	h.GPSFix = a.gpsFix()
	a.mu.Lock()
	h.Dropped, h.LastPublishTS = a.dropped, a.lastPublish
	for _, s := range a.sensors {
		h.SensorErrors[s.name] = s.errors()
	}
	if _, ok := h.SensorErrors[wire.SensorPA1010D]; ok {
		h.SensorErrors[wire.SensorPA1010D] += a.gpsErrorsBefore
		if a.gps != nil {
			h.SensorErrors[wire.SensorPA1010D] += gpsErrors(a.gps.Stats())
		}
	}
	a.mu.Unlock()
	b, err := json.Marshal(h)
	if err != nil {
		a.log.Error("health not encoded", "err", err)
		return h.GPSFix
	}
	if err := a.pub.Publish(ctx, a.node.Health(), b, true); err != nil && !errors.Is(err, publish.ErrNotConnected) {
		a.log.Debug("health not published", "err", err)
	}
	return h.GPSFix
}

// sharedBus opens the I2C bus once for every sensor on it, and again after
// it was closed because of an error.
type sharedBus struct {
	open func() (i2c.BusCloser, error)
	mu   sync.Mutex
	bus  i2c.BusCloser
}

func (b *sharedBus) get() (i2c.BusCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bus == nil {
		bus, err := b.open()
		if err != nil {
			return nil, err
		}
		b.bus = bus
	}
	return b.bus, nil
}

func (b *sharedBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bus != nil {
		_ = b.bus.Close()
		b.bus = nil
	}
}
