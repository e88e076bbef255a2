package discovery

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/discovery/hatest"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/wire"
)

var testOpts = Options{
	Prefix:      wire.HADiscoveryPrefix,
	Node:        wire.Node{Prefix: "sensorfarm", Site: "farm1", Node: "pizero-01"},
	Version:     "v1.2.3",
	Interval:    10 * time.Second,
	HealthEvery: time.Minute,
}

var allPresent = Sensors{BME280: Present, GPS: Present}

// realPayloads returns one payload per state topic, produced by the real
// drivers reading the simulated board (BME280 and PA1010D), and a health
// report as the agent builds it.
func realPayloads(t *testing.T, n wire.Node) map[string][]byte {
	t.Helper()
	open, err := sim.BoardOpener(sim.BoardOpts{Node: n.Node, GPS: true, ReplaySpeed: 10})
	require.NoError(t, err)
	bus, err := open()
	require.NoError(t, err)
	defer bus.Close()

	env := wire.Env{Header: wire.Header{Site: n.Site, Node: n.Node, Seq: 7, TS: wire.Time{Time: time.Now()}, TimeSource: wire.TimeSystem}}
	dev, err := bme280.Open(bus, sim.BME280Addr, &bme280.DefaultOpts)
	require.NoError(t, err)
	require.NoError(t, dev.Read(&env))

	gpsOpts := pa1010d.DefaultOpts
	gpsDev, err := pa1010d.Open(bus, pa1010d.Addr, &gpsOpts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fix, err := gpsDev.Next(ctx)
	require.NoError(t, err)
	g := wire.GPS{Header: wire.Header{Site: n.Site, Node: n.Node, Seq: 3, TS: wire.Time{Time: fix.Time}, TimeSource: wire.TimeGPS}}
	fix.Fill(&g)

	health := wire.Health{Site: n.Site, Node: n.Node, TS: wire.Time{Time: time.Now()}, TimeSource: wire.TimeSystem,
		Version: "v1.2.3", UptimeS: 60, SpoolDepth: 12, SpoolBytes: 4096, Dropped: 2,
		SensorErrors: map[string]uint64{wire.SensorBME280: 0, wire.SensorPA1010D: 1}, GPSFix: 3}

	out := map[string][]byte{}
	for topic, v := range map[string]any{n.Live(wire.StreamEnv): env, n.Live(wire.StreamGPS): g, n.Health(): health} {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		out[topic] = b
	}
	return out
}

// unitOfKey is the unit a payload key carries in its suffix, as the README
// and wire/reading.go document them.
var unitOfKey = map[string]string{"_c": "°C", "_pct": "%", "_hpa": "hPa"}

// CheckAgainstPayloads checks every config with hatest's rules and renders its
// value template against the real payload of its state topic.
func checkAgainstPayloads(t *testing.T, msgs []Message, payloads map[string][]byte) {
	t.Helper()
	for _, m := range msgs {
		c, err := hatest.Check(m.Topic, m.Payload)
		require.NoError(t, err)
		if c == nil {
			continue
		}
		if tpl, ok := c["value_template"].(string); ok {
			state := payloads[c["state_topic"].(string)]
			require.NotNil(t, state, "%s: no payload for its state topic %s", m.Topic, c["state_topic"])
			got, err := hatest.Render(tpl, state)
			require.NoError(t, err, m.Topic)
			if c["state_class"] != nil || c["unit_of_measurement"] != nil {
				_, err := strconv.ParseFloat(got, 64)
				require.NoError(t, err, "%s renders %q, not a number, from %s", m.Topic, got, state)
			}
			key := strings.TrimSuffix(strings.TrimPrefix(tpl, "{{ value_json."), " }}")
			for suffix, unit := range unitOfKey {
				if strings.HasSuffix(key, suffix) {
					require.Equal(t, unit, c["unit_of_measurement"], "%s reads %s", m.Topic, key)
				}
			}
		}
		if attrs, ok := c["json_attributes_topic"].(string); ok {
			v, err := hatest.RenderAttributes(c["json_attributes_template"].(string), payloads[attrs])
			require.NoError(t, err, m.Topic)
			require.Len(t, v, 3, "only what the tracker reads: attributes that change every fix (seq, ts) make a recorder row a second")
			for _, k := range []string{"latitude", "longitude", "gps_accuracy"} {
				_, isNum := v[k].(float64)
				require.True(t, isNum, "%s: the tracker reads %s from %s, which has %v", m.Topic, k, attrs, v[k])
			}
		}
	}
}

func TestConfigsFollowHomeAssistantRules(t *testing.T) {
	payloads := realPayloads(t, testOpts.Node)
	msgs := Configs(testOpts, allPresent)
	require.Len(t, msgs, 9)
	checkAgainstPayloads(t, msgs, payloads)

	ids := map[string]bool{}
	for _, m := range msgs {
		_, component, nodeID, objectID, err := hatest.Topic(m.Topic)
		require.NoError(t, err)
		require.Equal(t, wire.HADiscoveryPrefix+"/"+component+"/sensorfarm_farm1_pizero-01/"+objectID+"/config", m.Topic)
		require.Equal(t, testOpts.Node.DiscoveryID(), nodeID, "the broker's ACL allows exactly this node id")
		var c map[string]any
		require.NoError(t, json.Unmarshal(m.Payload, &c))
		id := c["unique_id"].(string)
		require.False(t, ids[id], "unique_id %s twice", id)
		ids[id] = true
		require.Equal(t, "sensorfarm_farm1_pizero-01_"+objectID, id)
		require.Equal(t, map[string]any{
			"identifiers": []any{"sensorfarm_farm1_pizero-01"}, "name": "farm1 pizero-01",
			"model": "sensorfarm bridge", "manufacturer": "sensorfarm", "sw_version": "v1.2.3",
		}, c["device"])
		if objectID == "connectivity" || objectID == "last_seen" {
			require.Nil(t, c["availability"], "%s shows the bridge offline, not unavailable", objectID)
			continue
		}
		require.Equal(t, []any{map[string]any{"topic": "sensorfarm/farm1/pizero-01/status",
			"payload_available": wire.StatusOnline, "payload_not_available": wire.StatusOffline}}, c["availability"])
	}

	// Stable: the same names give the same configs, byte for byte.
	require.Equal(t, msgs, Configs(testOpts, allPresent))
}

func TestConfigsValueTemplatesOnNull(t *testing.T) {
	// A value the sensor did not deliver is null: Home Assistant's sensor
	// takes the rendered "None" as unknown.
	n := testOpts.Node
	b, err := json.Marshal(wire.Env{Header: wire.Header{Site: n.Site, Node: n.Node, Seq: 1}, TemperatureC: wire.Round(20.5, 2)})
	require.NoError(t, err)
	for _, m := range Configs(testOpts, Sensors{BME280: Present}) {
		var c map[string]any
		require.NoError(t, json.Unmarshal(m.Payload, &c))
		if c["state_topic"] != n.Live(wire.StreamEnv) {
			continue
		}
		got, err := hatest.Render(c["value_template"].(string), b)
		require.NoError(t, err)
		if strings.HasSuffix(m.Topic, "/temperature/config") {
			require.Equal(t, "20.5", got)
		} else {
			require.Equal(t, "None", got, m.Topic)
		}
	}
}

// TestConfigsExpireAfterABlip: a value expires after a few intervals, but
// never within 5 minutes, longer than a Wi-Fi blip.
func TestConfigsExpireAfterABlip(t *testing.T) {
	for _, tc := range []struct {
		interval, health time.Duration
		env, hlth        int
	}{
		{300 * time.Millisecond, time.Minute, 300, 300},
		{10 * time.Minute, 3 * time.Minute, 1800, 540},
	} {
		o := testOpts
		o.Interval, o.HealthEvery = tc.interval, tc.health
		for _, m := range Configs(o, allPresent) {
			var c map[string]any
			require.NoError(t, json.Unmarshal(m.Payload, &c))
			switch {
			case strings.Contains(m.Topic, "/last_seen/"):
				require.Nil(t, c["expire_after"], "last seen stays")
			case c["state_topic"] == o.Node.Live(wire.StreamEnv):
				require.EqualValues(t, tc.env, c["expire_after"], "interval %s", tc.interval)
			case c["state_topic"] == o.Node.Health():
				require.EqualValues(t, tc.hlth, c["expire_after"], "health every %s", tc.health)
			}
		}
	}
}

func objectIDs(t *testing.T, msgs []Message) (configs, removals []string) {
	t.Helper()
	for _, m := range msgs {
		_, _, _, id, err := hatest.Topic(m.Topic)
		require.NoError(t, err)
		if len(m.Payload) == 0 {
			removals = append(removals, id)
		} else {
			configs = append(configs, id)
		}
	}
	return configs, removals
}

func TestConfigsOnlyForPresentSensors(t *testing.T) {
	diagnostics := []string{"spool_depth", "dropped", "connectivity", "last_seen"}
	env := []string{"temperature", "humidity", "pressure"}
	gps := []string{"location", "gps_fix"}
	for _, tc := range []struct {
		desc              string
		sensors           Sensors
		removeGone        bool
		configs, removals []string
	}{
		{"nothing opened yet", Sensors{}, true, diagnostics, nil},
		{"BME280 only, GPS not yet", Sensors{BME280: Present}, true, append(append([]string{}, env...), diagnostics...), nil},
		{"GPS disabled, kept", Sensors{BME280: Present, GPS: Disabled}, false, append(append([]string{}, env...), diagnostics...), nil},
		{"GPS disabled, removed", Sensors{BME280: Present, GPS: Disabled}, true, append(append([]string{}, env...), diagnostics...), gps},
		{"BME280 gone, kept", Sensors{BME280: Gone, GPS: Present}, false, append(append([]string{}, gps...), diagnostics...), nil},
		{"BME280 gone, removed", Sensors{BME280: Gone, GPS: Present}, true, append(append([]string{}, gps...), diagnostics...), env},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			o := testOpts
			o.RemoveGone = tc.removeGone
			msgs := Configs(o, tc.sensors)
			for _, m := range msgs {
				_, err := hatest.Check(m.Topic, m.Payload)
				require.NoError(t, err)
			}
			configs, removals := objectIDs(t, msgs)
			require.ElementsMatch(t, tc.configs, configs)
			require.ElementsMatch(t, tc.removals, removals)
		})
	}
}

