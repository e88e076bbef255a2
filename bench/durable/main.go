// Command durable is benchmark 7 of `make bench`: the farm's own workload on
// the store (retained QoS 1 readings from bridges replaying a backlog, to one
// archiver with a persistent session), on our broker and on Debian's
// mosquitto with persistence on, both with the same users and ACL
// (`broker user export --format mosquitto`). Per run and broker: throughput,
// broker CPU per reading, p99 latency, readings acknowledged but not
// delivered under the burst, and readings acknowledged but lost across a
// SIGKILL of the broker. It writes a Markdown report; bench/README.md says
// how to read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/internal/child"
	"github.com/sensorfarm/sensorfarm/internal/loopback"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Plan sizes one invocation.
type Plan struct {
	Runs       int
	Publishers int
	Each       int           // readings per publisher in the burst
	Window     int           // unacknowledged readings per publisher, as a bridge's backlog replay (16)
	KillAfter  time.Duration // how long the SIGKILL run publishes before the kill
	Settle     time.Duration // quiet time that ends a collection
}

var (
	fullPlan  = Plan{Runs: 3, Publishers: 50, Each: 400, Window: 16, KillAfter: 3 * time.Second, Settle: 3 * time.Second}
	quickPlan = Plan{Runs: 1, Publishers: 10, Each: 20, Window: 16, KillAfter: 500 * time.Millisecond, Settle: time.Second}
)

type kind string

const (
	ours      kind = "ours"
	mosquitto kind = "mosquitto"
	// stock is ours with --stock-delivery: mochi's delivery, what the
	// hold and the journal replaced.
	stock kind = "stock"
	// mochi is bare mochi-mqtt (bench/baremochi: no users, no store, no
	// hooks of ours): the most any broker built on it could do here.
	mochi kind = "mochi"
)

