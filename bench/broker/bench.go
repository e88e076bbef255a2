package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Plan sizes every benchmark.
type Plan struct {
	Runs int // repetitions of benchmarks 1-3, every peer in each

	// 1. Fan-in: FanInPublishers bridges to one subscriber on
	// sensorfarm/#. Closed loop (one message in flight per publisher) for
	// throughput, open loop at FanInRate per publisher for latency.
	FanInPublishers int
	FanInCount      int
	FanInRate       float64
	OpenFor         time.Duration // length of each open-loop phase

	// 2. Fan-out: one publisher to each of FanOutSubscribers subscribers,
	// on the exact topic and on a wildcard. Closed loop with a window of
	// FanOutWindow for throughput; open loop for latency, at a rate that
	// makes FanOutOpenLoad deliveries a second whatever the subscribers, so
	// that latency is compared below every peer's saturation, not in a
	// queue that grows for the whole run.
	FanOutSubscribers []int
	FanOutDeliveries  int // closed loop: messages x subscribers
	FanOutWindow      int
	FanOutOpenLoad    float64

	// 3. Connection storm: persistent sessions, StormConcurrency being
	// opened at once.
	Storms           []int
	StormConcurrency int

	// 3b. BusySubscribers clean subscribers to one topic, each sent
	// BusyMessages QoS 0 messages at BusyRate a second; 0: not run.
	BusySubscribers int
	BusyMessages    int
	BusyRate        float64

	// 4. Farm: FarmBridges simulated bridges at one reading a second for
	// FarmFor, against our broker.
	FarmBridges int
	FarmFor     time.Duration
	FarmWarmup  time.Duration // left out of the steady figures

	// QemuMessages > 0 measures our broker's CPU per message natively and
	// as the arm64 build under qemu-aarch64-static (closed-loop fan-in).
	QemuMessages int
}

// FullPlan is `make bench-broker`.
var FullPlan = Plan{
	Runs:            3,
	FanInPublishers: 50, FanInCount: 400, FanInRate: 40, OpenFor: 2 * time.Second,
	FanOutSubscribers: []int{10, 100}, FanOutDeliveries: 30000, FanOutWindow: 16, FanOutOpenLoad: 5000,
	Storms: []int{2000, 10000}, StormConcurrency: 50,
	// Past mochi's 8,192 queue slots; 100,000 deliveries a second.
	BusySubscribers: 200, BusyMessages: 8300, BusyRate: 500,
	FarmBridges: 1000, FarmFor: 60 * time.Second, FarmWarmup: 15 * time.Second,
	QemuMessages: 5000,
}

// QuickPlan is `make bench-broker-quick`: every tool once, on small numbers.
var QuickPlan = Plan{
	Runs:            1,
	FanInPublishers: 5, FanInCount: 50, FanInRate: 20, OpenFor: 500 * time.Millisecond,
	FanOutSubscribers: []int{3}, FanOutDeliveries: 300, FanOutWindow: 4, FanOutOpenLoad: 60,
	Storms: []int{50}, StormConcurrency: 10,
	BusySubscribers: 10, BusyMessages: 100, BusyRate: 200,
	FarmBridges: 20, FarmFor: 5 * time.Second, FarmWarmup: 2 * time.Second,
}

// unpinned is p for a run without pinning: benchmarks 1-3 against the
// peers, the smallest storm only; 3b (memory, not speed), the farm and the
// qemu factor (ours alone) are the pinned run's.
func (p Plan) unpinned() Plan {
	p.Storms = p.Storms[:1]
	p.BusySubscribers, p.FarmBridges, p.QemuMessages = 0, 0, 0
	return p
}

// mosquittoIterations is the PBKDF2 iterations of mosquitto's passwords.
const mosquittoIterations = 1000

// bridgesNeeded is how many bridge users the plan's publishers use.
func (p Plan) bridgesNeeded() int { return max(p.FanInPublishers, p.FarmBridges, 1) }

func (p Plan) maxStorm() int {
	n := 0
	for _, s := range p.Storms {
		n = max(n, s)
	}
	return n
}

// runner holds what every benchmark shares.
type runner struct {
	plan   Plan
	dir    string // the run's own: users, peers' directories, spools
	env    peerEnv
	users  *fleet.Users
	log    *slog.Logger
	res    *Results
	seq    int // numbers the peers' directories
	subGen int // numbers the sets of subscribers
}

func (r *runner) start(ctx context.Context, kind Kind) (*peer, error) {
	r.seq++
	dir := filepath.Join(r.dir, fmt.Sprintf("%03d-%s", r.seq, kind))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return startPeer(ctx, kind, dir, r.env)
}

