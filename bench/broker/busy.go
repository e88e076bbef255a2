package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/wire"
)

// mochiQueueSlots is mochi's default MaximumClientWritesPending (v2.7.9).
const mochiQueueSlots = 8192

// busy is benchmark 3b against a freshly started peer: the RSS per
// connection of n subscribers once each has been sent m messages.
//
// Benchmark 3 counts connections that never carried a message, which
// flatters a broker that reserves memory and touches it only as it is used:
// mochi's default outbound queue is a channel of 8,192 slots a client
// (64 KiB), a large allocation whose pages the kernel maps only once the
// queue has gone round them; ours has 1,024 slots (8 KiB, touched at once).
// With m past 8,192 every peer shows what it holds for a client that has
// been in use. The growth also holds what the traffic left behind (a Go
// broker's garbage until its next collection): the same traffic for all.
func (r *runner) busy(ctx context.Context, kind Kind) error {
	pl := r.plan
	n, m := pl.BusySubscribers, pl.BusyMessages
	p, before, err := r.startSettled(ctx, kind)
	if err != nil {
		return err
	}
	defer p.stop()

	pub := r.publishers(1)[0]
	topic := pub.Node.Live(wire.StreamEnv)
	var got atomic.Int64
	count := func(paho.Client, paho.Message) { got.Add(1) }
	var clients []paho.Client
	defer func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	}()
	for _, s := range r.subscribers(n, topic) {
		c, err := load.Connect(ctx, p.addr, s.Login, true, nil)
		if err != nil {
			return fmt.Errorf("busy on %s: %w", kind, err)
		}
		clients = append(clients, c)
		if err := load.WaitToken(ctx, c.Subscribe(topic, 0, count), load.ConnectTimeout); err != nil {
			return fmt.Errorf("busy on %s: subscribe: %w", kind, err)
		}
	}
	c, err := load.Connect(ctx, p.addr, pub.Login, true, nil)
	if err != nil {
		return fmt.Errorf("busy on %s: %w", kind, err)
	}
	clients = append(clients, c)

	// Paced well below every peer's fan-out rate (benchmark 2), so that
	// nothing is dropped at a full queue: a loss fails the run.
	tick := time.NewTicker(time.Duration(float64(time.Second) / pl.BusyRate))
	defer tick.Stop()
	for seq := range uint64(m) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		b, err := load.EncodeProbe(pub.Node, 0, seq+1, time.Now())
		if err != nil {
			return err
		}
		c.Publish(topic, 0, false, b)
	}
	want := int64(n) * int64(m)
	for deadline := time.Now().Add(time.Minute); got.Load() < want && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.alive(); err != nil {
		return err
	}
	if got.Load() != want {
		return fmt.Errorf("busy on %s: %d of %d messages delivered", kind, got.Load(), want)
	}
	time.Sleep(time.Second)
	after, err := readUsage(p.pid())
	if err != nil {
		return err
	}
	perConn := (float64(after.rssKB) - float64(before.rssKB)) / float64(n)
	r.log.Info("busy", "peer", kind, "subscribers", n, "messages_each", m, "kib_per_conn", fmt.Sprintf("%.1f", perConn))
	r.res.add(fmt.Sprintf("3b. %d subscribers, %d messages each", n, m), kind, metricKiBBusy, perConn)
	return nil
}
