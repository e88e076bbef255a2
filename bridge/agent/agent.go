// Package agent runs the bridge's data flow: sensor -> reading -> spool ->
// publisher. It owns the timing (one reading per interval, slow retries of a
// missing sensor) and the bridge's health report; each stage lives in its own
// package.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	sp      *spool.Spool
	pub     *publish.Publisher
	fwd     *publish.Forwarder
	clock   *clock.Clock
	bus     *sharedBus
	started time.Time
	changed chan struct{} // a state change worth a health report

	mu       sync.Mutex
	diskFull bool // the last Append found no space
	// keptSinceFull counts the readings kept in a row since the disk was
	// last found full.
	keptSinceFull int
	// lastPublish is when the broker last acknowledged a reading, on the
	// monotonic clock (zero: never); health stamps it with the same clock
	// and source as its own ts.
	lastPublish time.Time
	sensors     []*sensorState
	// gps is the receiver being read, nil while there is none;
	// gpsErrorsBefore keeps the error counts of receivers given up.
	gps             *pa1010d.Dev
	gpsErrorsBefore uint64

	cons consumers // Home Assistant discovery, per-field topics
}

// Run reads and publishes until ctx ends. It returns an error only for what
// retrying cannot fix (an unusable spool directory); a missing sensor or an
// absent broker is logged, counted and retried.
func Run(ctx context.Context, o Options) error {
	sp, err := spool.Open(o.Config.Spool, &o.Config.SpoolOpts)
	if err != nil {
		return err
	}
	if r := sp.Recovery(); !r.Fresh && (!r.Clean || r.CutBytes > 0 || r.CorruptRegions > 0) {
		o.Log.Warn("spool recovered after an unclean stop", "same_boot", r.SameBoot, "cut_bytes", r.CutBytes,
			"corrupt_regions", r.CorruptRegions, "corrupt_readings", r.CorruptReadings, "skipped_seq", r.Skipped)
	}
	a := newAgent(o, sp)
	a.newConsumers()
	defer a.bus.close()

	// Shutdown runs in the reverse order of the data flow: the sensors stop,
	// the forwarder settles what is in flight, the publisher says offline,
	// and the spool is closed last, cleanly, so that the next start needs
	// no recovery.
	background := context.WithoutCancel(ctx)
	stage := func(parent context.Context, f func(context.Context)) (stop func()) {
		c, cancel := context.WithCancel(parent)
		done := make(chan struct{})
		go func() {
			defer close(done)
			f(c)
		}()
		return func() {
			cancel()
			<-done
		}
	}
	stopPub := stage(background, func(c context.Context) { _ = a.pub.Run(c) })
	stopFwd := stage(background, a.fwd.Run)
	stopHealth := stage(background, a.healthLoop)
	stopConsumers := stage(background, a.runConsumers)
	var sensors []func()
	env := a.newSensor(wire.SensorBME280, o.Config.BME280)
	sensors = append(sensors, stage(ctx, func(c context.Context) { a.envLoop(c, env) }))
	if o.Config.GPS {
		gps := a.newSensor(wire.SensorPA1010D, pa1010d.Addr)
		sensors = append(sensors, stage(ctx, func(c context.Context) { a.gpsLoop(c, gps) }))
	}

	<-ctx.Done()
	for _, stop := range sensors {
		stop()
	}
	stopFwd()
	stopHealth()
	stopConsumers()
	stopPub()
	if err := sp.Close(); err != nil {
		return fmt.Errorf("closing the spool: %w", err)
	}
	return nil
}

// newAgent wires the stages of the data flow around an open spool.
func newAgent(o Options, sp *spool.Spool) *agent {
	a := &agent{
		opts:    o,
		node:    o.Config.Node,
		log:     o.Log,
		sp:      sp,
		clock:   clock.New(),
		bus:     &sharedBus{open: o.OpenBus},
		started: time.Now(),
		changed: make(chan struct{}, 1),
	}
	a.pub = publish.New(publish.Options{
		Brokers:  o.Config.Brokers,
		CAs:      o.Config.CAs,
		Username: o.Config.Username,
		Password: o.Config.Password,
		Node:     o.Config.Node,
		Log:      o.Log,
		OnConnect: func() {
			a.fwd.Connected()
			a.stateChanged()
			a.connected()
		},
	})
	a.fwd = publish.NewForwarder(a.pub, sp, o.Config.Node, o.Log)
	a.fwd.Delivered = a.delivered
	a.fwd.Dropped = a.stateChanged
	return a
}

