// Package metrics exports the broker's state to Prometheus: one collector per
// file behind one small interface, Collector, as node_exporter does. Every
// collector builds its descriptors once, in its constructor, and reads its
// source at scrape time into ConstMetrics, so there are no global mutable
// gauges. NewRegistry puts them in a registry of their own, with the Go and
// process collectors, and records for each one whether it succeeded
// (sensorfarm_broker_collector_success) and how long it took
// (sensorfarm_broker_collector_duration_seconds).
//
// The collectors:
//   - NewBrokerCollector: mochi's counters (*system.Info): clients, messages,
//     bytes, retained and in-flight messages, subscriptions;
//   - NewGapsCollector: the gap counts of broker/gaps per site, node and
//     stream;
//   - RefusalCounter: authentication failures and ACL denials, which the auth
//     hook reports through the Refusals interface;
//   - StoreErrorCounter: store failures, which the store reports through the
//     StoreErrors interface.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Every metric is named sensorfarm_broker_<name>.
const (
	namespace = "sensorfarm"
	subsystem = "broker"
)

func fqName(name string) string { return prometheus.BuildFQName(namespace, subsystem, name) }

// Collector is one source of metrics, read at every scrape.
type Collector interface {
	// Update sends the current metrics on ch. It returns ErrNoData when its
	// source has nothing to report, which is not a failure.
	Update(ch chan<- prometheus.Metric) error
}

// describer is what a Collector also implements to have its descriptors
// checked when the registry is built (every collector here does): a name used
// twice or a label set that changes is then an error of NewRegistry rather
// than of a scrape.
type describer interface {
	Describe(ch chan<- *prometheus.Desc)
}

// ErrNoData is what a Collector returns when its source has nothing to report.
var ErrNoData = errors.New("collector returned no data")

// NewRegistry returns a registry holding the Go and process collectors and the
// given collectors, each under its name (the collector label of the success
// and duration metrics). log receives collector errors; nil discards them.
// Serve it with promhttp.HandlerFor (see broker/ops).
func NewRegistry(log *slog.Logger, cs map[string]Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	e := newExporter(log, cs)
	if err := e.checkUnique(); err != nil {
		return nil, err
	}
	if err := reg.Register(e); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return reg, nil
}

var (
	successDesc = prometheus.NewDesc(fqName("collector_success"),
		"1 if the collector's last scrape succeeded, 0 if it failed.", []string{"collector"}, nil)
	durationDesc = prometheus.NewDesc(fqName("collector_duration_seconds"),
		"How long the collector's last scrape took.", []string{"collector"}, nil)
)

// exporter runs every named Collector at each scrape and records its success
// and duration.
type exporter struct {
	log   *slog.Logger
	names []string // sorted, for a stable order
	cs    map[string]Collector
}

func newExporter(log *slog.Logger, cs map[string]Collector) *exporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &exporter{log: log, cs: make(map[string]Collector, len(cs))}
	for name, c := range cs {
		if c == nil {
			continue
		}
		e.names = append(e.names, name)
		e.cs[name] = c
	}
	sort.Strings(e.names)
	return e
}

// Describe implements prometheus.Collector.
func (e *exporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- successDesc
	ch <- durationDesc
	for _, name := range e.names {
		if d, ok := e.cs[name].(describer); ok {
			d.Describe(ch)
		}
	}
}

// checkUnique refuses two collectors describing the same metric: the
// registry sees the exporter as one collector and would merge the two
// descriptors silently, and every scrape would then fail on the repeated
// series.
func (e *exporter) checkUnique() error {
	owner := map[string]string{}
	for _, name := range e.names {
		d, ok := e.cs[name].(describer)
		if !ok {
			continue
		}
		ch := make(chan *prometheus.Desc)
		go func() {
			d.Describe(ch)
			close(ch)
		}()
		for desc := range ch {
			if o, dup := owner[desc.String()]; dup && o != name {
				for range ch {
				}
				return fmt.Errorf("metrics: collectors %q and %q both export %s", o, name, desc)
			}
			owner[desc.String()] = name
		}
	}
	return nil
}

// Collect implements prometheus.Collector.
func (e *exporter) Collect(ch chan<- prometheus.Metric) {
	for _, name := range e.names {
		start := time.Now()
		err := e.cs[name].Update(ch)
		took := time.Since(start)
		ok := 1.0
		switch {
		case err == nil:
		case errors.Is(err, ErrNoData):
			e.log.Debug("collector returned no data", "collector", name, "err", err)
		default:
			ok = 0
			e.log.Error("collector failed", "collector", name, "took", took, "err", err)
		}
		ch <- prometheus.MustNewConstMetric(durationDesc, prometheus.GaugeValue, took.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(successDesc, prometheus.GaugeValue, ok, name)
	}
}
