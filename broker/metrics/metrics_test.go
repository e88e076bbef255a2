package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/gaps"
	"github.com/sensorfarm/sensorfarm/wire"
)

// compare collects c as NewRegistry would run it, under name, and compares
// the named metrics and the collector's success with want (exposition text).
func compare(t *testing.T, name string, c Collector, want string, metrics ...string) {
	t.Helper()
	metrics = append(metrics, "sensorfarm_broker_collector_success")
	require.NoError(t, testutil.CollectAndCompare(newExporter(nil, map[string]Collector{name: c}), strings.NewReader(want), metrics...))
}

func TestBrokerCollector(t *testing.T) {
	info := &system.Info{
		ClientsConnected: 12, MessagesReceived: 1000, MessagesSent: 2500, MessagesDropped: 3,
		BytesReceived: 123456, BytesSent: 654321, Retained: 40, Inflight: 2, Subscriptions: 7,
	}
	compare(t, "mqtt", NewBrokerCollector(info), `
# HELP sensorfarm_broker_clients_connected MQTT clients connected now.
# TYPE sensorfarm_broker_clients_connected gauge
sensorfarm_broker_clients_connected 12
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="mqtt"} 1
# HELP sensorfarm_broker_inflight_messages QoS 1 and 2 messages waiting for a client's acknowledgement.
# TYPE sensorfarm_broker_inflight_messages gauge
sensorfarm_broker_inflight_messages 2
# HELP sensorfarm_broker_messages_dropped_total PUBLISH messages dropped because a subscriber could not keep up.
# TYPE sensorfarm_broker_messages_dropped_total counter
sensorfarm_broker_messages_dropped_total 3
# HELP sensorfarm_broker_messages_received_total PUBLISH messages received from clients (and the broker's own).
# TYPE sensorfarm_broker_messages_received_total counter
sensorfarm_broker_messages_received_total 1000
# HELP sensorfarm_broker_messages_sent_total PUBLISH messages sent to subscribers.
# TYPE sensorfarm_broker_messages_sent_total counter
sensorfarm_broker_messages_sent_total 2500
# HELP sensorfarm_broker_received_bytes_total Bytes received from clients.
# TYPE sensorfarm_broker_received_bytes_total counter
sensorfarm_broker_received_bytes_total 123456
# HELP sensorfarm_broker_retained_messages Retained messages held.
# TYPE sensorfarm_broker_retained_messages gauge
sensorfarm_broker_retained_messages 40
# HELP sensorfarm_broker_sent_bytes_total Bytes sent to clients.
# TYPE sensorfarm_broker_sent_bytes_total counter
sensorfarm_broker_sent_bytes_total 654321
# HELP sensorfarm_broker_subscriptions Subscriptions held, of connected and persistent sessions.
# TYPE sensorfarm_broker_subscriptions gauge
sensorfarm_broker_subscriptions 7
`, "sensorfarm_broker_clients_connected", "sensorfarm_broker_inflight_messages",
		"sensorfarm_broker_messages_dropped_total", "sensorfarm_broker_messages_received_total",
		"sensorfarm_broker_messages_sent_total", "sensorfarm_broker_received_bytes_total",
		"sensorfarm_broker_retained_messages", "sensorfarm_broker_sent_bytes_total", "sensorfarm_broker_subscriptions")

	// No server yet: no data, which is not a failure.
	compare(t, "mqtt", NewBrokerCollector(nil), `
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="mqtt"} 1
`, "sensorfarm_broker_clients_connected")
}

