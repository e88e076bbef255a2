// Package hatest checks Home Assistant MQTT discovery configs against the
// rules Home Assistant applies to them, written down here as data, and
// renders their value templates the way Home Assistant would, for the
// templates the bridge uses. Tests use it on the configs the bridge builds
// and on those a real bridge publishes.
//
// Sources of the rules (read 2026-11):
//   - https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery
//     (topic format, abbreviations, device and origin blocks, empty payload
//     removes an entity)
//   - https://www.home-assistant.io/integrations/sensor.mqtt/ and
//     https://www.home-assistant.io/integrations/device_tracker.mqtt/
//     (configuration variables of each component)
//   - https://www.home-assistant.io/integrations/binary_sensor.mqtt/ and
//     https://www.home-assistant.io/integrations/binary_sensor/#device-class
//     (homeassistant/components/mqtt/binary_sensor.py,
//     homeassistant/components/binary_sensor/__init__.py)
//   - https://www.home-assistant.io/integrations/sensor/#device-class (units
//     per device class), and Home Assistant's source that enforces them:
//     homeassistant/components/mqtt/{schemas,entity,config,sensor,
//     device_tracker,abbreviations}.py and
//     homeassistant/components/sensor/const.py (DEVICE_CLASS_UNITS).
package hatest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// commonKeys are accepted by every entity component: MQTT_BASE_SCHEMA
// (qos, encoding, group), MQTT_AVAILABILITY_SCHEMA and
// MQTT_ENTITY_COMMON_SCHEMA, plus platform (device discovery) and the
// deprecated object_id and its successor default_entity_id.
var commonKeys = []string{
	"qos", "encoding", "group",
	"availability", "availability_mode", "availability_template", "availability_topic",
	"payload_available", "payload_not_available",
	"device", "origin", "enabled_by_default", "entity_category", "icon",
	"json_attributes_topic", "json_attributes_template", "object_id", "default_entity_id",
	"unique_id", "platform",
}

// Component is the schema of one entity component.
type Component struct {
	Required []string
	// Keys are the component's own keys, besides commonKeys.
	Keys []string
	// OneOf, if set, lists keys of which at least one is required.
	OneOf []string
	// Categories are the entity categories allowed.
	Categories []string
}

// Components are the components the bridge announces. sensor is MQTT_RO_SCHEMA
// (state_topic required, value_template) plus sensor.py's PLATFORM_SCHEMA;
// device_tracker needs state_topic or json_attributes_topic
// (device_tracker.py valid_config). A sensor may not be in the config
// category (sensor/__init__.py refuses it); diagnostic is allowed.
var Components = map[string]Component{
	"sensor": {
		Required: []string{"state_topic"},
		Keys: []string{"state_topic", "value_template", "name", "device_class", "expire_after", "force_update",
			"last_reset_value_template", "options", "state_class", "suggested_display_precision", "unit_of_measurement"},
		Categories: []string{"diagnostic"},
	},
	"binary_sensor": {
		Required: []string{"state_topic"},
		Keys: []string{"state_topic", "value_template", "name", "device_class", "expire_after", "force_update",
			"off_delay", "payload_on", "payload_off"},
		Categories: []string{"diagnostic"},
	},
	"device_tracker": {
		Keys: []string{"state_topic", "value_template", "name", "payload_home", "payload_not_home",
			"payload_reset", "source_type"},
		OneOf:      []string{"state_topic", "json_attributes_topic"},
		Categories: []string{"diagnostic"},
	},
}

// DeviceKeys are MQTT_ENTITY_DEVICE_INFO_SCHEMA's keys; identifiers or
// connections must be given.
var DeviceKeys = []string{"identifiers", "connections", "manufacturer", "model", "model_id", "name",
	"hw_version", "serial_number", "sw_version", "via_device", "suggested_area", "configuration_url"}

// OriginKeys are MQTT_ORIGIN_INFO_SCHEMA's; name is required.
var OriginKeys = []string{"name", "sw_version", "support_url"}

// AvailabilityKeys are the keys of one entry of the availability list;
// topic is required.
var AvailabilityKeys = []string{"topic", "payload_available", "payload_not_available", "value_template"}

