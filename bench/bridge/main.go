// Command bridge runs benchmarks 5 and 6 of bench/README.md and writes
// bench/results/bridge.md and bridge.png:
//
//   - 5, bridge cost: CPU time per reading and steady RSS of `bridge --sim`
//     against the naive bridge (bench/naive), both natively and as ARMv6
//     builds under qemu-arm-static -cpu arm1176, all four at once on the
//     same broker (bin/broker --demo on 127.0.0.1) with the same interval and
//     GPS replay speed; the size of the stripped ARMv6 bridge.
//   - 6, spool: bridge/spool's own benchmarks (bench_test.go), natively and
//     under qemu, gathered as ratios against paho's FileStore.
//
// Every figure is a ratio against a peer measured in the same run, repeated
// --runs times; the report gives the min and median. It starts its own
// processes, on 127.0.0.1 only, bounded in time, and ends them by PID.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	root, bin, out string
	runs           int
	warmup, window time.Duration
	interval       time.Duration
	gpsSpeed       float64
	replayTimes    string
	quick          bool
}

func main() {
	var o options
	fs := flag.NewFlagSet("bench/bridge", flag.ExitOnError)
	fs.StringVar(&o.root, "root", ".", "the repository's `directory`")
	fs.StringVar(&o.bin, "bin", "bin", "`directory` of make build's binaries and the naive bridge's")
	fs.StringVar(&o.out, "out", "bench/results", "`directory` the report is written to")
	fs.IntVar(&o.runs, "runs", 3, "repetitions of each measurement")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "time after every bridge's first reading before measuring")
	fs.DurationVar(&o.window, "window", 12*time.Second, "how long each run measures")
	fs.DurationVar(&o.interval, "interval", 200*time.Millisecond, "both bridges' --interval")
	fs.Float64Var(&o.gpsSpeed, "gps-replay-speed", 5, "both bridges' simulated GPS speed-up (fixes per second)")
	fs.StringVar(&o.replayTimes, "spool-replay-times", "20x", "-benchtime of our spool's replay benchmark (the others run once)")
	fs.BoolVar(&o.quick, "quick", false, "a smoke run that checks the tools work, not the numbers: one short run, the spool's own benchmark only under qemu")
	_ = fs.Parse(os.Args[1:])
	if o.quick {
		o.runs, o.warmup, o.window, o.replayTimes = 1, time.Second, 3*time.Second, "2x"
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("bench/bridge failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if o.runs < 1 {
		return errors.New("--runs must be at least 1")
	}
	for _, p := range []*string{&o.root, &o.bin, &o.out} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	scratch, err := os.MkdirTemp("", "bench-bridge-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)

	started := time.Now()
	var r report
	r.opts = o
	r.machine = describeMachine()
	if r.cost, err = benchCost(ctx, o, scratch, log); err != nil {
		return fmt.Errorf("benchmark 5, bridge cost: %w", err)
	}
	if r.size, err = benchSize(ctx, o, scratch); err != nil {
		return fmt.Errorf("benchmark 5, binary size: %w", err)
	}
	if r.spool, err = benchSpool(ctx, o, scratch, log); err != nil {
		return fmt.Errorf("benchmark 6, spool: %w", err)
	}
	r.took = time.Since(started)
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(o.out, "bridge.md"), md, 0o644); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	png, err := r.chart()
	if err != nil {
		return fmt.Errorf("draw the chart: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.out, "bridge.png"), png, 0o644); err != nil {
		return fmt.Errorf("write the chart: %w", err)
	}
	os.Stdout.Write(md)
	log.Info("bench/bridge done", "took", r.took.Round(time.Second), "report", filepath.Join(o.out, "bridge.md"))
	return nil
}