func (r *runner) publishers(n int) []load.Publisher {
	ps := make([]load.Publisher, n)
	for i := range ps {
		node := r.users.Node(i)
		c := r.users.Bridges[i]
		ps[i] = load.Publisher{Node: node, Login: load.Login{ClientID: node.ClientID(), Username: c.Name, Password: c.Password}}
	}
	return ps
}

// subscribers are n readers on filter. Their client IDs are new for every
// call: a subscriber reconnecting under the ID of one that is still being
// disconnected can lose its subscription to the old session's clean-up in
// mochi (seen here as a subscriber receiving nothing), which is a different
// benchmark.
func (r *runner) subscribers(n int, filter string) []load.Subscriber {
	r.subGen++
	ss := make([]load.Subscriber, n)
	for i := range ss {
		ss[i] = load.Subscriber{Filter: filter, Login: load.Login{
			ClientID: fmt.Sprintf("bench-sub-%d-%d", r.subGen, i), Username: r.users.Reader.Name, Password: r.users.Reader.Password}}
	}
	return ss
}

// flow runs f against p and checks that nothing was lost.
func (r *runner) flow(ctx context.Context, p *peer, name string, f load.Flow) (*load.Result, error) {
	f.Addr = p.addr
	res, err := load.Run(ctx, f)
	if err == nil {
		err = p.alive()
	}
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", name, p.kind, err)
	}
	if res.Lost > 0 {
		return nil, fmt.Errorf("%s on %s: %d of %d messages lost", name, p.kind, res.Lost, res.Expected)
	}
	r.log.Info(name, "peer", p.kind, "mode", res.Mode, "msgs_per_s", int(res.Throughput()), "latency", res.Latency.String())
	return res, nil
}

// flows runs benchmarks 1 and 2 against one freshly started peer.
func (r *runner) flows(ctx context.Context, kind Kind) error {
	p, err := r.start(ctx, kind)
	if err != nil {
		return err
	}
	defer p.stop()
	pl := r.plan
	limit := 2*time.Minute + 2*pl.OpenFor

	pubs := r.publishers(pl.FanInPublishers)
	sub := r.subscribers(1, wire.AllReadings(wire.DefaultPrefix))
	closed, err := r.flow(ctx, p, "fan-in", load.Flow{Publishers: pubs, Subscribers: sub, Mode: load.ClosedLoop,
		Window: 1, Count: pl.FanInCount, Limit: limit})
	if err != nil {
		return err
	}
	sub = r.subscribers(1, wire.AllReadings(wire.DefaultPrefix))
	open, err := r.flow(ctx, p, "fan-in", load.Flow{Publishers: pubs, Subscribers: sub, Mode: load.OpenLoop,
		Rate: pl.FanInRate, Count: max(int(pl.FanInRate*pl.OpenFor.Seconds()), 1), Limit: limit})
	if err != nil {
		return err
	}
	name := fmt.Sprintf("1. fan-in %d→1", pl.FanInPublishers)
	r.res.add(name, kind, metricRate, closed.Throughput())
	r.res.add(name, kind, metricP50, ms(open.Latency.Quantile(0.5)))
	r.res.add(name, kind, metricP99, ms(open.Latency.Quantile(0.99)))

	one := r.publishers(1)
	for _, n := range pl.FanOutSubscribers {
		for _, filter := range []struct{ name, topic string }{
			{"exact", one[0].Node.Live(wire.StreamEnv)},
			{"wildcard", wire.Node{Prefix: wire.DefaultPrefix, Site: "+", Node: "+"}.Live(wire.StreamEnv)},
		} {
			subs := r.subscribers(n, filter.topic)
			closed, err := r.flow(ctx, p, "fan-out", load.Flow{Publishers: one, Subscribers: subs, Mode: load.ClosedLoop,
				Window: pl.FanOutWindow, Count: max(pl.FanOutDeliveries/n, 1), Limit: limit})
			if err != nil {
				return err
			}
			subs = r.subscribers(n, filter.topic)
			rate := pl.FanOutOpenLoad / float64(n)
			open, err := r.flow(ctx, p, "fan-out", load.Flow{Publishers: one, Subscribers: subs, Mode: load.OpenLoop,
				Rate: rate, Count: max(int(rate*pl.OpenFor.Seconds()), 1), Limit: limit})
			if err != nil {
				return err
			}
			name := fmt.Sprintf("2. fan-out 1→%d %s", n, filter.name)
			r.res.add(name, kind, metricRate, closed.Throughput())
			r.res.add(name, kind, metricP50, ms(open.Latency.Quantile(0.5)))
			r.res.add(name, kind, metricP99, ms(open.Latency.Quantile(0.99)))
		}
	}
	return nil
}

