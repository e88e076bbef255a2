// Package discovery announces a bridge to Home Assistant through MQTT
// discovery: one retained config per entity under the discovery prefix, all
// sharing one device, each reading the bridge's own retained topics (env,
// gps, health, status) directly, so Home Assistant needs nothing but its MQTT
// integration pointed at the broker.
//
// Configs builds the messages; Announcer decides when they are sent: on every
// (re)connection, whenever Home Assistant's birth message says it (re)started,
// and when a sensor appears or goes away.
package discovery

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Home Assistant components the bridge announces.
const (
	ComponentSensor        = "sensor"
	ComponentBinarySensor  = "binary_sensor"
	ComponentDeviceTracker = "device_tracker"
)

// Options describe what to announce.
type Options struct {
	// Prefix is the discovery prefix, wire.HADiscoveryPrefix unless Home
	// Assistant was configured otherwise.
	Prefix string
	Node   wire.Node
	// Version is the bridge's version, the device's sw_version.
	Version string
	// Interval is the time between env readings and HealthEvery the time
	// between health reports: a value older than a few of them expires in
	// Home Assistant (expire_after) rather than pass for current.
	Interval    time.Duration
	HealthEvery time.Duration
	// RemoveGone publishes an empty config, which removes the entity from
	// Home Assistant, for a sensor that went away or is disabled. Off, its
	// entities stay (shown unavailable once their value expires), so a
	// sensor that comes back keeps its history and customisations.
	RemoveGone bool
}

// expiryIntervals is how many reading intervals without a value make Home
// Assistant show a sensor as unavailable: one late reading is not an outage.
// minExpiry is the least it waits, longer than a Wi-Fi blip: a roam or a
// re-association takes seconds, an access point's reboot one to three
// minutes, and meanwhile the bridge keeps its readings in the spool. A real
// outage shows sooner anyway: the broker publishes the bridge's will
// (offline, so every entity is unavailable) about 45 s after the connection
// dies (1.5 keepalives of 30 s). expire_after is left for what the will does
// not tell: a bridge that stays connected but stops reading.
const (
	expiryIntervals = 3
	minExpiry       = 5 * time.Minute
)

// attributesTemplate gives the device tracker the three attributes it reads,
// and only those, rounded: coordinates to 5 decimals (about 1 m, below any
// receiver's accuracy) and the accuracy to whole metres. Home Assistant's
// recorder writes a row whenever an entity's attributes change; the whole
// gps payload as attributes changes every fix (seq, ts), a row per node per
// second.
const attributesTemplate = "{{ {'latitude': value_json.latitude | round(5), 'longitude': value_json.longitude | round(5), " +
	"'gps_accuracy': value_json.gps_accuracy | round(0)} | tojson }}"

// Message is one discovery config, published retained at QoS 1. An empty
// Payload removes the entity.
type Message struct {
	Topic   string
	Payload []byte
}

// Presence is what the bridge knows about one sensor.
type Presence int

const (
	// Unknown: not (yet) opened since the bridge started. Nothing is
	// announced or removed: a sensor still being opened, or one that has not
	// answered yet, is no reason to touch Home Assistant's entities.
	Unknown Presence = iota
	// Present: the sensor works (or did a moment ago).
	Present
	// Gone: it worked since the bridge started and has stopped.
	Gone
	// Disabled: the configuration says the node has none (--gps=false).
	Disabled
)

func (p Presence) String() string {
	switch p {
	case Present:
		return "present"
	case Gone:
		return "gone"
	case Disabled:
		return "disabled"
	}
	return "unknown"
}

// Sensors is the presence of each sensor whose entities depend on it.
type Sensors struct {
	BME280, GPS Presence
}

// entity is one Home Assistant entity: its component, object id (the last
// level of its discovery topic and of its unique_id), and the sensor it needs
// ("" for the bridge's own diagnostics, always announced).
type entity struct {
	component string
	objectID  string
	sensor    string
	config    map[string]any
}