func TestPresence(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	goneAfter := time.Minute
	var tr tracked
	require.Equal(t, Unknown, tr.update(false, true, t0, goneAfter), "never worked: unknown, not gone")
	require.Equal(t, Present, tr.update(true, true, t0, goneAfter))
	require.Equal(t, Present, tr.update(false, true, t0.Add(time.Second), goneAfter), "a moment's failure is not gone")
	require.Equal(t, Present, tr.update(false, true, t0.Add(goneAfter), goneAfter))
	require.Equal(t, Gone, tr.update(false, true, t0.Add(goneAfter+time.Second), goneAfter))
	require.Equal(t, Present, tr.update(true, true, t0.Add(2*goneAfter), goneAfter), "back")
	require.Equal(t, Present, tr.update(false, true, t0.Add(2*goneAfter+time.Second), goneAfter), "its absence starts again")
	require.Equal(t, Disabled, tr.update(true, false, t0, goneAfter))

	require.True(t, changed(Sensors{}, Sensors{BME280: Present}, false), "appeared")
	require.False(t, changed(Sensors{BME280: Present}, Sensors{BME280: Gone}, false), "gone, kept")
	require.True(t, changed(Sensors{BME280: Present}, Sensors{BME280: Gone}, true), "gone, removed")
	require.False(t, changed(Sensors{BME280: Present}, Sensors{BME280: Unknown}, true), "unknown removes nothing")
	require.True(t, changed(Sensors{}, Sensors{GPS: Disabled}, true))
	require.False(t, changed(Sensors{GPS: Disabled}, Sensors{GPS: Disabled}, true))
}
