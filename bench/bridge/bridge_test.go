package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Real output of `go test -bench` on the spool benchmarks, two repetitions
// (the second shortened), with the lines around them.
const benchOutput = `goos: linux
goarch: arm
pkg: github.com/sensorfarm/sensorfarm/bridge/spool
cpu: AMD EPYC @ 2596.096MHz
BenchmarkOutage/filestore-2         	       1	4724594192 ns/op	      4096 B/reading	      4696 dev-B/reading	      4096 disk-B/reading
BenchmarkOutage/spool-sync30s-2     	       1	1066364711 ns/op	       135.4 B/reading	       534.8 dev-B/reading	        56.89 disk-B/reading	        30.25 x-filestore
BenchmarkReplay/filestore-2         	       1	3210329004 ns/op	      1122 readings/s
BenchmarkReplay/spool-sync30s-2     	       1	 185571321 ns/op	     19413 readings/s	        17.31 x-filestore
BenchmarkOutage/filestore-2         	       1	4724594192 ns/op	      4000 B/reading
BenchmarkOutage/spool-sync30s-2     	       1	1066364711 ns/op	       125 B/reading
BenchmarkReplay/filestore-2         	       1	3210329004 ns/op	      1000 readings/s
BenchmarkReplay/spool-sync30s-2     	       1	 185571321 ns/op	     20000 readings/s
PASS
`

func TestParseBench(t *testing.T) {
	runs, err := parseBench([]byte(benchOutput))
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.Equal(t, 135.4, runs[0]["Outage/spool-sync30s"]["B/reading"])
	require.Equal(t, 17.31, runs[0]["Replay/spool-sync30s"]["x-filestore"])
	require.Equal(t, 125.0, runs[1]["Outage/spool-sync30s"]["B/reading"])

	l := spoolRunList(runs)
	require.InDeltaSlice(t, []float64{19413.0 / 1122, 20}, l.ratios("Replay/spool-sync30s", "Replay/filestore", "readings/s", false), 1e-9)
	require.InDeltaSlice(t, []float64{1122.0 / 19413, 0.05}, l.ratios("Replay/spool-sync30s", "Replay/filestore", "readings/s", true), 1e-9)
	require.Equal(t, []float64{4096, 4000}, l.values("Outage/filestore", "B/reading"))
	require.Empty(t, l.values("Outage/bbolt-sync30s", "B/reading"))

	// -count may print each benchmark's repetitions together.
	grouped, err := parseBench([]byte("BenchmarkA-2 1 1 x\nBenchmarkA-2 1 2 x\nBenchmarkB-2 1 3 x\nBenchmarkB-2 1 4 x\n"))
	require.NoError(t, err)
	require.Equal(t, []spoolRun{{"A": {"x": 1}, "B": {"x": 3}}, {"A": {"x": 2}, "B": {"x": 4}}}, grouped)

	_, err = parseBench([]byte("PASS\nok\n"))
	require.ErrorContains(t, err, "no benchmark results")
	_, err = parseBench([]byte("BenchmarkX-2  1  12 ns/op 7\n"))
	require.ErrorContains(t, err, "do not pair")
}

func TestSymbolPackage(t *testing.T) {
	for sym, want := range map[string]string{
		"github.com/eclipse/paho%2emqtt%2egolang.(*client).Publish": "github.com/eclipse/paho.mqtt.golang",
		"github.com/eclipse/paho.mqtt.golang/packets.ReadPacket":    "github.com/eclipse/paho.mqtt.golang/packets",
		"runtime.(*mheap).alloc":                                    "runtime",
		"type:*github.com/eclipse/paho%2emqtt%2egolang.client":      "type:",
		"go:func.*":    "go:",
		"main.version": "main",
	} {
		require.Equal(t, want, symbolPackage(sym), sym)
	}
}

// The naive bridge built with its symbol table: its packages' sizes must
// add up to no more than the file, which counting .bss would break.
func TestSizeByPackage(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "naive")
	build := exec.Command("go", "build", "-o", exe, "../naive")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	fi, err := os.Stat(exe)
	require.NoError(t, err)
	top, err := sizeByPackage(exe, 1000)
	require.NoError(t, err)
	var total int64
	pkgs := map[string]bool{}
	for _, p := range top {
		total += p.size
		pkgs[p.pkg] = true
	}
	require.LessOrEqual(t, total, fi.Size())
	require.True(t, pkgs["runtime"] && pkgs["github.com/eclipse/paho.mqtt.golang"], "%v", top[:5])
	top3, err := sizeByPackage(exe, 3)
	require.NoError(t, err)
	require.Equal(t, top[:3], top3, "the largest first")

	_, err = sizeByPackage(filepath.Join(t.TempDir(), "missing"), 3)
	require.Error(t, err)
}

func TestProcReaders(t *testing.T) {
	// This process has done work and holds memory: both must show.
	busy := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(busy) {
	}
	cpu, err := cpuTime(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, cpu, time.Duration(0))
	b, err := rss(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, b, int64(1<<20))

	got, err := parseRSS(strings.NewReader("Name:\tbridge\nVmRSS:\t    9120 kB\n"))
	require.NoError(t, err)
	require.Equal(t, int64(9120<<10), got)
	_, err = parseRSS(strings.NewReader("Name:\tbridge\n"))
	require.ErrorContains(t, err, "no VmRSS")
}

func TestMedianAndTargets(t *testing.T) {
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
	require.Equal(t, 0.0, median([]float64(nil)))

	ours, naive := variant{"bridge", "native"}, variant{"naive", "native"}
	r := report{cost: costResult{runs: []map[variant]sample{
		{ours: {cpu: 300 * time.Millisecond, readings: 100}, naive: {cpu: time.Second, readings: 100}},
		{ours: {cpu: 500 * time.Millisecond, readings: 100}, naive: {cpu: time.Second, readings: 100}},
	}}}
	require.Equal(t, []float64{0.3, 0.5}, r.cost.cpuRatios("native"))
	var cpu target
	for _, tg := range r.targets() {
		if strings.Contains(tg.what, "(native)") && strings.Contains(tg.what, "CPU") {
			cpu = tg
		}
	}
	require.False(t, cpu.ok, "a target is judged on its worst run: 0.5 > 0.4")
}
