package dashboards

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/gaps"
	"github.com/sensorfarm/sensorfarm/broker/metrics"
	"github.com/sensorfarm/sensorfarm/wire"
)

// brokerMetricNames gathers a real registry of broker/metrics, with every
// collector the broker serves on /metrics (broker/server's addOps) fed with a
// reading, so that the per-stream series exist too.
func brokerMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	g := gaps.New(gaps.Options{})
	n := wire.Node{Prefix: wire.DefaultPrefix, Site: "demo", Node: "pizero-01"}
	g.OnPublished(nil, packets.Packet{TopicName: n.Live(wire.StreamEnv), Payload: []byte(`{"site":"demo","node":"pizero-01","seq":1}`)})
	reg, err := metrics.NewRegistry(nil, map[string]metrics.Collector{
		"mqtt":     metrics.NewBrokerCollector(new(system.Info)),
		"gaps":     metrics.NewGapsCollector(g),
		"refusals": metrics.NewRefusalCounter(),
		"store":    metrics.NewStoreErrorCounter(),
	})
	require.NoError(t, err)
	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	return names
}

// TestPromQLMetricsExist: every metric name in the broker dashboard's PromQL
// is one the broker's registry exports.
func TestPromQLMetricsExist(t *testing.T) {
	names := brokerMetricNames(t)
	require.True(t, names["sensorfarm_broker_readings_missing"], "the registry must hold the per-stream series")
	exprs := PromQL(committed(t, BrokerFile))
	require.NotEmpty(t, exprs)
	used := 0
	for _, e := range exprs {
		ms, err := MetricNames(e)
		require.NoError(t, err, e)
		require.NotEmpty(t, ms, "no metric in %q", e)
		for _, m := range ms {
			require.True(t, names[m], "%q uses %s, which the broker does not export", e, m)
			used++
		}
	}
	t.Logf("%d expressions, %d metric references, all exported", len(exprs), used)
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (site, node) (rate(a_total[$__rate_interval])) > 0`, []string{"a_total"}},
		{`b{job="x", op=~"a|b"} / ignoring (op) c`, []string{"b", "c"}},
		{`histogram_quantile(0.9, sum by (le) (rate(d_bucket[5m])))`, []string{"d_bucket"}},
		{`max without (instance) (e) offset 5m`, []string{"e"}},
	} {
		got, err := MetricNames(tc.expr)
		require.NoError(t, err, tc.expr)
		require.Equal(t, tc.want, got, tc.expr)
	}
	_, err := MetricNames(`rate(a[5m]`)
	require.Error(t, err)
}
