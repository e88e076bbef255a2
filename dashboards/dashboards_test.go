package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/broker/gaps"
	"github.com/sensorfarm/sensorfarm/wire"
)

// generated are the committed files and the code that makes them.
func generated(t *testing.T) map[string]dashboard.Dashboard {
	t.Helper()
	fleet, err := Fleet(DefaultOptions())
	require.NoError(t, err)
	broker, err := Broker()
	require.NoError(t, err)
	return map[string]dashboard.Dashboard{FleetFile: fleet, BrokerFile: broker}
}

// committed reads and strictly decodes a committed dashboard.
func committed(t *testing.T, name string) dashboard.Dashboard {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	d, err := Decode(b)
	require.NoError(t, err, "%s does not decode into the SDK's dashboard.Dashboard", name)
	return d
}

func TestCommittedJSONIsGenerated(t *testing.T) {
	for name, d := range generated(t) {
		want, err := Encode(d)
		require.NoError(t, err)
		got, err := os.ReadFile(name)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "%s is stale: run make dashboards", name)

		// The strict decoding loses nothing: what it read encodes back to
		// the same bytes, so Grafana gets what the code says.
		back, err := Encode(committed(t, name))
		require.NoError(t, err)
		require.JSONEq(t, string(got), string(back), "%s does not survive a decode into the SDK's types", name)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	b, err := os.ReadFile(FleetFile)
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))

	// An MQTT query with a key the plugin does not have is refused, as is
	// one without a topic.
	target := raw["panels"].([]any)[0].(map[string]any)["targets"].([]any)[0].(map[string]any)
	target["topc"] = "typo"
	bad, err := json.Marshal(raw)
	require.NoError(t, err)
	_, err = Decode(bad)
	require.ErrorContains(t, err, "topc")

	delete(target, "topc")
	delete(target, "topic")
	bad, err = json.Marshal(raw)
	require.NoError(t, err)
	_, err = Decode(bad)
	require.ErrorContains(t, err, "topic")
}

func TestOptionsRefuseBadNames(t *testing.T) {
	o := DefaultOptions()
	o.Nodes = append(o.Nodes, wire.Node{Prefix: o.Prefix, Site: "demo", Node: "Bad/Name"})
	_, err := Fleet(o)
	require.ErrorContains(t, err, "Bad/Name")

	_, err = ParseNodes("sensorfarm", "demo/pizero-01,pizero-02")
	require.ErrorContains(t, err, "<site>/<node>")
	nodes, err := ParseNodes("sensorfarm", "farm1/pi-a, farm2/pi-b")
	require.NoError(t, err)
	require.Equal(t, []wire.Node{{Prefix: "sensorfarm", Site: "farm1", Node: "pi-a"}, {Prefix: "sensorfarm", Site: "farm2", Node: "pi-b"}}, nodes)
}

// fleetVariables reads the prefix's default and the node variable's values
// from the committed fleet dashboard.
func fleetVariables(t *testing.T, d dashboard.Dashboard) (prefix string, nodes []wire.Node) {
	t.Helper()
	var list []string
	for _, v := range d.Templating.List {
		require.NotNil(t, v.Query, "variable %s", v.Name)
		require.NotNil(t, v.Query.String, "variable %s", v.Name)
		switch v.Name {
		case PrefixVar:
			require.Equal(t, "textbox", string(v.Type))
			prefix = *v.Query.String
		case NodeVar:
			require.Equal(t, "custom", string(v.Type))
			list = strings.Split(*v.Query.String, ",")
		}
	}
	require.NotEmpty(t, prefix)
	require.NotEmpty(t, list)
	for _, sn := range list {
		site, node, ok := strings.Cut(sn, "/")
		require.True(t, ok, "node option %q is not <site>/<node>", sn)
		n := wire.Node{Prefix: prefix, Site: site, Node: node}
		require.NoError(t, n.Validate())
		nodes = append(nodes, n)
	}
	return prefix, nodes
}

// bridgeTopics are the topics a bridge publishes, from the contract's code.
func bridgeTopics(n wire.Node) map[string]string {
	return map[string]string{
		n.Status():                "status",
		n.Health():                "health",
		n.Live(wire.StreamEnv):    "env",
		n.Live(wire.StreamGPS):    "gps",
		n.Backlog(wire.StreamEnv): "backlog env",
		n.Backlog(wire.StreamGPS): "backlog gps",
	}
}

