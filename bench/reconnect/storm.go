package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/bench/stats"
	"github.com/sensorfarm/sensorfarm/internal/loopback"
	"github.com/sensorfarm/sensorfarm/wire"
)

// monitor is the archiver: a reader with a persistent session on every
// node's live and backlog env topics that reconnects on its own. It keeps each
// node's seqs, and when each node's first live reading sampled at or after a
// mark arrived.
type monitor struct {
	client paho.Client

	mu    sync.Mutex
	seen  map[string]map[uint64]bool
	mark  time.Time
	first map[string]time.Time // node -> arrival of its first live reading sampled since mark
}

// newMonitor connects a monitor: the archiver (persistent session, QoS 1),
// or with live a watcher that only sees who publishes (a clean session at
// QoS 0, which no peer stores or queues beyond its socket), so that when
// every bridge is back is not held up by a slow archiver's queue.
func newMonitor(ctx context.Context, addr string, u *fleet.Users, live bool) (*monitor, error) {
	m := &monitor{seen: map[string]map[uint64]bool{}, first: map[string]time.Time{}}
	id, qos := fleet.ArchiverID, byte(1)
	if live {
		id, qos = "bench-watcher", 0
	}
	every := wire.Node{Prefix: wire.DefaultPrefix, Site: u.Site, Node: "+"}
	filters := map[string]byte{every.Live(wire.StreamEnv): qos, every.Backlog(wire.StreamEnv): qos}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername(u.Reader.Name).SetPassword(u.Reader.Password).SetProtocolVersion(4).
		SetCleanSession(live).SetKeepAlive(30 * time.Second).
		SetAutoReconnect(true).SetMaxReconnectInterval(250 * time.Millisecond).
		SetConnectRetry(true).SetConnectRetryInterval(250 * time.Millisecond).SetConnectTimeout(10 * time.Second).
		SetOrderMatters(false).
		SetOnConnectHandler(func(c paho.Client) {
			// Again on every connection: a peer that lost the session
			// (mosquitto after a SIGKILL) has lost the subscription too.
			c.SubscribeMultiple(filters, nil)
		}).
		SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) { m.take(msg, time.Now()) })
	m.client = paho.NewClient(o)
	tok := m.client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("archiver: no connection to %s within 30 s", addr)
	}
	return m, tok.Error()
}

func (m *monitor) take(msg paho.Message, now time.Time) {
	if msg.Retained() {
		return
	}
	var r wire.Env
	if json.Unmarshal(msg.Payload(), &r) != nil || r.Seq == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seqs := m.seen[r.Node]
	if seqs == nil {
		seqs = map[uint64]bool{}
		m.seen[r.Node] = seqs
	}
	seqs[r.Seq] = true
	if !bytes.Contains([]byte(msg.Topic()), []byte("/backlog/")) && !r.TS.Before(m.mark) {
		if _, ok := m.first[r.Node]; !ok {
			m.first[r.Node] = now
		}
	}
}

// since starts counting nodes publishing from t on.
func (m *monitor) since(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mark, m.first = t, map[string]time.Time{}
}

// back is how many nodes published a live reading sampled since the mark,
// and when the last of them arrived.
func (m *monitor) back() (int, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var last time.Time
	for _, t := range m.first {
		if t.After(last) {
			last = t
		}
	}
	return len(m.first), last
}

// received is how many distinct readings arrived.
func (m *monitor) received() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, seqs := range m.seen {
		n += len(seqs)
	}
	return n
}

// audit counts the readings the bridges took that never arrived.
func (m *monitor) audit(tallies []fleet.Tally) audit {
	m.mu.Lock()
	defer m.mu.Unlock()
	var a audit
	for _, t := range tallies {
		a.Expected += t.LastSeq
		a.Undelivered += t.Depth
		a.Dropped += t.Dropped
		seqs := m.seen[t.Node.Node]
		for s := uint64(1); s <= t.LastSeq; s++ {
			if !seqs[s] {
				a.Lost++
				if len(a.Missing) < 20 {
					a.Missing = append(a.Missing, fmt.Sprintf("%s seq %d of %d", t.Node.Node, s, t.LastSeq))
				}
			}
		}
	}
	return a
}

type audit struct {
	Expected, Lost, Dropped uint64
	Undelivered             int
	Missing                 []string // the first of what is lost, to look for
}

