package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sensorfarm/sensorfarm/broker/gaps"
)

// GapSource is what the gaps collector reads: *gaps.Hook.
type GapSource interface {
	Snapshot() gaps.Snapshot
}

// gapsCollector exports broker/gaps' counts. Per stream it sends five series
// labelled site, node and stream: 1000 nodes × 2 streams make 10 000 series,
// well within what one Prometheus holds (millions), and the number is bounded
// by gaps.Options.MaxStreams. The rarer counts are sent as farm totals only.
type gapsCollector struct {
	src GapSource

	received, missing, duplicates, resets, lastSeq *prometheus.Desc
	stale, invalid, untracked, streams             *prometheus.Desc
}

// NewGapsCollector exports the gap counts of src (the gaps hook). A nil src
// reports no data.
func NewGapsCollector(src GapSource) Collector {
	labels := []string{"site", "node", "stream"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(fqName(name), help, labels, nil)
	}
	return &gapsCollector{
		src:        src,
		received:   d("readings_received_total", "Readings received with a valid seq, duplicates included, since the broker started.", labels),
		missing:    d("readings_missing", "Seq numbers never received: gaps, less what late (backlog) readings filled.", labels),
		duplicates: d("readings_duplicates_total", "Readings whose seq had been received before.", labels),
		resets:     d("seq_resets_total", "Restarts of a stream's numbering (a live seq that went back, as after a deleted spool).", labels),
		lastSeq:    d("seq_last", "Highest seq of the stream's current numbering.", labels),
		stale:      d("readings_stale_total", "Readings below a stream's tracked window, neither duplicates nor fills as far as the broker knows.", nil),
		invalid:    d("readings_invalid_total", "Messages on a reading topic without a usable seq.", nil),
		untracked:  d("readings_untracked_total", "Readings of streams not tracked: past the stream limit or with invalid names.", nil),
		streams:    d("streams_tracked", "Streams (site, node, stream) tracked.", nil),
	}
}

func (c *gapsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.missing, c.duplicates, c.resets, c.lastSeq, c.stale, c.invalid, c.untracked, c.streams} {
		ch <- d
	}
}

func (c *gapsCollector) Update(ch chan<- prometheus.Metric) error {
	if c.src == nil {
		return ErrNoData
	}
	snap := c.src.Snapshot()
	for _, s := range snap.Streams {
		l := []string{s.Site, s.Node, s.Stream}
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(s.Received), l...)
		ch <- prometheus.MustNewConstMetric(c.missing, prometheus.GaugeValue, float64(s.Missing), l...)
		ch <- prometheus.MustNewConstMetric(c.duplicates, prometheus.CounterValue, float64(s.Duplicates), l...)
		ch <- prometheus.MustNewConstMetric(c.resets, prometheus.CounterValue, float64(s.Resets), l...)
		ch <- prometheus.MustNewConstMetric(c.lastSeq, prometheus.GaugeValue, float64(s.LastSeq), l...)
	}
	t := snap.Total()
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.CounterValue, float64(t.Stale))
	ch <- prometheus.MustNewConstMetric(c.invalid, prometheus.CounterValue, float64(t.Invalid))
	ch <- prometheus.MustNewConstMetric(c.untracked, prometheus.CounterValue, float64(snap.Untracked))
	ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(len(snap.Streams)))
	return nil
}
