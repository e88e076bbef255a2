package wire

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidateName(t *testing.T) {
	tt := []struct {
		name string
		ok   bool
	}{
		{"pizero-01", true}, {"rpi4", true}, {"a_b", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {"PiZero", false}, {"a/b", false},
		{"a+b", false}, {"a#", false}, {"a b", false}, {"é", false}, {"a.b", false}, {"$sys", false},
	}
	for _, tc := range tt {
		err := ValidateName("node", tc.name)
		if tc.ok {
			require.NoError(t, err, tc.name)
		} else {
			require.Error(t, err, tc.name)
			require.Contains(t, err.Error(), "node")
		}
	}
}

func TestTopics(t *testing.T) {
	n := Node{Prefix: "sensorfarm", Site: "rpi4", Node: "pizero-01"}
	require.NoError(t, n.Validate())
	require.Equal(t, "sensorfarm/rpi4/pizero-01/status", n.Status())
	require.Equal(t, "sensorfarm/rpi4/pizero-01/env", n.Live(StreamEnv))
	require.Equal(t, "sensorfarm/rpi4/pizero-01/backlog/gps", n.Backlog(StreamGPS))
	require.Equal(t, "sensorfarm/rpi4/pizero-01/health", n.Health())
	require.Equal(t, "bridge:rpi4:pizero-01", n.ClientID())
	require.Error(t, Node{Prefix: "sensorfarm", Site: "x", Node: "A"}.Validate())
}

func TestEnvPayloadMatchesContract(t *testing.T) {
	ts := time.Date(2026, 11, 24, 10, 15, 4, 123456789, time.FixedZone("CET", 3600))
	r := Env{
		Header:       Header{Site: "rpi4", Node: "pizero-01", Seq: 1842, TS: Time{ts}, TimeSource: TimeSystem},
		TemperatureC: Round(21.4321, 2),
		HumidityPct:  Round(45.2049, 1),
	}
	b, err := json.Marshal(r)
	require.NoError(t, err)
	require.JSONEq(t, `{"site":"rpi4","node":"pizero-01","seq":1842,"ts":"2026-11-24T09:15:04.123Z","time_source":"system",
		"temperature_c":21.43,"humidity_pct":45.2,"pressure_hpa":null}`, string(b))

	var back Env
	require.NoError(t, json.Unmarshal(b, &back))
	require.True(t, back.TS.Equal(ts.Truncate(time.Millisecond)))
	require.Nil(t, back.PressureHPa)
}