// DeviceClassUnits are the units Home Assistant allows per sensor device
// class (sensor/const.py DEVICE_CLASS_UNITS), for the classes a weather
// sensor may use.
var DeviceClassUnits = map[string][]string{
	"temperature":          {"°C", "°F", "K"},
	"humidity":             {"%"},
	"atmospheric_pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "inH₂O", "kPa", "mbar", "Pa", "psi"},
	"pressure":             {"cbar", "bar", "hPa", "mmHg", "inHg", "inH₂O", "kPa", "mbar", "Pa", "psi"},
	"distance":             {"km", "m", "cm", "mm", "mi", "nmi", "yd", "in", "ft"},
	"speed":                {"ft/s", "in/d", "in/h", "in/s", "km/h", "kn", "m/s", "mph", "mm/d", "mm/s"},
	// A timestamp has no unit: the state is an ISO 8601 time with a zone.
	"timestamp": {""},
}

// NoStateClass are the sensor device classes Home Assistant refuses a
// state_class for (sensor/__init__.py: a timestamp, a date or an enum is not
// a number to keep statistics of).
var NoStateClass = []string{"timestamp", "date", "enum"}

// BinaryDeviceClasses are binary_sensor's BinarySensorDeviceClass values a
// node may use.
var BinaryDeviceClasses = []string{"connectivity", "problem", "running", "power", "plug", "moving", "presence", "update"}

// StateClasses are sensor/const.py's SensorStateClass values.
var StateClasses = []string{"measurement", "measurement_angle", "total", "total_increasing"}

// SourceTypes are device_tracker's SourceType values.
var SourceTypes = []string{"gps", "router", "bluetooth", "bluetooth_le"}

// Abbreviations maps the abbreviated keys of abbreviations.py that stand for
// keys above to the full key; a config may use either (not both).
var Abbreviations = map[string]string{
	"avty": "availability", "avty_t": "availability_topic", "pl_avail": "payload_available",
	"pl_not_avail": "payload_not_available", "dev": "device", "o": "origin", "dev_cla": "device_class",
	"ent_cat": "entity_category", "exp_aft": "expire_after", "json_attr_t": "json_attributes_topic",
	"json_attr_tpl": "json_attributes_template", "stat_t": "state_topic", "stat_cla": "state_class",
	"src_type": "source_type", "uniq_id": "unique_id", "unit_of_meas": "unit_of_measurement",
	"val_tpl": "value_template", "sug_dsp_prc": "suggested_display_precision", "frc_upd": "force_update",
	"en": "enabled_by_default", "ic": "icon", "p": "platform", "t": "topic",
	// inside device and origin
	"ids": "identifiers", "cns": "connections", "mf": "manufacturer", "mdl": "model", "sw": "sw_version",
	"hw": "hw_version", "sn": "serial_number", "sa": "suggested_area", "cu": "configuration_url",
	"url": "support_url",
}

// topicRe is a discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config,
// node_id and object_id of [a-zA-Z0-9_-].
var topicRe = regexp.MustCompile(`^([^/#+]+)/([a-z_]+)/(?:([a-zA-Z0-9_-]+)/)?([a-zA-Z0-9_-]+)/config$`)

// Topic splits a discovery topic.
func Topic(topic string) (prefix, component, nodeID, objectID string, err error) {
	m := topicRe.FindStringSubmatch(topic)
	if m == nil {
		return "", "", "", "", fmt.Errorf("%s is not <prefix>/<component>/[<node_id>/]<object_id>/config", topic)
	}
	return m[1], m[2], m[3], m[4], nil
}

// expand replaces abbreviated keys by the full ones, refusing a key given
// both ways.
func expand(c map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(c))
	for k, v := range c {
		full := k
		if f, ok := Abbreviations[k]; ok {
			full = f
		}
		if _, dup := out[full]; dup {
			return nil, fmt.Errorf("key %s given twice (abbreviated and not)", full)
		}
		out[full] = v
	}
	return out, nil
}

