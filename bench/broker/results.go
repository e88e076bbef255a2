package main

import (
	"fmt"
	"strings"

	"github.com/sensorfarm/sensorfarm/bench/stats"
)

// metric is one figure a benchmark reports.
type metric struct {
	name, unit string
	// higherBetter: throughput and rates; lower is better for latency and
	// memory.
	higherBetter bool
}

var (
	metricRate    = metric{"throughput", "msgs/s", true}
	metricP50     = metric{"p50 latency", "ms", false}
	metricP99     = metric{"p99 latency", "ms", false}
	metricKiBConn = metric{"RSS per connection", "KiB", false}
	// Ours alone (from its /metrics): where the RSS goes.
	metricStacksConn = metric{"of which goroutine stacks", "KiB", false}
	metricHeapConn   = metric{"of which Go heap in use", "KiB", false}
	metricConnRate   = metric{"connect rate", "conn/s", true}
	// Benchmark 3b: what a connection holds once it has carried messages.
	metricKiBBusy    = metric{"RSS per connection after the messages", "KiB", false}
	metricConnackP99 = metric{"p99 CONNACK", "ms", false}
)

// Results gather every run's figures: bench -> metric -> peer -> one value
// per run, in run order, so run i of two peers can be paired.
type Results struct {
	benches []string
	metrics map[string][]metric
	values  map[string]map[metric]map[Kind][]float64
}

func newResults() *Results {
	return &Results{metrics: map[string][]metric{}, values: map[string]map[metric]map[Kind][]float64{}}
}

func (r *Results) add(bench string, k Kind, m metric, v float64) {
	if r.values[bench] == nil {
		r.benches = append(r.benches, bench)
		r.values[bench] = map[metric]map[Kind][]float64{}
	}
	if r.values[bench][m] == nil {
		r.metrics[bench] = append(r.metrics[bench], m)
		r.values[bench][m] = map[Kind][]float64{}
	}
	r.values[bench][m][k] = append(r.values[bench][m][k], v)
}

// ratio is ours over peer, run by run: its median and spread.
func (r *Results) ratio(bench string, m metric, peer Kind) (stats.Spread, bool) {
	return stats.Of(stats.Ratios(r.values[bench][m][Ours], r.values[bench][m][peer]))
}

// target is what the issue asks of our broker against a peer on a metric,
// as the ratio ours/peer; ok is false where it sets none.
func target(bench string, m metric, peer Kind) (limit float64, ok bool) {
	if !strings.HasPrefix(bench, "1.") && !strings.HasPrefix(bench, "2.") {
		return 0, false
	}
	switch {
	case m == metricRate && peer == Mosquitto:
		return 1.0, true
	case m == metricRate && peer == Mochi:
		return 0.95, true // at most 5 % slower
	case m == metricP99 && peer == Mosquitto:
		return 1.0, true
	case m == metricP99 && peer == Mochi:
		return 1.05, true
	}
	return 0, false
}

// met says whether ratio s meets limit, judged on the median.
func met(m metric, s stats.Spread, limit float64) bool {
	if m.higherBetter {
		return s.Median >= limit
	}
	return s.Median <= limit
}

// KiBPerConnTarget is the target for an idle connection.
const KiBPerConnTarget = 16.0

func fmtValue(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtSpread(s stats.Spread, ok bool) string {
	if !ok {
		return "—"
	}
	if s.Min == s.Max {
		return fmtValue(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", fmtValue(s.Median), fmtValue(s.Min), fmtValue(s.Max))
}

func fmtRatio(s stats.Spread, ok bool) string {
	if !ok {
		return "—"
	}
	if s.Min == s.Max {
		return fmt.Sprintf("%.2f×", s.Median)
	}
	return fmt.Sprintf("%.2f× [%.2f–%.2f]", s.Median, s.Min, s.Max)
}
