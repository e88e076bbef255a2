package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// What a dashboard reads, for the tests that hold it against the farm: the
// topics and payload fields of its MQTT panels, and the PromQL of the others.

// Subscription is what one MQTT panel reads: a topic filter and the payload
// fields it shows.
type Subscription struct {
	Panel string
	// Topic is the query's topic, its dashboard variables not yet replaced.
	Topic string
	// Fields are the fields the panel keeps of each message (its
	// filterFieldsByName transformation), the data source's Time excluded.
	Fields []string
	// Numeric are the fields the panel draws as numbers (graphs, stats
	// without text mappings, map coordinates).
	Numeric []string
}

// Expand replaces ${name} by vars[name] in the topic, as Grafana's front end
// does before the data source subscribes (src/datasource.ts,
// applyTemplateVariables).
func (s Subscription) Expand(vars map[string]string) string {
	t := s.Topic
	for k, v := range vars {
		t = strings.ReplaceAll(t, "${"+k+"}", v)
	}
	return t
}

// Subscriptions lists the MQTT panels of d. A panel whose query is not an
// MQTTQuery (an untyped one: the variant was not registered) or that does not
// say which fields it keeps is an error.
func Subscriptions(d dashboard.Dashboard) ([]Subscription, error) {
	var out []Subscription
	for _, p := range panels(d) {
		if p.Datasource == nil || deref(p.Datasource.Type) != MQTTDatasourceType {
			continue
		}
		title := deref(p.Title)
		var keep []string
		for _, tr := range p.Transformations {
			if tr.Id != filterFieldsByNameID {
				continue
			}
			var o filterFieldsOptions
			if err := recode(tr.Options, &o); err != nil {
				return nil, fmt.Errorf("panel %q: %s: %w", title, tr.Id, err)
			}
			keep = o.Include.Names
		}
		if keep == nil {
			return nil, fmt.Errorf("panel %q keeps every field: it needs a %s transformation", title, filterFieldsByNameID)
		}
		var fields []string
		for _, f := range keep {
			if f != timeField {
				fields = append(fields, f)
			}
		}
		numeric, err := numericFields(p, fields)
		if err != nil {
			return nil, fmt.Errorf("panel %q: %w", title, err)
		}
		for _, t := range p.Targets {
			q, ok := t.(MQTTQuery)
			if !ok {
				return nil, fmt.Errorf("panel %q: query %T is not an MQTT query", title, t)
			}
			out = append(out, Subscription{Panel: title, Topic: q.Topic, Fields: fields, Numeric: numeric})
		}
	}
	return out, nil
}

// numericFields are the fields of p drawn as numbers: all of a time series';
// a geomap's coordinates, traced back through its groupBy to the payload's
// keys; a stat's single field unless a mapping turns it into text.
func numericFields(p dashboard.Panel, fields []string) ([]string, error) {
	switch p.Type {
	case "timeseries":
		return fields, nil
	case "geomap":
		return geomapCoordinates(p)
	case "stat":
		if p.FieldConfig != nil && len(p.FieldConfig.Defaults.Mappings) > 0 {
			return nil, nil
		}
		if len(fields) == 1 {
			return fields, nil
		}
	}
	return nil, nil
}

// geomapCoordinates are the payload fields a geomap's layers place markers
// with.
func geomapCoordinates(p dashboard.Panel) ([]string, error) {
	var opts struct {
		Layers []struct {
			Location *struct {
				Latitude  string `json:"latitude"`
				Longitude string `json:"longitude"`
			} `json:"location"`
		} `json:"layers"`
	}
	b, err := json.Marshal(p.Options)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &opts); err != nil {
		return nil, fmt.Errorf("geomap options: %w", err)
	}
	// groupBy names its aggregates "<field> (<calculation>)".
	source := map[string]string{}
	for _, tr := range p.Transformations {
		if tr.Id != groupByID {
			continue
		}
		var g groupByOptions
		if err := recode(tr.Options, &g); err != nil {
			return nil, fmt.Errorf("%s: %w", tr.Id, err)
		}
		for f, agg := range g.Fields {
			for _, calc := range agg.Aggregations {
				source[f+" ("+calc+")"] = f
			}
		}
	}
	var out []string
	for _, l := range opts.Layers {
		if l.Location == nil {
			continue
		}
		for _, name := range []string{l.Location.Latitude, l.Location.Longitude} {
			f, ok := source[name]
			if !ok {
				return nil, fmt.Errorf("geomap layer places markers by %q, which no transformation makes", name)
			}
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("geomap has no layer placed by coordinates")
	}
	return out, nil
}

