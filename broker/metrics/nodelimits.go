package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeLimitCounter counts what the per-bridge limits changed: retained
// publishes delivered but not retained (the node's retained budget spent),
// and messages dropped as larger than a bridge may send. It is a Collector;
// the zero value is ready and safe for concurrent use.
type NodeLimitCounter struct {
	notRetained, tooLarge atomic.Uint64
}

// NotRetained counts a retained publish delivered without being retained.
func (c *NodeLimitCounter) NotRetained() { c.notRetained.Add(1) }

// TooLarge counts a bridge's message dropped for its size.
func (c *NodeLimitCounter) TooLarge() { c.tooLarge.Add(1) }

var (
	notRetainedDesc = prometheus.NewDesc(fqName("bridge_retained_refused_total"),
		"Retained publishes of a bridge delivered but not retained: the node already held its limit of retained messages.", nil, nil)
	tooLargeDesc = prometheus.NewDesc(fqName("bridge_oversize_dropped_total"),
		"Messages of a bridge dropped because they were larger than a bridge may send.", nil, nil)
)

// Describe implements the descriptors check of NewRegistry.
func (c *NodeLimitCounter) Describe(ch chan<- *prometheus.Desc) {
	ch <- notRetainedDesc
	ch <- tooLargeDesc
}

// Update implements Collector.
func (c *NodeLimitCounter) Update(ch chan<- prometheus.Metric) error {
	ch <- prometheus.MustNewConstMetric(notRetainedDesc, prometheus.CounterValue, float64(c.notRetained.Load()))
	ch <- prometheus.MustNewConstMetric(tooLargeDesc, prometheus.CounterValue, float64(c.tooLarge.Load()))
	return nil
}

// NotRetainedCount is the count NotRetained made.
func (c *NodeLimitCounter) NotRetainedCount() uint64 { return c.notRetained.Load() }

// TooLargeCount is the count TooLarge made.
func (c *NodeLimitCounter) TooLargeCount() uint64 { return c.tooLarge.Load() }
