package server

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/broker/store"
)

// durableHook keeps every QoS 1/2 publish the broker acknowledges until each
// persistent session subscribed to it holds it, in memory and on disk.
//
// mochi v2.7.9 drops a message for a session whose in-flight messages reach
// MaximumInflight (InflightDropped), or whose queue of writes is full
// (MessagesDropped, after taking it back out of the in-flight messages), and
// it does so after it has sent the publisher its PUBACK: the bridge deletes
// the reading from its spool, and it is gone. The hook holds a publish back
// before mochi acknowledges it (OnPublish runs before the PUBACK) while a
// persistent session it goes to has no room, so that the publisher's reading
// waits in its spool rather than being dropped here: the publisher's
// connection reads nothing meanwhile, and TCP slows it down. Past holdTimeout
// the publisher is disconnected without its PUBACK (it sends the message
// again when it reconnects).
//
// Then it writes the publish to the store's journal before mochi acknowledges
// it, holds the PUBACK back until the journal entry is on disk (holdAck), and
// deletes the entry once mochi has fanned it out (OnPublished).
type durableHook struct {
	mqtt.HookBase
	srv   *mqtt.Server
	store *store.Hook
	log   *slog.Logger
	// room is how many messages a connected session may hold (in flight or
	// queued) before publishes to it are held: below both MaximumInflight
	// and the queue of writes, less a margin for QoS 0 messages and control
	// packets. roomOffline is a session's whose client is away: mochi keeps
	// its messages in flight only (and resends them at the reconnect without
	// the queue), so only MaximumInflight bounds it.
	room, roomOffline int
	// holdTimeout bounds how long one publish is held.
	holdTimeout time.Duration
	// holdOffline is how long after its client went away a session still
	// holds publishers back; past it, mochi's drops apply again, so that an
	// abandoned session cannot stop the farm.
	holdOffline time.Duration

	mu       sync.Mutex
	reserved map[string]int            // per session: admitted publishes not yet fanned out
	pending  map[*mqtt.Client]admitted // per publisher: its publish between OnPublish and OnPublished
	wake     chan struct{}             // closed when a session may have room
	waiting  atomic.Int32              // publishers waiting on wake

	// locks keep a takeover of a persistent session and a fan-out to it
	// apart (takeover.go); takeovers are the connections holding one.
	locks     sessionLocks
	takeovers map[*mqtt.Client]*takeover
	wills     map[*mqtt.Client]func() // a will's unlock, from OnWill to OnWillSent

	held    atomic.Uint64 // publishes that had to wait
	refused atomic.Uint64 // publishes refused (held too long, or no space)
	// redelivered are messages mochi dropped at a full queue of writes
	// that the hook sent anyway (redeliver.go); subacked holds each
	// client's last SUBACK time, in Unix seconds, for retainedBurst.
	redelivered atomic.Uint64
	subacked    sync.Map // *mqtt.Client -> int64

	// subs are the topics' QoS 1/2 subscribers, for targets: cleared at
	// every SUBACK (mochi has changed its index just before writing it),
	// UNSUBSCRIBE, resumed or ended session.
	subs subscriberCache
}

type admitted struct {
	packetID uint16
	key      string
	sessions []string // held: the sessions it took room in
	// persistent are the persistent sessions it goes to, whose locks it
	// holds during its fan-out (unlock releases them).
	persistent []string
	unlock     func()
}

func newDurableHook(srv *mqtt.Server, st *store.Hook, room, roomOffline int, holdTimeout, holdOffline time.Duration, log *slog.Logger) *durableHook {
	return &durableHook{srv: srv, store: st, room: room, roomOffline: roomOffline, holdTimeout: holdTimeout, holdOffline: holdOffline, log: log,
		reserved: map[string]int{}, pending: map[*mqtt.Client]admitted{}, wake: make(chan struct{}),
		takeovers: map[*mqtt.Client]*takeover{}, wills: map[*mqtt.Client]func(){}}
}

