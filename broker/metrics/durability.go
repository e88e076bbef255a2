package metrics

import "github.com/prometheus/client_golang/prometheus"

// DurabilitySource is what the broker's delivery guarantee reports: publishes
// it held back or refused so as not to drop what it acknowledges, and whether
// the store's volume is too full to take more.
type DurabilitySource interface {
	Held() uint64
	Refused() uint64
	Redelivered() uint64
	StoreFull() bool
	StoreFreeBytes() uint64
}

// DurabilityCollector reads a DurabilitySource at every scrape.
type DurabilityCollector struct{ src DurabilitySource }

// NewDurabilityCollector returns a Collector of src.
func NewDurabilityCollector(src DurabilitySource) *DurabilityCollector {
	return &DurabilityCollector{src: src}
}

var (
	heldDesc = prometheus.NewDesc(fqName("publishes_held_total"),
		"QoS 1/2 publishes held back before their PUBACK because a persistent session they go to was full.", nil, nil)
	refusedDesc = prometheus.NewDesc(fqName("publishes_refused_total"),
		"QoS 1/2 publishes refused without a PUBACK (held past --hold-timeout, or the store's volume full); their publishers send them again.", nil, nil)
	redeliveredDesc = prometheus.NewDesc(fqName("redelivered_total"),
		"QoS 1/2 messages mochi dropped for a persistent session (its queue of writes full, counted in messages_dropped_total too) and the broker put back in flight and sent again.", nil, nil)
	storeFullDesc = prometheus.NewDesc(fqName("store_volume_full"),
		"1 while the store's volume has less free space than --store-min-free and the broker refuses what it would store.", nil, nil)
	storeFreeDesc = prometheus.NewDesc(fqName("store_volume_free_bytes"),
		"Free space on the store's volume, as last looked at (at most a second ago while publishes come in).", nil, nil)
)

// Describe implements the descriptors check of NewRegistry.
func (c *DurabilityCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- heldDesc
	ch <- refusedDesc
	ch <- redeliveredDesc
	ch <- storeFullDesc
	ch <- storeFreeDesc
}

// Update implements Collector.
func (c *DurabilityCollector) Update(ch chan<- prometheus.Metric) error {
	full := 0.0
	if c.src.StoreFull() {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.CounterValue, float64(c.src.Held()))
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(c.src.Refused()))
	ch <- prometheus.MustNewConstMetric(redeliveredDesc, prometheus.CounterValue, float64(c.src.Redelivered()))
	ch <- prometheus.MustNewConstMetric(storeFullDesc, prometheus.GaugeValue, full)
	ch <- prometheus.MustNewConstMetric(storeFreeDesc, prometheus.GaugeValue, float64(c.src.StoreFreeBytes()))
	return nil
}
