package e2e

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// nmeaDir holds the real receiver captures, beside the repository.
var nmeaDir = filepath.Join("..", "..", "shared", "testdata", "nmea")

// tpv is one of gpsd's decoded fixes from a .log.chk file.
type tpv struct {
	Mode int     `json:"mode"`
	Time string  `json:"time"`
	Lat  float64 `json:"lat"`
	Lon  float64 `json:"lon"`
	Alt  float64 `json:"altMSL"`
}

// gpsdFixes reads gpsd's own decoding of a capture: its TPV reports with a
// time and a fix, the last report for each time winning.

// fastMode is I2C fast mode (a Pi with dtparam=i2c_arm_baudrate=400000), for
// captures replayed 10 times faster than the receiver sent them: standard
// mode's 100 kHz carries about 11 KB of NMEA a second.
const fastMode = "400000"

func gpsdFixes(t *testing.T, chk string) map[string]tpv {
	t.Helper()
	f, err := os.Open(chk)
	require.NoError(t, err, "the NMEA captures are in ../shared/testdata/nmea")
	defer f.Close()
	out := map[string]tpv{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"class":"TPV"`) {
			continue
		}
		var p tpv
		require.NoError(t, json.Unmarshal([]byte(line), &p))
		if p.Time != "" && p.Mode >= 2 {
			out[p.Time] = p
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// TestGPSReplay serves a real MediaTek capture through the simulated
// PA1010D (255-byte reads, padding, split sentences) to the real bridge
// binary, and checks what mosquitto_sub receives against gpsd's decoding.
func TestGPSReplay(t *testing.T) {
	need(t, "mosquitto_sub")
	want := gpsdFixes(t, filepath.Join(nmeaDir, "mt3339.log.chk"))
	require.Len(t, want, 30)

	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "replay", Node: "pizero-gps"}
	// The capture is from 2015: the date floor must let it through.
	start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, node.Site, node.Node,
		"--sim", "--sim-i2c-hz", fastMode, "--gps-replay", filepath.Join(nmeaDir, "mt3339.log"), "--gps-replay-speed", "10", "--gps-not-before", "2000-01-01")...)...)

	for want1 := uint64(1); want1 <= 10; want1++ {
		m := sub.next(node.Live(wire.StreamGPS), 15*time.Second)
		var g map[string]any
		require.NoError(t, json.Unmarshal([]byte(m.Payload), &g))
		require.ElementsMatch(t, []string{"site", "node", "seq", "ts", "time_source", "latitude", "longitude", "altitude_m",
			"speed_kmh", "course_deg", "fix", "sats", "hdop", "gps_accuracy"}, keys(g))
		require.Equal(t, float64(want1), g["seq"])
		// Stamped as every reading: the fix's own time without NTP, the
		// system time with it (this machine's kernel decides).
		var ref tpv
		switch g["time_source"] {
		case wire.TimeGPS:
			var ok bool
			ref, ok = want[g["ts"].(string)]
			require.True(t, ok, "a published fix is one gpsd decoded with a fix: %s", m.Payload)
		case wire.TimeSystem:
			ts, err := time.Parse(time.RFC3339, g["ts"].(string))
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), ts, time.Minute, "stamped by the synchronised system clock")
			for _, w := range want {
				if math.Abs(w.Lat-g["latitude"].(float64)) < 1e-6 && math.Abs(w.Lon-g["longitude"].(float64)) < 1e-6 {
					ref = w
				}
			}
			require.NotZero(t, ref.Mode, "a published fix is one gpsd decoded with a fix: %s", m.Payload)
		default:
			t.Fatalf("a GPS reading is stamped %v", g["time_source"])
		}
		require.InDelta(t, ref.Lat, g["latitude"], 1e-6)
		require.InDelta(t, ref.Lon, g["longitude"], 1e-6)
		require.InDelta(t, ref.Alt, g["altitude_m"], 0.1)
		require.Equal(t, float64(ref.Mode), g["fix"])
		acc := g["gps_accuracy"].(float64)
		require.InDelta(t, g["hdop"].(float64)*5, acc, 0.1, "gps_accuracy is HDOP × 5 m UERE")
		require.False(t, math.IsNaN(acc))
	}
}

// TestGPSDateFloor: the same capture with the default floor (the 2019 GPS
// week rollover) publishes no position, and health says there is no fix.
func TestGPSDateFloor(t *testing.T) {
	need(t, "mosquitto_sub")
	_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	sub := subscribe(t, addr, "-t", "sensorfarm/#")
	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "replay", Node: "pizero-old"}
	start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, node.Site, node.Node,
		"--sim", "--sim-i2c-hz", fastMode, "--gps-replay", filepath.Join(nmeaDir, "mt3339.log"), "--gps-replay-speed", "10")...)...)
	// Ten epochs go by: the env stream runs, no gps reading appears.
	require.Eventually(t, func() bool { return len(sub.history(node.Live(wire.StreamEnv))) >= 5 }, 15*time.Second, 100*time.Millisecond)
	time.Sleep(time.Second)
	require.Empty(t, sub.history(node.Live(wire.StreamGPS)), "a 2015 date is refused by the default floor")
	for _, m := range sub.history(node.Health()) {
		var h wire.Health
		require.NoError(t, json.Unmarshal([]byte(m.Payload), &h))
		require.Equal(t, 0, h.GPSFix)
		require.NotEqual(t, wire.TimeGPS, h.TimeSource)
	}
}
