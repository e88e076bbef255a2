package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Publisher is what the Announcer sends through: the bridge's MQTT
// connection (publish.Publisher), which returns once the broker acknowledged.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, retained bool) error
}

// Sensing reports which sensors work right now and which the configuration
// enables; the Announcer turns that into a Presence per sensor.
type Sensing struct {
	// Working reports whether each sensor works at this moment.
	Working func() (bme280, gps bool)
	// GPSEnabled is false on a node configured without a receiver.
	GPSEnabled bool
	// GoneAfter is how long a sensor that worked must have stopped before
	// it counts as gone: longer than a sensor retry, so that a receiver
	// being reopened after an error does not flap its entities.
	GoneAfter time.Duration
}

// CheckEvery is how often the Announcer looks at the sensors.
const CheckEvery = 2 * time.Second

// Announcer publishes the discovery configs when asked (Announce: on every
// connection, and on Home Assistant's birth) and when a sensor's presence
// changes. One goroutine, Run, does all the publishing, so announcements
// never interleave.
type Announcer struct {
	opts  Options
	sense Sensing
	pub   Publisher
	log   *slog.Logger
	now   func() time.Time

	wake chan struct{}

	mu      sync.Mutex
	tracked [2]tracked // bme280, gps
}

// tracked is the history of one sensor that presence is derived from.
type tracked struct {
	seen      bool      // worked at least once since the start
	stoppedAt time.Time // when it stopped working; zero while it works
}

// NewAnnouncer returns an Announcer; call Run.
func NewAnnouncer(o Options, sense Sensing, pub Publisher, log *slog.Logger) *Announcer {
	return &Announcer{opts: o, sense: sense, pub: pub, log: log, now: time.Now, wake: make(chan struct{}, 1)}
}

// Announce asks for every config to be sent again: after a (re)connection,
// whose session starts clean, or when Home Assistant restarted and may have
// lost what it knew. It does not wait.
func (a *Announcer) Announce() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// HAStatus handles a message on Home Assistant's status topic: its birth
// message means it (re)started, and announces again.
func (a *Announcer) HAStatus(payload []byte) {
	if string(payload) == wire.HAOnline {
		a.Announce()
	}
}

// Run publishes until ctx ends.
func (a *Announcer) Run(ctx context.Context) {
	tick := time.NewTicker(CheckEvery)
	defer tick.Stop()
	var announced Sensors
	pending := false // an Announce not yet carried out
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
			pending = true
		case <-tick.C:
		}
		s := a.presence()
		if !pending && !changed(announced, s, a.opts.RemoveGone) {
			continue
		}
		err := a.publish(ctx, s)
		switch {
		case err == nil:
			announced, pending = s, false
		case ctx.Err() != nil:
			return
		default:
			// Not connected, or no PUBACK: the next connection announces
			// again; a change is retried at the next check.
			a.log.Debug("discovery not published", "err", err)
		}
	}
}

// changed reports whether presence moved from was to is in a way Home
// Assistant must hear about: a sensor appeared, or, when gone sensors are
// removed, one went away. Unknown never removes anything.
func changed(was, is Sensors, removeGone bool) bool {
	differs := func(w, i Presence) bool {
		if i == Present {
			return w != Present
		}
		return removeGone && (i == Gone || i == Disabled) && w != i
	}
	return differs(was.BME280, is.BME280) || differs(was.GPS, is.GPS)
}

func (a *Announcer) publish(ctx context.Context, s Sensors) error {
	msgs := Configs(a.opts, s)
	for _, m := range msgs {
		// On the first failure the connection is down or stuck: the rest
		// would fail too, and the whole set is sent again later.
		if err := a.pub.Publish(ctx, m.Topic, m.Payload, true); err != nil {
			return fmt.Errorf("discovery config %s: %w", m.Topic, err)
		}
	}
	a.log.Info("Home Assistant discovery published", "configs", len(msgs), "bme280", s.BME280, "gps", s.GPS)
	return nil
}

// presence classifies each sensor from what works now and what worked before.
func (a *Announcer) presence() Sensors {
	bme, gps := a.sense.Working()
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	return Sensors{
		BME280: a.tracked[0].update(bme, true, now, a.sense.GoneAfter),
		GPS:    a.tracked[1].update(gps, a.sense.GPSEnabled, now, a.sense.GoneAfter),
	}
}

func (t *tracked) update(working, enabled bool, now time.Time, goneAfter time.Duration) Presence {
	switch {
	case !enabled:
		return Disabled
	case working:
		t.seen, t.stoppedAt = true, time.Time{}
		return Present
	case !t.seen:
		return Unknown
	case t.stoppedAt.IsZero():
		t.stoppedAt = now
	}
	if now.Sub(t.stoppedAt) < goneAfter {
		return Present
	}
	return Gone
}
