// Command broker is the broker half of `make bench`: it starts our broker,
// bare mochi-mqtt and Debian's mosquitto on 127.0.0.1, each pinned to one
// core and the load on the other, runs benchmarks 1-4 of issue 9 against them
// (fan-in, fan-out, connection storm, a farm of simulated bridges), and writes
// the figures with their ratios as markdown and a PNG chart.
//
// It ends only the processes it started, by their PIDs.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
)

// Options are the command line.
type Options struct {
	Quick     bool
	Bin       string // directory of broker and linux-arm64/broker (make build's)
	BareMochi string // the bench/baremochi binary
	Out       string // where broker.md and broker.png go
	BrokerCPU int
	LoadCPU   int
	// Pin runs each broker on BrokerCPU and the load on LoadCPU; without
	// it nothing is pinned, and the report is broker-unpinned.md.
	Pin   bool
	Limit time.Duration
}

func main() {
	var o Options
	flag.BoolVar(&o.Quick, "quick", false, "every benchmark once on small numbers: checks the tools work, not the figures")
	flag.StringVar(&o.Bin, "bin", "bin", "directory of broker and linux-arm64/broker, as make build leaves them")
	flag.StringVar(&o.BareMochi, "baremochi", "bin/bench/baremochi", "the bench/baremochi binary")
	flag.StringVar(&o.Out, "out", "bench/results", "directory for broker.md and broker.png")
	flag.IntVar(&o.BrokerCPU, "broker-cpu", 0, "core the brokers are pinned to")
	flag.IntVar(&o.LoadCPU, "load-cpu", 1, "core the load tool and the simulated farm are pinned to")
	flag.BoolVar(&o.Pin, "pin", true, "pin the brokers and the load to their cores; false: nothing pinned, benchmarks 1-3 only (the farm and the qemu factor are ours alone), written to broker-unpinned.md")
	flag.DurationVar(&o.Limit, "limit", 0, "bound on the whole run (default 20m, 90s with --quick)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("bench-broker failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o Options, log *slog.Logger) error {
	plan, name := FullPlan, "make bench-broker"
	if o.Quick {
		plan, name = QuickPlan, "make bench-broker-quick"
	}
	reportName := "broker"
	if !o.Pin {
		plan, reportName = plan.unpinned(), "broker-unpinned"
		name += " (unpinned)"
	}
	if o.Limit == 0 {
		o.Limit = 20 * time.Minute
		if o.Quick {
			o.Limit = 90 * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Limit)
	defer cancel()
	tools := []string{"mosquitto"}
	if o.Pin {
		tools = append(tools, "taskset")
	}
	if plan.QemuMessages > 0 {
		tools = append(tools, "qemu-aarch64-static")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (make deps installs it): %w", t, err)
		}
	}
	// The peers run in directories of their own: absolute paths.
	for _, p := range []*string{&o.Bin, &o.BareMochi} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	for _, b := range []string{filepath.Join(o.Bin, "broker"), o.BareMochi} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("build it first (make bench-broker does): %w", err)
		}
	}
	if o.Pin && (runtime.NumCPU() < 2 || o.BrokerCPU == o.LoadCPU) {
		return fmt.Errorf("the brokers and the load need a core each (%d cores; --broker-cpu %d, --load-cpu %d)", runtime.NumCPU(), o.BrokerCPU, o.LoadCPU)
	}
	files, err := raiseOpenFiles(plan.maxStorm() + 2000)
	if err != nil {
		return err
	}
	// Every thread of this process, and so every one it starts later, on
	// the load core.
	brokerCPU := -1
	if o.Pin {
		brokerCPU = o.BrokerCPU
		if out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(o.LoadCPU), strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("pinning the load tool to core %d: %v: %s", o.LoadCPU, err, out)
		}
	}

	dir, err := os.MkdirTemp("", "bench-broker-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	started := time.Now()
	usersFile := filepath.Join(dir, "users.yaml")
	users, err := fleet.NewUsers(usersFile, "bench", plan.bridgesNeeded())
	if err != nil {
		return err
	}
	// mosquitto checks the same passwords at PBKDF2's 1,000 iterations,
	// about what bcrypt cost 4 (fleet.Cost) costs ours.
	mosqUsers, err := users.ExportMosquitto(ctx, filepath.Join(o.Bin, "broker"), usersFile, dir, mosquittoIterations)
	if err != nil {
		return err
	}
	log.Info("users written", "bridges", len(users.Bridges), "bcrypt_cost", fleet.Cost, "took", time.Since(started).Round(time.Millisecond))
	r := &runner{plan: plan, dir: dir, users: users, log: log, res: newResults(),
		env: peerEnv{bin: o.Bin, bareMochi: o.BareMochi, cpu: brokerCPU, users: usersFile, mosqUsers: mosqUsers, maxClients: plan.maxStorm() + 1000}}

	// Peers alternate within each run, so that a slow spell of this shared
	// machine falls on all of them rather than on one.
	for run := range plan.Runs {
		for _, k := range Kinds {
			log.Info("benchmarks 1-2", "run", run+1, "peer", k)
			if err := r.flows(ctx, k); err != nil {
				return err
			}
		}
		for _, n := range plan.Storms {
			for _, k := range Kinds {
				if err := r.storm(ctx, k, n); err != nil {
					return err
				}
			}
		}
		if plan.BusySubscribers > 0 {
			for _, k := range Kinds {
				if err := r.busy(ctx, k); err != nil {
					return err
				}
			}
		}
	}
	rp := &report{plan: plan, res: r.res}
	// A farm that lost readings fails the run, after the report says so
	// with the rest of the figures.
	var farmErr error
	if plan.FarmBridges > 0 {
		if rp.farm, farmErr = r.farm(ctx); farmErr != nil && (rp.farm == nil || rp.farm.Audit == nil) {
			return farmErr
		}
		rp.farmErr = farmErr
	}
	if plan.QemuMessages > 0 {
		if rp.qemu, err = r.qemu(ctx); err != nil {
			return err
		}
	}
	rp.machine = describeMachine(name, o, files, started)
	md := rp.markdown()
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.Out, reportName+".md"), md, 0o644); err != nil {
		return err
	}
	if err := rp.chart(filepath.Join(o.Out, reportName+".png")); err != nil {
		return err
	}
	fmt.Printf("%s\n(written to %s)\n", md, filepath.Join(o.Out, reportName+".md"))
	return farmErr
}

// raiseOpenFiles sets the soft limit on open files to the hard one, for
// this process and the brokers it starts (they inherit it), and fails when
// even that is below need.
func raiseOpenFiles(need int) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("open files limit: %w", err)
	}
	if l.Max < uint64(need) {
		return 0, fmt.Errorf("open files: the hard limit is %d, the storm needs %d (raise it: ulimit -Hn, or LimitNOFILE)", l.Max, need)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("open files limit: %w", err)
	}
	return l.Cur, nil
}

func describeMachine(plan string, o Options, files uint64, started time.Time) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: goVersion(), Pinned: o.Pin, BrokerCPU: o.BrokerCPU, LoadCPU: o.LoadCPU, Plan: plan,
		StartedAt: started, TookFor: time.Since(started), OpenFilesN: files, CPU: "unknown CPU", Kernel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Mosquitto = "mosquitto (version unknown)"
	if out, err := exec.Command("mosquitto", "-h").CombinedOutput(); err == nil || len(out) > 0 {
		if first, _, _ := strings.Cut(string(out), "\n"); strings.HasPrefix(first, "mosquitto version") {
			m.Mosquitto = first
		}
	}
	return m
}