// startSettled starts kind for a memory benchmark and returns its usage
// once its start-up allocations have settled; the caller stops it.
func (r *runner) startSettled(ctx context.Context, kind Kind) (*peer, usage, error) {
	p, err := r.start(ctx, kind)
	if err != nil {
		return nil, usage{}, err
	}
	time.Sleep(300 * time.Millisecond)
	u, err := readUsage(p.pid())
	if err != nil {
		p.stop()
		return nil, usage{}, err
	}
	return p, u, nil
}

// storm is benchmark 3 against a freshly started peer: RSS before and after
// n idle persistent sessions.
func (r *runner) storm(ctx context.Context, kind Kind, n int) error {
	p, before, err := r.startSettled(ctx, kind)
	if err != nil {
		return err
	}
	defer p.stop()
	memBefore, err := p.goMemory(ctx)
	if err != nil {
		return err
	}
	st := load.Storm{Addr: p.addr, N: n, Concurrency: r.plan.StormConcurrency, Limit: 2 * time.Minute,
		Login: func(i int) load.Login {
			return load.Login{ClientID: fmt.Sprintf("bench-storm-%d", i), Username: r.users.Reader.Name, Password: r.users.Reader.Password}
		}}
	ses, res, err := st.Run(ctx)
	if err != nil {
		return fmt.Errorf("storm of %d on %s: %w", n, kind, err)
	}
	defer ses.Close()
	time.Sleep(time.Second) // the sessions idle; the broker's buffers are what stays
	after, err := readUsage(p.pid())
	if err == nil {
		err = p.alive()
	}
	if err != nil {
		return err
	}
	memAfter, err := p.goMemory(ctx)
	if err != nil {
		return err
	}
	perConn := (float64(after.rssKB) - float64(before.rssKB)) / float64(n)
	r.log.Info("storm", "peer", kind, "sessions", n, "conn_per_s", int(res.Rate()), "connack", res.Connack.String(),
		"rss_before_kib", before.rssKB, "rss_after_kib", after.rssKB, "kib_per_conn", fmt.Sprintf("%.1f", perConn))
	name := fmt.Sprintf("3. storm %d sessions", n)
	r.res.add(name, kind, metricKiBConn, perConn)
	if memBefore != nil {
		for _, m := range []struct {
			metric
			name string
		}{{metricStacksConn, "go_memstats_stack_inuse_bytes"}, {metricHeapConn, "go_memstats_heap_inuse_bytes"}} {
			r.res.add(name, kind, m.metric, (memAfter[m.name]-memBefore[m.name])/1024/float64(n))
		}
	}
	r.res.add(name, kind, metricConnRate, res.Rate())
	r.res.add(name, kind, metricConnackP99, ms(res.Connack.Quantile(0.99)))
	return nil
}

// FarmResult is benchmark 4.
type FarmResult struct {
	Bridges int
	For     time.Duration
	// Warmup is left out of the steady figures: every bridge connecting
	// at once is the storm's business.
	Warmup time.Duration
	// The broker over the steady part of the run: CPU, readings archived
	// meanwhile, RSS at its end; and its peak RSS over the whole run.
	SteadyCPU      time.Duration
	SteadyReadings uint64
	SteadyFor      time.Duration
	RSSKiB         uint64
	PeakRSSKiB     uint64
	Audit          *fleet.Audit
}

// CPUPerReading is the broker's CPU per archived reading, steady state.
func (f *FarmResult) CPUPerReading() time.Duration {
	if f.SteadyReadings == 0 {
		return 0
	}
	return f.SteadyCPU / time.Duration(f.SteadyReadings)
}

