package wire

import (
	"encoding/json"
	"math"
	"time"
)

// TimeLayout is how every timestamp in a payload is written: RFC 3339, UTC,
// always three fractional digits so that consumers that sort strings sort time.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Time is a timestamp that marshals in TimeLayout.
type Time struct{ time.Time }

// MarshalJSON writes the time in UTC with milliseconds.
func (t Time) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(TimeLayout))
}

// UnmarshalJSON reads any RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// Header is what every reading payload starts with. site and node repeat the
// topic because a wildcard subscription in Grafana's MQTT data source loses it.
type Header struct {
	Site string `json:"site"`
	Node string `json:"node"`
	// Seq is per node and stream, starts at 1 and grows by exactly one per
	// reading, across restarts: consumers find gaps and duplicates from it.
	Seq uint64 `json:"seq"`
	// TS is when the sample was taken, not when it was sent.
	TS Time `json:"ts"`
	// TimeSource says which clock stamped TS: TimeSystem, TimeGPS or
	// TimeUnsynced. A Pi Zero has no real-time clock, so this is how a
	// consumer knows whether TS can be trusted.
	TimeSource string `json:"time_source"`
}

// Head gives code that handles any reading its header; Env and GPS have it
// through embedding.
func (h *Header) Head() *Header { return h }

// Reading is any payload of a reading stream.
type Reading interface{ Head() *Header }

// Clocks that stamp a reading's TS.
const (
	// TimeSystem: the system clock, synchronised (NTP).
	TimeSystem = "system"
	// TimeGPS: the system clock was not synchronised; TS is GPS time,
	// carried forward from the last valid fix.
	TimeGPS = "gps"
	// TimeUnsynced: neither was available; TS is the system clock's guess.
	TimeUnsynced = "unsynced"
)

// Env is the payload of the env stream. A nil field is a value the sensor did
// not deliver and is written as null.
type Env struct {
	Header
	TemperatureC *float64 `json:"temperature_c"`
	HumidityPct  *float64 `json:"humidity_pct"`
	PressureHPa  *float64 `json:"pressure_hpa"`
}

// Round returns a pointer to v rounded to the given number of decimals, which
// keeps payloads to the sensor's real resolution instead of float noise.
func Round(v float64, decimals int) *float64 {
	p := math.Pow10(decimals)
	r := math.Round(v*p) / p
	return &r
}

// GPS is the payload of the gps stream: one valid fix. latitude, longitude and
// gps_accuracy are the names Home Assistant's device tracker reads. A nil
// field is a value the receiver did not deliver (altitude in a 2D fix).
type GPS struct {
	Header
	Latitude    float64  `json:"latitude"`     // degrees, WGS84, north positive
	Longitude   float64  `json:"longitude"`    // degrees, WGS84, east positive
	AltitudeM   *float64 `json:"altitude_m"`   // metres above mean sea level
	SpeedKmh    *float64 `json:"speed_kmh"`    // over ground
	CourseDeg   *float64 `json:"course_deg"`   // true course over ground
	Fix         int      `json:"fix"`          // 2 = 2D, 3 = 3D
	Sats        int      `json:"sats"`         // satellites used in the fix
	HDOP        *float64 `json:"hdop"`         // horizontal dilution of precision
	GPSAccuracy *float64 `json:"gps_accuracy"` // metres, horizontal, see the README
}

// Health is the bridge's retained report of itself, sent about once a minute
// and whenever its state changes.
type Health struct {
	Site       string `json:"site"`
	Node       string `json:"node"`
	TS         Time   `json:"ts"`
	TimeSource string `json:"time_source"`
	Version    string `json:"version"`
	UptimeS    int64  `json:"uptime_s"`
	// SpoolDepth and SpoolBytes: readings kept on disk, not yet acknowledged.
	SpoolDepth uint64 `json:"spool_depth"`
	SpoolBytes int64  `json:"spool_bytes"`
	// Dropped counts readings that were taken but will never be delivered:
	// the one number that says data was lost.
	Dropped uint64 `json:"dropped"`
	// SensorErrors counts errors per sensor since the bridge started.
	SensorErrors map[string]uint64 `json:"sensor_errors"`
	// GPSFix is the fix mode of the receiver's last epoch, 0 without a fix.
	GPSFix int `json:"gps_fix"`
	// LastPublishTS is when the broker last acknowledged a reading; null
	// until one was.
	LastPublishTS *Time `json:"last_publish_ts"`
}
