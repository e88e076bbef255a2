// Package decode turns one MQTT message of the farm into what the archive
// stores: a reading, a bridge's health report, or a dead letter saying why the
// message is not one. It checks each payload against the wire contract (the
// types in wire/) strictly, so that a field the archive does not know is kept
// aside rather than silently lost.
package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Reasons a message becomes a dead letter; each is a label of the archive's
// dead-letter counter and the reason column of the dead_letters table.
const (
	ReasonOversized     = "oversized"      // payload longer than the limit
	ReasonTopic         = "bad_topic"      // not a reading or health topic of the contract
	ReasonNotJSON       = "not_json"       // not a JSON object
	ReasonUnknownField  = "unknown_field"  // a key the contract does not have
	ReasonMissingField  = "missing_field"  // a key the contract requires is absent
	ReasonWrongType     = "wrong_type"     // a value of the wrong JSON type, or null where a value is required
	ReasonBadValue      = "bad_value"      // a value the contract rules out (seq 0, an unknown time source, a name)
	ReasonTopicMismatch = "topic_mismatch" // site or node in the payload differ from the topic's
	// ReasonSeqReused is given by the store, not here: a (site, node,
	// stream, seq) already archived with another ts, a numbering that went
	// back.
	ReasonSeqReused = "seq_reused"
)

// Reasons lists every reason, for metrics that start at zero.
var Reasons = []string{ReasonOversized, ReasonTopic, ReasonNotJSON, ReasonUnknownField, ReasonMissingField,
	ReasonWrongType, ReasonBadValue, ReasonTopicMismatch, ReasonSeqReused}

// DefaultMaxPayload bounds a payload: a GPS reading, the largest, is about
// 300 bytes and health about 250; 4 KiB leaves room for growth and keeps one
// message from costing the archive more than a page.
const DefaultMaxPayload = 4096

// Reading is one archived reading: the header and the measured values.
type Reading struct {
	Site, Node, Stream string
	Seq                uint64
	TS                 time.Time
	TimeSource         string
	// Backlog says it came on backlog/<stream> (replayed after an outage).
	Backlog bool
	// Retained says the broker sent it as a stream's retained latest value,
	// as it does on every subscription: a repeat of it is not counted as a
	// duplicate delivery.
	Retained bool
	// Values holds the reading's measured fields, one per column of
	// Columns(Stream): nil for null (a value the sensor did not deliver),
	// float64 or int64.
	Values map[string]any
	// Topic and Payload are the message as received, for a dead letter
	// should the store find the seq taken by another reading.
	Topic   string
	Payload []byte
}

// Health is one health report of a bridge.
type Health struct {
	Site, Node   string
	TS           time.Time
	TimeSource   string
	Version      string
	UptimeS      int64
	SpoolDepth   uint64
	SpoolBytes   int64
	Dropped      uint64
	GPSFix       int
	SensorErrors string // the JSON object as received
}

// DeadLetter is a message that is not what its topic promises.
type DeadLetter struct {
	Topic  string
	Reason string
	Detail string
	// Payload is the message, cut to the payload limit; Size its real length.
	Payload []byte
	Size    int
}

// Item is what one message became: exactly one of its fields is set.
type Item struct {
	Reading *Reading
	Health  *Health
	Dead    *DeadLetter
}

// Message is what decode needs of an MQTT message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Decoder decodes the messages under one topic prefix.
type Decoder struct {
	Prefix     string
	MaxPayload int
}

// payloadTypes are the contract's payloads by stream.
var payloadTypes = map[string]reflect.Type{
	wire.StreamEnv: reflect.TypeFor[wire.Env](),
	wire.StreamGPS: reflect.TypeFor[wire.GPS](),
}

// Streams are the reading streams the archive stores, sorted.
func Streams() []string { return []string{wire.StreamEnv, wire.StreamGPS} }

