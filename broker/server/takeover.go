package server

import (
	"slices"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A persistent session taken over by a new connection (an archiver that
// reconnects, every session after a broker restart) loses the messages
// fanned out to it while mochi v2.7.9 moves it: inheritClientSession clones
// the old client's in-flight messages into the new client, then clears the
// old client's (telling the store to delete them), and only then does
// attachClient put the new client in Server.Clients. A publish fanned out in
// between finds the old client, is put in flight there, and is cleared with
// it: acknowledged to its publisher, never delivered, deleted from the store.
// TestTakeoverLosesNothing lost 56 to 122 of 6,000 to 10,500 readings across
// 40 takeovers; after a SIGKILL, the journal's replay raced the archiver's
// reconnection the same way (TestSIGKILLDuringReplay).
//
// So a takeover of a persistent session and a fan-out to it exclude each
// other, per client id: the connection taking over holds its id's lock from
// OnSessionEstablish (before inheritClientSession) until its CONNACK is
// written (after Server.Clients holds it); a QoS 1/2 publish holds the locks
// of the persistent sessions it goes to from the moment its PUBACK (PUBREC)
// has been written, right before mochi fans it out, until OnPublished. The
// publish takes them after the write, so that a publisher that does not read
// its socket cannot hold up a takeover.

// The broker's own QoS 1 publishes (the journal's replay, the gap summaries)
// go through durableHook.Publish, and a will from its OnWill to its
// OnWillSent, holding the same locks.

// takeoverRelease bounds how long a takeover holds its id's lock when its
// CONNACK is never written (the connection closed in between): a takeover
// takes microseconds.
const takeoverRelease = 2 * time.Second

// sessionLocks are the locks of the client ids in use by a takeover or a
// fan-out; an entry lives while someone holds or waits for it.
type sessionLocks struct {
	mu sync.Mutex
	m  map[string]*sessionLock
}

type sessionLock struct {
	sync.RWMutex
	refs int
}

func (s *sessionLocks) get(id string) *sessionLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*sessionLock{}
	}
	l := s.m[id]
	if l == nil {
		l = new(sessionLock)
		s.m[id] = l
	}
	l.refs++
	return l
}

func (s *sessionLocks) put(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.m[id]; l != nil {
		if l.refs--; l.refs == 0 {
			delete(s.m, id)
		}
	}
}

// readLock takes the read locks of ids, in order (two fan-outs never wait for
// each other in a cycle behind two takeovers), and returns their release.
func (s *sessionLocks) readLock(ids []string) (unlock func()) {
	if len(ids) == 0 {
		return func() {}
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	held := make([]*sessionLock, len(ids))
	for i, id := range ids {
		held[i] = s.get(id)
		held[i].RLock()
	}
	return func() {
		for i, id := range ids {
			held[i].RUnlock()
			s.put(id)
		}
	}
}

// takeover is a connection's hold on its client id while mochi moves the
// session to it.
type takeover struct {
	once  sync.Once
	timer *time.Timer
	end   func()
}

func (t *takeover) release() {
	t.once.Do(func() {
		t.timer.Stop()
		t.end()
	})
}

// OnSessionEstablish: a connection that resumes a session still held by a
// client object (connected, away, or restored from the store) takes its id's
// lock before mochi moves the session.
func (h *durableHook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	if pk.Connect.Clean {
		return
	}
	if _, ok := h.srv.Clients.Get(cl.ID); !ok {
		return
	}
	id := cl.ID
	l := h.locks.get(id)
	l.Lock()
	t := &takeover{end: func() {
		l.Unlock()
		h.locks.put(id)
		h.mu.Lock()
		delete(h.takeovers, cl)
		h.mu.Unlock()
	}}
	t.timer = time.AfterFunc(takeoverRelease, func() {
		h.log.Warn("session takeover lock released by its timeout: the connection closed before its CONNACK", "client", id)
		t.release()
	})
	h.mu.Lock()
	h.takeovers[cl] = t
	h.mu.Unlock()
}

// OnPacketSent ends a takeover at its CONNACK, starts a fan-out at its
// PUBACK, and marks the retained messages a SUBACK makes owed (redeliver.go).
func (h *durableHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		h.tookOver(cl)
	case packets.Puback, packets.Pubrec:
		h.fanningOut(cl, pk.PacketID)
	case packets.Suback:
		h.subs.changed()
		h.subacked.Store(cl, time.Now().Unix())
	}
}

// tookOver: cl's CONNACK has been written, after Server.Clients took it in.
// Not earlier: a fan-out that waited for the session would write its PUBLISH
// to the new client before the CONNACK, a protocol error for the client.
func (h *durableHook) tookOver(cl *mqtt.Client) {
	h.mu.Lock()
	t := h.takeovers[cl]
	h.mu.Unlock()
	if t != nil {
		t.release()
	}
}

// fanningOut: the PUBACK (PUBREC) of an admitted publish has been written,
// and mochi fans the publish out next. It runs in the publisher's own
// goroutine, as do OnPublish, OnPublished and OnDisconnect, so nothing else
// changes its entry meanwhile.
func (h *durableHook) fanningOut(cl *mqtt.Client, packetID uint16) {
	h.mu.Lock()
	a, ok := h.pending[cl]
	h.mu.Unlock()
	if !ok || a.packetID != packetID || a.unlock != nil || len(a.persistent) == 0 {
		return
	}
	a.unlock = h.locks.readLock(a.persistent)
	h.mu.Lock()
	h.pending[cl] = a
	h.mu.Unlock()
}

// Publish publishes as the broker itself (mochi's inline client), holding the
// locks of the persistent sessions a QoS 1/2 message goes to.
func (h *durableHook) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if qos > 0 {
		_, persistent := h.targets(topic)
		defer h.locks.readLock(persistent)()
	}
	return h.srv.Publish(topic, payload, retain, qos)
}

// OnWill: mochi fans a will out right after it (sendLWT), unless it is
// delayed (MQTT 5), and calls OnWillSent after.
func (h *durableHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if will.Qos == 0 || will.WillDelayInterval > 0 {
		return will, nil
	}
	_, persistent := h.targets(will.TopicName)
	unlock := h.locks.readLock(persistent)
	h.mu.Lock()
	h.wills[cl] = unlock
	h.mu.Unlock()
	return will, nil
}

func (h *durableHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	unlock := h.wills[cl]
	delete(h.wills, cl)
	h.mu.Unlock()
	if unlock != nil {
		unlock()
	}
}
