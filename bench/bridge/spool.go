package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The spool benchmarks of bridge/spool/bench_test.go that benchmark 6 runs:
// paho's FileStore and our spool at its default fsync interval, for the bytes
// an outage writes per reading and the rate its readings are replayed at.
const (
	fileStore = "filestore"
	ourSpool  = "spool-sync30s"
)

// The benchmarks run in two passes. Once each: the outages, whose bytes per
// reading do not vary, and FileStore's replay, which takes seconds under qemu
// (each file is opened and read). Many times each: our spool's replay, a few
// milliseconds natively, which one pass would leave to timer noise and to
// qemu translating the code on first use.
var (
	onceBench = fmt.Sprintf("Outage/(%[1]s|%[2]s)$|Replay/%[1]s$", fileStore, ourSpool)
	manyBench = fmt.Sprintf("Replay/%s$", ourSpool)
	// quickBench is what -quick runs under qemu: FileStore's outage alone
	// takes several seconds there.
	quickBench = fmt.Sprintf("Outage/%s$", ourSpool)
)

// spoolRun is one repetition of the spool benchmarks: metric values by
// benchmark name ("Outage/filestore") and unit ("B/reading").
type spoolRun map[string]map[string]float64

type spoolResult struct {
	native, arm1176 spoolRunList
}

func benchSpool(ctx context.Context, o options, scratch string, log *slog.Logger) (spoolResult, error) {
	var r spoolResult
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, a := range []struct {
		arch string
		env  []string
		emu  []string
		runs *spoolRunList
	}{
		{"native", nil, nil, &r.native},
		{"arm1176", []string{"GOOS=linux", "GOARCH=arm", "GOARM=6"}, []string{"qemu-arm-static", "-cpu", "arm1176"}, &r.arm1176},
	} {
		log.Info("spool", "arch", a.arch)
		test := filepath.Join(scratch, "spool-"+a.arch+".test")
		build := exec.CommandContext(ctx, "go", "test", "-c", "-o", test, "./bridge/spool")
		build.Dir = o.root
		build.Env = append(append(os.Environ(), "CGO_ENABLED=0"), a.env...)
		if out, err := build.CombinedOutput(); err != nil {
			return r, fmt.Errorf("build the %s spool benchmarks: %w: %s", a.arch, err, out)
		}
		passes := []struct{ pattern, benchtime string }{{onceBench, "1x"}, {manyBench, o.replayTimes}}
		if o.quick && a.emu != nil {
			passes = passes[:1]
			passes[0].pattern = quickBench
		}
		for _, p := range passes {
			argv := append(append([]string(nil), a.emu...), test, "-test.run", "^$", "-test.bench", p.pattern,
				"-test.benchtime", p.benchtime, "-test.count", strconv.Itoa(o.runs))
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Dir = scratch
			out, err := cmd.CombinedOutput()
			if err != nil {
				return r, fmt.Errorf("the %s spool benchmarks (%s): %w: %s", a.arch, p.pattern, err, out)
			}
			runs, err := parseBench(out)
			if err != nil {
				return r, fmt.Errorf("the %s spool benchmarks (%s): %w", a.arch, p.pattern, err)
			}
			*a.runs = a.runs.merge(runs)
		}
	}
	return r, nil
}

// merge adds the i-th repetition of more to the i-th of rs.
func (rs spoolRunList) merge(more []spoolRun) spoolRunList {
	for i, m := range more {
		if i == len(rs) {
			rs = append(rs, spoolRun{})
		}
		maps.Copy(rs[i], m)
	}
	return rs
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(-\d+)?\s+\d+\s+(.*)$`)

// parseBench reads `go test -bench` output into one spoolRun per repetition:
// the i-th result of each benchmark belongs to repetition i, whichever order
// -count printed them in.
func parseBench(out []byte) ([]spoolRun, error) {
	var runs []spoolRun
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f := strings.Fields(m[3])
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("benchmark line %q: values and units do not pair", sc.Text())
		}
		metrics := map[string]float64{}
		for i := 0; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: %w", sc.Text(), err)
			}
			metrics[f[i+1]] = v
		}
		name := m[1]
		i := seen[name]
		seen[name]++
		if i == len(runs) {
			runs = append(runs, spoolRun{})
		}
		runs[i][name] = metrics
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("no benchmark results in: %s", out)
	}
	return runs, nil
}

// ratios are, per repetition that has both, num's metric over den's (or
// den's over num's when inverse: for "less is better" figures).
func (rs spoolRunList) ratios(num, den, unit string, inverse bool) []float64 {
	var out []float64
	for _, r := range rs {
		a, okA := r[num][unit]
		b, okB := r[den][unit]
		if !okA || !okB || a == 0 || b == 0 {
			continue
		}
		if inverse {
			a, b = b, a
		}
		out = append(out, a/b)
	}
	return out
}

// values are one benchmark's metric, per repetition that has it.
func (rs spoolRunList) values(name, unit string) []float64 {
	var out []float64
	for _, r := range rs {
		if v, ok := r[name][unit]; ok {
			out = append(out, v)
		}
	}
	return out
}

type spoolRunList []spoolRun