// Decode classifies one message. It never fails: what is not a reading or a
// health report is a dead letter.
func (d Decoder) Decode(m Message) Item {
	dead := func(reason, format string, args ...any) Item {
		p := m.Payload
		if len(p) > d.MaxPayload {
			p = p[:d.MaxPayload]
		}
		return Item{Dead: &DeadLetter{Topic: m.Topic, Reason: reason, Detail: fmt.Sprintf(format, args...),
			Payload: bytes.Clone(p), Size: len(m.Payload)}}
	}
	if len(m.Payload) > d.MaxPayload {
		return dead(ReasonOversized, "payload of %d bytes, the limit is %d", len(m.Payload), d.MaxPayload)
	}
	site, node, stream, backlog, err := d.parseTopic(m.Topic)
	if err != nil {
		return dead(ReasonTopic, "%v", err)
	}
	if stream == "health" {
		h, reason, err := decodeHealth(m.Payload, site, node)
		if err != nil {
			return dead(reason, "%v", err)
		}
		return Item{Health: h}
	}
	r, reason, err := decodeReading(m.Payload, payloadTypes[stream], site, node)
	if err != nil {
		return dead(reason, "%v", err)
	}
	r.Stream, r.Backlog, r.Retained, r.Topic, r.Payload = stream, backlog, m.Retained, m.Topic, m.Payload
	return Item{Reading: r}
}

// parseTopic splits <prefix>/<site>/<node>/<stream>, .../backlog/<stream>
// and .../health.
func (d Decoder) parseTopic(topic string) (site, node, stream string, backlog bool, err error) {
	parts := strings.Split(topic, "/")
	if len(parts) < 4 || parts[0] != d.Prefix {
		return "", "", "", false, fmt.Errorf("topic %q is not under <%s>/<site>/<node>/", topic, d.Prefix)
	}
	site, node = parts[1], parts[2]
	for _, n := range []struct{ what, name string }{{"site", site}, {"node", node}} {
		if err := wire.ValidateName(n.what, n.name); err != nil {
			return "", "", "", false, fmt.Errorf("topic %q: %w", topic, err)
		}
	}
	rest := parts[3:]
	if len(rest) == 2 && rest[0] == "backlog" {
		backlog, rest = true, rest[1:]
	}
	if len(rest) == 1 {
		if _, ok := payloadTypes[rest[0]]; ok || (rest[0] == "health" && !backlog) {
			return site, node, rest[0], backlog, nil
		}
	}
	return "", "", "", false, fmt.Errorf("topic %q is neither a reading stream (%s), its backlog nor health", topic, strings.Join(Streams(), ", "))
}

// Columns are the measured fields of a stream, in the order of its payload
// type: the JSON keys of the wire type less the header's.
func Columns(stream string) []string {
	var cols []string
	for _, f := range fields(payloadTypes[stream]) {
		if !f.header {
			cols = append(cols, f.key)
		}
	}
	return cols
}

// Column is one measured field as the readings table stores it.
type Column struct {
	Name    string
	Integer bool // an integer (fix, sats); otherwise a float
}

// ValueColumns are the readings table's value columns: every stream's
// measured fields, env's then gps's, each once.
func ValueColumns() []Column {
	var cols []Column
	seen := map[string]bool{}
	for _, s := range Streams() {
		for _, f := range fields(payloadTypes[s]) {
			if f.header || seen[f.key] {
				continue
			}
			seen[f.key] = true
			k := f.kind
			cols = append(cols, Column{Name: f.key, Integer: k == reflect.Int || k == reflect.Int64})
		}
	}
	return cols
}

// field is one JSON key of a payload type.
type field struct {
	key      string
	index    []int
	nullable bool // a pointer: null is a value the sensor did not deliver
	header   bool
	kind     reflect.Kind // of the value, behind a pointer
}

// fields lists a payload type's JSON keys, the embedded Header's included.
func fields(t reflect.Type) []field {
	var out []field
	for _, sf := range reflect.VisibleFields(t) {
		if sf.Anonymous {
			continue
		}
		key, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if key == "" || key == "-" {
			continue
		}
		ft := sf.Type
		nullable := ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Map
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		out = append(out, field{key: key, index: sf.Index, nullable: nullable, header: len(sf.Index) > 1, kind: ft.Kind()})
	}
	return out
}