type result struct {
	kind       kind
	bridges    int
	readmitted time.Duration // from the SIGKILL until every bridge published again
	restart    time.Duration // from the restart until the peer listened
	idleKB     float64       // broker RSS per idle connection (no subscription, no traffic)
	rssPerKB   float64       // broker RSS per connected, publishing bridge
	// dropped is what our broker counted as dropped for subscribers before
	// the kill and after the restart (its counters restart at 0); -1 for
	// mosquitto, which has no such counter.
	dropped float64
	audit   audit
}

// storm runs one peer: the farm until every bridge publishes, a SIGKILL and
// an immediate restart, the farm until every bridge publishes again, then a
// clean stop of the farm and the audit.
func storm(ctx context.Context, k kind, env peerEnv, u *fleet.Users, log *slog.Logger) (result, error) {
	res := result{kind: k, bridges: len(u.Bridges)}
	addr, err := loopback.FreeAddr()
	if err != nil {
		return res, err
	}
	data := filepath.Join(env.run, "data")
	p, err := env.start(ctx, k, addr, data)
	if err != nil {
		return res, err
	}
	defer func() { p.Stop(10 * time.Second) }()
	base := rssKB(p.PID())
	if err := idleConnections(ctx, addr, u, func() {
		res.idleKB = float64(rssKB(p.PID())-base) / float64(len(u.Bridges))
	}); err != nil {
		return res, err
	}
	idle := rssKB(p.PID())

	arch, err := newMonitor(ctx, addr, u, false)
	if err != nil {
		return res, err
	}
	defer arch.client.Disconnect(100)
	mon, err := newMonitor(ctx, addr, u, true)
	if err != nil {
		return res, err
	}
	defer mon.client.Disconnect(100)
	stopFarm := fleet.Start(ctx, fleet.Options{Addr: addr, Users: u, Interval: time.Second,
		Dir: filepath.Join(env.run, "farm"), Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	defer stopFarm()

	mon.since(time.Now())
	if err := waitBack(ctx, mon, len(u.Bridges), 3*time.Minute); err != nil {
		return res, fmt.Errorf("before the kill: %w", err)
	}
	res.rssPerKB = float64(rssKB(p.PID())-idle) / float64(len(u.Bridges))
	time.Sleep(3 * time.Second) // a few readings each, in flight and queued

	res.dropped = -1
	if k == ours {
		res.dropped = dropped(env.ops)
	}
	killed := time.Now()
	_ = p.Cmd.Process.Kill()
	<-p.Done()
	restarted := time.Now()
	mon.since(restarted)
	if p, err = env.start(ctx, k, addr, data); err != nil {
		return res, fmt.Errorf("restart: %w", err)
	}
	res.restart = time.Since(restarted)
	if err := waitBack(ctx, mon, len(u.Bridges), 4*time.Minute); err != nil {
		b, _ := os.ReadFile(filepath.Join(data, "log"))
		if len(b) > 4096 {
			b = b[len(b)-4096:]
		}
		return res, fmt.Errorf("after the restart: %w; the peer's log ends:\n%s", err, b)
	}
	_, last := mon.back()
	res.readmitted = last.Sub(killed)
	log.Info("every bridge is back", "peer", k, "after_kill", res.readmitted.Round(10*time.Millisecond))

	time.Sleep(3 * time.Second)
	tallies, err := stopFarm()
	if err != nil {
		return res, fmt.Errorf("farm: %w", err)
	}
	// What the bridges sent before they stopped reaches the archiver: wait
	// while it still arrives (a backlog draining on a loaded machine), until
	// nothing new came for 10 s, at most 2 min.
	deadline, moved, count := time.Now().Add(2*time.Minute), time.Now(), -1
	for res.audit = arch.audit(tallies); res.audit.Lost > 0 && time.Now().Before(deadline); res.audit = arch.audit(tallies) {
		if n := arch.received(); n != count {
			count, moved = n, time.Now()
		} else if time.Since(moved) > 10*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if k == ours {
		res.dropped += dropped(env.ops)
	}
	return res, nil
}

// waitBack waits until n nodes published since the monitor's mark.
func waitBack(ctx context.Context, m *monitor, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		got, _ := m.back()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d bridges published within %s", got, n, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func markdown(n int, rs map[kind][]result) []byte {
	var b bytes.Buffer
	runs := len(rs[ours])
	fmt.Fprintf(&b, "# Reconnect storm (`make bench`, bench/reconnect)\n\n")
	fmt.Fprintf(&b, "%d real bridges (bench/fleet) publish one reading a second (generated credentials unless said above); the broker is SIGKILLed and restarted at once on the same address and data. *Back* is the time from the kill until every bridge has published a live reading sampled after the restart, as a watcher sees it (a clean session at QoS 0, so that a slow queue does not hold it up). *Lost* is readings the bridges took (seq 1..last) that the archiver (a reader with a persistent session at QoS 1) never received. %d runs, alternating the peers; each cell is the median [min–max] over the runs, and the ratio ours/mosquitto is taken run by run.\n\n", n, runs)
	fmt.Fprintf(&b, "| peer | restart until listening (s) | back after the kill (s) | lost | of readings | broker drop counters (ours) | still in spools | dropped by spools | RSS per idle connection (KiB) | RSS per publishing bridge (KiB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	values := func(k kind, f func(result) float64) (vs []float64) {
		for _, r := range rs[k] {
			vs = append(vs, f(r))
		}
		return vs
	}
	back := func(r result) float64 { return r.readmitted.Seconds() }
	for _, k := range []kind{ours, mosquitto} {
		col := func(f func(result) float64, format string) string {
			s, ok := stats.Of(values(k, f))
			switch {
			case !ok:
				return "–"
			case s.Min == s.Max:
				return fmt.Sprintf(format, s.Median)
			}
			return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Median, s.Min, s.Max)
		}
		drop := "no counter"
		if k == ours {
			drop = col(func(r result) float64 { return r.dropped }, "%.0f")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k,
			col(func(r result) float64 { return r.restart.Seconds() }, "%.2f"),
			col(back, "%.1f"),
			col(func(r result) float64 { return float64(r.audit.Lost) }, "%.0f"),
			col(func(r result) float64 { return float64(r.audit.Expected) }, "%.0f"),
			drop,
			col(func(r result) float64 { return float64(r.audit.Undelivered) }, "%.0f"),
			col(func(r result) float64 { return float64(r.audit.Dropped) }, "%.0f"),
			col(func(r result) float64 { return r.idleKB }, "%.1f"),
			col(func(r result) float64 { return r.rssPerKB }, "%.1f"))
	}
	fmt.Fprintf(&b, "\n*RSS per idle connection*: each bridge's user connects once with a persistent session and stays idle (no subscription, no traffic); VmRSS after minus before, over the connections. *RSS per publishing bridge*: the same with the farm running, the archiver's queue included.\n")
	so, ok1 := stats.Of(values(ours, back))
	sm, ok2 := stats.Of(values(mosquitto, back))
	ratio, ok3 := stats.Of(stats.Ratios(values(ours, back), values(mosquitto, back)))
	if ok1 && ok2 && ok3 {
		verdict := map[int]string{0: "a tie: the ranges overlap", -1: "ours faster: the ranges do not overlap",
			1: "mosquitto faster: the ranges do not overlap"}[so.Compare(sm)]
		if runs < 2 {
			verdict = "one run each: a single sample, no range to judge by"
		}
		fmt.Fprintf(&b, "\nours/mosquitto, time until every bridge is back: %.2f [%.2f–%.2f]; goal: no slower than mosquitto; %s.\n", ratio.Median, ratio.Min, ratio.Max, verdict)
	}
	return b.Bytes()
}

// idleConnections connects every bridge's user once with a persistent
// session, calls measure while they are all connected and idle, and
// disconnects them.
func idleConnections(ctx context.Context, addr string, u *fleet.Users, measure func()) error {
	clients := make([]paho.Client, len(u.Bridges))
	errs := make(chan error, len(u.Bridges))
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i, c := range u.Bridges {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A refusal ("server busy" while bcrypt checks queue) is
			// retried, as a bridge would, for up to a minute.
			login := load.Login{ClientID: u.Node(i).ClientID(), Username: c.Name, Password: c.Password}
			cl, err := load.Connect(ctx, addr, login, false, nil)
			for deadline := time.Now().Add(time.Minute); err != nil && time.Now().Before(deadline); {
				time.Sleep(200 * time.Millisecond)
				cl, err = load.Connect(ctx, addr, login, false, nil)
			}
			if err != nil {
				errs <- err
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Disconnect(0)
			}
		}
	}()
	select {
	case err := <-errs:
		return fmt.Errorf("idle connections: %w", err)
	default:
	}
	time.Sleep(time.Second)
	measure()
	return nil
}
