// Package metrics is the archive's Prometheus registry: its counters and
// gauges (sensorfarm_archive_*) beside the Go and process collectors, in a
// registry of its own served by broker/ops as the broker's is.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// Metrics are the archive's instruments. The ingest pipeline updates them.
type Metrics struct {
	Received      prometheus.Counter     // messages taken from the broker
	Inserted      *prometheus.CounterVec // readings archived, by stream
	Duplicates    prometheus.Counter
	Retained      prometheus.Counter
	Health        prometheus.Counter
	DeadLetters   *prometheus.CounterVec // by reason
	Acked         prometheus.Counter
	Commits       prometheus.Counter
	CommitErrors  prometheus.Counter
	CommitSeconds prometheus.Histogram
	BatchMessages prometheus.Histogram
	Pending       prometheus.Gauge // messages waiting for a commit
	MQTTConnected prometheus.Gauge
	MQTTConnects  prometheus.Counter
	DBUp          prometheus.Gauge
	LastCommit    prometheus.Gauge // unix time of the last successful commit
}

func name(n string) string { return prometheus.BuildFQName("sensorfarm", "archive", n) }

// New returns the instruments and the registry that serves them.
func New() (*Metrics, *prometheus.Registry, error) {
	m := &Metrics{
		Received:     prometheus.NewCounter(prometheus.CounterOpts{Name: name("messages_received_total"), Help: "Messages taken from the broker, redeliveries included."}),
		Inserted:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("readings_inserted_total"), Help: "Readings archived (committed), each (site, node, stream, seq) once."}, []string{"stream"}),
		Duplicates:   prometheus.NewCounter(prometheus.CounterOpts{Name: name("readings_duplicates_total"), Help: "Readings delivered again after they were archived, and not written again."}),
		Retained:     prometheus.NewCounter(prometheus.CounterOpts{Name: name("readings_retained_repeats_total"), Help: "Retained latest readings the broker sent again on a subscription, archived before."}),
		Health:       prometheus.NewCounter(prometheus.CounterOpts{Name: name("health_inserted_total"), Help: "Bridge health reports archived."}),
		DeadLetters:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("dead_letters_total"), Help: "Messages kept aside in dead_letters, by reason."}, []string{"reason"}),
		Acked:        prometheus.NewCounter(prometheus.CounterOpts{Name: name("messages_acked_total"), Help: "Messages acknowledged to the broker, each after its commit."}),
		Commits:      prometheus.NewCounter(prometheus.CounterOpts{Name: name("commits_total"), Help: "Transactions committed."}),
		CommitErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: name("commit_errors_total"), Help: "Transactions that failed (the batch is retried, nothing acknowledged)."}),
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("commit_duration_seconds"), Help: "Time of a successful commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}),
		BatchMessages: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("batch_messages"), Help: "Messages per committed batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		Pending:       prometheus.NewGauge(prometheus.GaugeOpts{Name: name("pending_messages"), Help: "Messages received and not yet committed."}),
		MQTTConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: name("mqtt_connected"), Help: "1 while connected to the broker."}),
		MQTTConnects:  prometheus.NewCounter(prometheus.CounterOpts{Name: name("mqtt_connects_total"), Help: "Connections made to the broker."}),
		DBUp:          prometheus.NewGauge(prometheus.GaugeOpts{Name: name("db_up"), Help: "1 when the last commit or ping of the database succeeded."}),
		LastCommit:    prometheus.NewGauge(prometheus.GaugeOpts{Name: name("last_commit_timestamp_seconds"), Help: "Unix time of the last successful commit."}),
	}
	for _, s := range decode.Streams() {
		m.Inserted.WithLabelValues(s)
	}
	for _, r := range decode.Reasons {
		m.DeadLetters.WithLabelValues(r)
	}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Received, m.Inserted, m.Duplicates, m.Retained, m.Health, m.DeadLetters, m.Acked, m.Commits, m.CommitErrors,
		m.CommitSeconds, m.BatchMessages, m.Pending, m.MQTTConnected, m.MQTTConnects, m.DBUp, m.LastCommit}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, nil, err
		}
	}
	return m, reg, nil
}