// payloadKey returns the JSON key of the field of a wire payload struct, so
// that templates name exactly what the bridge writes. It panics on a field
// that does not exist, which every test of this package would show.
func payloadKey(payload any, field string) string {
	f, ok := reflect.TypeOf(payload).FieldByName(field)
	if !ok {
		panic(fmt.Sprintf("discovery: %T has no field %s", payload, field))
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// valueTemplate reads one key of the flat JSON on the state topic. A null
// (a value the sensor did not deliver) renders as "None", which Home
// Assistant's MQTT sensor takes as "unknown".
func valueTemplate(key string) string { return "{{ value_json." + key + " }}" }

// seconds rounds a duration up to whole seconds, at least one, as
// expire_after wants.
func seconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// entities lists what the bridge announces; its fields come from the wire
// payloads, its units from their documented units (wire/reading.go).
func entities(o Options) []entity {
	n := o.Node
	envExpiry := seconds(max(minExpiry, expiryIntervals*o.Interval))
	healthExpiry := seconds(max(minExpiry, expiryIntervals*o.HealthEvery))
	measurement := func(name, field, deviceClass, unit string, precision int) map[string]any {
		return map[string]any{
			"name":                        name,
			"state_topic":                 n.Live(wire.StreamEnv),
			"value_template":              valueTemplate(payloadKey(wire.Env{}, field)),
			"device_class":                deviceClass,
			"unit_of_measurement":         unit,
			"state_class":                 "measurement",
			"suggested_display_precision": precision,
			"expire_after":                envExpiry,
		}
	}
	diagnostic := func(name, field, stateClass, unit, icon string) map[string]any {
		c := map[string]any{
			"name":            name,
			"state_topic":     n.Health(),
			"value_template":  valueTemplate(payloadKey(wire.Health{}, field)),
			"entity_category": "diagnostic",
			"icon":            icon,
			"expire_after":    healthExpiry,
		}
		if stateClass != "" {
			c["state_class"] = stateClass
		}
		if unit != "" {
			c["unit_of_measurement"] = unit
		}
		return c
	}
	return []entity{
		// Units as the payload carries them: temperature_c in °C,
		// humidity_pct in %, pressure_hpa in hPa, rounded to the decimals
		// shown.
		{ComponentSensor, "temperature", wire.SensorBME280, measurement("Temperature", "TemperatureC", "temperature", "°C", 2)},
		{ComponentSensor, "humidity", wire.SensorBME280, measurement("Humidity", "HumidityPct", "humidity", "%", 1)},
		{ComponentSensor, "pressure", wire.SensorBME280, measurement("Pressure", "PressureHPa", "atmospheric_pressure", "hPa", 2)},
		// The tracker reads latitude, longitude and gps_accuracy from its
		// attributes, which attributesTemplate selects from the gps
		// payload. No state_topic: Home Assistant deprecates it for device
		// trackers (a location, not home/not_home).
		{ComponentDeviceTracker, "location", wire.SensorPA1010D, map[string]any{
			"name":                     "Location",
			"json_attributes_topic":    n.Live(wire.StreamGPS),
			"json_attributes_template": attributesTemplate,
			"source_type":              "gps",
			"icon":                     "mdi:crosshairs-gps",
		}},
		{ComponentSensor, "gps_fix", wire.SensorPA1010D, diagnostic("GPS fix mode", "GPSFix", "", "", "mdi:crosshairs-question")},
		{ComponentSensor, "spool_depth", "", diagnostic("Spool depth", "SpoolDepth", "measurement", "readings", "mdi:tray-full")},
		// dropped is a counter: it never decreases while the spool lives
		// (a reading evicted while in flight is counted once its outcome
		// is known, never counted and taken back), and only a deleted
		// spool starts it again at 0. That is total_increasing's meaning:
		// a decrease is a new meter cycle. total would read the reset as
		// readings un-dropped.
		{ComponentSensor, "dropped", "", diagnostic("Readings dropped", "Dropped", "total_increasing", "readings", "mdi:delete-alert")},
		// Connectivity and last seen are about the bridge's presence, so
		// they are the two entities without the status availability: they
		// must show "disconnected" and the last report while it is
		// offline, not "unavailable".
		{ComponentBinarySensor, "connectivity", "", map[string]any{
			"name":            "Connectivity",
			"state_topic":     n.Status(),
			"payload_on":      wire.StatusOnline,
			"payload_off":     wire.StatusOffline,
			"device_class":    "connectivity",
			"entity_category": "diagnostic",
		}},
		{ComponentSensor, "last_seen", "", map[string]any{
			"name":            "Last seen",
			"state_topic":     n.Health(),
			"value_template":  valueTemplate(payloadKey(wire.Health{}, "TS")),
			"device_class":    "timestamp",
			"entity_category": "diagnostic",
			"icon":            "mdi:clock-check-outline",
		}},
	}
}

// alwaysAvailable are the entities that carry no availability: see above.
var alwaysAvailable = map[string]bool{"connectivity": true, "last_seen": true}

// device is the device block every entity shares: Home Assistant groups the
// entities under one device per node. The identifier is the node's discovery
// id, derived from its names: stable across restarts and re-installs.
func device(o Options) map[string]any {
	return map[string]any{
		"identifiers":  []string{o.Node.DiscoveryID()},
		"name":         o.Node.Site + " " + o.Node.Node,
		"model":        "sensorfarm bridge",
		"manufacturer": "sensorfarm",
		"sw_version":   o.Version,
	}
}

// Configs returns the discovery messages for the sensors' presence: a config
// for each entity whose sensor is present or that needs none, and, with
// RemoveGone, an empty payload for each entity of a sensor gone or disabled.
// Entities of a sensor whose presence is unknown are left alone.
func Configs(o Options, s Sensors) []Message {
	presence := map[string]Presence{wire.SensorBME280: s.BME280, wire.SensorPA1010D: s.GPS, "": Present}
	availability := []map[string]string{{
		"topic":                 o.Node.Status(),
		"payload_available":     wire.StatusOnline,
		"payload_not_available": wire.StatusOffline,
	}}
	origin := map[string]string{"name": "sensorfarm bridge", "sw_version": o.Version}
	var out []Message
	for _, e := range entities(o) {
		topic := o.Node.DiscoveryConfig(o.Prefix, e.component, e.objectID)
		switch presence[e.sensor] {
		case Present:
		case Gone, Disabled:
			if o.RemoveGone {
				out = append(out, Message{Topic: topic})
			}
			continue
		default:
			continue
		}
		c := e.config
		c["unique_id"] = o.Node.DiscoveryID() + "_" + e.objectID
		c["device"] = device(o)
		c["origin"] = origin
		if !alwaysAvailable[e.objectID] {
			c["availability"] = availability
		}
		c["qos"] = wire.QoS
		b, err := json.Marshal(c)
		if err != nil {
			panic(fmt.Sprintf("discovery: config of %s: %v", e.objectID, err)) // maps of strings and numbers always encode
		}
		out = append(out, Message{Topic: topic, Payload: b})
	}
	return out
}
