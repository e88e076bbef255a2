package publish

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/wire"
)

// ReplayWindow bounds the backlog readings in flight. The bridge speaks MQTT
// 3.1.1, which has no Receive Maximum to do it: without a window a long
// backlog would be queued at once into paho's and the broker's buffers, every
// reading's ack timeout running meanwhile. 16 keeps the link busy.
const ReplayWindow = 16

// recheck is how often the forwarder looks for readings whose live publish
// failed while the connection stayed up (a PUBACK that timed out).
const recheck = 30 * time.Second

// Forwarder moves spooled readings to the broker. A new reading goes out at
// once on its stream's live, retained topic. After every (re)connection, the
// readings the broker has not acknowledged go out oldest first on the
// never-retained backlog topics, so old readings never pass for current ones,
// while live readings keep flowing beside them. A reading leaves the spool
// only when the broker's PUBACK for it is in.
type Forwarder struct {
	pub  *Publisher
	sp   *spool.Spool
	node wire.Node
	log  *slog.Logger
	// Delivered, if set, is called after every acknowledged reading;
	// Dropped after every reading counted dropped.
	Delivered, Dropped func()

	wake chan struct{}
	wg   sync.WaitGroup
}

// NewForwarder returns a Forwarder of sp's readings through pub. Call
// Connected from pub's OnConnect.
func NewForwarder(pub *Publisher, sp *spool.Spool, node wire.Node, log *slog.Logger) *Forwarder {
	return &Forwarder{pub: pub, sp: sp, node: node, log: log, wake: make(chan struct{}, 1)}
}

// Connected starts a replay of the backlog.
func (f *Forwarder) Connected() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Live publishes a reading just spooled with AppendLive, which claimed it, on
// its live topic. It does not wait for the broker; a reading that fails stays
// in the spool for replay.
func (f *Forwarder) Live(ctx context.Context, rec spool.Record) {
	m, err := f.pub.Send(f.node.Live(rec.Stream), rec.Payload, true)
	if err != nil {
		f.sp.Release(rec.ID)
		return
	}
	f.await(ctx, m, rec.ID)
}

// Direct publishes a reading the spool could not keep (a full disk) on its
// live topic without waiting for the broker: the sensor goroutine that calls
// it must go back to its sensor (a GPS receiver's buffer overruns within
// seconds). A reading the broker does not take is counted dropped in the
// spool. The wait outlives ctx, bounded by the ack timeout: a reading sent as
// the bridge stops is as likely delivered as not, and counting it dropped
// unseen would make dropped disagree with what consumers have.
func (f *Forwarder) Direct(ctx context.Context, rec spool.Record) {
	m, err := f.pub.Send(f.node.Live(rec.Stream), rec.Payload, true)
	if err != nil {
		f.drop(rec, err)
		return
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := m.Wait(context.WithoutCancel(ctx)); err != nil {
			f.drop(rec, err)
			return
		}
		if f.Delivered != nil {
			f.Delivered()
		}
	}()
}

// drop counts a reading that is neither in the spool nor delivered.
func (f *Forwarder) drop(rec spool.Record, why error) {
	if err := f.sp.CountDropped(1); err != nil {
		f.log.Error("a dropped reading could not be counted on disk (it is counted until the bridge stops)",
			"stream", rec.Stream, "seq", rec.Seq, "err", err, "dropped_because", why)
	}
	if f.Dropped != nil {
		f.Dropped()
	}
}

// Run replays the backlog after each connection, and now and then in case a
// live publish failed without a disconnection, until ctx ends. It returns
// once every acknowledgement it waits for has settled.
func (f *Forwarder) Run(ctx context.Context) {
	defer f.wg.Wait()
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-tick.C:
		}
		if err := f.replay(ctx); err != nil && !errors.Is(err, ErrNotConnected) && ctx.Err() == nil {
			f.log.Warn("backlog replay stopped; it resumes on the next connection", "err", err)
		}
	}
}

// replay sends every unacknowledged reading not already in flight.
func (f *Forwarder) replay(ctx context.Context) error {
	window := make(chan struct{}, ReplayWindow)
	cur := f.sp.Replay()
	sent := 0
	defer func() {
		if sent > 0 {
			f.log.Info("backlog replayed", "readings", sent)
		}
	}()
	for {
		rec, err := cur.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !f.sp.Claim(rec.ID) {
			<-window
			continue
		}
		m, err := f.pub.Send(f.node.Backlog(rec.Stream), rec.Payload, false)
		if err != nil {
			f.sp.Release(rec.ID)
			<-window
			return err
		}
		sent++
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-window }()
			f.settle(ctx, m, rec.ID)
		}()
	}
}

func (f *Forwarder) await(ctx context.Context, m Pending, id uint64) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.settle(ctx, m, id)
	}()
}

// settle waits for a reading's PUBACK and acknowledges it in the spool, which
// ends its claim. The wait outlives ctx, bounded by the ack timeout, so that
// a stopping bridge still records what the broker took and does not send it
// again.
func (f *Forwarder) settle(ctx context.Context, m Pending, id uint64) {
	if err := m.Wait(context.WithoutCancel(ctx)); err != nil {
		f.sp.Release(id) // still in the spool: the next replay sends it
		return
	}
	if err := f.sp.Ack(id); err != nil {
		f.log.Warn("spool ack failed; the reading may be sent again", "id", id, "err", err)
	}
	if f.Delivered != nil {
		f.Delivered()
	}
}