// sessionRoom is how many messages a connected session may hold, and one
// whose client is away: mochi's bounds, with a quarter kept for what else
// goes through them.
func sessionRoom(maxInflight uint16, pendingWrites int32) (online, offline int) {
	return min(int(maxInflight), int(pendingWrites)) * 3 / 4, int(maxInflight) * 3 / 4
}

func (*durableHook) ID() string { return "sf-durable" }

func (*durableHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnPublished, mqtt.OnDisconnect, mqtt.OnQosComplete, mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.OnSessionEstablish, mqtt.OnPacketSent, mqtt.OnWill, mqtt.OnWillSent, mqtt.OnPublishDropped,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnSessionEstablished:
		return true
	}
	return false
}

// needsAck: what the hook looks after, a QoS 1/2 publish from a client
// (the broker's own, inline, publishes are never acknowledged).
func needsAck(cl *mqtt.Client, pk packets.Packet) bool {
	return !cl.Net.Inline && pk.FixedHeader.Qos > 0
}

func (h *durableHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !needsAck(cl, pk) {
		return pk, nil
	}
	h.release(cl) // the previous publish ended before its fan-out
	sessions, persistent := h.targets(pk.TopicName)
	if !h.admit(sessions) {
		h.refused.Add(1)
		h.log.Warn("publish refused: a persistent session it goes to stayed full", "client", cl.ID, "topic", pk.TopicName,
			"waited", h.holdTimeout)
		h.refuse(cl)
		return pk, packets.ErrRejectPacket
	}
	var key string
	if len(sessions) > 0 || pk.FixedHeader.Retain {
		var err error
		var synced store.Ticket
		if key, synced, err = h.store.Begin(cl, pk); err == nil {
			err = h.holdAck(cl, synced)
		}
		if err != nil {
			h.store.Done(key)
			h.unreserve(sessions)
			h.refused.Add(1)
			h.log.Warn("publish refused: it cannot be stored", "client", cl.ID, "topic", pk.TopicName, "err", err)
			h.refuse(cl)
			return pk, packets.ErrRejectPacket
		}
	}
	h.mu.Lock()
	h.pending[cl] = admitted{packetID: pk.PacketID, key: key, sessions: sessions, persistent: persistent}
	h.mu.Unlock()
	return pk, nil
}

// holdAck makes cl's PUBACK, and all written to cl after it, wait for the
// fsync of its journal entry (ackConn), so that mochi reads cl's next publish
// meanwhile; on a connection that is not ours (a test's listener) it waits
// here.
func (h *durableHook) holdAck(cl *mqtt.Client, t store.Ticket) error {
	if c, ok := wrapped[*ackConn](cl.Net.Conn); ok {
		c.hold(t, h.store)
		return nil
	}
	return h.store.WaitSynced(t)
}

// refuse disconnects a publisher whose publish gets no PUBACK: an MQTT 5
// client reads "quota exceeded"; either sends the message again when it
// reconnects.
func (h *durableHook) refuse(cl *mqtt.Client) {
	_ = h.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
}

// OnPublished: mochi has acknowledged and fanned out the publish.
func (h *durableHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if needsAck(cl, pk) {
		h.release(cl)
	}
}

// release ends cl's admitted publish, fanned out or abandoned: a publish
// whose PUBACK could not be written ends without OnPublished, and its
// publisher sends it again.
func (h *durableHook) release(cl *mqtt.Client) {
	h.mu.Lock()
	a, ok := h.pending[cl]
	delete(h.pending, cl)
	h.mu.Unlock()
	if !ok {
		return
	}
	if a.unlock != nil {
		a.unlock()
	}
	h.store.Done(a.key)
	h.unreserve(a.sessions)
}

func (h *durableHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.release(cl)
	h.subacked.Delete(cl)
}

func (h *durableHook) OnQosComplete(*mqtt.Client, packets.Packet) { h.notify() }

func (h *durableHook) OnQosDropped(*mqtt.Client, packets.Packet) { h.notify() }

func (h *durableHook) OnSubscribed(*mqtt.Client, packets.Packet, []byte) { h.subs.changed() }

func (h *durableHook) OnUnsubscribed(*mqtt.Client, packets.Packet) { h.subs.changed() }

