package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// envFields are the keys of an env payload and the JSON type each must have.
var envFields = map[string]string{
	"site": "string", "node": "string", "seq": "number", "ts": "string", "time_source": "string",
	"temperature_c": "number", "humidity_pct": "number", "pressure_hpa": "number",
}

// checkEnv checks every field and type of an env payload and returns its seq.
func checkEnv(t *testing.T, payload, site, node string) uint64 {
	t.Helper()
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(payload), &raw), payload)
	require.Len(t, raw, len(envFields), "env payload has exactly the contract's keys: %s", payload)
	for k, typ := range envFields {
		v, ok := raw[k]
		require.True(t, ok, "key %q missing in %s", k, payload)
		switch typ {
		case "string":
			require.IsType(t, "", v, "key %q", k)
		case "number":
			require.IsType(t, float64(0), v, "key %q", k)
		}
	}
	require.Equal(t, site, raw["site"])
	require.Equal(t, node, raw["node"])
	ts, err := time.Parse(wire.TimeLayout, raw["ts"].(string))
	require.NoError(t, err, "ts in UTC with milliseconds")
	require.WithinDuration(t, time.Now(), ts, time.Minute, "ts is when the sample was taken")
	temp, hum, press := raw["temperature_c"].(float64), raw["humidity_pct"].(float64), raw["pressure_hpa"].(float64)
	require.True(t, temp > -40 && temp < 85, "temperature %v", temp)
	require.True(t, hum >= 0 && hum <= 100, "humidity %v", hum)
	require.True(t, press > 300 && press < 1100, "pressure %v", press)
	return uint64(raw["seq"].(float64))
}

func TestFarmEndToEnd(t *testing.T) {
	need(t, "mosquitto_sub")
	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	const site = "e2e"
	nodes := []string{"pizero-01", "pizero-02"}
	bridges := map[string]*process{}
	args := map[string][]string{}
	for _, n := range nodes {
		args[n] = bridgeArgs(t, addr, site, n, "--sim")
		bridges[n] = start(t, "bridge "+n, append([]string{filepath.Join(bin, "bridge")}, args[n]...)...)
	}

	// Live stream: both nodes come online and publish readings whose seq
	// starts at 1 and grows by one.
	last := map[string]uint64{}
	online := map[string]bool{}
	deadline := time.After(20 * time.Second)
	for len(online) < len(nodes) || last[nodes[0]] < 5 || last[nodes[1]] < 5 {
		select {
		case m := <-sub.msgs:
			for _, n := range nodes {
				node := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: n}
				switch m.Topic {
				case node.Status():
					require.Equal(t, wire.StatusOnline, m.Payload)
					online[n] = true
				case node.Live(wire.StreamEnv):
					seq := checkEnv(t, m.Payload, site, n)
					require.Equal(t, last[n]+1, seq, "%s: seq grows by exactly one", n)
					last[n] = seq
				}
			}
		case <-deadline:
			t.Fatalf("no complete stream within 20s: online=%v last=%v", online, last)
		}
	}

	n1 := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: "pizero-01"}
	n1health := n1.Health()

	// A late subscriber gets the latest reading and the status at once, retained.
	for _, topic := range []string{"sensorfarm/e2e/pizero-01/env", "sensorfarm/e2e/pizero-01/status"} {
		late := subscribe(t, addr, "-C", "1", "-W", "5", "-t", topic)
		m := late.next(topic, 5*time.Second)
		require.True(t, m.Retained, "%s is delivered as retained to a new subscriber", topic)
		if topic == "sensorfarm/e2e/pizero-01/status" {
			require.Equal(t, wire.StatusOnline, m.Payload)
		} else {
			checkEnv(t, m.Payload, site, "pizero-01")
		}
	}

	// Health: retained, every key of the contract, honest counters.
	health := subscribe(t, addr, "-C", "1", "-W", "5", "-t", n1health)
	var h map[string]any
	require.NoError(t, json.Unmarshal([]byte(health.next(n1health, 5*time.Second).Payload), &h))
	require.ElementsMatch(t, []string{"site", "node", "ts", "time_source", "version", "uptime_s", "spool_depth",
		"spool_bytes", "dropped", "sensor_errors", "gps_fix", "last_publish_ts"}, keys(h))
	require.Equal(t, map[string]any{"bme280": 0.0, "pa1010d": 0.0}, h["sensor_errors"])
	require.Equal(t, 0.0, h["dropped"])
	require.NotNil(t, h["last_publish_ts"], "health after the first acknowledged reading")

	// A clean stop says offline; a restart goes on with the next seq.
	require.Equal(t, 0, bridges["pizero-01"].stop(), "bridge exits 0 on SIGTERM")
	require.Equal(t, wire.StatusOffline, sub.next(n1.Status(), 5*time.Second).Payload)
	before := len(sub.history(n1.Live(wire.StreamEnv)))
	bridges["pizero-01"] = start(t, "bridge pizero-01 again", append([]string{filepath.Join(bin, "bridge")}, args["pizero-01"]...)...)
	require.Equal(t, wire.StatusOnline, sub.next(n1.Status(), 10*time.Second).Payload)
	require.Eventually(t, func() bool { return len(sub.history(n1.Live(wire.StreamEnv))) >= before+3 },
		10*time.Second, 100*time.Millisecond, "readings after the restart")
	var seqs []uint64
	for _, m := range sub.history(n1.Live(wire.StreamEnv)) {
		seqs = append(seqs, checkEnv(t, m.Payload, site, "pizero-01"))
	}
	for i, seq := range seqs {
		require.Equal(t, uint64(i+1), seq, "seq is 1, 2, 3, … across the restart: %v", seqs)
	}

	// SIGKILL: the broker publishes the will, so consumers see offline.
	n2 := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: "pizero-02"}
	bridges["pizero-02"].kill()
	for {
		m := sub.next(n2.Status(), 5*time.Second)
		if m.Payload == wire.StatusOffline {
			break
		}
	}
	late := subscribe(t, addr, "-C", "1", "-W", "5", "-t", n2.Status())
	require.Equal(t, wire.StatusOffline, late.next(n2.Status(), 5*time.Second).Payload, "offline is retained")
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
