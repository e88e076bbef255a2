package wire

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDiscoveryTopics(t *testing.T) {
	n := Node{Prefix: "sensorfarm", Site: "farm1", Node: "pizero-01"}
	require.Equal(t, "sensorfarm_farm1_pizero-01", DiscoveryID("sensorfarm", "farm1", "pizero-01"))
	require.Equal(t, "sensorfarm_farm1_pizero-01", n.DiscoveryID())
	require.Equal(t, "homeassistant/sensor/sensorfarm_farm1_pizero-01/temperature/config",
		n.DiscoveryConfig(HADiscoveryPrefix, "sensor", "temperature"))
	require.Equal(t, "homeassistant/status", HAStatusTopic)
	require.Equal(t, "sensorfarm/farm1/pizero-01/env/temperature_c", n.Field(StreamEnv, "temperature_c"))
}

func TestFieldValues(t *testing.T) {
	alt := 1127.7
	for _, tc := range []struct {
		reading Reading
		want    []FieldValue
	}{
		{&Env{Header: Header{Site: "s", Node: "n", Seq: 4, TimeSource: TimeSystem}, TemperatureC: Round(18.671, 2), PressureHPa: Round(1014.85, 2)},
			[]FieldValue{{"temperature_c", "18.67"}, {"humidity_pct", ""}, {"pressure_hpa", "1014.85"}}},
		{&GPS{Header: Header{Site: "s", Node: "n", Seq: 9, TimeSource: TimeGPS}, Latitude: 44.068843, Longitude: -121.314192,
			AltitudeM: &alt, Fix: 3, Sats: 10, HDOP: Round(0.98, 2), GPSAccuracy: Round(4.9, 1)},
			[]FieldValue{{"latitude", "44.068843"}, {"longitude", "-121.314192"}, {"altitude_m", "1127.7"}, {"speed_kmh", ""},
				{"course_deg", ""}, {"fix", "3"}, {"sats", "10"}, {"hdop", "0.98"}, {"gps_accuracy", "4.9"}}},
	} {
		b, err := json.Marshal(tc.reading)
		require.NoError(t, err)
		got, err := FieldValues(b)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "%s", b)
	}
	got, err := FieldValues([]byte(`{"seq":1,"mode":"a\"b","ok":true,"nested":{"x":1}}`))
	require.NoError(t, err)
	require.Equal(t, []FieldValue{{"mode", `a"b`}, {"ok", "true"}}, got)
	_, err = FieldValues([]byte(`not json`))
	require.Error(t, err)
}