// PromQL lists the expressions of d's Prometheus queries.
func PromQL(d dashboard.Dashboard) []string {
	var out []string
	for _, p := range panels(d) {
		for _, t := range p.Targets {
			switch q := t.(type) {
			case prometheus.Dataquery:
				out = append(out, q.Expr)
			case *prometheus.Dataquery:
				out = append(out, q.Expr)
			}
		}
	}
	return out
}

func panels(d dashboard.Dashboard) []dashboard.Panel {
	var out []dashboard.Panel
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			out = append(out, *p.Panel)
		case p.RowPanel != nil:
			out = append(out, p.RowPanel.Panels...)
		}
	}
	return out
}

// recode turns the untyped options the SDK decodes into our typed ones,
// refusing keys they do not know.
func recode(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(to)
}

// FieldKind is the type of field the MQTT data source makes of a value.
type FieldKind string

// Field kinds of pkg/mqtt/framer.go.
const (
	KindNumber FieldKind = "number"
	KindString FieldKind = "string"
	KindBool   FieldKind = "bool"
	KindJSON   FieldKind = "json" // a nested object or an array
	KindNull   FieldKind = "null" // makes no field until a value comes
)

// PayloadFields are the fields the MQTT data source makes of one message
// (pkg/mqtt/framer.go): one per top-level key of a JSON object, each named by
// its key; for anything else one field named Value, a string unless the
// payload is a JSON number, string or boolean.
func PayloadFields(payload []byte) map[string]FieldKind {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err == nil && obj != nil {
		out := make(map[string]FieldKind, len(obj))
		for k, v := range obj {
			out[k] = kindOf(v)
		}
		return out
	}
	if json.Valid(payload) {
		return map[string]FieldKind{rawValueField: kindOf(payload)}
	}
	return map[string]FieldKind{rawValueField: KindString}
}

func kindOf(v json.RawMessage) FieldKind {
	v = bytes.TrimSpace(v)
	switch {
	case len(v) == 0:
		return KindNull
	case v[0] == '"':
		return KindString
	case v[0] == '{' || v[0] == '[':
		return KindJSON
	case bytes.Equal(v, []byte("null")):
		return KindNull
	case bytes.Equal(v, []byte("true")) || bytes.Equal(v, []byte("false")):
		return KindBool
	default:
		return KindNumber
	}
}

// TopicMatches reports whether an MQTT topic filter matches a topic name
// (MQTT 3.1.1, 4.7: + one level, # the rest).
func TopicMatches(filter, topic string) bool {
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) || (level != "+" && level != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

// Check holds d's MQTT panels against the messages of a farm: every panel's
// topic, expanded with vars, must match at least one topic in msgs, and every
// field the panel keeps must be a field the data source makes of each
// message it matches, a number where the panel draws a number. msgs maps a
// topic to the payloads seen on it.
func Check(subs []Subscription, vars map[string]string, msgs map[string][][]byte) error {
	for _, s := range subs {
		filter := s.Expand(vars)
		if strings.Contains(filter, "${") {
			return fmt.Errorf("panel %q: topic %q has a variable not given", s.Panel, filter)
		}
		matched := 0
		for topic, payloads := range msgs {
			if !TopicMatches(filter, topic) {
				continue
			}
			for _, p := range payloads {
				matched++
				got := PayloadFields(p)
				for _, f := range s.Fields {
					k, ok := got[f]
					if !ok {
						return fmt.Errorf("panel %q: field %q is not in the payload on %s: %s", s.Panel, f, topic, p)
					}
					if k == KindNull || k == KindJSON {
						return fmt.Errorf("panel %q: field %q on %s is %s, which the data source cannot show: %s", s.Panel, f, topic, k, p)
					}
				}
				for _, f := range s.Numeric {
					if got[f] != KindNumber {
						return fmt.Errorf("panel %q: field %q on %s is %s, not a number: %s", s.Panel, f, topic, got[f], p)
					}
				}
			}
		}
		if matched == 0 {
			return fmt.Errorf("panel %q: no message on %q", s.Panel, filter)
		}
	}
	return nil
}
