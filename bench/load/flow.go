package load

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Mode is how publishers pace themselves.
type Mode int

const (
	// OpenLoop sends at a fixed rate per publisher, whatever the broker
	// does; latency counts from each message's due time (see Schedule).
	OpenLoop Mode = iota
	// ClosedLoop keeps Window messages unacknowledged per publisher and
	// sends the next as soon as one is acknowledged: the broker's
	// throughput. Latency counts from the real send time.
	ClosedLoop
)

func (m Mode) String() string {
	if m == OpenLoop {
		return "open-loop"
	}
	return "closed-loop"
}

// Publisher stands in for a node's bridge: it publishes probes on the node's
// env topic, as the node's own user.
type Publisher struct {
	Login Login
	Node  wire.Node
}

// Subscriber receives on Filter at QoS 1. Every subscriber must match every
// publisher's topic: each message is expected once per subscriber.
type Subscriber struct {
	Login  Login
	Filter string
}

// Flow is one bounded run: publishers to subscribers through the broker.
type Flow struct {
	Addr        string
	Publishers  []Publisher
	Subscribers []Subscriber
	Mode        Mode
	// Rate is each publisher's messages per second (OpenLoop).
	Rate float64
	// Window is each publisher's unacknowledged messages (ClosedLoop);
	// 0 means 1.
	Window int
	// Count is how many messages each publisher sends.
	Count int
	// Limit bounds the whole run, connecting included.
	Limit time.Duration
}

// Result is what the subscribers saw.
type Result struct {
	Mode     Mode
	Sent     uint64 // acknowledged by the broker
	Expected uint64 // Sent times the subscribers
	Received uint64 // distinct messages delivered
	// Duplicates are repeats (QoS 1 allows them); Lost are expected
	// messages never delivered.
	Duplicates, Lost uint64
	// Elapsed runs from the first send to the last delivery.
	Elapsed time.Duration
	Latency Histogram
}

// Throughput is deliveries per second over Elapsed.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) / r.Elapsed.Seconds()
}

func (f *Flow) check() error {
	var errs []error
	if len(f.Publishers) == 0 || len(f.Subscribers) == 0 {
		errs = append(errs, errors.New("a flow needs publishers and subscribers"))
	}
	if f.Count <= 0 || f.Count > 1<<16-1 {
		// Count also bounds the messages one client may have in flight,
		// which MQTT's 16-bit packet ids limit.
		errs = append(errs, fmt.Errorf("count %d per publisher is not in 1-65535", f.Count))
	}
	if f.Limit <= 0 {
		errs = append(errs, errors.New("a flow needs a time limit"))
	}
	if f.Mode == OpenLoop && f.Rate <= 0 {
		errs = append(errs, errors.New("an open-loop flow needs a rate"))
	}
	if len(f.Publishers) >= 1e5 {
		errs = append(errs, errors.New("at most 99999 publishers"))
	}
	return errors.Join(errs...)
}

// sink is one subscriber's record of what arrived.
type sink struct {
	mu     sync.Mutex
	seen   [][]bool // [publisher][seq-1]
	got    uint64
	dups   uint64
	last   time.Time
	lat    Histogram
	others uint64 // messages that are not probes (a broker's own)
}

