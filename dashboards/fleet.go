package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/geomap"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Names of the fleet dashboard's variables.
const (
	// PrefixVar holds the first topic level.
	PrefixVar = "prefix"
	// NodeVar holds <site>/<node>: the rows repeat over it, one per node.
	NodeVar = "node"
)

// Fields the MQTT data source makes besides the payload's keys
// (pkg/mqtt/framer.go): Time, when the message reached Grafana, and Value, the
// whole payload of a message that is not a JSON object (status's
// online/offline).
const (
	timeField     = "Time"
	rawValueField = "Value"
)

// nodeTopic is the topic a panel subscribes to for the node of its row:
// wire's topic for the node, with the prefix and <site>/<node> variables in
// place of the names. Only the part after the node's root comes from wire, so
// the dashboard follows the contract's topic tree.
func nodeTopic(topic func(wire.Node) string) string {
	return "${" + PrefixVar + "}/${" + NodeVar + "}" + afterRoot(topic)
}

// fleetTopic is the topic filter of a panel that reads every node at once.
func fleetTopic(topic func(wire.Node) string) string {
	return "${" + PrefixVar + "}/+/+" + afterRoot(topic)
}

func afterRoot(topic func(wire.Node) string) string {
	n := wire.Node{Prefix: "p", Site: "s", Node: "n"}
	return strings.TrimPrefix(topic(n), n.Root())
}

func live(stream string) func(wire.Node) string {
	return func(n wire.Node) string { return n.Live(stream) }
}

// Fleet is the dashboard of the bridges: a map of every node's last GPS fix,
// then one row per node with its status, readings and health. Everything
// comes live from the broker through the MQTT data source.
func Fleet(o Options) (dashboard.Dashboard, error) {
	if err := o.Validate(); err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("fleet dashboard: %w", err)
	}
	nodes := make([]string, len(o.Nodes))
	for i, n := range o.Nodes {
		nodes[i] = n.Site + "/" + n.Node
	}

	b := dashboard.NewDashboardBuilder("Sensorfarm fleet").
		Uid("sensorfarm-fleet").
		Description("Live readings, GPS positions and bridge health of every node, straight from the broker through Grafana's MQTT data source. "+
			"Only what arrives while the dashboard is open is shown: the data source keeps no history.").
		Tags([]string{"sensorfarm", "mqtt"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-15m", "now").
		LiveNow(true).
		WithVariable(dashboard.NewTextBoxVariableBuilder(PrefixVar).
			Label("Topic prefix").
			Description("First topic level: the bridges' and the broker's --prefix.").
			DefaultValue(dashboard.StringOrMap{String: cog.ToPtr(o.Prefix)}).
			Current(option(o.Prefix))).
		WithVariable(dashboard.NewCustomVariableBuilder(NodeVar).
			Label("Node").
			Description("<site>/<node> of the bridges to show, one row each. The MQTT data source cannot list topics: " +
				"add a node here (comma-separated) or regenerate with go run ./dashboards/gen -nodes.").
			Values(dashboard.StringOrMap{String: cog.ToPtr(strings.Join(nodes, ","))}).
			Multi(true).
			IncludeAll(true).
			Current(dashboard.VariableOption{
				Selected: cog.ToPtr(true),
				Text:     dashboard.StringOrArrayOfString{ArrayOfString: []string{"All"}},
				Value:    dashboard.StringOrArrayOfString{ArrayOfString: []string{"$__all"}},
			})).
		WithPanel(gpsMap())

	b.WithRow(dashboard.NewRowBuilder("${" + NodeVar + "}").Repeat(NodeVar))
	for _, p := range nodePanels() {
		b.WithPanel(p)
	}
	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("fleet dashboard: %w", err)
	}
	numberPanels(&d)
	return d, nil
}

func option(v string) dashboard.VariableOption {
	return dashboard.VariableOption{
		Selected: cog.ToPtr(true),
		Text:     dashboard.StringOrArrayOfString{String: cog.ToPtr(v)},
		Value:    dashboard.StringOrArrayOfString{String: cog.ToPtr(v)},
	}
}