// farm is benchmark 4: the simulated farm against our broker.
func (r *runner) farm(ctx context.Context) (*FarmResult, error) {
	p, err := r.start(ctx, Ours)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	arch, err := fleet.Archive(ctx, p.addr, r.users)
	if err != nil {
		return nil, err
	}
	users := *r.users
	users.Bridges = users.Bridges[:r.plan.FarmBridges]
	flog, err := os.Create(filepath.Join(r.dir, "fleet.log"))
	if err != nil {
		return nil, err
	}
	defer flog.Close()

	res := &FarmResult{Bridges: len(users.Bridges), Warmup: r.plan.FarmWarmup}
	fctx, cancel := context.WithTimeout(ctx, r.plan.FarmFor)
	defer cancel()
	t0 := time.Now()
	arch.SteadyFrom(t0.Add(res.Warmup))
	measured := make(chan error, 1)
	go func() {
		// The steady window: from the end of the warm-up to just before
		// the bridges stop.
		var from, to usage
		var n0 uint64
		var t1 time.Time
		for i, at := range []time.Duration{res.Warmup, r.plan.FarmFor - 500*time.Millisecond} {
			select {
			case <-time.After(time.Until(t0.Add(at))):
			case <-fctx.Done():
				measured <- errors.New("farm: ended before its steady window")
				return
			}
			u, err := readUsage(p.pid())
			if err != nil {
				measured <- err
				return
			}
			if i == 0 {
				from, n0, t1 = u, arch.Received(), time.Now()
			} else {
				to = u
			}
		}
		res.SteadyCPU, res.SteadyReadings, res.SteadyFor = to.cpu-from.cpu, arch.Received()-n0, time.Since(t1)
		res.RSSKiB = to.rssKB
		measured <- nil
	}()
	tallies, err := fleet.Run(fctx, fleet.Options{Addr: p.addr, Users: &users, Interval: time.Second, Dir: filepath.Join(r.dir, "fleet"),
		Log: slog.New(slog.NewTextHandler(flog, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	res.For = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("farm: %w", err)
	}
	if err := <-measured; err != nil {
		return nil, err
	}
	after, err := readUsage(p.pid())
	if err == nil {
		err = p.alive()
	}
	if err != nil {
		return nil, err
	}
	res.PeakRSSKiB = after.hwmKB
	audit := arch.Audit(tallies, 10*time.Second)
	res.Audit = audit
	r.log.Info("farm", "bridges", res.Bridges, "for", res.For.Round(time.Millisecond), "steady_cpu", res.SteadyCPU,
		"steady_readings", res.SteadyReadings, "cpu_per_reading", res.CPUPerReading(), "rss_kib", res.RSSKiB,
		"expected", audit.Expected, "received", audit.Received, "lost", audit.Lost, "dups", audit.Duplicates,
		"undelivered", audit.Undelivered, "e2e", audit.Latency.String(), "e2e_steady", audit.Steady.String())
	if audit.Lost > 0 || audit.Undelivered > 0 || audit.Dropped > 0 {
		return res, fmt.Errorf("farm: %d readings lost at the archiver, %d left undelivered, %d dropped by spools (of %d taken)",
			audit.Lost, audit.Undelivered, audit.Dropped, audit.Expected)
	}
	if audit.Expected == 0 || res.SteadyReadings == 0 {
		return res, fmt.Errorf("farm: no reading archived in %s", res.For)
	}
	return res, nil
}

// QemuResult compares our broker's CPU per message natively and as the
// arm64 build under qemu-aarch64-static.
type QemuResult struct {
	Messages           int
	Native, Emulated   time.Duration // CPU per message
	NativeR, EmulatedR float64       // msgs/s
}

// Factor is how many times more CPU a message costs under emulation.
func (q *QemuResult) Factor() float64 { return float64(q.Emulated) / float64(q.Native) }

func (r *runner) qemu(ctx context.Context) (*QemuResult, error) {
	q := &QemuResult{}
	pubs := r.publishers(min(r.plan.FanInPublishers, 10))
	count := max(r.plan.QemuMessages/len(pubs), 1)
	for _, emulate := range []bool{false, true} {
		env := r.env
		env.qemu = emulate
		r.seq++
		dir := filepath.Join(r.dir, fmt.Sprintf("%03d-qemu-%v", r.seq, emulate))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		p, err := startPeer(ctx, Ours, dir, env)
		if err != nil {
			return nil, err
		}
		before, err := readUsage(p.pid())
		if err != nil {
			p.stop()
			return nil, err
		}
		res, err := r.flow(ctx, p, "qemu factor", load.Flow{Publishers: pubs, Subscribers: r.subscribers(1, wire.AllReadings(wire.DefaultPrefix)),
			Mode: load.ClosedLoop, Window: 1, Count: count, Limit: 5 * time.Minute})
		if err != nil {
			p.stop()
			return nil, err
		}
		after, err := readUsage(p.pid())
		p.stop()
		if err != nil {
			return nil, err
		}
		per := (after.cpu - before.cpu) / time.Duration(res.Received)
		if emulate {
			q.Emulated, q.EmulatedR = per, res.Throughput()
		} else {
			q.Native, q.NativeR = per, res.Throughput()
		}
		q.Messages = int(res.Received)
	}
	r.log.Info("qemu factor", "native_cpu_per_msg", q.Native, "emulated_cpu_per_msg", q.Emulated, "factor", fmt.Sprintf("%.1f", q.Factor()))
	return q, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
