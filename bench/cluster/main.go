// Command cluster-bench runs the farm's workload on our broker and on a
// three-node NATS JetStream cluster (nats/README.md) in the same invocation,
// configured alike (the same users, TLS, a persistent-session archiver), and
// writes bench/results/cluster.md: the servers' CPU per reading, the end-to-end
// latency, and the time from a SIGKILL until every bridge publishes live again.
//
// The bridges are the real bridge code (bench/fleet: bridge/agent.Run over a
// simulated board, one env reading a second). Every server binds 127.0.0.1,
// is started by this program and ended by its PID.
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/internal/testpki"
)

// plan is how big and how long a run is.
type plan struct {
	bridges               int
	warmup, steady, after time.Duration
}

var (
	// The warm-up covers the start: every bridge connects (bcrypt) and sends
	// its discovery configs, and on NATS each of the archiver's QoS 1
	// subscriptions becomes a JetStream consumer with three replicas.
	fullPlan  = plan{bridges: 100, warmup: 40 * time.Second, steady: 30 * time.Second, after: 30 * time.Second}
	quickPlan = plan{bridges: 6, warmup: 3 * time.Second, steady: 4 * time.Second, after: 20 * time.Second}
)

func main() {
	binDir := flag.String("bin", "bin", "`directory` of broker and nats-server (make build)")
	out := flag.String("out", "bench/results", "`directory` to write cluster.md to")
	quick := flag.Bool("quick", false, "a smoke run: few bridges, seconds each; a loss is reported, not failed on")
	conf := flag.String("nats-conf", "nats/k8s/nats.conf", "the NATS nodes' configuration `file`")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	p := fullPlan
	if *quick {
		p = quickPlan
	}
	if err := run(context.Background(), log, p, *binDir, *conf, *out, !*quick); err != nil {
		log.Error("cluster benchmark failed", "err", err)
		os.Exit(1)
	}
}

// run runs the benchmark; with failOnLoss, a reading acknowledged and never
// archived fails it (the smoke run only reports it: it checks the tool).
func run(ctx context.Context, log *slog.Logger, p plan, binDir, conf, out string, failOnLoss bool) error {
	started := time.Now()
	dir, err := os.MkdirTemp("", "cluster-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	users, err := fleet.NewUsers(filepath.Join(dir, "users.yaml"), "bench", p.bridges)
	if err != nil {
		return err
	}
	env := &setup{bin: binDir, dir: dir, users: filepath.Join(dir, "users.yaml"), natsConf: conf,
		admin: fleet.Cred{Name: "bench-admin", Password: rand.Text()}}
	if err := env.tls(); err != nil {
		return err
	}
	add := exec.Command(filepath.Join(binDir, "broker"), "user", "add", "--users", env.users, "--role", "admin", env.admin.Name)
	add.Stdin = strings.NewReader(env.admin.Password + "\n")
	if b, err := add.CombinedOutput(); err != nil {
		return fmt.Errorf("broker user add %s: %w: %s", env.admin.Name, err, b)
	}
	if cmd := exec.Command(filepath.Join(binDir, "broker"), "user", "export", "--users", env.users, "--format", "nats",
		"--out", filepath.Join(dir, "nats-conf")); true {
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("broker user export --format nats: %w: %s", err, b)
		}
	}
	var results []*result
	for _, start := range []func(context.Context) (system, error){env.startOurs, env.startNATS} {
		sys, err := start(ctx)
		if err != nil {
			return err
		}
		r, err := measure(ctx, log, p, env, users, sys)
		sys.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", sys.name(), err)
		}
		results = append(results, r)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(out, "cluster.md")
	if err := os.WriteFile(path, report(p, results, time.Since(started)), 0o644); err != nil {
		return err
	}
	log.Info("wrote", "file", path)
	// A loss is written down first, then fails the run.
	var errs []error
	for _, r := range results {
		if r.lost > 0 {
			errs = append(errs, fmt.Errorf("%s: %d readings acknowledged and never archived", r.name, r.lost))
		}
	}
	if err := errors.Join(errs...); err != nil && !failOnLoss {
		log.Warn("readings lost (a full run fails on this)", "err", err)
		return nil
	}
	return errors.Join(errs...)
}