func mqttTarget(topic string) *MQTTQueryBuilder {
	return NewMQTTQueryBuilder(topic).RefID("A").Datasource(mqttRef())
}

// gpsMap shows where every node is. One wildcard subscription serves the
// whole farm: the data source merges its messages into one frame without
// their topics, but each GPS payload names its site and node, so grouping by
// them gives each node's last fix.
func gpsMap() cog.Builder[dashboard.Panel] {
	const lat, lon = "latitude", "longitude"
	return geomap.NewPanelBuilder().
		Title("GPS positions").
		Description("Each node's last fix received while this dashboard is open (the gps topics are retained, so that is at once).").
		Datasource(mqttRef()).
		WithTarget(mqttTarget(fleetTopic(live(wire.StreamGPS)))).
		WithTransformation(keepFields("site", "node", lat, lon, "gps_accuracy", "ts")).
		WithTransformation(lastBy([]string{"site", "node"}, []string{lat, lon, "gps_accuracy", "ts"})).
		Height(10).Span(24).
		View(geomap.NewMapViewConfigBuilder().Id("fit").AllLayers(true).Padding(10).MaxZoom(16)).
		Controls(geomap.NewControlsOptionsBuilder().ShowZoom(true).MouseWheelZoom(true).ShowScale(true)).
		Basemap(common.NewMapLayerOptionsBuilder().Type("default").Name("Basemap")).
		Layers([]cog.Builder[common.MapLayerOptions]{
			common.NewMapLayerOptionsBuilder().
				Type("markers").
				Name("Nodes").
				Tooltip(true).
				Location(common.NewFrameGeometrySourceBuilder().
					Mode(common.FrameGeometrySourceModeCoords).
					Latitude(lastOf(lat)).
					Longitude(lastOf(lon))).
				Config(markerConfig{
					ShowLegend: false,
					Style: markerStyle{
						Size:  fixedNumber{Fixed: 8},
						Color: fixedColor{Fixed: "green"},
						Text:  textFromField{Mode: "field", Field: "node"},
					},
				}),
		}).
		Tooltip(geomap.NewTooltipOptionsBuilder().Mode(geomap.TooltipModeDetails))
}

// markerConfig is the markers layer's config (the SDK leaves it untyped).
type markerConfig struct {
	ShowLegend bool        `json:"showLegend"`
	Style      markerStyle `json:"style"`
}

type markerStyle struct {
	Size  fixedNumber   `json:"size"`
	Color fixedColor    `json:"color"`
	Text  textFromField `json:"text"`
}

type fixedNumber struct {
	Fixed float64 `json:"fixed"`
}

type fixedColor struct {
	Fixed string `json:"fixed"`
}

type textFromField struct {
	Mode  string `json:"mode"`
	Field string `json:"field"`
}