// emit gives a reading its sequence number, keeps it in the spool and
// publishes it live. Its header already carries its time and time source.
func (a *agent) emit(ctx context.Context, stream string, reading wire.Reading) {
	h := reading.Head()
	h.Site, h.Node = a.node.Site, a.node.Node
	rec, err := a.sp.AppendLive(stream, func(seq uint64) ([]byte, error) {
		h.Seq = seq
		return json.Marshal(reading)
	})
	switch {
	case rec.ID != 0:
		if err != nil {
			a.log.Warn("reading kept, but the spool could not sync it", "stream", stream, "seq", rec.Seq, "err", err)
		}
		a.setDiskFull(false, nil)
		a.fwd.Live(ctx, rec)
	case rec.Seq != 0:
		// The disk is full: the reading goes straight to the broker, and
		// counts as dropped only if it does not get there either.
		a.setDiskFull(true, err)
		a.fwd.Direct(ctx, rec)
	default:
		// Nothing was numbered (no seq could be reserved, or the reading
		// could not be encoded): no gap shows it, so dropped must.
		if cerr := a.sp.CountDropped(1); cerr != nil {
			err = errors.Join(err, cerr)
		}
		a.log.Error("reading not taken; counted in dropped", "stream", stream, "err", err)
		a.stateChanged()
	}
	if rec.Seq != 0 {
		a.sentLive(stream, rec.Payload)
	}
}

// writableAgain is how many readings in a row the spool must keep before a
// full disk counts as having room again. A nearly full filesystem takes a
// small record and refuses the next larger one (the spool's periodic state
// snapshot), so a single success would make the state flap.
const writableAgain = 20

// setDiskFull logs a change between a spool that keeps readings and one the
// full disk refuses, once per change.
func (a *agent) setDiskFull(full bool, err error) {
	a.mu.Lock()
	if full {
		a.keptSinceFull = 0
	} else if a.diskFull {
		a.keptSinceFull++
		if a.keptSinceFull < writableAgain {
			a.mu.Unlock()
			return
		}
	}
	changed := a.diskFull != full
	a.diskFull = full
	a.mu.Unlock()
	if !changed {
		return
	}
	if full {
		a.log.Error("disk full: readings are not kept; publishing live only, each undelivered one counted in dropped", "err", err)
	} else {
		a.log.Info("spool writable again: readings are kept until the broker has them")
	}
	a.stateChanged()
}

// delivered notes a reading the broker acknowledged.
func (a *agent) delivered() {
	a.mu.Lock()
	first := a.lastPublish.IsZero()
	a.lastPublish = time.Now()
	a.mu.Unlock()
	if first {
		a.stateChanged()
	}
}

// stateChanged asks for a health report now rather than at the next minute.
func (a *agent) stateChanged() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// stateCheck is how often the receiver's fix mode and the dropped count are
// compared with the last report: a lost or regained fix and readings evicted
// from the spool are changes of state that health reports.
const stateCheck = 2 * time.Second

// reported is the part of a health report whose change calls for a new one.
type reported struct {
	gpsFix  int
	dropped uint64
}

func (a *agent) healthLoop(ctx context.Context) {
	tick := time.NewTicker(HealthEvery)
	defer tick.Stop()
	check := time.NewTicker(stateCheck)
	defer check.Stop()
	last := reported{gpsFix: -1}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.changed:
		case <-check.C:
			if (reported{a.gpsFix(), a.sp.Stats().Dropped}) == last {
				continue
			}
		}
		last = a.publishHealth(ctx)
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

// publishHealth sends the health report and returns what it said.
func (a *agent) publishHealth(ctx context.Context) reported {
	ts, src := a.clock.Now()
	h := wire.Health{
		Site: a.node.Site, Node: a.node.Node, TS: wire.Time{Time: ts}, TimeSource: src,
		Version: a.opts.Version, UptimeS: int64(time.Since(a.started).Seconds()),
	}
	h.GPSFix = a.gpsFix()
	st := a.sp.Stats()
	h.SpoolDepth, h.SpoolBytes, h.Dropped = uint64(st.Depth), st.Bytes, st.Dropped
	h.SensorErrors = a.sensorErrors()
	a.mu.Lock()
	if !a.lastPublish.IsZero() {
		// Stamped now, by the clock that stamps ts: a delivery stamped
		// while the clock was unsynced would otherwise keep its 1970
		// time after NTP, under a time_source of system.
		lp, _ := a.clock.At(a.lastPublish)
		h.LastPublishTS = &wire.Time{Time: lp}
	}
	a.mu.Unlock()
	b, err := json.Marshal(h)
	if err != nil {
		a.log.Error("health not encoded", "err", err)
		return reported{h.GPSFix, h.Dropped}
	}
	if err := a.pub.Publish(ctx, a.node.Health(), b, true); err != nil && !errors.Is(err, publish.ErrNotConnected) {
		a.log.Debug("health not published", "err", err)
	}
	return reported{h.GPSFix, h.Dropped}
}

// sensorErrors counts each sensor's errors: its failures to open or read,
// and for the GPS the sentences its receivers sent corrupted.
func (a *agent) sensorErrors() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	errs := map[string]uint64{}
	for _, s := range a.sensors {
		errs[s.name] = s.errors()
	}
	if _, ok := errs[wire.SensorPA1010D]; ok {
		errs[wire.SensorPA1010D] += a.gpsErrorsBefore
		if a.gps != nil {
			errs[wire.SensorPA1010D] += gpsErrors(a.gps.Stats())
		}
	}
	return errs
}

// sharedBus opens the I2C bus the first time a sensor needs it (again after
// a failed open) and shares it between the sensors; it stays open until the
// bridge stops: a sensor's error is the sensor's, and its next open reuses
// the bus.
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
