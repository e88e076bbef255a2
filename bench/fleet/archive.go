package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Archiver is the farm's archiving subscriber: a reader with a persistent
// session on every node's live and backlog env topics, which keeps each
// node's seqs to find losses and duplicates, and each reading's end-to-end
// latency (its ts, when it was sampled, to its arrival here).
type Archiver struct {
	client mqtt.Client

	mu       sync.Mutex
	seen     map[string]map[uint64]bool // node -> seqs
	dups     uint64
	stale    uint64 // retained readings replayed at subscribe time
	bad      uint64 // payloads that are not readings
	last     time.Time
	latency  load.Histogram
	received uint64
	// steadyFrom: readings sampled from then on also count in steady,
	// which leaves out the farm's start (every bridge connecting at once);
	// until steadyTo, if set.
	steadyFrom, steadyTo time.Time
	steady               load.Histogram
	// keepRetained counts a reading delivered with the retain flag like any
	// other (KeepRetained).
	keepRetained bool
	// After MarkFailover, the arrival of each node's first live reading
	// sampled after the mark.
	mark      time.Time
	firstLive map[string]time.Time
}

// ArchiverID is the archiver's client ID; its session persists.
const ArchiverID = "bench-archiver"

// Archive connects the archiver as u's reader and subscribes it.
func Archive(ctx context.Context, addr string, u *Users) (*Archiver, error) {
	return ArchiveWith(ctx, func(ctx context.Context, l load.Login) (mqtt.Client, error) {
		return load.Connect(ctx, addr, l, false, nil)
	}, u)
}

// ArchiveWith is Archive over a connection connect makes for a login (with a
// persistent session): TLS, or a list of brokers.
func ArchiveWith(ctx context.Context, connect func(context.Context, load.Login) (mqtt.Client, error), u *Users) (*Archiver, error) {
	a := &Archiver{seen: map[string]map[uint64]bool{}}
	c, err := connect(ctx, load.Login{ClientID: ArchiverID, Username: u.Reader.Name, Password: u.Reader.Password})
	if err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	a.client = c
	everyNode := wire.Node{Prefix: wire.DefaultPrefix, Site: u.Site, Node: "+"}
	filters := map[string]byte{everyNode.Live(wire.StreamEnv): 1, everyNode.Backlog(wire.StreamEnv): 1}
	tok := c.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) { a.take(m, time.Now()) })
	if err := load.WaitToken(ctx, tok, load.ConnectTimeout); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("archiver: subscribe: %w", err)
	}
	for f, q := range tok.(*mqtt.SubscribeToken).Result() {
		if q > 2 {
			c.Disconnect(0)
			return nil, fmt.Errorf("archiver: subscription to %q refused (SUBACK 0x%02x)", f, q)
		}
	}
	return a, nil
}

func (a *Archiver) take(m mqtt.Message, now time.Time) {
	var r wire.Env
	err := json.Unmarshal(m.Payload(), &r)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err != nil || r.Seq == 0:
		a.bad++
		return
	case m.Retained():
		a.stale++
		if !a.keepRetained {
			return
		}
	}
	if !a.mark.IsZero() && r.TS.After(a.mark) && !strings.Contains(m.Topic(), "/backlog/") {
		if _, ok := a.firstLive[r.Node]; !ok {
			a.firstLive[r.Node] = now
		}
	}
	seqs := a.seen[r.Node]
	if seqs == nil {
		seqs = map[uint64]bool{}
		a.seen[r.Node] = seqs
	}
	if seqs[r.Seq] {
		a.dups++
		return
	}
	seqs[r.Seq] = true
	a.received++
	a.last = now
	lat := now.Sub(r.TS.Time)
	a.latency.Record(lat)
	if !a.steadyFrom.IsZero() && !r.TS.Before(a.steadyFrom) && (a.steadyTo.IsZero() || r.TS.Before(a.steadyTo)) {
		a.steady.Record(lat)
	}
}

// SteadyFrom makes readings sampled from t on count in Audit.Steady too.
func (a *Archiver) SteadyFrom(t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.steadyFrom = t
}

// KeepRetained makes the archiver count readings that arrive with the retain
// flag, for a farm whose archiver subscribed before any reading was published:
// then a retained delivery is not a replay of an older reading but a copy the
// broker sent again (after a restart, say) with the flag it was published with.
// Retained returns how many arrived so.
func (a *Archiver) KeepRetained() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.keepRetained = true
}

// Retained is how many readings arrived with the retain flag.
func (a *Archiver) Retained() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stale
}

// SteadyUntil makes readings sampled from t on leave Audit.Steady.
func (a *Archiver) SteadyUntil(t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.steadyTo = t
}

// MarkFailover starts recording, for each node, when its first live reading
// sampled after t arrives (FirstLive).
func (a *Archiver) MarkFailover(t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mark, a.firstLive = t, map[string]time.Time{}
}

// FirstLive returns, for each node that has one, when its first live reading
// sampled after MarkFailover's time arrived.
func (a *Archiver) FirstLive() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.firstLive)
}

// Received is how many distinct readings arrived so far.
func (a *Archiver) Received() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.received
}

// Audit is the archiver's account of a farm run.
type Audit struct {
	Expected, Received uint64 // readings taken; distinct readings archived
	Lost               uint64 // taken but never archived
	Duplicates         uint64
	Undelivered        int    // readings still in the bridges' spools
	Dropped            uint64 // readings the bridges' spools dropped
	Bad                uint64 // payloads that were not readings
	// Latency is every reading's, from its ts to its arrival; Steady only
	// that of readings sampled from SteadyFrom on.
	Latency, Steady load.Histogram
}

// Audit waits up to wait for the readings the tallies say were taken, then
// checks each node's seqs 1..LastSeq and disconnects the archiver.
func (a *Archiver) Audit(tallies []Tally, wait time.Duration) *Audit {
	var want uint64
	for _, t := range tallies {
		want += t.LastSeq
	}
	deadline := time.Now().Add(wait)
	for a.Received() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	a.client.Disconnect(100)
	a.mu.Lock()
	defer a.mu.Unlock()
	au := &Audit{Expected: want, Received: a.received, Duplicates: a.dups, Bad: a.bad}
	au.Latency.Merge(&a.latency)
	au.Steady.Merge(&a.steady)
	for _, t := range tallies {
		seqs := a.seen[t.Node.Node]
		for s := uint64(1); s <= t.LastSeq; s++ {
			if !seqs[s] {
				au.Lost++
			}
		}
		au.Undelivered += t.Depth
		au.Dropped += t.Dropped
	}
	return au
}
