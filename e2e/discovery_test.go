package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/discovery"
	"github.com/sensorfarm/sensorfarm/bridge/discovery/hatest"
	"github.com/sensorfarm/sensorfarm/wire"
)

// configTopics are the discovery topics a node announces with the given
// sensors, as the bridge's code builds them.
func configTopics(n wire.Node, s discovery.Sensors, removeGone bool) (configs, removals []string) {
	for _, m := range discovery.Configs(discovery.Options{Prefix: wire.HADiscoveryPrefix, Node: n, RemoveGone: removeGone, Interval: time.Second, HealthEvery: time.Minute}, s) {
		if len(m.Payload) == 0 {
			removals = append(removals, m.Topic)
		} else {
			configs = append(configs, m.Topic)
		}
	}
	return configs, removals
}

// latest returns the last message on topic, waiting for one.
func latest(t *testing.T, s *subscriber, topic string) message {
	t.Helper()
	var h []message
	require.Eventually(t, func() bool { h = s.history(topic); return len(h) > 0 }, 20*time.Second, 100*time.Millisecond, "nothing on %s", topic)
	return h[len(h)-1]
}

// TestHADiscoveryEndToEnd runs real bridges with their own users against the
// real broker with its ACL, a subscriber as a reader, and Home Assistant's
// birth message published as a homeassistant user: the discovery configs
// arrive retained, pass Home Assistant's rules, their templates read the
// bridge's real payloads, and a birth message makes the bridge send them
// again. A second bridge without GPS, removing gone entities and with
// per-field topics, removes its GPS entities and publishes plain values the
// broker's gap detector does not take for readings.
func TestHADiscoveryEndToEnd(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	ha1 := account{name: "farm1-ha1", password: "ha1-pw", role: "bridge", site: "farm1", node: "ha1"}
	ha2 := account{name: "farm1-ha2", password: "ha2-pw", role: "bridge", site: "farm1", node: "ha2"}
	homeassistant := account{name: "hass-disc", password: "hass-disc-pw", role: "homeassistant"}
	reader := account{name: "reader-disc", password: "reader-disc-pw", role: "reader"}
	for _, a := range []account{ha1, ha2, homeassistant, reader} {
		userAdd(t, users, a)
	}
	broker, addr := startBrokerWithUsers(t, users)
	ops := opsAddr(broker)

	watch := subscribe(t, addr, append(mqttArgs(addr, reader, "disc-watch"),
		"-t", wire.HADiscoveryPrefix+"/#", "-t", wire.AllReadings(wire.DefaultPrefix))...)
	// Home Assistant going offline is harmless to the bridges and tells when
	// the watcher is subscribed.
	require.Eventually(t, func() bool {
		require.True(t, pubAs(t, addr, homeassistant, wire.HAStatusTopic, "offline"))
		return len(watch.history(wire.HAStatusTopic)) > 0
	}, 10*time.Second, 200*time.Millisecond, "the watcher never got a message")

	bridgeAs := func(a account, extra ...string) *process {
		pw := filepath.Join(dir, a.name+".pw")
		require.NoError(t, os.WriteFile(pw, []byte(a.password+"\n"), 0o600))
		args := bridgeArgs(t, addr, a.site, a.node, append([]string{"--sim", "--username", a.name, "--password-file", pw}, extra...)...)
		return start(t, "bridge "+a.node, append([]string{filepath.Join(bin, "bridge")}, args...)...)
	}

	n1 := wire.Node{Prefix: wire.DefaultPrefix, Site: ha1.site, Node: ha1.node}
	bridge1 := bridgeAs(ha1)
	topics, removals := configTopics(n1, discovery.Sensors{BME280: discovery.Present, GPS: discovery.Present}, false)
	require.Len(t, topics, 9)
	require.Empty(t, removals)
	for _, topic := range topics {
		latest(t, watch, topic)
	}

	t.Run("retained and valid against real payloads", func(t *testing.T) {
		states := map[string][]byte{}
		for _, topic := range []string{n1.Live(wire.StreamEnv), n1.Live(wire.StreamGPS), n1.Health()} {
			states[topic] = []byte(latest(t, watch, topic).Payload)
		}
		late := subscribe(t, addr, append(mqttArgs(addr, reader, "disc-late"), "-t", wire.HADiscoveryPrefix+"/+/"+n1.DiscoveryID()+"/#")...)
		for _, topic := range topics {
			m := latest(t, late, topic)
			require.True(t, m.Retained, "%s is not retained", topic)
			c, err := hatest.Check(m.Topic, []byte(m.Payload))
			require.NoError(t, err)
			if tpl, ok := c["value_template"].(string); ok {
				got, err := hatest.Render(tpl, states[c["state_topic"].(string)])
				require.NoError(t, err, topic)
				if c["unit_of_measurement"] != nil || c["state_class"] != nil {
					_, err := strconv.ParseFloat(got, 64)
					require.NoError(t, err, "%s renders %q from %s", topic, got, states[c["state_topic"].(string)])
				}
			}
			if attrs, ok := c["json_attributes_topic"].(string); ok {
				gps, err := hatest.RenderAttributes(c["json_attributes_template"].(string), states[attrs])
				require.NoError(t, err, topic)
				for _, k := range []string{"latitude", "longitude", "gps_accuracy"} {
					_, isNum := gps[k].(float64)
					require.True(t, isNum, "%s: %s in %s", topic, k, states[attrs])
				}
			}
		}
	})

	t.Run("re-sent on Home Assistant's birth", func(t *testing.T) {
		count := func() int {
			n := 0
			for _, topic := range topics {
				n += len(watch.history(topic))
			}
			return n
		}
		// Quiet first: no announcement is under way, so what follows the
		// birth message is caused by it.
		before, quietSince := count(), time.Now()
		for deadline := time.Now().Add(30 * time.Second); time.Since(quietSince) < 3*time.Second; {
			require.True(t, time.Now().Before(deadline), "discovery never settled")
			time.Sleep(200 * time.Millisecond)
			if c := count(); c != before {
				before, quietSince = c, time.Now()
			}
		}
		seen := map[string]int{}
		for _, topic := range topics {
			seen[topic] = len(watch.history(topic))
		}
		require.True(t, pubAs(t, addr, homeassistant, wire.HAStatusTopic, wire.HAOnline))
		for _, topic := range topics {
			require.Eventually(t, func() bool { return len(watch.history(topic)) > seen[topic] }, 10*time.Second, 100*time.Millisecond,
				"%s not re-sent after Home Assistant's birth", topic)
			h := watch.history(topic)
			_, err := hatest.Check(topic, []byte(h[len(h)-1].Payload))
			require.NoError(t, err)
		}
		require.True(t, bridge1.running())
	})

	t.Run("no GPS, gone entities removed, per-field topics", func(t *testing.T) {
		n2 := wire.Node{Prefix: wire.DefaultPrefix, Site: ha2.site, Node: ha2.node}
		bridgeAs(ha2, "--gps=false", "--ha-remove-gone", "--field-topics")
		configs, removals := configTopics(n2, discovery.Sensors{BME280: discovery.Present, GPS: discovery.Disabled}, true)
		require.Len(t, configs, 7)
		require.Len(t, removals, 2)
		for _, topic := range configs {
			require.NotEmpty(t, latest(t, watch, topic).Payload)
		}
		for _, topic := range removals {
			for _, m := range watch.history(topic) {
				require.Empty(t, m.Payload, "%s: a node without GPS announced it", topic)
			}
		}
		require.Empty(t, watch.history(n2.Live(wire.StreamGPS)))

		env := latest(t, watch, n2.Live(wire.StreamEnv))
		fields, err := wire.FieldValues([]byte(env.Payload))
		require.NoError(t, err)
		require.Len(t, fields, 3)
		// What a shell script would run: the retained value of each field.
		host, port, _ := strings.Cut(addr, ":")
		for _, f := range fields {
			code, out := runOnce(t, nil, "mosquitto_sub", "-h", host, "-p", port, "-u", reader.name, "-P", reader.password,
				"-t", n2.Field(wire.StreamEnv, f.Key), "-C", "1", "-W", "10", "-F", "%r %p")
			require.Equal(t, 0, code, out)
			retained, value, _ := strings.Cut(strings.TrimSpace(out), " ")
			require.Equal(t, "1", retained, "%s is not retained", f.Key)
			_, err := strconv.ParseFloat(value, 64)
			require.NoError(t, err, "%s: %q is not a plain number", f.Key, value)
		}

		// The broker's gap detection reads seq only from readings: the
		// field topics are not readings, invalid or untracked ones.
		_, body := get(t, "http://"+ops+"/metrics")
		require.Zero(t, metric(t, body, "sensorfarm_broker_readings_invalid_total"))
		require.Zero(t, metric(t, body, "sensorfarm_broker_readings_untracked_total"))
		require.Positive(t, metric(t, body, `sensorfarm_broker_readings_received_total{node="ha2",site="farm1",stream="env"}`))
	})
}