func TestGapsCollector(t *testing.T) {
	h := gaps.New(gaps.Options{})
	pub := func(topic string, seq uint64) {
		// Through the hook, as mochi calls it.
		h.OnPublished(nil, packet(topic, seq))
	}
	a := wire.Node{Prefix: "sensorfarm", Site: "rpi4", Node: "pizero-01"}
	b := wire.Node{Prefix: "sensorfarm", Site: "rpi4", Node: "pizero-02"}
	for _, q := range []uint64{1, 2, 5} {
		pub(a.Live(wire.StreamEnv), q)
	}
	pub(a.Backlog(wire.StreamEnv), 3) // fills one of 3, 4
	pub(a.Backlog(wire.StreamEnv), 2) // a duplicate
	pub(a.Live(wire.StreamGPS), 100)
	pub(a.Live(wire.StreamGPS), 1) // a reset
	pub(b.Live(wire.StreamEnv), 7)
	h.OnPublished(nil, packetRaw(b.Live(wire.StreamEnv), `{"seq":"7"}`)) // invalid

	compare(t, "gaps", NewGapsCollector(h), `
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="gaps"} 1
# HELP sensorfarm_broker_readings_duplicates_total Readings whose seq had been received before.
# TYPE sensorfarm_broker_readings_duplicates_total counter
sensorfarm_broker_readings_duplicates_total{node="pizero-01",site="rpi4",stream="env"} 1
sensorfarm_broker_readings_duplicates_total{node="pizero-01",site="rpi4",stream="gps"} 0
sensorfarm_broker_readings_duplicates_total{node="pizero-02",site="rpi4",stream="env"} 0
# HELP sensorfarm_broker_readings_invalid_total Messages on a reading topic without a usable seq.
# TYPE sensorfarm_broker_readings_invalid_total counter
sensorfarm_broker_readings_invalid_total 1
# HELP sensorfarm_broker_readings_missing Seq numbers never received: gaps, less what late (backlog) readings filled.
# TYPE sensorfarm_broker_readings_missing gauge
sensorfarm_broker_readings_missing{node="pizero-01",site="rpi4",stream="env"} 1
sensorfarm_broker_readings_missing{node="pizero-01",site="rpi4",stream="gps"} 0
sensorfarm_broker_readings_missing{node="pizero-02",site="rpi4",stream="env"} 0
# HELP sensorfarm_broker_readings_received_total Readings received with a valid seq, duplicates included, since the broker started.
# TYPE sensorfarm_broker_readings_received_total counter
sensorfarm_broker_readings_received_total{node="pizero-01",site="rpi4",stream="env"} 5
sensorfarm_broker_readings_received_total{node="pizero-01",site="rpi4",stream="gps"} 2
sensorfarm_broker_readings_received_total{node="pizero-02",site="rpi4",stream="env"} 1
# HELP sensorfarm_broker_readings_stale_total Readings below a stream's tracked window, neither duplicates nor fills as far as the broker knows.
# TYPE sensorfarm_broker_readings_stale_total counter
sensorfarm_broker_readings_stale_total 0
# HELP sensorfarm_broker_readings_untracked_total Readings of streams not tracked: past the stream limit or with invalid names.
# TYPE sensorfarm_broker_readings_untracked_total counter
sensorfarm_broker_readings_untracked_total 0
# HELP sensorfarm_broker_seq_last Highest seq of the stream's current numbering.
# TYPE sensorfarm_broker_seq_last gauge
sensorfarm_broker_seq_last{node="pizero-01",site="rpi4",stream="env"} 5
sensorfarm_broker_seq_last{node="pizero-01",site="rpi4",stream="gps"} 1
sensorfarm_broker_seq_last{node="pizero-02",site="rpi4",stream="env"} 7
# HELP sensorfarm_broker_seq_resets_total Restarts of a stream's numbering (a live seq that went back, as after a deleted spool).
# TYPE sensorfarm_broker_seq_resets_total counter
sensorfarm_broker_seq_resets_total{node="pizero-01",site="rpi4",stream="env"} 0
sensorfarm_broker_seq_resets_total{node="pizero-01",site="rpi4",stream="gps"} 1
sensorfarm_broker_seq_resets_total{node="pizero-02",site="rpi4",stream="env"} 0
# HELP sensorfarm_broker_streams_tracked Streams (site, node, stream) tracked.
# TYPE sensorfarm_broker_streams_tracked gauge
sensorfarm_broker_streams_tracked 3
`, "sensorfarm_broker_readings_duplicates_total", "sensorfarm_broker_readings_invalid_total",
		"sensorfarm_broker_readings_missing", "sensorfarm_broker_readings_received_total",
		"sensorfarm_broker_readings_stale_total", "sensorfarm_broker_readings_untracked_total",
		"sensorfarm_broker_seq_last", "sensorfarm_broker_seq_resets_total", "sensorfarm_broker_streams_tracked")

	compare(t, "gaps", NewGapsCollector(nil), `
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="gaps"} 1
`, "sensorfarm_broker_streams_tracked")
}

