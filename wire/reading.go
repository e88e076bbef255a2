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
}

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