// TestTopicsAreTheBridgesTopics: with the variables replaced as Grafana does,
// every MQTT panel subscribes to topics a bridge publishes, and to live
// topics only: the data source stamps arrival time, so a backlog replay
// would be drawn at the wrong time.
func TestTopicsAreTheBridgesTopics(t *testing.T) {
	d := committed(t, FleetFile)
	prefix, nodes := fleetVariables(t, d)
	subs, err := Subscriptions(d)
	require.NoError(t, err)
	require.NotEmpty(t, subs)

	kinds := map[string]bool{}
	for _, s := range subs {
		perNode := strings.Contains(s.Topic, "${"+NodeVar+"}")
		for _, n := range nodes {
			filter := s.Expand(map[string]string{PrefixVar: prefix, NodeVar: n.Site + "/" + n.Node})
			require.NotContains(t, filter, "$", "panel %q", s.Panel)
			var matched []string
			for topic, kind := range bridgeTopics(n) {
				if TopicMatches(filter, topic) {
					matched = append(matched, kind)
				}
			}
			require.Len(t, matched, 1, "panel %q: %s must match exactly one of %s's topics", s.Panel, filter, n.Root())
			for _, other := range []string{gaps.SummaryTopic(prefix), gaps.StreamSummaryTopic(prefix, wire.StreamGPS, n.Site, n.Node),
				gaps.StreamSummaryTopic(prefix, wire.StreamEnv, n.Site, n.Node)} {
				require.False(t, TopicMatches(filter, other), "panel %q: %s also matches the broker's %s", s.Panel, filter, other)
			}
			require.NotContains(t, matched[0], "backlog", "panel %q reads a backlog topic", s.Panel)
			kinds[matched[0]] = true
			if perNode {
				// A per-node panel reads its own node only.
				for _, other := range nodes {
					if other != n {
						for topic := range bridgeTopics(other) {
							require.False(t, TopicMatches(filter, topic), "panel %q for %s also reads %s", s.Panel, n.Root(), topic)
						}
					}
				}
			}
		}
	}
	// Status, readings, GPS and health all have a panel.
	require.Equal(t, map[string]bool{"status": true, "env": true, "gps": true, "health": true}, kinds)
}

func TestTopicMatches(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/+/c", "a/b/c", true}, {"a/+/c", "a/b/d", false}, {"a/#", "a/b/c", true}, {"a/+", "a/b/c", false},
		{"a/b", "a/b", true}, {"a/b/c", "a/b", false}, {"+/+/+/gps", "sensorfarm/s/n/backlog/gps", false},
	} {
		require.Equal(t, tc.want, TopicMatches(tc.filter, tc.topic), "%s ~ %s", tc.filter, tc.topic)
	}
}

func TestPayloadFieldsAsTheDataSourceMakesThem(t *testing.T) {
	require.Equal(t, map[string]FieldKind{"Value": KindString}, PayloadFields([]byte(wire.StatusOnline)))
	require.Equal(t, map[string]FieldKind{"Value": KindNumber}, PayloadFields([]byte("21.5")))
	require.Equal(t, map[string]FieldKind{"a": KindNumber, "b": KindJSON, "c": KindNull, "d": KindString, "e": KindBool},
		PayloadFields([]byte(`{"a":1,"b":{"x":[1]},"c":null,"d":"x","e":true}`)))
}

// simPayloads are real payloads of one node, made by the bridge's own code
// on the simulated board of --sim: the BME280 adapter over periph's driver
// reading the register-level BME280 model, and the PA1010D driver reading the
// simulated receiver. Health is the bridge's wire.Health, with every field.
func simPayloads(t *testing.T, n wire.Node) map[string][][]byte {
	t.Helper()
	open, err := sim.BoardOpener(sim.BoardOpts{Node: n.Node, GPS: true})
	require.NoError(t, err)
	bus, err := open()
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Close() })
	head := wire.Header{Site: n.Site, Node: n.Node, Seq: 1, TS: wire.Time{Time: time.Now()}, TimeSource: wire.TimeSystem}

	env, err := bme280.Open(bus, sim.BME280Addr, &bme280.DefaultOpts)
	require.NoError(t, err)
	defer func() { _ = env.Halt() }()
	e := wire.Env{Header: head}
	require.NoError(t, env.Read(&e))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	gps, err := pa1010d.Open(bus, pa1010d.Addr, &pa1010d.DefaultOpts)
	require.NoError(t, err)
	fix, err := gps.Next(ctx)
	require.NoError(t, err)
	g := wire.GPS{Header: head}
	fix.Fill(&g)

	h := wire.Health{Site: n.Site, Node: n.Node, TS: head.TS, TimeSource: head.TimeSource, Version: "test",
		SensorErrors: map[string]uint64{wire.SensorBME280: 0, wire.SensorPA1010D: 0}, GPSFix: fix.Mode, LastPublishTS: &head.TS}

	out := map[string][][]byte{
		n.Status(): {[]byte(wire.StatusOnline), []byte(wire.StatusOffline)},
	}
	for topic, v := range map[string]any{n.Live(wire.StreamEnv): e, n.Live(wire.StreamGPS): g, n.Health(): h} {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out[topic] = append(out[topic], b)
	}
	return out
}

// TestFieldsAreInRealPayloads: every field an MQTT panel keeps is a field the
// data source makes of the payloads the bridge's code produces, and a number
// where the panel draws one.
func TestFieldsAreInRealPayloads(t *testing.T) {
	d := committed(t, FleetFile)
	prefix, nodes := fleetVariables(t, d)
	subs, err := Subscriptions(d)
	require.NoError(t, err)

	msgs := map[string][][]byte{}
	for topic, p := range simPayloads(t, nodes[0]) {
		msgs[topic] = p
	}
	require.NoError(t, Check(subs, map[string]string{PrefixVar: prefix, NodeVar: nodes[0].Site + "/" + nodes[0].Node}, msgs))

	// The check fails on a field no payload has.
	broken := append([]Subscription(nil), subs...)
	broken[len(broken)-1].Fields = append(append([]string(nil), broken[len(broken)-1].Fields...), "temperature")
	require.ErrorContains(t, Check(broken, map[string]string{PrefixVar: prefix, NodeVar: nodes[0].Site + "/" + nodes[0].Node}, msgs), `"temperature"`)
}