func (s *sink) take(p []byte, now time.Time) {
	pr, err := DecodeProbe(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || pr.Pub >= len(s.seen) || pr.Seq == 0 || pr.Seq > uint64(len(s.seen[pr.Pub])) {
		s.others++
		return
	}
	if s.seen[pr.Pub][pr.Seq-1] {
		s.dups++
		return
	}
	s.seen[pr.Pub][pr.Seq-1] = true
	s.got++
	s.last = now
	s.lat.Record(now.Sub(pr.Sent))
}

func (s *sink) received() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// drainWait is how long the subscribers may take, after the last
// acknowledgement, to receive what is still on its way.
const drainWait = 5 * time.Second

// Run connects the subscribers, then the publishers, sends, waits for the
// deliveries and disconnects everyone. A refused subscription, a failed
// publish or a lost connection fails the run; a message not delivered does
// not: it is counted in Lost.
func Run(ctx context.Context, f Flow) (*Result, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.Limit)
	defer cancel()

	var lost atomic.Pointer[error]
	onLost := func(err error) {
		err = fmt.Errorf("connection lost: %w", err)
		lost.CompareAndSwap(nil, &err)
	}
	var clients []mqtt.Client
	defer func() {
		for _, c := range clients {
			c.Disconnect(100)
		}
	}()

	sinks := make([]*sink, len(f.Subscribers))
	for i, s := range f.Subscribers {
		k := &sink{seen: make([][]bool, len(f.Publishers))}
		for p := range k.seen {
			k.seen[p] = make([]bool, f.Count)
		}
		sinks[i] = k
		c, err := Connect(ctx, f.Addr, s.Login, true, onLost)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d: %w", i, err)
		}
		clients = append(clients, c)
		tok := c.Subscribe(s.Filter, 1, func(_ mqtt.Client, m mqtt.Message) { k.take(m.Payload(), time.Now()) })
		if err := WaitToken(ctx, tok, ConnectTimeout); err != nil {
			return nil, fmt.Errorf("subscriber %d: subscribe %q: %w", i, s.Filter, err)
		}
		if q := tok.(*mqtt.SubscribeToken).Result()[s.Filter]; q > 2 {
			return nil, fmt.Errorf("subscriber %d: subscription to %q refused (SUBACK 0x%02x)", i, s.Filter, q)
		}
	}
	pubs := make([]mqtt.Client, len(f.Publishers))
	for i, p := range f.Publishers {
		c, err := Connect(ctx, f.Addr, p.Login, true, onLost)
		if err != nil {
			return nil, fmt.Errorf("publisher %d: %w", i, err)
		}
		clients = append(clients, c)
		pubs[i] = c
	}

	// Everyone starts together, a little ahead so that no publisher is
	// late on its first message.
	start := time.Now().Add(20 * time.Millisecond)
	var sent atomic.Uint64
	errc := make(chan error, len(pubs))
	for i := range pubs {
		go func() { errc <- f.publish(ctx, pubs[i], i, start, &sent) }()
	}
	var errs []error
	for range pubs {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	r := &Result{Mode: f.Mode, Sent: sent.Load()}
	r.Expected = r.Sent * uint64(len(sinks))
	drain := time.NewTimer(drainWait)
	defer drain.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		var got uint64
		for _, k := range sinks {
			got += k.received()
		}
		if got >= r.Expected {
			break
		}
		select {
		case <-tick.C:
		case <-drain.C:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	if p := lost.Load(); p != nil {
		return nil, *p
	}
	var last time.Time
	for _, k := range sinks {
		k.mu.Lock()
		r.Received += k.got
		r.Duplicates += k.dups
		r.Latency.Merge(&k.lat)
		if k.last.After(last) {
			last = k.last
		}
		k.mu.Unlock()
	}
	r.Lost = r.Expected - min(r.Received, r.Expected)
	r.Elapsed = last.Sub(start)
	return r, nil
}

// publish sends one publisher's Count messages and waits for their PUBACKs.
func (f *Flow) publish(ctx context.Context, c mqtt.Client, i int, start time.Time, sent *atomic.Uint64) error {
	p := f.Publishers[i]
	topic := p.Node.Live(wire.StreamEnv)
	window := max(f.Window, 1)
	sched := Schedule{Start: start, Interval: time.Duration(float64(time.Second) / max(f.Rate, 1e-9))}
	var pending []mqtt.Token
	settle := func(tok mqtt.Token) error {
		if err := WaitToken(ctx, tok, ConnectTimeout); err != nil {
			return fmt.Errorf("publisher %d: publish on %s: %w", i, topic, err)
		}
		sent.Add(1)
		return nil
	}
	if f.Mode == ClosedLoop {
		if d := time.Until(start); d > 0 {
			time.Sleep(d)
		}
	}
	for n := range f.Count {
		var at time.Time
		if f.Mode == OpenLoop {
			due, err := sched.Wait(ctx, n)
			if err != nil {
				return fmt.Errorf("publisher %d: stopped after %d of %d messages: %w", i, n, f.Count, err)
			}
			at = due
		} else {
			if len(pending) == window {
				if err := settle(pending[0]); err != nil {
					return err
				}
				pending = pending[1:]
			}
			at = time.Now()
		}
		b, err := encodeProbe(p.Node, i, uint64(n+1), at)
		if err != nil {
			return err
		}
		pending = append(pending, c.Publish(topic, 1, false, b))
	}
	for _, tok := range pending {
		if err := settle(tok); err != nil {
			return err
		}
	}
	return nil
}