// checkKeys decodes payload as a JSON object and checks that its keys are
// exactly t's: unknown and missing keys, and null where t has no pointer,
// are refused.
func checkKeys(payload []byte, t reflect.Type) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(payload, &obj); err != nil || obj == nil {
		if err == nil {
			err = errors.New("null is not an object")
		}
		return ReasonNotJSON, fmt.Errorf("not a JSON object: %w", err)
	}
	want := fields(t)
	known := make(map[string]bool, len(want))
	for _, f := range want {
		known[f.key] = true
		raw, ok := obj[f.key]
		if !ok {
			return ReasonMissingField, fmt.Errorf("field %q is missing", f.key)
		}
		if !f.nullable && string(bytes.TrimSpace(raw)) == "null" {
			return ReasonWrongType, fmt.Errorf("field %q is null: it requires a value", f.key)
		}
	}
	for k := range obj {
		if !known[k] {
			return ReasonUnknownField, fmt.Errorf("field %q is not in the contract", k)
		}
	}
	return "", nil
}

// strict decodes payload into v, refusing what checkKeys let through but the
// type does not take (a string for a number, a fraction for an integer).
func strict(payload []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

func checkHeader(site, node, topicSite, topicNode, timeSource string, ts time.Time) (string, error) {
	if site != topicSite || node != topicNode {
		return ReasonTopicMismatch, fmt.Errorf("payload says site %q node %q, the topic %q %q", site, node, topicSite, topicNode)
	}
	switch timeSource {
	case wire.TimeSystem, wire.TimeGPS, wire.TimeUnsynced:
	default:
		return ReasonBadValue, fmt.Errorf("time_source %q is none of %s, %s, %s", timeSource, wire.TimeSystem, wire.TimeGPS, wire.TimeUnsynced)
	}
	if ts.IsZero() {
		return ReasonBadValue, errors.New("ts is the zero time")
	}
	return "", nil
}

func decodeReading(payload []byte, t reflect.Type, site, node string) (*Reading, string, error) {
	if reason, err := checkKeys(payload, t); err != nil {
		return nil, reason, err
	}
	v := reflect.New(t)
	if err := strict(payload, v.Interface()); err != nil {
		return nil, ReasonWrongType, err
	}
	h := v.Interface().(wire.Reading).Head()
	if reason, err := checkHeader(h.Site, h.Node, site, node, h.TimeSource, h.TS.Time); err != nil {
		return nil, reason, err
	}
	if h.Seq == 0 || h.Seq > 1<<62 {
		return nil, ReasonBadValue, fmt.Errorf("seq %d is out of range: it starts at 1", h.Seq)
	}
	r := &Reading{Site: h.Site, Node: h.Node, Seq: h.Seq, TS: h.TS.UTC(), TimeSource: h.TimeSource, Values: map[string]any{}}
	for _, f := range fields(t) {
		if f.header {
			continue
		}
		fv := v.Elem().FieldByIndex(f.index)
		if fv.Kind() == reflect.Pointer {
			if fv.IsNil() {
				r.Values[f.key] = nil
				continue
			}
			fv = fv.Elem()
		}
		switch fv.Kind() {
		case reflect.Float64:
			r.Values[f.key] = fv.Float()
		case reflect.Int, reflect.Int64:
			r.Values[f.key] = fv.Int()
		default:
			return nil, ReasonWrongType, fmt.Errorf("field %q: the archive has no column type for %s", f.key, fv.Kind())
		}
	}
	return r, "", nil
}

func decodeHealth(payload []byte, site, node string) (*Health, string, error) {
	t := reflect.TypeFor[wire.Health]()
	if reason, err := checkKeys(payload, t); err != nil {
		return nil, reason, err
	}
	var h wire.Health
	if err := strict(payload, &h); err != nil {
		return nil, ReasonWrongType, err
	}
	if reason, err := checkHeader(h.Site, h.Node, site, node, h.TimeSource, h.TS.Time); err != nil {
		return nil, reason, err
	}
	se, err := json.Marshal(h.SensorErrors)
	if err != nil {
		return nil, ReasonWrongType, err
	}
	return &Health{Site: h.Site, Node: h.Node, TS: h.TS.UTC(), TimeSource: h.TimeSource, Version: h.Version,
		UptimeS: h.UptimeS, SpoolDepth: h.SpoolDepth, SpoolBytes: h.SpoolBytes, Dropped: h.Dropped, GPSFix: h.GPSFix,
		SensorErrors: string(se)}, "", nil
}
