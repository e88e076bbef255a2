package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/bench/stats"
)

// cpuTime is a process's utime + stime from /proc (USER_HZ, 100 a second).
func cpuTime(pid int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unreadable /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// fmtSpread is a metric over the runs: its median and range.
func fmtSpread(s stats.Spread) string {
	if s.Min == s.Max {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtNum(v float64) string {
	if v == float64(int64(v)) {
		return strconv.FormatInt(int64(v), 10)
	}
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// metric is one row of the report.
type metric struct {
	name   string
	higher bool // higher is better
	get    func(result) float64
}

var metrics = []metric{
	{"throughput, readings/s", true, func(r result) float64 { return r.rate }},
	{"broker CPU per reading, µs", false, func(r result) float64 { return float64(r.cpuPer) / float64(time.Microsecond) }},
	{"p99 latency, ms", false, func(r result) float64 { return float64(r.p99) / float64(time.Millisecond) }},
	{"acknowledged, not delivered (burst)", false, func(r result) float64 { return float64(r.dropped) }},
	{"acknowledged, lost to a SIGKILL", false, func(r result) float64 { return float64(r.lost) }},
}

// report is the Markdown table: each broker's median [min–max] and the
// ratios of ours to mosquitto and to bare mochi, run by run; overlapping
// ranges are a tie.
func report(plan Plan, pin bool, res map[kind][]result) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmark 7: the farm's workload on the store\n\n")
	fmt.Fprintf(&b, "%d publishers (bridge users, the contract's ACL) each sending %d retained QoS 1 readings with %d unacknowledged "+
		"(a backlog replay) to one archiver with a persistent session; then the same until the broker is SIGKILLed after %s, "+
		"restarted on its data, and the archiver resumes. %d runs, median [min–max]. Ours: `bin/broker --users` with its "+
		"defaults (`--store-sync`: no PUBACK before the fsync that covers it). mosquitto: the same users and ACL (`broker user export`), "+
		"`persistence true`, `autosave_interval 1` (it has no per-message fsync). Bare mochi: mochi-mqtt as `bench/baremochi` runs it, "+
		"no users, no store, no hooks of ours, so what any broker built on it could do at most (it keeps nothing across a restart: "+
		"no SIGKILL run). Last column: ours with `--stock-delivery` (mochi's own delivery, every store write fsynced), for what the "+
		"hold and the journal changed. Brokers pinned to core 0, this tool to core 1: %v.\n\n",
		plan.Publishers, plan.Each, plan.Window, plan.KillAfter, plan.Runs, pin)
	fmt.Fprintf(&b, "| | ours | mosquitto | ours/mosquitto | verdict | bare mochi | ours/mochi | ours `--stock-delivery` |\n"+
		"|---|---:|---:|---:|---|---:|---:|---:|\n")
	for _, m := range metrics {
		values := func(k kind) []float64 {
			var v []float64
			for _, r := range res[k] {
				if x := m.get(r); x >= 0 {
					v = append(v, x)
				}
			}
			return v
		}
		o, q, bm := values(ours), values(mosquitto), values(mochi)
		so, _ := stats.Of(o)
		sq, _ := stats.Of(q)
		verdict := "tie (ranges overlap)"
		switch so.Compare(sq) {
		case -1:
			verdict = map[bool]string{true: "mosquitto better", false: "ours better"}[m.higher]
		case 1:
			verdict = map[bool]string{true: "ours better", false: "mosquitto better"}[m.higher]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name, fmtSpread(so), fmtSpread(sq), ratio(o, q), verdict,
			fmtValues(bm), ratio(o, bm), fmtValues(values(stock)))
	}
	return b.Bytes()
}

// ratio is ours/peer run by run, median [min–max], or – where a run has no
// figure or a peer's is 0.
func ratio(ours, peer []float64) string {
	r := stats.Ratios(ours, peer)
	if len(r) != len(ours) || len(r) == 0 {
		return "–"
	}
	s, _ := stats.Of(r)
	return fmtSpread(s) + "×"
}

// fmtValues is fmtSpread, or – for a figure not measured.
func fmtValues(v []float64) string {
	s, ok := stats.Of(v)
	if !ok {
		return "–"
	}
	return fmtSpread(s)
}
