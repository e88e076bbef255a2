package dashboards

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
)

// MQTTDatasourceType is the plugin id of Grafana's MQTT data source
// (github.com/grafana/mqtt-datasource, src/plugin.json).
const MQTTDatasourceType = "grafana-mqtt-datasource"

// MQTTQuery is one query of the MQTT data source: the plugin's MqttQuery
// (src/types.ts) as a dashboard stores it. The SDK has no type for this
// plugin, so this one implements the SDK's data query interface the way its
// own prometheus and testdata queries do; the plugin's streamingKey is left
// out because its front end computes it for every run (src/datasource.ts).
type MQTTQuery struct {
	RefID      string                `json:"refId"`
	Datasource *common.DataSourceRef `json:"datasource,omitempty"`
	Hide       *bool                 `json:"hide,omitempty"`
	// Topic is the MQTT topic filter to subscribe to; dashboard variables
	// in it are replaced by the front end before it is sent.
	Topic string `json:"topic"`
}

var _ variants.Dataquery = MQTTQuery{}

// ImplementsDataqueryVariant marks MQTTQuery as a data query for the SDK.
func (MQTTQuery) ImplementsDataqueryVariant() {}

// DataqueryType is the data source type the SDK's runtime files it under.
func (MQTTQuery) DataqueryType() string { return MQTTDatasourceType }

// Validate refuses a query the data source would answer with "topic path is
// required" (pkg/plugin/query.go) or Grafana could not address.
func (q MQTTQuery) Validate() error {
	var errs cog.BuildErrors
	if q.RefID == "" {
		errs = append(errs, cog.MakeBuildErrors("refId", errors.New("is empty"))...)
	}
	if q.Topic == "" {
		errs = append(errs, cog.MakeBuildErrors("topic", errors.New("is empty: the MQTT data source needs a topic"))...)
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// Equals compares two queries field by field.
func (q MQTTQuery) Equals(other variants.Dataquery) bool {
	o, ok := other.(MQTTQuery)
	if !ok {
		return false
	}
	if (q.Datasource == nil) != (o.Datasource == nil) || (q.Hide == nil) != (o.Hide == nil) {
		return false
	}
	if q.Datasource != nil && !q.Datasource.Equals(*o.Datasource) {
		return false
	}
	if q.Hide != nil && *q.Hide != *o.Hide {
		return false
	}
	return q.RefID == o.RefID && q.Topic == o.Topic
}

// mqttVariant tells the SDK's runtime how to decode a query of the MQTT data
// source, so that a dashboard's targets decode into MQTTQuery rather than an
// untyped map.
func mqttVariant() variants.DataqueryConfig {
	return variants.DataqueryConfig{
		Identifier: MQTTDatasourceType,
		DataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
			var q MQTTQuery
			if err := json.Unmarshal(raw, &q); err != nil {
				return nil, fmt.Errorf("MQTT query: %w", err)
			}
			return q, nil
		},
		StrictDataqueryUnmarshaler: func(raw []byte) (variants.Dataquery, error) {
			var q MQTTQuery
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&q); err != nil {
				return nil, fmt.Errorf("MQTT query: %w", err)
			}
			if err := q.Validate(); err != nil {
				return nil, fmt.Errorf("MQTT query: %w", err)
			}
			return q, nil
		},
	}
}

// MQTTQueryBuilder builds an MQTTQuery, as the SDK's query builders do.
type MQTTQueryBuilder struct{ q MQTTQuery }

var _ cog.Builder[variants.Dataquery] = (*MQTTQueryBuilder)(nil)

// NewMQTTQueryBuilder starts a query of topic.
func NewMQTTQueryBuilder(topic string) *MQTTQueryBuilder {
	return &MQTTQueryBuilder{q: MQTTQuery{Topic: topic}}
}

// RefID names the query within its panel.
func (b *MQTTQueryBuilder) RefID(id string) *MQTTQueryBuilder {
	b.q.RefID = id
	return b
}

// Datasource sets the data source the query runs on.
func (b *MQTTQueryBuilder) Datasource(ref common.DataSourceRef) *MQTTQueryBuilder {
	b.q.Datasource = &ref
	return b
}

// Build implements cog.Builder.
func (b *MQTTQueryBuilder) Build() (variants.Dataquery, error) {
	if err := b.q.Validate(); err != nil {
		return nil, err
	}
	return b.q, nil
}
