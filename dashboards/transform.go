package dashboards

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Grafana transformation ids and options used by the fleet dashboard, typed
// here because the SDK leaves a transformation's options untyped.
const (
	filterFieldsByNameID = "filterFieldsByName"
	groupByID            = "groupBy"
)

// filterFieldsOptions keeps only the named fields: every MQTT panel says
// exactly which payload keys it shows, since the data source makes a field of
// every top-level key (seq and the rest included).
type filterFieldsOptions struct {
	Include namesMatcher `json:"include"`
}

type namesMatcher struct {
	Names []string `json:"names"`
}

// groupByOptions groups rows by some fields and aggregates the others; the
// aggregated fields are named "<field> (<calculation>)".
type groupByOptions struct {
	Fields map[string]groupByField `json:"fields"`
}

type groupByField struct {
	Operation    string   `json:"operation"` // "groupby" or "aggregate"
	Aggregations []string `json:"aggregations"`
}

// keepFields is the transformation that passes only names (and the data
// source's own Time field) on to the panel.
func keepFields(names ...string) dashboard.DataTransformerConfig {
	return dashboard.DataTransformerConfig{
		Id:      filterFieldsByNameID,
		Options: filterFieldsOptions{Include: namesMatcher{Names: append([]string{timeField}, names...)}},
	}
}

// lastBy is the transformation that keeps, per distinct value of the by
// fields, the last value of each of the fields in last.
func lastBy(by []string, last []string) dashboard.DataTransformerConfig {
	o := groupByOptions{Fields: map[string]groupByField{}}
	for _, f := range by {
		o.Fields[f] = groupByField{Operation: "groupby", Aggregations: []string{}}
	}
	for _, f := range last {
		o.Fields[f] = groupByField{Operation: "aggregate", Aggregations: []string{"last"}}
	}
	return dashboard.DataTransformerConfig{Id: groupByID, Options: o}
}

// lastOf names the field groupBy makes of the last value of field.
func lastOf(field string) string { return field + " (last)" }

// onlyFields is the regular expression a stat panel's reduceOptions.fields
// takes to show exactly these fields, strings included (by default a stat
// shows numeric fields only).
func onlyFields(names ...string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	return fmt.Sprintf("/^(%s)$/", strings.Join(quoted, "|"))
}
