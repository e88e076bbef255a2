package main

import (
	"context"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The quick plan end to end, as `make bench-broker-quick` runs it: the real
// broker, bare mochi and mosquitto, every benchmark, the report and chart.
// It checks that the tools work and the figures are there, not what they are.
func TestQuickRun(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "../../broker", "../baremochi")
	// Both are package main: go build names them broker and baremochi.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building the broker and bare mochi: %s", out)

	results := t.TempDir()
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = run(ctx, Options{Quick: true, Bin: bin, BareMochi: filepath.Join(bin, "baremochi"), Out: results, BrokerCPU: 0, LoadCPU: 1, Pin: true}, log)
	require.NoError(t, err, "log:\n%s", logs.String())

	md, err := os.ReadFile(filepath.Join(results, "broker.md"))
	require.NoError(t, err)
	for _, want := range []string{
		"| 1. fan-in 5→1 | throughput (msgs/s) |", "| 1. fan-in 5→1 | p99 latency (ms) |",
		"| 2. fan-out 1→3 exact |", "| 2. fan-out 1→3 wildcard |",
		"| 3. storm 50 sessions | RSS per connection (KiB) |", "| 3. storm 50 sessions | p99 CONNACK (ms) |",
		"## 4. Farm: 20 simulated bridges", "| lost (by seq) / duplicates / left in spools / dropped | 0 / 0 / 0 / 0 |",
		"| 3. storm 50 sessions | of which goroutine stacks (KiB) |", "the same users and ACL",
		"| 3b. 10 subscribers, 100 messages each | RSS per connection after the messages (KiB) |",
	} {
		require.Contains(t, string(md), want)
	}
	// Every peer answered every benchmark: no empty cell.
	for _, line := range strings.Split(string(md), "\n") {
		if (strings.HasPrefix(line, "| 1.") || strings.HasPrefix(line, "| 2.") || strings.HasPrefix(line, "| 3")) && !strings.Contains(line, "| of which ") {
			cells := strings.Split(line, "|")
			for _, c := range cells[3:6] {
				require.NotEqual(t, "—", strings.TrimSpace(c), "a peer without a figure: %s", line)
			}
		}
	}
	f, err := os.Open(filepath.Join(results, "broker.png"))
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	require.Greater(t, img.Bounds().Dy(), 100)

	// The brokers it started from bin are gone.
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), bin) {
			t.Errorf("a process started by the run is still there: %s: %q", p, b)
		}
	}
}

// Overlapping ranges are a tie, whatever the medians; apart, the median
// ratio decides.
func TestVerdictTie(t *testing.T) {
	verdict := func(ours, peer []float64) string {
		res := newResults()
		for i := range ours {
			res.add("1. fan-in", Ours, metricRate, ours[i])
			res.add("1. fan-in", Mosquitto, metricRate, peer[i])
		}
		return (&report{res: res}).verdict("1. fan-in", metricRate)
	}
	require.Equal(t, "vs mosquitto ≥ 1.00: tie (the ranges overlap)", verdict([]float64{100, 110, 120}, []float64{115, 130, 140}))
	require.Equal(t, "vs mosquitto ≥ 1.00: **not met**", verdict([]float64{100, 110, 112}, []float64{115, 130, 140}))
	require.Equal(t, "vs mosquitto ≥ 1.00: met", verdict([]float64{150, 160, 170}, []float64{115, 130, 140}))
}