func TestRefusalCounter(t *testing.T) {
	var r Refusals = NewRefusalCounter()
	r.AuthFailed()
	r.AuthFailed()
	r.ACLDenied(true)
	r.ACLDenied(false)
	r.ACLDenied(false)
	r.ACLDenied(false)
	compare(t, "refusals", r.(*RefusalCounter), `
# HELP sensorfarm_broker_acl_denials_total Accesses denied by the ACL: write (publish) or read (subscription or delivery).
# TYPE sensorfarm_broker_acl_denials_total counter
sensorfarm_broker_acl_denials_total{access="read"} 3
sensorfarm_broker_acl_denials_total{access="write"} 1
# HELP sensorfarm_broker_auth_failures_total Connections refused by authentication.
# TYPE sensorfarm_broker_auth_failures_total counter
sensorfarm_broker_auth_failures_total 2
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="refusals"} 1
`, "sensorfarm_broker_acl_denials_total", "sensorfarm_broker_auth_failures_total")
}

func TestStoreErrorCounter(t *testing.T) {
	var s StoreErrors = NewStoreErrorCounter()
	s.StoreError(StoreOpWrite)
	s.StoreError(StoreOpWrite)
	s.StoreError(StoreOpBackground)
	s.StoreError("something new") // counted as other
	compare(t, "store", s.(*StoreErrorCounter), `
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="store"} 1
# HELP sensorfarm_broker_store_errors_total Failures of the persistent store, by operation.
# TYPE sensorfarm_broker_store_errors_total counter
sensorfarm_broker_store_errors_total{op="background"} 1
sensorfarm_broker_store_errors_total{op="close"} 0
sensorfarm_broker_store_errors_total{op="delete"} 0
sensorfarm_broker_store_errors_total{op="open"} 0
sensorfarm_broker_store_errors_total{op="other"} 1
sensorfarm_broker_store_errors_total{op="read"} 0
sensorfarm_broker_store_errors_total{op="write"} 2
`, "sensorfarm_broker_store_errors_total")
}

// failing is a collector that fails, or has no data.
type failing struct{ err error }

func (f failing) Update(chan<- prometheus.Metric) error { return f.err }

func TestCollectorSuccess(t *testing.T) {
	e := newExporter(nil, map[string]Collector{
		"broken": failing{errors.New("boom")},
		"empty":  failing{ErrNoData},
		"fine":   NewRefusalCounter(),
		"absent": nil, // a nil collector is left out
	})
	require.NoError(t, testutil.CollectAndCompare(e, strings.NewReader(`
# HELP sensorfarm_broker_collector_success 1 if the collector's last scrape succeeded, 0 if it failed.
# TYPE sensorfarm_broker_collector_success gauge
sensorfarm_broker_collector_success{collector="broken"} 0
sensorfarm_broker_collector_success{collector="empty"} 1
sensorfarm_broker_collector_success{collector="fine"} 1
`), "sensorfarm_broker_collector_success"))
	require.Equal(t, 3, testutil.CollectAndCount(e, "sensorfarm_broker_collector_duration_seconds"))
}

func TestNewRegistry(t *testing.T) {
	h := gaps.New(gaps.Options{})
	h.OnPublished(nil, packet("sensorfarm/rpi4/pizero-01/env", 1))
	reg, err := NewRegistry(nil, map[string]Collector{
		"mqtt":     NewBrokerCollector(&system.Info{}),
		"gaps":     NewGapsCollector(h),
		"refusals": NewRefusalCounter(),
		"store":    NewStoreErrorCounter(),
	})
	require.NoError(t, err)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{
		"go_goroutines", "process_cpu_seconds_total",
		"sensorfarm_broker_clients_connected", "sensorfarm_broker_readings_missing",
		"sensorfarm_broker_auth_failures_total", "sensorfarm_broker_store_errors_total",
		"sensorfarm_broker_collector_success", "sensorfarm_broker_collector_duration_seconds",
	} {
		require.True(t, names[n], "missing %s", n)
	}

	// Our metrics follow Prometheus' naming conventions.
	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "sensorfarm_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}

	// A collector whose metric clashes with another's is refused at once.
	_, err = NewRegistry(nil, map[string]Collector{"a": NewRefusalCounter(), "b": NewRefusalCounter()})
	require.Error(t, err)
}
