package metrics

import (
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"
)

// brokerCollector reads mochi's server counters.
type brokerCollector struct {
	info *system.Info
	list []infoMetric
}

// infoMetric is one field of system.Info.
type infoMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	field func(*system.Info) *int64
}

// NewBrokerCollector reads mochi's counters from info, the server's Info
// (srv.Info), atomically at each scrape. mochi keeps the message and byte
// counters in its store and restores them at start, so they run on across
// restarts. A nil info reports no data.
func NewBrokerCollector(info *system.Info) Collector {
	m := func(name, help string, typ prometheus.ValueType, field func(*system.Info) *int64) infoMetric {
		return infoMetric{prometheus.NewDesc(fqName(name), help, nil, nil), typ, field}
	}
	return &brokerCollector{info: info, list: []infoMetric{
		m("clients_connected", "MQTT clients connected now.", prometheus.GaugeValue,
			func(i *system.Info) *int64 { return &i.ClientsConnected }),
		m("messages_received_total", "PUBLISH messages received from clients (and the broker's own).", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.MessagesReceived }),
		m("messages_sent_total", "PUBLISH messages sent to subscribers.", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.MessagesSent }),
		m("messages_dropped_total", "PUBLISH messages dropped because a subscriber could not keep up.", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.MessagesDropped }),
		m("inflight_dropped_total", "QoS 1 messages dropped for a session that already held --max-inflight unacknowledged.", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.InflightDropped }),
		m("received_bytes_total", "Bytes received from clients.", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.BytesReceived }),
		m("sent_bytes_total", "Bytes sent to clients.", prometheus.CounterValue,
			func(i *system.Info) *int64 { return &i.BytesSent }),
		m("retained_messages", "Retained messages held.", prometheus.GaugeValue,
			func(i *system.Info) *int64 { return &i.Retained }),
		m("inflight_messages", "QoS 1 and 2 messages waiting for a client's acknowledgement.", prometheus.GaugeValue,
			func(i *system.Info) *int64 { return &i.Inflight }),
		m("subscriptions", "Subscriptions held, of connected and persistent sessions.", prometheus.GaugeValue,
			func(i *system.Info) *int64 { return &i.Subscriptions }),
	}}
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.list {
		ch <- m.desc
	}
}

func (c *brokerCollector) Update(ch chan<- prometheus.Metric) error {
	if c.info == nil {
		return ErrNoData
	}
	for _, m := range c.list {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(atomic.LoadInt64(m.field(c.info))))
	}
	return nil
}