// Check validates one discovery message against the rules: topic format, a
// JSON object, only keys the component accepts, required keys, the device,
// origin and availability blocks, device class and unit, state class, entity
// category, source type, expire_after, and that a device is given only with a
// unique_id (Home Assistant ignores the device otherwise). An empty payload
// (a removal) is valid on a valid topic.
func Check(topic string, payload []byte) (map[string]any, error) {
	_, component, _, _, err := Topic(topic)
	if err != nil {
		return nil, err
	}
	schema, ok := Components[component]
	if !ok {
		return nil, fmt.Errorf("%s: component %q has no rules here", topic, component)
	}
	if len(payload) == 0 {
		return nil, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(payload, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", topic, err)
	}
	c, err := expand(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", topic, err)
	}
	var errs []string
	fail := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	for k := range c {
		if !slices.Contains(commonKeys, k) && !slices.Contains(schema.Keys, k) {
			fail("key %q is not a %s option", k, component)
		}
	}
	for _, k := range schema.Required {
		if _, ok := c[k]; !ok {
			fail("required key %q missing", k)
		}
	}
	if len(schema.OneOf) > 0 && !slices.ContainsFunc(schema.OneOf, func(k string) bool { _, ok := c[k]; return ok }) {
		fail("one of %v is required", schema.OneOf)
	}
	for _, k := range []string{"state_topic", "json_attributes_topic", "availability_topic"} {
		if v, ok := c[k]; ok {
			if s, isStr := v.(string); !isStr || s == "" || strings.ContainsAny(s, "+#") {
				fail("%s %v is not a topic", k, v)
			}
		}
	}
	if d, ok := c["device"]; ok {
		if _, ok := c["unique_id"]; !ok {
			fail("device without unique_id")
		}
		checkBlock(d, "device", DeviceKeys, fail)
		dm, _ := d.(map[string]any)
		dm, _ = expand(dm)
		ids, _ := dm["identifiers"].([]any)
		if len(ids) == 0 && dm["connections"] == nil {
			fail("device has neither identifiers nor connections")
		}
	}
	if o, ok := c["origin"]; ok {
		checkBlock(o, "origin", OriginKeys, fail)
		if om, _ := o.(map[string]any); om != nil {
			if om, _ = expand(om); om["name"] == nil {
				fail("origin without name")
			}
		}
	}
	if av, ok := c["availability"]; ok {
		if _, both := c["availability_topic"]; both {
			fail("availability and availability_topic are exclusive")
		}
		list, _ := av.([]any)
		if len(list) == 0 {
			fail("availability is not a non-empty list")
		}
		for _, e := range list {
			checkBlock(e, "availability", AvailabilityKeys, fail)
			if em, _ := e.(map[string]any); em != nil {
				if em, _ = expand(em); em["topic"] == nil {
					fail("availability entry without topic")
				}
			}
		}
	}
	if dc, ok := c["device_class"].(string); ok && component == "binary_sensor" {
		if !slices.Contains(BinaryDeviceClasses, dc) {
			fail("binary_sensor device_class %q has no rules here", dc)
		}
	} else if ok {
		if _, has := c["state_class"]; has && slices.Contains(NoStateClass, dc) {
			fail("device_class %s cannot have a state_class", dc)
		}
		units, known := DeviceClassUnits[dc]
		unit, _ := c["unit_of_measurement"].(string)
		switch {
		case !known:
			fail("device_class %q has no rules here", dc)
		case !slices.Contains(units, unit):
			fail("unit %q is not allowed for device_class %s (allowed: %v)", unit, dc, units)
		}
	}
	if sc, ok := c["state_class"]; ok && !slices.Contains(StateClasses, fmt.Sprint(sc)) {
		fail("state_class %v is not one of %v", sc, StateClasses)
	}
	if cat, ok := c["entity_category"]; ok && !slices.Contains(schema.Categories, fmt.Sprint(cat)) {
		fail("entity_category %v is not allowed for %s (allowed: %v)", cat, component, schema.Categories)
	}
	if st, ok := c["source_type"]; ok && !slices.Contains(SourceTypes, fmt.Sprint(st)) {
		fail("source_type %v is not one of %v", st, SourceTypes)
	}
	for _, k := range []string{"expire_after", "suggested_display_precision"} {
		if v, ok := c[k]; ok {
			if f, isNum := v.(float64); !isNum || f != math.Trunc(f) || f < 0 || (k == "expire_after" && f == 0) {
				fail("%s %v is not a positive whole number", k, v)
			}
		}
	}
	if q, ok := c["qos"]; ok && q != 0.0 && q != 1.0 && q != 2.0 {
		fail("qos %v is not 0, 1 or 2", q)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", topic, strings.Join(errs, "; "))
	}
	return c, nil
}

func checkBlock(v any, what string, keys []string, fail func(string, ...any)) {
	m, ok := v.(map[string]any)
	if !ok {
		fail("%s is not an object", what)
		return
	}
	m, err := expand(m)
	if err != nil {
		fail("%s: %v", what, err)
		return
	}
	for k := range m {
		if !slices.Contains(keys, k) {
			fail("key %q is not allowed in %s", k, what)
		}
	}
}

// exprRe is the template subset the bridge uses: one expression reading a
// path of keys from value_json, by attribute or by subscript.
var exprRe = regexp.MustCompile(`^\{\{\s*value_json((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\s*'[^']*'\s*\]|\[\s*"[^"]*"\s*\])+)\s*\}\}$`)
var stepRe = regexp.MustCompile(`\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]`)

// Render renders a value_template against a state payload as Home Assistant
// does for the subset of Jinja the bridge uses ({{ value_json.key }}): the
// payload is parsed as JSON, the key path looked up, and the value printed as
// Python prints it (an integer as is, a float in its shortest round-trip form
// with a ".0" if whole, null as None, a string bare). A missing key is an
// error here; in Home Assistant it renders empty and the state is dropped.
func Render(template string, payload []byte) (string, error) {
	m := exprRe.FindStringSubmatch(strings.TrimSpace(template))
	if m == nil {
		return "", fmt.Errorf("template %q is outside the supported subset {{ value_json.key }}", template)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("payload is not JSON, value_json is undefined: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", fmt.Errorf("payload has more than one JSON value, value_json is undefined")
	}
	for _, step := range stepRe.FindAllStringSubmatch(m[1], -1) {
		key := step[1] + step[2] + step[3]
		obj, ok := v.(map[string]any)
		if !ok {
			return "", fmt.Errorf("%s: not an object at %q", template, key)
		}
		if v, ok = obj[key]; !ok {
			return "", fmt.Errorf("%s: payload has no key %q (Home Assistant would render it empty)", template, key)
		}
	}
	return python(v)
}

// attrsRe is the json_attributes_template subset the bridge uses: a dict
// literal of keys read from value_json, each optionally rounded, as JSON.
var (
	attrsRe = regexp.MustCompile(`^\{\{\s*\{(.*)\}\s*\|\s*tojson\s*\}\}$`)
	entryRe = regexp.MustCompile(`^\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*:\s*value_json\.([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*round\(\s*(\d+)\s*\))?\s*$`)
)

// RenderAttributes renders a json_attributes_template against a payload as
// Home Assistant does for the subset the bridge uses,
// {{ {'k': value_json.k | round(n), ...} | tojson }}, and returns the
// attributes it sets. Jinja's round of a null (a missing value) fails, and
// Home Assistant then keeps the old attributes: an error here.
func RenderAttributes(template string, payload []byte) (map[string]any, error) {
	m := attrsRe.FindStringSubmatch(strings.TrimSpace(template))
	if m == nil {
		return nil, fmt.Errorf("template %q is outside the supported subset {{ {'key': value_json.key | round(n), ...} | tojson }}", template)
	}
	var v map[string]any
	if err := json.Unmarshal(payload, &v); err != nil {
		return nil, fmt.Errorf("payload is not a JSON object, value_json is undefined: %w", err)
	}
	out := map[string]any{}
	for _, e := range strings.Split(m[1], ",") {
		em := entryRe.FindStringSubmatch(e)
		if em == nil {
			return nil, fmt.Errorf("template entry %q is outside the supported subset", e)
		}
		x, ok := v[em[2]]
		if !ok {
			return nil, fmt.Errorf("payload has no key %q", em[2])
		}
		if em[3] != "" {
			f, isNum := x.(float64)
			if !isNum {
				return nil, fmt.Errorf("round of %v (%s): Jinja fails on a value that is not a number", x, em[2])
			}
			n, _ := strconv.Atoi(em[3])
			p := math.Pow(10, float64(n))
			x = math.Round(f*p) / p
		}
		out[em[1]] = x
	}
	return out, nil
}

// python prints a JSON value as Python's str() does after json.loads.
func python(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "None", nil
	case bool:
		if x {
			return "True", nil
		}
		return "False", nil
	case string:
		return x, nil
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			return s, nil // json.loads gives an int
		}
		f, err := x.Float64()
		if err != nil {
			return "", err
		}
		return pythonFloat(f), nil
	}
	return "", fmt.Errorf("value %v is not a scalar; Python would print a repr", v)
}

// pythonFloat is Python's repr of a float: shortest round-trip digits, fixed
// notation with at least one decimal for 1e-4 <= |f| < 1e16, scientific with
// a two-digit exponent otherwise.
func pythonFloat(f float64) string {
	if a := math.Abs(f); a != 0 && (a < 1e-4 || a >= 1e16) {
		s := strconv.FormatFloat(f, 'e', -1, 64)
		mant, exp, _ := strings.Cut(s, "e")
		sign, digits := exp[:1], strings.TrimLeft(exp[1:], "0")
		if len(digits) < 2 {
			digits = strings.Repeat("0", 2-len(digits)) + digits
		}
		return mant + "e" + sign + digits
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}
