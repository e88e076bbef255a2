// Package dashboards generates the farm's Grafana dashboards as code with the
// Grafana Foundation SDK: the fleet dashboard, which reads the bridges'
// topics live through Grafana's MQTT data source, and the broker dashboard,
// which reads the broker's Prometheus metrics. `make dashboards` (or
// `go generate ./dashboards`) writes them to fleet.json and broker.json, which
// the provisioning files in provisioning/ load; the tests fail when the
// committed JSON is not what the code generates.
//
// How the MQTT data source behaves shaped the fleet dashboard; README.md says
// what it does and where its source shows it.
package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

//go:generate go run ./gen -dir .

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Data source UIDs: the dashboards refer to their data sources by these, and
// provisioning/datasources/sensorfarm.yaml creates the data sources under them.
const (
	MQTTDatasourceUID        = "sensorfarm-mqtt"
	PrometheusDatasourceUID  = "sensorfarm-prometheus"
	PrometheusDatasourceType = "prometheus"
)

// Files the generator writes, relative to this directory; the dashboards
// provider in provisioning/dashboards loads them.
const (
	FleetFile  = "fleet.json"
	BrokerFile = "broker.json"
)

// Options choose what the generated dashboards start with; the committed
// JSON is generated with DefaultOptions.
type Options struct {
	// Prefix is the first topic level, the default of the prefix variable.
	Prefix string
	// Nodes are the nodes the node variable offers (as <site>/<node>), all
	// under Prefix. The MQTT data source cannot list topics, so the list is
	// part of the dashboard.
	Nodes []wire.Node
}

// DefaultOptions are the nodes `make demo` starts: site demo, pizero-01 to
// pizero-03, under the default prefix.
func DefaultOptions() Options {
	o := Options{Prefix: wire.DefaultPrefix}
	for _, n := range []string{"pizero-01", "pizero-02", "pizero-03"} {
		o.Nodes = append(o.Nodes, wire.Node{Prefix: wire.DefaultPrefix, Site: "demo", Node: n})
	}
	return o
}

// Validate checks the prefix and every node against the wire's name rules, so
// that no dashboard subscribes to a topic no bridge can publish.
func (o Options) Validate() error {
	if err := wire.ValidateName("prefix", o.Prefix); err != nil {
		return err
	}
	if len(o.Nodes) == 0 {
		return fmt.Errorf("no nodes: the node variable needs at least one <site>/<node>")
	}
	for _, n := range o.Nodes {
		if err := n.Validate(); err != nil {
			return err
		}
		if n.Prefix != o.Prefix {
			return fmt.Errorf("node %s/%s is under prefix %q, not %q", n.Site, n.Node, n.Prefix, o.Prefix)
		}
	}
	return nil
}

// ParseNodes reads a comma-separated list of <site>/<node>.
func ParseNodes(prefix, list string) ([]wire.Node, error) {
	var out []wire.Node
	for _, item := range strings.Split(list, ",") {
		site, node, ok := strings.Cut(strings.TrimSpace(item), "/")
		if !ok {
			return nil, fmt.Errorf("node %q: want <site>/<node>", item)
		}
		n := wire.Node{Prefix: prefix, Site: site, Node: node}
		if err := n.Validate(); err != nil {
			return nil, fmt.Errorf("node %q: %w", item, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func mqttRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(MQTTDatasourceType), Uid: cog.ToPtr(MQTTDatasourceUID)}
}

func prometheusRef() common.DataSourceRef {
	return common.DataSourceRef{Type: cog.ToPtr(PrometheusDatasourceType), Uid: cog.ToPtr(PrometheusDatasourceUID)}
}

// Encode writes a dashboard as the committed files hold it: indented JSON
// ending in a newline.
func Encode(d dashboard.Dashboard) ([]byte, error) {
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding dashboard %q: %w", deref(d.Title), err)
	}
	return append(b, '\n'), nil
}

// Decode reads a dashboard strictly into the SDK's types: an unknown field, a
// wrong type or a missing required field anywhere, panel options and queries
// included, is an error.
func Decode(b []byte) (dashboard.Dashboard, error) {
	registerVariants()
	var d dashboard.Dashboard
	if err := sdkErr(d.UnmarshalJSONStrict(b)); err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("decoding dashboard: %w", err)
	}
	// The SDK's strict decoding of the panel list keeps no panel (see
	// sdkErr), so the panels are decoded here, as strictly.
	var raw struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("decoding dashboard: %w", err)
	}
	d.Panels = nil
	for i, p := range raw.Panels {
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(p, &kind); err != nil {
			return dashboard.Dashboard{}, fmt.Errorf("decoding dashboard: panels[%d]: %w", i, err)
		}
		var item dashboard.PanelOrRowPanel
		var err error
		if kind.Type == "row" {
			item.RowPanel = new(dashboard.RowPanel)
			err = sdkErr(item.RowPanel.UnmarshalJSONStrict(p))
			if item.RowPanel.Panels == nil {
				// An expanded row holds no panels: [] as the SDK writes it,
				// which its decoder reads as nil.
				item.RowPanel.Panels = []dashboard.Panel{}
			}
		} else {
			item.Panel = new(dashboard.Panel)
			err = sdkErr(item.Panel.UnmarshalJSONStrict(p))
		}
		if err != nil {
			return dashboard.Dashboard{}, fmt.Errorf("decoding dashboard: panels[%d] (%s): %w", i, kind.Type, err)
		}
		d.Panels = append(d.Panels, item)
	}
	return d, nil
}

// numberPanels gives every panel and row an id, in order: Grafana keys panel
// state (links, repeats, the edit view) by id, and stable ids keep the
// generated JSON the same from one run to the next.
func numberPanels(d *dashboard.Dashboard) {
	for i := range d.Panels {
		id := uint32(i + 1)
		switch p := d.Panels[i]; {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
