package agent

import (
	"context"
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/bridge/discovery"
	"github.com/sensorfarm/sensorfarm/wire"
)

// consumers is what the bridge publishes for consumers besides its readings:
// Home Assistant discovery (ha, nil when off) and per-field topics.
type consumers struct {
	ha     *discovery.Announcer
	fields bool

	mu      sync.Mutex
	lastEnv time.Time // when the BME280 last gave a reading
}

// newConsumers sets up discovery and per-field topics as configured. Call it
// before the publisher runs, so that its subscription is made on the first
// connection.
func (a *agent) newConsumers() {
	cfg := a.opts.Config
	a.cons.fields = cfg.FieldTopics
	if !cfg.HADiscovery {
		return
	}
	if cfg.HADiscoveryPrefix != wire.HADiscoveryPrefix {
		a.log.Warn("Home Assistant discovery prefix is not the default: the sensorfarm broker's ACL lets a bridge publish discovery only under "+
			wire.HADiscoveryPrefix+"/ (a demo broker, an admin user or another broker's ACL must allow the other prefix)",
			"ha_discovery_prefix", cfg.HADiscoveryPrefix)
	}
	a.cons.ha = discovery.NewAnnouncer(discovery.Options{
		Prefix:      cfg.HADiscoveryPrefix,
		Node:        a.node,
		Version:     a.opts.Version,
		Interval:    cfg.Interval,
		HealthEvery: HealthEvery,
		RemoveGone:  cfg.HARemoveGone,
	}, discovery.Sensing{
		Working:    a.sensorsWorking,
		GPSEnabled: cfg.GPS,
		GoneAfter:  2*cfg.SensorRetry + envWindow*cfg.Interval,
	}, a.pub, a.log)
	a.pub.Subscribe(wire.HAStatusTopic, a.cons.ha.HAStatus)
}

// envWindow is how many intervals without an env reading mean the BME280 is
// not working.
const envWindow = 3

// sensorsWorking reports whether the BME280 gave a reading within the last
// few intervals and whether a GPS receiver is open.
func (a *agent) sensorsWorking() (bme280, gps bool) {
	a.cons.mu.Lock()
	bme280 = time.Since(a.cons.lastEnv) < envWindow*a.opts.Config.Interval
	a.cons.mu.Unlock()
	a.mu.Lock()
	gps = a.gps != nil
	a.mu.Unlock()
	return bme280, gps
}

// runConsumers announces to Home Assistant until ctx ends.
func (a *agent) runConsumers(ctx context.Context) {
	if a.cons.ha != nil {
		a.cons.ha.Run(ctx)
	}
}

// connected re-sends the discovery after a (re)connection.
func (a *agent) connected() {
	if a.cons.ha != nil {
		a.cons.ha.Announce()
	}
}

// sentLive notes a reading just published on its live topic and, with
// per-field topics, publishes its fields: retained, without waiting for the
// broker (the next reading replaces them anyway). A null field goes out as an
// empty message, which clears the retained value: a script then finds no
// value rather than a stale one.
func (a *agent) sentLive(stream string, payload []byte) {
	if stream == wire.StreamEnv {
		a.cons.mu.Lock()
		a.cons.lastEnv = time.Now()
		a.cons.mu.Unlock()
	}
	if !a.cons.fields {
		return
	}
	fields, err := wire.FieldValues(payload)
	if err != nil {
		a.log.Error("per-field topics not published", "stream", stream, "err", err)
		return
	}
	for _, f := range fields {
		if _, err := a.pub.Send(a.node.Field(stream, f.Key), []byte(f.Value), true); err != nil {
			return // not connected: the reading waits in the spool, its fields are not kept
		}
	}
}
