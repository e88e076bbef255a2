package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/wire"
)

// site is the site every benchmarked bridge publishes under.
const site = "bench"

// variant is one of the four bridges of a run.
type variant struct {
	impl string // "bridge" or "naive"
	arch string // "native" or "arm1176"
}

var variants = []variant{{"bridge", "native"}, {"naive", "native"}, {"bridge", "arm1176"}, {"naive", "arm1176"}}

func (v variant) String() string { return v.impl + " " + v.arch }

// argv is the command line of v, publishing as node to the broker at addr.
func (v variant) argv(o options, addr, node, dir string) []string {
	var argv []string
	bin := o.bin
	if v.arch == "arm1176" {
		argv = []string{"qemu-arm-static", "-cpu", "arm1176"}
		bin = filepath.Join(o.bin, "linux-arm6")
	}
	common := []string{"--broker", "tcp://" + addr, "--site", site, "--node", node,
		"--interval", o.interval.String(), "--gps-replay-speed", fmt.Sprint(o.gpsSpeed)}
	if v.impl == "bridge" {
		return append(append(argv, filepath.Join(bin, "bridge"), "--sim", "--spool", dir, "--log-level", "warn"), common...)
	}
	return append(append(argv, filepath.Join(bin, "naive-bridge"), "--store", dir), common...)
}

// sample is what one variant did in one run's measuring window.
type sample struct {
	cpu      time.Duration
	readings int64
	rss      []int64 // VmRSS every rssEvery
}

func (s sample) cpuPerReading() time.Duration {
	if s.readings == 0 {
		return 0
	}
	return s.cpu / time.Duration(s.readings)
}

// steadyRSS is the median of the window's samples.
func (s sample) steadyRSS() int64 { return median(s.rss) }

const rssEvery = 250 * time.Millisecond

// costResult is benchmark 5's runs: runs[i][variant].
type costResult struct {
	runs []map[variant]sample
}

// counter counts the readings (env and gps, live and backlog) each node's
// messages reach a subscriber with.
type counter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *counter) get(node string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[node]
}

func (c *counter) handle(_ paho.Client, m paho.Message) {
	// <prefix>/<site>/<node>/<stream> or .../backlog/<stream>
	parts := strings.Split(m.Topic(), "/")
	if len(parts) < 4 {
		return
	}
	c.mu.Lock()
	c.n[parts[2]]++
	c.mu.Unlock()
}

var listeningRe = regexp.MustCompile(`msg=listening .*addr=(127\.0\.0\.1:\d+)`)

func benchCost(ctx context.Context, o options, scratch string, log *slog.Logger) (costResult, error) {
	broker, err := startProc("broker", filepath.Join(o.bin, "broker"), "--listen", "127.0.0.1:0", "--demo",
		"--data", filepath.Join(scratch, "broker"), "--ops-listen", "", "--store-sync=false")
	if err != nil {
		return costResult{}, err
	}
	defer broker.Stop(10 * time.Second)
	addr, err := broker.waitOutput(ctx, listeningRe, 15*time.Second)
	if err != nil {
		return costResult{}, err
	}

	// The subscriber counts what reaches a consumer: a reading the bridge
	// took but never delivered costs CPU and counts for nothing.
	count := &counter{n: map[string]int64{}}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-bridge-counter").
		SetCleanSession(true).SetOrderMatters(false))
	if t := sub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return costResult{}, fmt.Errorf("subscriber: connect to %s: %v", addr, t.Error())
	}
	defer sub.Disconnect(250)
	everyNode := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: "+"}
	filters := map[string]byte{}
	for _, s := range []string{wire.StreamEnv, wire.StreamGPS} {
		filters[everyNode.Live(s)] = wire.QoS
		filters[everyNode.Backlog(s)] = wire.QoS
	}
	if t := sub.SubscribeMultiple(filters, count.handle); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return costResult{}, fmt.Errorf("subscriber: subscribe: %v", t.Error())
	}

	var res costResult
	for i := range o.runs {
		log.Info("bridge cost", "run", i+1, "of", o.runs)
		s, err := costRun(ctx, o, scratch, addr, i, count)
		if err != nil {
			return costResult{}, fmt.Errorf("run %d: %w", i+1, err)
		}
		res.runs = append(res.runs, s)
	}
	return res, nil
}

// costRun runs the four variants at once and measures each over the same
// window, after each has published and warmed up.
func costRun(ctx context.Context, o options, scratch, addr string, run int, count *counter) (map[variant]sample, error) {
	procs := map[variant]*proc{}
	nodes := map[variant]string{}
	defer func() {
		for _, c := range procs {
			c.Stop(10 * time.Second)
		}
	}()
	for _, v := range variants {
		node := fmt.Sprintf("%s-%s-r%d", v.impl, v.arch, run+1)
		c, err := startProc(v.String(), v.argv(o, addr, node, filepath.Join(scratch, node))...)
		if err != nil {
			return nil, err
		}
		procs[v], nodes[v] = c, node
	}
	// qemu translates the binary as it runs: wait for every bridge's first
	// reading, then let each settle before measuring.
	deadline := time.Now().Add(60 * time.Second)
	for _, v := range variants {
		for count.get(nodes[v]) == 0 {
			if !procs[v].Running() {
				return nil, fmt.Errorf("%s exited (%v): %s", v, procs[v].Err(), procs[v].out)
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%s published nothing within 60s: %s", v, procs[v].out)
			}
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				return nil, err
			}
		}
	}
	if err := sleep(ctx, o.warmup); err != nil {
		return nil, err
	}

	type mark struct {
		cpu time.Duration
		n   int64
	}
	snap := func() (map[variant]mark, error) {
		m := map[variant]mark{}
		for _, v := range variants {
			cpu, err := cpuTime(procs[v].PID())
			if err != nil {
				return nil, fmt.Errorf("%s: %w (%s)", v, err, procs[v].out)
			}
			m[v] = mark{cpu, count.get(nodes[v])}
		}
		return m, nil
	}
	start, err := snap()
	if err != nil {
		return nil, err
	}
	out := map[variant]sample{}
	end := time.Now().Add(o.window)
	for time.Now().Before(end) {
		for _, v := range variants {
			b, err := rss(procs[v].PID())
			if err != nil {
				return nil, fmt.Errorf("%s: %w (%s)", v, err, procs[v].out)
			}
			s := out[v]
			s.rss = append(s.rss, b)
			out[v] = s
		}
		if err := sleep(ctx, rssEvery); err != nil {
			return nil, err
		}
	}
	stop, err := snap()
	if err != nil {
		return nil, err
	}
	for _, v := range variants {
		s := out[v]
		s.cpu, s.readings = stop[v].cpu-start[v].cpu, stop[v].n-start[v].n
		if s.readings == 0 {
			return nil, fmt.Errorf("%s published nothing in the window: %s", v, procs[v].out)
		}
		out[v] = s
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
