package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/geomap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// The SDK's strict decoders (v0.0.22) return their cog.BuildErrors typed even
// when it is empty: a non-nil error that means success. Where the SDK builds a
// value, checks that error and returns nil on "failure", the value is lost
// without a word: every panel of a dashboard, every panel's options, custom
// field config and Prometheus query. The variants the dashboards use are
// therefore registered again here with decoders that read the error list
// for what it is; TestCommittedJSONIsGenerated checks that a decoded dashboard
// encodes back to the same JSON, so a loss elsewhere does not go unnoticed.

// sdkErr turns the SDK's empty error list into no error.
func sdkErr(err error) error {
	if be, ok := err.(cog.BuildErrors); ok && len(be) == 0 {
		return nil
	}
	return err
}

// strictDecoder is what the SDK's generated types implement.
type strictDecoder interface {
	UnmarshalJSONStrict(raw []byte) error
}

// strictly decodes raw into a new T with the SDK's strict decoder.
func strictly[T any, PT interface {
	*T
	strictDecoder
}](raw []byte) (PT, error) {
	v := PT(new(T))
	if err := sdkErr(v.UnmarshalJSONStrict(raw)); err != nil {
		return nil, err
	}
	return v, nil
}

func strictlyAny[T any, PT interface {
	*T
	strictDecoder
}](raw []byte) (any, error) {
	return strictly[T, PT](raw)
}

// registerVariants makes the SDK's runtime know every panel and query type
// the dashboards use, with decoders that keep what they decode. The runtime is
// the SDK's own process-wide registry; registering a variant again replaces
// it with the same.
func registerVariants() {
	plugins.RegisterDefaultPlugins()
	rt := cog.NewRuntime()

	ts := timeseries.VariantConfig()
	ts.StrictOptionsUnmarshaler = strictlyAny[timeseries.Options]
	ts.StrictFieldConfigUnmarshaler = strictlyAny[timeseries.FieldConfig]
	st := stat.VariantConfig()
	st.StrictOptionsUnmarshaler = strictlyAny[stat.Options]
	gm := geomap.VariantConfig()
	gm.StrictOptionsUnmarshaler = strictlyAny[geomap.Options]
	tb := table.VariantConfig()
	tb.StrictOptionsUnmarshaler = strictlyAny[table.Options]
	tb.StrictFieldConfigUnmarshaler = strictlyAny[table.FieldConfig]
	for _, v := range []variants.PanelcfgConfig{ts, st, gm, tb} {
		rt.RegisterPanelcfgVariant(v)
	}

	prom := prometheus.VariantConfig()
	prom.StrictDataqueryUnmarshaler = func(raw []byte) (variants.Dataquery, error) {
		return strictly[prometheus.Dataquery](raw)
	}
	rt.RegisterDataqueryVariant(prom)
	rt.RegisterDataqueryVariant(mqttVariant())
	rt.RegisterDataqueryVariant(sqlVariant())
}
