package decode

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const goodEnv = `{"site":"s1","node":"n1","seq":7,"ts":"2026-11-24T10:15:04.123Z","time_source":"gps","temperature_c":21.43,"humidity_pct":null,"pressure_hpa":1013.62}`

func TestDecode(t *testing.T) {
	d := Decoder{Prefix: "sensorfarm", MaxPayload: 512}
	it := d.Decode(Message{Topic: "sensorfarm/s1/n1/backlog/env", Payload: []byte(goodEnv)})
	require.Nil(t, it.Dead)
	r := it.Reading
	require.Equal(t, "env", r.Stream)
	require.True(t, r.Backlog)
	require.Equal(t, uint64(7), r.Seq)
	require.Equal(t, "gps", r.TimeSource)
	require.True(t, time.Date(2026, 11, 24, 10, 15, 4, 123e6, time.UTC).Equal(r.TS))
	require.Equal(t, map[string]any{"temperature_c": 21.43, "humidity_pct": nil, "pressure_hpa": 1013.62}, r.Values)

	gps := `{"site":"s1","node":"n1","seq":9,"ts":"2026-11-24T10:15:04.000Z","time_source":"system","latitude":44.1,"longitude":-121.3,"altitude_m":null,"speed_kmh":0.4,"course_deg":null,"fix":3,"sats":10,"hdop":0.98,"gps_accuracy":4.9}`
	it = d.Decode(Message{Topic: "sensorfarm/s1/n1/gps", Payload: []byte(gps), Retained: true})
	require.Nil(t, it.Dead)
	require.Equal(t, int64(3), it.Reading.Values["fix"])
	require.True(t, it.Reading.Retained)

	health := `{"site":"s1","node":"n1","ts":"2026-11-24T10:15:04.000Z","time_source":"system","version":"v1","uptime_s":5,"spool_depth":2,"spool_bytes":300,"dropped":1,"sensor_errors":{"bme280":0},"gps_fix":3,"last_publish_ts":null}`
	it = d.Decode(Message{Topic: "sensorfarm/s1/n1/health", Payload: []byte(health)})
	require.Nil(t, it.Dead)
	require.Equal(t, uint64(2), it.Health.SpoolDepth)
	require.Equal(t, `{"bme280":0}`, it.Health.SensorErrors)
}

func TestDecodeBadInput(t *testing.T) {
	d := Decoder{Prefix: "sensorfarm", MaxPayload: 512}
	env := "sensorfarm/s1/n1/env"
	for _, tc := range []struct {
		name, topic, payload, reason string
	}{
		{"oversized", env, strings.Replace(goodEnv, `"gps"`, `"`+strings.Repeat("g", 600)+`"`, 1), ReasonOversized},
		{"not json", env, `{"site":`, ReasonNotJSON},
		{"json array", env, `[1,2]`, ReasonNotJSON},
		{"null", env, `null`, ReasonNotJSON},
		{"unknown field", env, strings.Replace(goodEnv, `}`, `,"co2_ppm":400}`, 1), ReasonUnknownField},
		{"missing field", env, strings.Replace(goodEnv, `,"humidity_pct":null`, ``, 1), ReasonMissingField},
		{"seq as string", env, strings.Replace(goodEnv, `"seq":7`, `"seq":"7"`, 1), ReasonWrongType},
		{"seq fraction", env, strings.Replace(goodEnv, `"seq":7`, `"seq":7.5`, 1), ReasonWrongType},
		{"seq null", env, strings.Replace(goodEnv, `"seq":7`, `"seq":null`, 1), ReasonWrongType},
		{"temperature as string", env, strings.Replace(goodEnv, `21.43`, `"21.43"`, 1), ReasonWrongType},
		{"bad ts", env, strings.Replace(goodEnv, `2026-11-24T10:15:04.123Z`, `yesterday`, 1), ReasonWrongType},
		{"trailing data", env, goodEnv + `{}`, ReasonNotJSON},
		{"seq zero", env, strings.Replace(goodEnv, `"seq":7`, `"seq":0`, 1), ReasonBadValue},
		{"time source", env, strings.Replace(goodEnv, `"gps"`, `"sundial"`, 1), ReasonBadValue},
		{"other node", env, strings.Replace(goodEnv, `"n1"`, `"n2"`, 1), ReasonTopicMismatch},
		{"other prefix", "farm/s1/n1/env", goodEnv, ReasonTopic},
		{"unknown stream", "sensorfarm/s1/n1/co2", goodEnv, ReasonTopic},
		{"backlog of health", "sensorfarm/s1/n1/backlog/health", goodEnv, ReasonTopic},
		{"bad name", "sensorfarm/S1/n1/env", goodEnv, ReasonTopic},
		{"gps payload on env", env, `{"site":"s1","node":"n1","seq":9,"ts":"2026-11-24T10:15:04.000Z","time_source":"system","latitude":44.1}`, ReasonMissingField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := d.Decode(Message{Topic: tc.topic, Payload: []byte(tc.payload)})
			require.Nil(t, it.Reading)
			require.NotNil(t, it.Dead)
			require.Equal(t, tc.reason, it.Dead.Reason, it.Dead.Detail)
			require.Equal(t, len(tc.payload), it.Dead.Size)
			require.LessOrEqual(t, len(it.Dead.Payload), d.MaxPayload)
			require.NotEmpty(t, it.Dead.Detail)
		})
	}
}

func TestValueColumnsAreTheWireFields(t *testing.T) {
	var names []string
	for _, c := range ValueColumns() {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{"temperature_c", "humidity_pct", "pressure_hpa", "latitude", "longitude", "altitude_m",
		"speed_kmh", "course_deg", "fix", "sats", "hdop", "gps_accuracy"}, names)
}
