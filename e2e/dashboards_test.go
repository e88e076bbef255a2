package e2e

//lint:file-ignore SA1019 the committed dashboards are in Grafana's v1 schema, dashboard.Dashboard (see dashboards/README.md).

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/dashboards"
	"github.com/sensorfarm/sensorfarm/wire"
)

// TestDashboardsAgainstRealFarm holds the committed Grafana dashboards against
// the real binaries: every MQTT panel's topic, with the node variable set to a
// running bridge --sim, receives that bridge's messages, every field the panel
// keeps is in them as the MQTT data source would make it, and every metric the
// broker dashboard queries is on the real broker's /metrics.
func TestDashboardsAgainstRealFarm(t *testing.T) {
	dir := t.TempDir()
	broker, addr := startBroker(t, filepath.Join(dir, "broker"), "127.0.0.1:0")
	ops := opsAddr(broker)
	n := wire.Node{Prefix: wire.DefaultPrefix, Site: "dash", Node: "pi-01"}
	sub := subscribe(t, addr, "-t", wire.AllReadings(n.Prefix))
	start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, n.Site, n.Node, "--sim")...)...)

	for _, topic := range []string{n.Status(), n.Live(wire.StreamEnv), n.Live(wire.StreamGPS), n.Health()} {
		sub.next(topic, 30*time.Second)
	}
	// Everything the farm published, the broker's own summaries included: a
	// panel's topic that matched anything but its own kind of message would
	// then meet a payload without its fields.
	msgs := map[string][][]byte{}
	sub.mu.Lock()
	for _, m := range sub.all {
		msgs[m.Topic] = append(msgs[m.Topic], []byte(m.Payload))
	}
	sub.mu.Unlock()

	b, err := os.ReadFile(filepath.Join("..", "dashboards", dashboards.FleetFile))
	require.NoError(t, err)
	fleet, err := dashboards.Decode(b)
	require.NoError(t, err)
	subs, err := dashboards.Subscriptions(fleet)
	require.NoError(t, err)
	require.NotEmpty(t, subs)
	require.NoError(t, dashboards.Check(subs, map[string]string{
		dashboards.PrefixVar: n.Prefix,
		dashboards.NodeVar:   n.Site + "/" + n.Node,
	}, msgs))

	// The metric families the real broker exports, gap counters included
	// now that readings went through it.
	_, body := get(t, "http://"+ops+"/metrics")
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(body, -1) {
		exported[m[1]] = true
	}
	require.True(t, exported["sensorfarm_broker_readings_received_total"], "gap metrics on /metrics")
	b, err = os.ReadFile(filepath.Join("..", "dashboards", dashboards.BrokerFile))
	require.NoError(t, err)
	brokerDash, err := dashboards.Decode(b)
	require.NoError(t, err)
	exprs := dashboards.PromQL(brokerDash)
	require.NotEmpty(t, exprs)
	for _, e := range exprs {
		names, err := dashboards.MetricNames(e)
		require.NoError(t, err, e)
		require.NotEmpty(t, names, e)
		for _, name := range names {
			require.True(t, exported[name], "%q queries %s, which the broker's /metrics does not have", e, name)
		}
	}
}

// TestDashboardNodesAreTheDemos: the fleet dashboard's node variable offers
// exactly the nodes `make demo` starts, so that the dashboard shows the demo
// as it comes.
func TestDashboardNodesAreTheDemos(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "dashboards", dashboards.FleetFile))
	require.NoError(t, err)
	fleet, err := dashboards.Decode(b)
	require.NoError(t, err)
	var offered []string
	for _, v := range fleet.Templating.List {
		if v.Name == dashboards.NodeVar && v.Query != nil && v.Query.String != nil {
			offered = strings.Split(*v.Query.String, ",")
		}
	}
	require.NotEmpty(t, offered, "the fleet dashboard has a %s variable", dashboards.NodeVar)

	cmd := exec.Command(filepath.Join(bin, "demo"), "--bin", bin, "--dir", t.TempDir(), "--interval", "500ms", "--duration", "4s")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(` (\S+/\S+) +env #\d+`).FindAllStringSubmatch(string(out), -1) {
		seen[m[1]] = true
	}
	var started []string
	for n := range seen {
		started = append(started, n)
	}
	sort.Strings(started)
	sort.Strings(offered)
	require.Equal(t, started, offered, "the demo's nodes (output: %s)", out)
}
