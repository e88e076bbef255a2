package hatest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The rules must refuse what Home Assistant refuses, or a check with them
// proves nothing.
func TestCheckRefuses(t *testing.T) {
	good := `{"name":"T","state_topic":"a/b/env","value_template":"{{ value_json.t }}","device_class":"temperature",
		"unit_of_measurement":"°C","state_class":"measurement","unique_id":"x_t","device":{"identifiers":["x"]},
		"origin":{"name":"o"},"availability":[{"topic":"a/b/status"}],"expire_after":30,"qos":1}`
	_, err := Check("homeassistant/sensor/x/t/config", []byte(good))
	require.NoError(t, err)
	abbreviated := `{"name":"T","stat_t":"a/b/env","dev_cla":"humidity","unit_of_meas":"%","uniq_id":"x_h","dev":{"ids":["x"]}}`
	_, err = Check("homeassistant/sensor/x/h/config", []byte(abbreviated))
	require.NoError(t, err)
	_, err = Check("homeassistant/sensor/x/t/config", nil)
	require.NoError(t, err, "an empty payload removes the entity")

	for _, tc := range []struct{ topic, payload, want string }{
		{"homeassistant/sensor/x/t/config", `{"name":"T"}`, `required key "state_topic" missing`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","colour":"red"}`, `key "colour" is not a sensor option`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","device_class":"temperature","unit_of_measurement":"C"}`, `unit "C" is not allowed`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","device_class":"humidity","unit_of_measurement":"%RH"}`, `unit "%RH" is not allowed`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","state_class":"measure"}`, `state_class measure`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","entity_category":"config"}`, `entity_category config is not allowed`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","device":{"identifiers":["x"]}}`, `device without unique_id`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","unique_id":"u","device":{"name":"x"}}`, `neither identifiers nor connections`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","unique_id":"u","device":{"ids":["x"],"colour":1}}`, `not allowed in device`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","origin":{"sw":"1"}}`, `origin without name`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","expire_after":0}`, `expire_after 0`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a/+"}`, `not a topic`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","stat_t":"b"}`, `given twice`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","availability":[{"payload_available":"on"}]}`, `availability entry without topic`},
		{"homeassistant/device_tracker/x/g/config", `{"name":"G"}`, `one of [state_topic json_attributes_topic]`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","device_class":"timestamp","state_class":"measurement"}`, `timestamp cannot have a state_class`},
		{"homeassistant/sensor/x/t/config", `{"state_topic":"a","device_class":"timestamp","unit_of_measurement":"s"}`, `unit "s" is not allowed`},
		{"homeassistant/binary_sensor/x/c/config", `{"name":"C"}`, `required key "state_topic" missing`},
		{"homeassistant/binary_sensor/x/c/config", `{"state_topic":"a","device_class":"online"}`, `binary_sensor device_class "online"`},
		{"homeassistant/binary_sensor/x/c/config", `{"state_topic":"a","unit_of_measurement":"%"}`, `not a binary_sensor option`},
		{"homeassistant/device_tracker/x/g/config", `{"json_attributes_topic":"a","source_type":"satellite"}`, `source_type satellite`},
		{"homeassistant/device_tracker/x/g/config", `{"json_attributes_topic":"a","unit_of_measurement":"m"}`, `not a device_tracker option`},
		{"homeassistant/sensor/x.y/t/config", `{"state_topic":"a"}`, `is not <prefix>/<component>`},
		{"homeassistant/sensor/x/t/conf", `{"state_topic":"a"}`, `is not <prefix>/<component>`},
	} {
		_, err := Check(tc.topic, []byte(tc.payload))
		require.ErrorContains(t, err, tc.want, tc.payload)
	}
}

func TestRender(t *testing.T) {
	payload := []byte(`{"i":19,"f":52.2,"w":53.0,"n":null,"s":"gps","b":true,"tiny":0.00001,"big":1e16,"o":{"k":1}}`)
	for tpl, want := range map[string]string{
		"{{ value_json.i }}":      "19",
		"{{value_json.f}}":        "52.2",
		"{{ value_json.w }}":      "53.0",
		"{{ value_json.n }}":      "None",
		"{{ value_json.s }}":      "gps",
		"{{ value_json.b }}":      "True",
		"{{ value_json.tiny }}":   "1e-05",
		"{{ value_json.big }}":    "1e+16",
		"{{ value_json['i'] }}":   "19",
		`{{ value_json.o["k"] }}`: "1",
	} {
		got, err := Render(tpl, payload)
		require.NoError(t, err, tpl)
		require.Equal(t, want, got, tpl)
	}
	for _, tpl := range []string{"{{ value_json.missing }}", "{{ value_json.o }}", "{{ value_json.i | float }}", "{{ value }}", "{{ value_json.i.x }}"} {
		_, err := Render(tpl, payload)
		require.Error(t, err, tpl)
	}
	_, err := Render("{{ value_json.i }}", []byte("19 degrees"))
	require.Error(t, err)
}

// TestRenderAttributes: the attributes template subset renders as Jinja
// would, and anything outside it, or a round of a null, is refused.
func TestRenderAttributes(t *testing.T) {
	tpl := "{{ {'latitude': value_json.latitude | round(5), 'acc': value_json.gps_accuracy | round(0), 'fix': value_json.fix} | tojson }}"
	got, err := RenderAttributes(tpl, []byte(`{"latitude":44.068843333,"gps_accuracy":4.9,"fix":3,"seq":7}`))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"latitude": 44.06884, "acc": 5.0, "fix": 3.0}, got)
	_, err = RenderAttributes(tpl, []byte(`{"latitude":null,"gps_accuracy":4.9,"fix":3}`))
	require.ErrorContains(t, err, "Jinja fails")
	_, err = RenderAttributes("{{ value_json | tojson }}", []byte(`{}`))
	require.ErrorContains(t, err, "outside the supported subset")
	_, err = RenderAttributes("{{ {'a': value_json.a | int} | tojson }}", []byte(`{"a":1}`))
	require.ErrorContains(t, err, "outside the supported subset")
}
