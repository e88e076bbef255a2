// Package ingest moves messages from the broker into the store: the MQTT
// handler decodes each message and queues it (Take), and one writer (Run)
// commits the queue in batches and acknowledges each message to the broker
// only after the transaction that holds it committed, in the order the
// messages came. A SIGKILL at any point then loses nothing (what was not
// acknowledged is redelivered to the persistent session) and duplicates
// nothing (the store keeps each site/node/stream/seq once).
//
// Back-pressure: the queue is bounded. While the database is slow or down,
// the writer retries the same batch and acknowledges nothing, the queue
// fills, Take blocks, and the broker, whose window of unacknowledged
// messages to us is full, keeps the rest in our session.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/metrics"
	"github.com/sensorfarm/sensorfarm/archive/store"
)

// Committer is the store as the pipeline uses it.
type Committer interface {
	Commit(ctx context.Context, b store.Batch) (store.Result, error)
}

// Options configure a pipeline.
type Options struct {
	Store   Committer
	Decoder decode.Decoder
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// BatchSize is the most messages one transaction holds.
	BatchSize int
	// BatchWait is the longest the first message of a batch waits for
	// more before the batch is committed.
	BatchWait time.Duration
	// BatchIdle commits a batch as soon as no message came for this long:
	// a broker that allows few unacknowledged messages (mosquitto: 20) is
	// waiting for our acknowledgements, and more will not come before them.
	BatchIdle time.Duration
	// MaxPending bounds the queue between the handler and the writer.
	MaxPending int
	// CommitTimeout bounds one transaction.
	CommitTimeout time.Duration
}

// maxLogged bounds the dead-letter log lines: each reason and topic is
// logged once, up to this many, then only counted.
const maxLogged = 10000

type pending struct {
	item decode.Item
	ack  func()
}

// Pipeline is the queue and its writer.
type Pipeline struct {
	o        Options
	queue    chan pending
	stopping atomic.Bool
	dbOK     atomic.Bool

	mu     sync.Mutex
	logged map[string]bool
}

// New returns a pipeline; Run starts its writer.
func New(o Options) *Pipeline {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{o: o, queue: make(chan pending, o.MaxPending), logged: map[string]bool{}}
	p.dbOK.Store(true)
	return p
}

// DBReady reports whether the last commit succeeded (for /readyz).
func (p *Pipeline) DBReady() error {
	if !p.dbOK.Load() {
		return errors.New("the last commit failed; retrying")
	}
	return nil
}

// Take decodes m and queues it with its acknowledgement. It blocks while the
// queue is full (back-pressure) and drops the message unacknowledged once
// the pipeline is stopping or ctx ends: the broker redelivers it.
func (p *Pipeline) Take(ctx context.Context, m decode.Message, ack func()) {
	if p.stopping.Load() {
		return
	}
	p.o.Metrics.Received.Inc()
	it := p.o.Decoder.Decode(m)
	if d := it.Dead; d != nil {
		p.logDead(d)
	}
	select {
	case p.queue <- pending{it, ack}:
		p.o.Metrics.Pending.Inc()
	case <-ctx.Done():
	}
}

func (p *Pipeline) logDead(d *decode.DeadLetter) {
	k := d.Reason + " " + d.Topic
	p.mu.Lock()
	first := !p.logged[k] && len(p.logged) < maxLogged
	if first {
		p.logged[k] = true
	}
	p.mu.Unlock()
	if first {
		p.o.Log.Warn("message kept as a dead letter (logged once per reason and topic, counted always)",
			"topic", d.Topic, "reason", d.Reason, "detail", d.Detail, "bytes", d.Size)
	}
}

// Run commits the queue until ctx ends, then commits what is queued and
// returns. Messages it could not commit stay unacknowledged.
func (p *Pipeline) Run(ctx context.Context) error {
	defer p.stopping.Store(true)
	for {
		batch, more := p.collect(ctx)
		if len(batch) > 0 {
			if err := p.commit(ctx, batch); err != nil {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

// collect gathers one batch: it waits for a first message, then takes more
// until the batch is full, BatchWait passed, or none came for BatchIdle.
// more is false once ctx ended and the queue is empty.
func (p *Pipeline) collect(ctx context.Context) (batch []pending, more bool) {
	select {
	case m := <-p.queue:
		batch = append(batch, m)
	case <-ctx.Done():
		p.stopping.Store(true)
		for {
			select {
			case m := <-p.queue:
				batch = append(batch, m)
				if len(batch) == p.o.BatchSize {
					return batch, true
				}
			default:
				return batch, false
			}
		}
	}
	wait := time.NewTimer(p.o.BatchWait)
	defer wait.Stop()
	idle := time.NewTimer(p.o.BatchIdle)
	defer idle.Stop()
	for len(batch) < p.o.BatchSize {
		select {
		case m := <-p.queue:
			batch = append(batch, m)
			idle.Reset(p.o.BatchIdle)
		case <-idle.C:
			return batch, true
		case <-wait.C:
			return batch, true
		case <-ctx.Done():
			return batch, true
		}
	}
	return batch, true
}

// commit writes batch, retrying with backoff while the database fails, then
// acknowledges its messages in order.
func (p *Pipeline) commit(ctx context.Context, batch []pending) error {
	b := store.Batch{Items: make([]decode.Item, len(batch))}
	for i, m := range batch {
		b.Items[i] = m.item
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		b.ReceivedAt = time.Now().UTC()
		start := time.Now()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.o.CommitTimeout)
		res, err := p.o.Store.Commit(cctx, b)
		cancel()
		if err == nil {
			p.dbOK.Store(true)
			p.o.Metrics.DBUp.Set(1)
			p.count(res, time.Since(start), len(batch))
			if attempt > 1 {
				p.o.Log.Info("database back: batch committed", "attempts", attempt)
			}
			break
		}
		p.dbOK.Store(false)
		p.o.Metrics.DBUp.Set(0)
		p.o.Metrics.CommitErrors.Inc()
		if attempt == 1 || attempt%20 == 0 {
			p.o.Log.Error("commit failed; retrying, nothing acknowledged", "messages", len(batch), "attempt", attempt, "err", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			// Stopping with the database down: the messages stay
			// unacknowledged, in the broker's session.
			return fmt.Errorf("stopped with %d messages uncommitted (the broker keeps them for the session): %w", len(batch), err)
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	for _, m := range batch {
		m.ack()
	}
	p.o.Metrics.Acked.Add(float64(len(batch)))
	p.o.Metrics.Pending.Sub(float64(len(batch)))
	return nil
}

func (p *Pipeline) count(res store.Result, took time.Duration, n int) {
	m := p.o.Metrics
	m.Commits.Inc()
	m.CommitSeconds.Observe(took.Seconds())
	m.BatchMessages.Observe(float64(n))
	m.LastCommit.SetToCurrentTime()
	for s, k := range res.InsertedByStream {
		m.Inserted.WithLabelValues(s).Add(float64(k))
	}
	m.Duplicates.Add(float64(res.Duplicates))
	m.Retained.Add(float64(res.Retained))
	m.Health.Add(float64(res.Health))
	for r, k := range res.Dead {
		m.DeadLetters.WithLabelValues(r).Add(float64(k))
	}
}