func main() {
	quick := flag.Bool("quick", false, "one small run of each: checks the tool, not the figures")
	bin := flag.String("bin", "bin", "directory of make build's broker")
	bareMochi := flag.String("baremochi", "bin/bench/baremochi", "the bench/baremochi binary")
	out := flag.String("out", "bench/results", "directory for durable.md")
	pin := flag.Bool("pin", true, "pin the broker to core 0 and this tool to core 1 (durable.md); =false lets both run anywhere (durable-unpinned.md)")
	runs := flag.Int("runs", 0, "runs of each broker (default 3, 1 with --quick)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	plan := fullPlan
	if *quick {
		plan = quickPlan
	}
	if *runs > 0 {
		plan.Runs = *runs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := run(ctx, plan, *bin, *bareMochi, *out, *pin, log); err != nil {
		log.Error("bench durable failed", "err", err)
		os.Exit(1)
	}
}

// env is what every run shares: the binaries, the users, mosquitto's files.
type env struct {
	dir, broker string
	bareMochi   string
	users       *fleet.Users
	usersFile   string
	mosqConf    string // mosquitto's users and ACL, from the export
	pin         bool
}

func run(ctx context.Context, plan Plan, bin, bareMochi, out string, pin bool, log *slog.Logger) error {
	for _, t := range []string{"mosquitto", "taskset"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is not installed (make deps installs it): %w", t, err)
		}
	}
	dir, err := os.MkdirTemp("", "bench-durable-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, pin: pin, usersFile: filepath.Join(dir, "users.yaml")}
	if e.broker, err = filepath.Abs(filepath.Join(bin, "broker")); err != nil {
		return err
	}
	if e.bareMochi, err = filepath.Abs(bareMochi); err != nil {
		return err
	}
	if e.users, err = fleet.NewUsers(e.usersFile, "bench", plan.Publishers); err != nil {
		return err
	}
	// 1,000 PBKDF2 iterations: about what bcrypt cost 4 (fleet.Cost) costs
	// our broker per connection; connections are not what is measured.
	if e.mosqConf, err = e.users.ExportMosquitto(ctx, e.broker, e.usersFile, dir, 1000); err != nil {
		return err
	}
	if pin {
		if b, err := exec.Command("taskset", "-a", "-p", "-c", "1", strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("pinning to core 1: %v: %s", err, b)
		}
	}
	res := map[kind][]result{}
	for i := range plan.Runs {
		for _, k := range []kind{ours, mosquitto, mochi, stock} {
			r, err := e.burst(ctx, plan, k, i)
			if err != nil {
				return fmt.Errorf("%s burst: %w", k, err)
			}
			r.lost = -1 // bare mochi keeps nothing across a restart
			if k != mochi {
				if r.lost, err = e.kill(ctx, plan, k, i); err != nil {
					return fmt.Errorf("%s SIGKILL: %w", k, err)
				}
			}
			log.Info("run", "peer", k, "run", i+1, "msgs_per_s", int(r.rate), "cpu_us_per_reading", r.cpuPer.Microseconds(),
				"p99_ms", r.p99.Milliseconds(), "dropped", r.dropped, "lost_sigkill", r.lost)
			res[k] = append(res[k], r)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	name := "durable.md"
	if !pin {
		name = "durable-unpinned.md"
	}
	path := filepath.Join(out, name)
	if err := os.WriteFile(path, report(plan, pin, res), 0o644); err != nil {
		return err
	}
	log.Info("wrote", "report", path)
	return nil
}

// broker is one running peer.
type broker struct {
	kind kind
	addr string
	proc *child.Process
	log  string
}

// start starts k on data (a directory kept across a SIGKILL) at addr.
func (e *env) start(ctx context.Context, k kind, data, addr string) (*broker, error) {
	b := &broker{kind: k, addr: addr, log: filepath.Join(data, "log")}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	var argv []string
	var ready *regexp.Regexp
	switch k {
	case ours, stock:
		argv = []string{e.broker, "--listen", addr, "--users", e.usersFile, "--data", filepath.Join(data, "store"), "--ops-listen", ""}
		if k == stock {
			argv = append(argv, "--stock-delivery")
		}
		ready = regexp.MustCompile(`msg=listening `)
	case mochi:
		argv = []string{e.bareMochi, "--listen", addr}
	case mosquitto:
		conf := filepath.Join(data, "mosquitto.conf")
		host, port, _ := strings.Cut(addr, ":")
		users, err := os.ReadFile(e.mosqConf)
		if err != nil {
			return nil, err
		}
		// Persistence on, saved every second: the most mosquitto offers
		// towards a PUBACK that means "on disk" (it has no per-message
		// fsync). Its queues unbounded (max_queued_messages 0): it has no
		// hold, and drops past the bound. It stays root (as this tool
		// runs) to read the temporary directory's files.
		c := fmt.Sprintf("%suser root\nlistener %s %s\npersistence true\npersistence_location %s/\nautosave_interval 1\n"+
			"max_inflight_messages 1024\nmax_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n",
			users, port, host, data)
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			return nil, err
		}
		argv = []string{"mosquitto", "-c", conf}
		ready = nil
	}
	if e.pin {
		argv = append([]string{"taskset", "-c", "0"}, argv...)
	}
	// A restart appends to the log: look for "listening" after this.
	var mark int64
	if fi, err := os.Stat(b.log); err == nil {
		mark = fi.Size()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = data
	var err error
	if b.proc, err = child.StartLogged(cmd, b.log); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		up := false
		if ready != nil {
			log, _ := os.ReadFile(b.log)
			up = ready.Match(log[min(int(mark), len(log)):])
		} else if c, err := load.Connect(ctx, addr, e.reader("probe"), true, nil); err == nil {
			c.Disconnect(0)
			up = true
		}
		if up {
			return b, nil
		}
		if !b.proc.Running() || time.Now().After(deadline) {
			log, _ := os.ReadFile(b.log)
			b.proc.Stop(5 * time.Second)
			return nil, fmt.Errorf("%s did not start: %s", k, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) reader(id string) load.Login {
	return load.Login{ClientID: id, Username: e.users.Reader.Name, Password: e.users.Reader.Password}
}

// result is one run of one broker.
type result struct {
	rate    float64       // readings delivered per second
	cpuPer  time.Duration // broker CPU per reading delivered
	p99     time.Duration // send to delivery
	dropped int           // acknowledged, never delivered
	lost    int           // acknowledged before a SIGKILL, never delivered
}

// archive is the archiver: a persistent session on the farm's env readings.
type archive struct {
	mu   sync.Mutex
	seen map[[2]uint64]bool
	lat  load.Histogram
	last time.Time
}

func (a *archive) take(p []byte) {
	now := time.Now()
	pr, err := load.DecodeProbe(p)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := [2]uint64{uint64(pr.Pub), pr.Seq}
	if a.seen[k] {
		return
	}
	a.seen[k] = true
	a.lat.Record(now.Sub(pr.Sent))
	a.last = now
}

func (a *archive) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// connectArchiver resumes (or starts) the archiver's persistent session. Its
// handler runs unordered (paho's default runs every message, and sends its
// PUBACK, one at a time in one goroutine: that client, not a broker, was the
// bottleneck, near 1,700 readings/s here).
func (e *env) connectArchiver(ctx context.Context, addr string, a *archive) (paho.Client, error) {
	l := e.reader("archiver")
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(l.ClientID).SetUsername(l.Username).SetPassword(l.Password).
		SetProtocolVersion(4).SetCleanSession(false).SetOrderMatters(false).SetKeepAlive(60 * time.Second).
		SetConnectTimeout(archiverConnect).SetConnectRetry(false).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if err := load.WaitToken(ctx, c.Connect(), archiverConnect); err != nil {
		return nil, fmt.Errorf("archiver: connect: %w", err)
	}
	tok := c.Subscribe("sensorfarm/bench/+/env", 1, func(_ paho.Client, m paho.Message) { a.take(m.Payload()) })
	if err := load.WaitToken(ctx, tok, load.ConnectTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// archiverConnect bounds the archiver's connect: mochi resends a resumed
// session's backlog before it reads anything more from the client, with
// --stock-delivery an fsynced write per message, which took over 20 s here.
const archiverConnect = 90 * time.Second

// publishers connects plan.Publishers bridges; the caller disconnects them
// (disconnect), also when it fails.
func (e *env) publishers(ctx context.Context, addr string, plan Plan) ([]paho.Client, error) {
	clients := make([]paho.Client, 0, plan.Publishers)
	for i := range plan.Publishers {
		node, cred := e.users.Node(i), e.users.Bridges[i]
		c, err := load.Connect(ctx, addr, load.Login{ClientID: node.ClientID(), Username: cred.Name, Password: cred.Password}, true, nil)
		if err != nil {
			disconnect(clients)
			return nil, err
		}
		clients = append(clients, c)
	}
	return clients, nil
}

func disconnect(clients []paho.Client) {
	for _, c := range clients {
		c.Disconnect(0)
	}
}

// publish runs the connected publishers: each sends retained readings with
// window unacknowledged, until each has sent each readings or stop is closed.
// It returns the acknowledged (publisher, seq) pairs and when it started.
func (e *env) publish(clients []paho.Client, plan Plan, each int, stop <-chan struct{}) (map[[2]uint64]bool, time.Time) {
	var mu sync.Mutex
	acked := map[[2]uint64]bool{}
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := e.users.Node(i)
			type sent struct {
				tok paho.Token
				seq uint64
			}
			var pending []sent
			settle := func(s sent) bool {
				if !s.tok.WaitTimeout(15*time.Second) || s.tok.Error() != nil {
					return false
				}
				mu.Lock()
				acked[[2]uint64{uint64(i), s.seq}] = true
				mu.Unlock()
				return true
			}
			for seq := uint64(1); seq <= uint64(each); seq++ {
				select {
				case <-stop:
					return
				default:
				}
				if len(pending) == plan.Window {
					if !settle(pending[0]) {
						return
					}
					pending = pending[1:]
				}
				b, err := load.EncodeProbe(node, i, seq, time.Now())
				if err != nil {
					return
				}
				pending = append(pending, sent{c.Publish(node.Live(wire.StreamEnv), 1, true, b), seq})
			}
			for _, s := range pending {
				if !settle(s) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return acked, start
}

// settle waits until a has been quiet for quiet, at most limit.
func settle(a *archive, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) {
		if n := a.count(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func missing(acked map[[2]uint64]bool, a *archive) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k := range acked {
		if !a.seen[k] {
			n++
		}
	}
	return n
}

// burst: every publisher sends plan.Each readings as fast as the broker
// acknowledges them (16 unacknowledged each).
func (e *env) burst(ctx context.Context, plan Plan, k kind, run int) (result, error) {
	var r result
	addr, err := loopback.FreeAddr()
	if err != nil {
		return r, err
	}
	b, err := e.start(ctx, k, filepath.Join(e.dir, fmt.Sprintf("%d-%s-burst", run, k)), addr)
	if err != nil {
		return r, err
	}
	defer b.proc.Stop(10 * time.Second)
	a := &archive{seen: map[[2]uint64]bool{}}
	arch, err := e.connectArchiver(ctx, addr, a)
	if err != nil {
		return r, err
	}
	defer arch.Disconnect(0)
	pubs, err := e.publishers(ctx, addr, plan)
	if err != nil {
		return r, err
	}
	defer disconnect(pubs)
	// The broker's CPU is counted from here: the publishers' logins (a
	// bcrypt or PBKDF2 check each) are not what is measured.
	cpu0, err := cpuTime(b.proc.PID())
	if err != nil {
		return r, err
	}
	acked, start := e.publish(pubs, plan, plan.Each, nil)
	settle(a, plan.Settle, time.Minute)
	cpu1, err := cpuTime(b.proc.PID())
	if err != nil {
		return r, err
	}
	n := a.count()
	a.mu.Lock()
	elapsed := a.last.Sub(start)
	r.p99 = a.lat.Quantile(0.99)
	a.mu.Unlock()
	if n == 0 || elapsed <= 0 {
		return r, fmt.Errorf("nothing delivered (%d acknowledged)", len(acked))
	}
	r.rate = float64(n) / elapsed.Seconds()
	r.cpuPer = (cpu1 - cpu0) / time.Duration(n)
	r.dropped = missing(acked, a)
	return r, nil
}

// kill: the publishers send until the broker is SIGKILLed mid-stream; it is
// started again on the same data and the archiver resumes its session.
func (e *env) kill(ctx context.Context, plan Plan, k kind, run int) (int, error) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		return 0, err
	}
	data := filepath.Join(e.dir, fmt.Sprintf("%d-%s-kill", run, k))
	b, err := e.start(ctx, k, data, addr)
	if err != nil {
		return 0, err
	}
	a := &archive{seen: map[[2]uint64]bool{}}
	arch, err := e.connectArchiver(ctx, addr, a)
	if err != nil {
		b.proc.Stop(10 * time.Second)
		return 0, err
	}
	pubs, err := e.publishers(ctx, addr, plan)
	if err != nil {
		arch.Disconnect(0)
		b.proc.Stop(10 * time.Second)
		return 0, err
	}
	stop := make(chan struct{})
	go func() {
		time.Sleep(plan.KillAfter)
		_ = b.proc.Cmd.Process.Signal(syscall.SIGKILL)
		<-b.proc.Done()
		close(stop)
	}()
	acked, _ := e.publish(pubs, plan, 1<<16-1, stop)
	<-stop
	disconnect(pubs)
	arch.Disconnect(0)
	b, err = e.start(ctx, k, data, addr)
	if err != nil {
		return 0, err
	}
	defer b.proc.Stop(10 * time.Second)
	arch, err = e.connectArchiver(ctx, addr, a)
	if err != nil {
		return 0, err
	}
	defer arch.Disconnect(0)
	settle(a, plan.Settle, time.Minute)
	return missing(acked, a), nil
}