// setup is what both systems share: the users, the TLS pair.
type setup struct {
	bin, dir, users, natsConf string
	caFile, cert, key         string
	tlsConfig                 *tls.Config
	// admin may use the NATS protocol, for JetStream's API.
	admin fleet.Cred
}

// tls makes a CA and a certificate for "localhost" signed by it.
func (s *setup) tls() error {
	ca, err := testpki.NewCA("cluster-bench CA")
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := ca.Issue(2, "localhost")
	if err != nil {
		return err
	}
	s.caFile, s.cert, s.key = filepath.Join(s.dir, "ca.pem"), filepath.Join(s.dir, "tls.crt"), filepath.Join(s.dir, "tls.key")
	for f, b := range map[string][]byte{s.caFile: ca.PEM, s.cert: certPEM, s.key: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	s.tlsConfig = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	return nil
}

// system is one of the two set-ups under test.
type system interface {
	name() string
	// brokers is bridge i's --broker.
	brokers(i int) string
	// archiverURLs are the archiver's brokers, in the order it tries them.
	archiverURLs() []string
	// pids are the server processes whose CPU is counted.
	pids() []int
	// prepare readies the kill before the bridges start.
	prepare(ctx context.Context, env *setup) error
	// kill SIGKILLs a server (ours is started again at once, on its data)
	// and says which.
	kill(ctx context.Context) (string, error)
	// homeKilled reports whether bridge i's first broker is the server
	// kill SIGKILLed.
	homeKilled(i int) bool
	stop()
}

// result is one system's figures.
type result struct {
	name, killed           string
	bridges                int
	steadyReadings         uint64
	steadyFor, steadyCPU   time.Duration
	p50, p99               time.Duration
	recoverP50, recoverMax time.Duration
	notRecovered           int
	// As a QoS 0 subscriber saw it: the dead server's bridges (how many)
	// and every bridge.
	liveHomeMax, liveMax    time.Duration
	homeKilled              int
	liveNotRecovered        int
	lost, dups, undelivered uint64
	retained                uint64 // readings that arrived with the retain flag
}

func measure(ctx context.Context, log *slog.Logger, p plan, env *setup, users *fleet.Users, sys system) (*result, error) {
	res := &result{name: sys.name(), bridges: p.bridges}
	arch, err := fleet.ArchiveWith(ctx, func(ctx context.Context, l load.Login) (mqtt.Client, error) {
		o := mqtt.NewClientOptions().SetClientID(l.ClientID).SetUsername(l.Username).SetPassword(l.Password).
			SetProtocolVersion(4).SetCleanSession(false).SetTLSConfig(env.tlsConfig).SetAutoReconnect(true).
			SetConnectTimeout(load.ConnectTimeout).SetMaxReconnectInterval(time.Second).SetOrderMatters(false)
		for _, u := range sys.archiverURLs() {
			o.AddBroker(u)
		}
		c := mqtt.NewClient(o)
		return c, load.WaitToken(ctx, c.Connect(), load.ConnectTimeout)
	}, users)
	if err != nil {
		return nil, err
	}
	live, err := watchLive(ctx, env, users, sys.archiverURLs())
	if err != nil {
		return nil, err
	}
	defer live.stop()
	if err := sys.prepare(ctx, env); err != nil {
		return nil, err
	}
	flog, err := os.Create(filepath.Join(env.dir, sys.name()+"-fleet.log"))
	if err != nil {
		return nil, err
	}
	defer flog.Close()
	// It subscribed before any reading was published: a reading that comes
	// with the retain flag is one sent again, not an old one.
	arch.KeepRetained()
	t0 := time.Now()
	arch.SteadyFrom(t0.Add(p.warmup))
	arch.SteadyUntil(t0.Add(p.warmup + p.steady))
	stopFleet := fleet.Start(ctx, fleet.Options{Users: users, Interval: time.Second, Dir: filepath.Join(env.dir, sys.name()+"-fleet"),
		Brokers: sys.brokers, CAFile: env.caFile, Log: slog.New(slog.NewTextHandler(flog, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	defer stopFleet()

	time.Sleep(time.Until(t0.Add(p.warmup)))
	cpu0, err := cpuOf(sys.pids())
	if err != nil {
		return nil, err
	}
	n0, from := arch.Received(), time.Now()
	time.Sleep(p.steady)
	cpu1, err := cpuOf(sys.pids())
	if err != nil {
		return nil, err
	}
	res.steadyReadings, res.steadyFor, res.steadyCPU = arch.Received()-n0, time.Since(from), cpu1-cpu0

	mark := time.Now()
	arch.MarkFailover(mark)
	live.markFailover(mark)
	if res.killed, err = sys.kill(ctx); err != nil {
		return nil, err
	}
	for time.Since(mark) < p.after && (len(arch.FirstLive()) < p.bridges || len(live.firstLiveAfterMark()) < p.bridges) {
		time.Sleep(50 * time.Millisecond)
	}
	var took []time.Duration
	for _, at := range arch.FirstLive() {
		took = append(took, at.Sub(mark))
	}
	res.notRecovered = p.bridges - len(took)
	res.recoverP50, res.recoverMax = quantile(took, 0.5), quantile(took, 1)
	seen := live.firstLiveAfterMark()
	var liveTook, homeTook []time.Duration
	for i := range p.bridges {
		at, ok := seen[users.Node(i).Node]
		if !ok {
			res.liveNotRecovered++
			continue
		}
		liveTook = append(liveTook, at.Sub(mark))
		if sys.homeKilled(i) {
			homeTook = append(homeTook, at.Sub(mark))
		}
	}
	for i := range p.bridges {
		if sys.homeKilled(i) {
			res.homeKilled++
		}
	}
	res.liveMax, res.liveHomeMax = quantile(liveTook, 1), quantile(homeTook, 1)
	time.Sleep(3 * time.Second)
	tallies, err := stopFleet()
	if err != nil {
		return nil, err
	}
	audit := arch.Audit(tallies, 30*time.Second)
	// Audit's Lost counts every seq the archiver lacks, those still in a
	// spool (never acknowledged, so not the servers' to deliver) included.
	res.undelivered, res.dups = uint64(audit.Undelivered), audit.Duplicates
	res.lost = audit.Lost - min(audit.Lost, res.undelivered)
	res.retained = arch.Retained()
	res.p50, res.p99 = audit.Steady.Quantile(0.5), audit.Steady.Quantile(0.99)
	log.Info(sys.name(), "steady_readings", res.steadyReadings, "cpu_per_reading", res.cpuPerReading(), "p99", res.p99,
		"killed", res.killed, "recover_max", res.recoverMax, "not_recovered", res.notRecovered, "live_home_max", res.liveHomeMax, "live_max", res.liveMax, "lost", res.lost, "dups", res.dups,
		"retained", res.retained, "undelivered", res.undelivered)
	if res.steadyReadings == 0 {
		return res, errors.New("no reading archived in the steady window")
	}
	return res, nil
}

func (r *result) cpuPerReading() time.Duration {
	if r.steadyReadings == 0 {
		return 0
	}
	return r.steadyCPU / time.Duration(r.steadyReadings)
}

// quantile is the q-quantile of ds (q = 1: the largest); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// report is cluster.md.
func report(p plan, rs []*result, took time.Duration) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# The farm on one broker and on a NATS cluster (make bench-cluster)\n\n")
	fmt.Fprintf(&b, "Written by `bench/cluster` on %s in %s. Machine: %d cores, %s, %s, load average %s at the end. One run.\n\n",
		time.Now().UTC().Format(time.RFC3339), took.Round(time.Second), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, runtime.Version(), loadavg())
	fmt.Fprintf(&b, "Both run the same farm: %d simulated bridges (the real bridge code over a simulated board, one env reading a second, "+
		"retained live readings, Home Assistant discovery on) and an archiver with a persistent session on every node's live and backlog env topics; "+
		"the same users (bcrypt) and TLS. **ours**: `bin/broker` (one process, pebble store). **nats**: three `bin/nats-server` (v2.15.2) on "+
		"`nats/k8s/nats.conf` with `broker user export --format nats`, JetStream with `stream_replicas: 3`; each bridge lists its home node "+
		"(bridge i: node i mod 3) first. Nothing is pinned to a core: the three NATS nodes share this machine's cores with the bridges and the archiver.\n\n", p.bridges)
	fmt.Fprintf(&b, "Steady window: %s after a %s warm-up. Then one SIGKILL: ours is started again at once on its data (the best case of one "+
		"broker: on Kubernetes its pod would wait for its node, or for its volume); on NATS the node that leads `$MQTT_msgs`, made the leader of "+
		"`$MQTT_sess` and `$MQTT_rmsgs` too before the bridges started (the worst case: every bridge stalls until new leaders are elected, "+
		"and no node accepts a connection until the sessions' stream has one). Recovery is the time from the kill until a bridge's first live reading "+
		"sampled after it reaches a QoS 0 subscriber (one with a clean session on every server: nats-server hands it each message as it "+
		"is published), and the archiver (whose QoS 1 deliveries on NATS come through JetStream consumers, which wait for a new leader "+
		"when theirs died).\n\n", p.steady, p.warmup)
	b.WriteString("| figure | ours | nats | nats/ours |\n|---|---:|---:|---:|\n")
	ours, nats := rs[0], rs[1]
	row := func(name string, f func(*result) float64, unit string, format string) {
		o, n := f(ours), f(nats)
		ratio := "n/a"
		if o > 0 {
			ratio = fmt.Sprintf("%.2f×", n/o)
		}
		fmt.Fprintf(&b, "| %s (%s) | "+format+" | "+format+" | %s |\n", name, unit, o, n, ratio)
	}
	row("steady: readings archived per second", func(r *result) float64 { return float64(r.steadyReadings) / r.steadyFor.Seconds() }, "1/s", "%.0f")
	row("steady: server CPU per reading", func(r *result) float64 { return float64(r.cpuPerReading().Microseconds()) }, "µs", "%.0f")
	row("steady: server CPU", func(r *result) float64 { return 100 * r.steadyCPU.Seconds() / r.steadyFor.Seconds() }, "% of one core", "%.1f")
	row("steady: latency p50, reading ts → archiver", func(r *result) float64 { return ms(r.p50) }, "ms", "%.1f")
	row("steady: latency p99, reading ts → archiver", func(r *result) float64 { return ms(r.p99) }, "ms", "%.1f")
	row("after the kill: the dead server's bridges live again, QoS 0 subscriber", func(r *result) float64 { return r.liveHomeMax.Seconds() }, "s", "%.1f")
	row("after the kill: every bridge live again, QoS 0 subscriber", func(r *result) float64 { return r.liveMax.Seconds() }, "s", "%.1f")
	row("after the kill: every bridge live again at the archiver", func(r *result) float64 { return r.recoverMax.Seconds() }, "s", "%.1f")
	row("after the kill: half the bridges live again at the archiver", func(r *result) float64 { return r.recoverP50.Seconds() }, "s", "%.1f")
	fmt.Fprintf(&b, "\n| | ours | nats |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| killed | %s | %s |\n", ours.killed, nats.killed)
	fmt.Fprintf(&b, "| bridges whose first broker was killed | %d | %d |\n", ours.homeKilled, nats.homeKilled)
	fmt.Fprintf(&b, "| bridges not live again within %s: QoS 0 subscriber / archiver | %d / %d | %d / %d |\n", p.after,
		ours.liveNotRecovered, ours.notRecovered, nats.liveNotRecovered, nats.notRecovered)
	fmt.Fprintf(&b, "| readings lost / duplicates / left in spools | %d / %d / %d | %d / %d / %d |\n",
		ours.lost, ours.dups, ours.undelivered, nats.lost, nats.dups, nats.undelivered)
	fmt.Fprintf(&b, "| readings that reached the archiver with the retain flag set | %d | %d |\n", ours.retained, nats.retained)
	b.WriteString("\nThe archiver subscribed before the first reading, so a reading that reaches it with the retain flag set is not an old " +
		"value replayed at subscribe time but a copy the server sent again with the flag it was published with (after the restart, say); " +
		"it is counted like any other.\n")
	b.WriteString("\nOne run each, so no ranges: treat differences under about 20 % as a tie. `ts` has millisecond resolution.\n")
	return []byte(b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// loadavg is /proc/loadavg's 1, 5 and 15 minute figures: a busy machine
// makes every latency here longer.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