// OnSessionEstablished: a resumed session keeps its subscriptions, one
// started clean has dropped the old ones.
func (h *durableHook) OnSessionEstablished(*mqtt.Client, packets.Packet) { h.subs.changed() }

// OnClientExpired removes an expired session's subscriptions from the topic
// index: mochi (clearExpiredClients) deletes the client only, and its
// subscriptions would go on matching every publish.
func (h *durableHook) OnClientExpired(cl *mqtt.Client) {
	for filter := range cl.State.Subscriptions.GetAll() {
		h.srv.Topics.Unsubscribe(filter, cl.ID)
	}
	h.subs.changed()
	h.mu.Lock()
	delete(h.reserved, cl.ID)
	h.mu.Unlock()
	h.notify()
}

// notify wakes the held publishers to look again.
func (h *durableHook) notify() {
	if h.waiting.Load() == 0 {
		return
	}
	h.mu.Lock()
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
}

// targets are the persistent sessions a publish to topic goes to at QoS 1 or
// 2: held, those whose clients are connected or went away less than
// holdOffline ago, and persistent, all of them.
func (h *durableHook) targets(topic string) (held, persistent []string) {
	now := time.Now().Unix()
	for _, id := range h.subs.subscribers(h.srv.Topics, topic) {
		cl, ok := h.srv.Clients.Get(id)
		if !ok || !store.Persistent(cl) {
			continue
		}
		persistent = append(persistent, id)
		if gone := cl.StopTime(); gone > 0 && now-gone > int64(h.holdOffline/time.Second) {
			continue
		}
		held = append(held, id)
	}
	return held, persistent
}

// admit waits until every session has room for one more message, up to
// holdTimeout, and reserves it; it reports whether it did.
func (h *durableHook) admit(sessions []string) bool {
	if len(sessions) == 0 {
		return true
	}
	deadline := time.Now().Add(h.holdTimeout)
	waited := false
	for {
		h.mu.Lock()
		if h.roomFor(sessions) {
			for _, id := range sessions {
				h.reserved[id]++
			}
			h.mu.Unlock()
			return true
		}
		wake := h.wake
		h.mu.Unlock()
		if !waited {
			waited = true
			h.held.Add(1)
			h.waiting.Add(1)
			defer h.waiting.Add(-1)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		// A session's in-flight count also falls without an ack (its
		// client reconnects, its session expires): look again now and then.
		t := time.NewTimer(min(left, 100*time.Millisecond))
		select {
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// roomFor, with h.mu held.
func (h *durableHook) roomFor(sessions []string) bool {
	for _, id := range sessions {
		cl, ok := h.srv.Clients.Get(id)
		if !ok {
			continue
		}
		room := h.room
		if cl.Closed() {
			room = h.roomOffline
		}
		if cl.State.Inflight.Len()+h.reserved[id] >= room {
			return false
		}
	}
	return true
}

func (h *durableHook) unreserve(sessions []string) {
	if len(sessions) == 0 {
		return
	}
	h.mu.Lock()
	for _, id := range sessions {
		if h.reserved[id]--; h.reserved[id] <= 0 {
			delete(h.reserved, id)
		}
	}
	h.mu.Unlock()
	h.notify()
}

// replay publishes again what the journal holds from before a crash.
func (h *durableHook) replay() (int, error) {
	return h.store.Replay(func(m storage.Message) error {
		return h.Publish(m.TopicName, m.Payload, m.FixedHeader.Retain, m.FixedHeader.Qos)
	})
}

// durability reports to the metrics; with --stock-delivery there is no
// durableHook, and nothing is held or refused.
type durability struct {
	h     *durableHook
	store *store.Hook
}

func (d durability) Held() uint64 {
	if d.h == nil {
		return 0
	}
	return d.h.held.Load()
}

func (d durability) Refused() uint64 {
	if d.h == nil {
		return 0
	}
	return d.h.refused.Load()
}

func (d durability) Redelivered() uint64 {
	if d.h == nil {
		return 0
	}
	return d.h.redelivered.Load()
}

func (d durability) StoreFull() bool        { return d.store.Full() }
func (d durability) StoreFreeBytes() uint64 { return d.store.FreeBytes() }