// nodePanels are the panels of one node's row. Each subscribes to one topic
// of its node: a wildcard would merge the nodes into one series.
func nodePanels() []cog.Builder[dashboard.Panel] {
	envTopic := nodeTopic(live(wire.StreamEnv))
	healthTopic := nodeTopic(wire.Node.Health)
	return []cog.Builder[dashboard.Panel]{
		stat.NewPanelBuilder().
			Orientation(common.VizOrientationAuto).
			Title("Status").
			Description("online while the bridge is connected; offline after a clean stop or, from the broker, as its will.").
			Datasource(mqttRef()).
			WithTarget(mqttTarget(nodeTopic(wire.Node.Status))).
			WithTransformation(keepFields(rawValueField)).
			Height(6).Span(3).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields(onlyFields(rawValueField))).
			ColorMode(common.BigValueColorModeBackground).
			GraphMode(common.BigValueGraphModeNone).
			Mappings([]dashboard.ValueMapping{valueMap(map[string]string{
				wire.StatusOnline:  "green",
				wire.StatusOffline: "red",
			})}),
		envSeries("Temperature", "temperature_c", "celsius", envTopic),
		envSeries("Humidity", "humidity_pct", "humidity", envTopic),
		envSeries("Pressure", "pressure_hpa", "pressurehpa", envTopic),
		stat.NewPanelBuilder().
			Orientation(common.VizOrientationAuto).
			Title("Spool depth").
			Description("Readings kept on the bridge's disk until the broker acknowledges them: above a few, the bridge is catching up after an outage.").
			Datasource(mqttRef()).
			WithTarget(mqttTarget(healthTopic)).
			WithTransformation(keepFields("spool_depth")).
			Height(4).Span(6).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields(onlyFields("spool_depth"))).
			GraphMode(common.BigValueGraphModeArea).
			Thresholds(thresholds(100, "orange")),
		stat.NewPanelBuilder().
			Orientation(common.VizOrientationAuto).
			Title("Dropped").
			Description("Readings taken that will never be delivered, since the spool was made: anything above 0 is data lost.").
			Datasource(mqttRef()).
			WithTarget(mqttTarget(healthTopic)).
			WithTransformation(keepFields("dropped")).
			Height(4).Span(6).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields(onlyFields("dropped"))).
			ColorMode(common.BigValueColorModeBackground).
			GraphMode(common.BigValueGraphModeNone).
			Thresholds(thresholds(1, "red")),
		stat.NewPanelBuilder().
			Orientation(common.VizOrientationAuto).
			Title("GPS fix").
			Description("Fix mode of the receiver's last epoch.").
			Datasource(mqttRef()).
			WithTarget(mqttTarget(healthTopic)).
			WithTransformation(keepFields("gps_fix")).
			Height(4).Span(6).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields(onlyFields("gps_fix"))).
			ColorMode(common.BigValueColorModeValue).
			GraphMode(common.BigValueGraphModeNone).
			Mappings([]dashboard.ValueMapping{valueMapText(map[string][2]string{
				"0": {"no fix", "orange"},
				"2": {"2D", "yellow"},
				"3": {"3D", "green"},
			})}),
		stat.NewPanelBuilder().
			Orientation(common.VizOrientationAuto).
			Title("Last env sample").
			Description("When the last env reading was taken and which clock stamped it (system: NTP; gps; unsynced: not to be trusted). " +
				"The graphs are drawn at arrival time, which the MQTT data source stamps.").
			Datasource(mqttRef()).
			WithTarget(mqttTarget(envTopic)).
			WithTransformation(keepFields("ts", "time_source")).
			Height(4).Span(6).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}).Fields(onlyFields("ts", "time_source"))).
			TextMode(common.BigValueTextModeValue).
			ColorMode(common.BigValueColorModeNone).
			GraphMode(common.BigValueGraphModeNone),
	}
}

// envSeries graphs one field of the env payload.
func envSeries(title, field, unit, topic string) cog.Builder[dashboard.Panel] {
	return timeseries.NewPanelBuilder().
		Title(title).
		Datasource(mqttRef()).
		WithTarget(mqttTarget(topic)).
		WithTransformation(keepFields(field)).
		Height(6).Span(7).
		Unit(unit).
		Decimals(1).
		SpanNulls(common.BoolOrFloat64{Bool: cog.ToPtr(true)}).
		ShowPoints(common.VisibilityModeNever).
		Legend(common.NewVizLegendOptionsBuilder().ShowLegend(false).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom))
}

// valueMap colours each text value and shows it as is.
func valueMap(colors map[string]string) dashboard.ValueMapping {
	texts := map[string][2]string{}
	for v, c := range colors {
		texts[v] = [2]string{v, c}
	}
	return valueMapText(texts)
}

// valueMapText shows each value as a text, in a colour: value → {text, colour}.
func valueMapText(m map[string][2]string) dashboard.ValueMapping {
	vm := dashboard.NewValueMap()
	for v, tc := range m {
		vm.Options[v] = dashboard.ValueMappingResult{Text: cog.ToPtr(tc[0]), Color: cog.ToPtr(tc[1])}
	}
	return dashboard.ValueMapping{ValueMap: vm}
}

// thresholds is green below at, color from it.
func thresholds(at float64, color string) cog.Builder[dashboard.ThresholdsConfig] {
	return dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps([]dashboard.Threshold{
		{Value: nil, Color: "green"},
		{Value: cog.ToPtr(at), Color: color},
	})
}
