package store

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	pebblehook "github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// What this store takes from mochi and pebble, checked so that an upgrade of
// either that changes it fails here rather than in the field.

// openMochi opens dir's database with mochi's own pebble hook.
func openMochi(t *testing.T, dir string) *pebblehook.Hook {
	t.Helper()
	m := new(pebblehook.Hook)
	m.SetOpts(quietLog(), nil)
	require.NoError(t, m.Init(&pebblehook.Options{Path: dir + "/" + DirName, Mode: pebblehook.Sync}))
	return m
}

// TestMochiLayout: a data directory written by mochi's pebble hook reads back
// with ours and the other way round: same keys, same encoding. A broker
// upgraded from mochi's hook keeps its sessions and retained messages.
func TestMochiLayout(t *testing.T) {
	persistent := &mqtt.Client{ID: "archiver", Properties: mqtt.ClientProperties{ProtocolVersion: 4, Clean: false}}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName: "sensorfarm/s/n/env", Payload: []byte(`{"seq":1}`), PacketID: 3, Created: time.Now().Unix()}
	sub := packets.Packet{Filters: packets.Subscriptions{{Filter: "sensorfarm/#", Qos: 1}}}

	t.Run("mochi writes, we read", func(t *testing.T) {
		dir := t.TempDir()
		m := openMochi(t, dir)
		m.OnSessionEstablished(persistent, packets.Packet{})
		m.OnSubscribed(persistent, sub, []byte{1})
		m.OnRetainMessage(persistent, pk, 1)
		m.OnQosPublish(persistent, pk, 0, 0)
		_ = m.Stop()

		h := open(t, dir)
		defer func() { require.NoError(t, h.Stop()) }()
		checkStored(t, h.StoredClients, h.StoredSubscriptions, h.StoredRetainedMessages, h.StoredInflightMessages)
		// The session is known to be on disk: a clean reconnect deletes it.
		h.OnSessionEstablished(&mqtt.Client{ID: "archiver", Properties: mqtt.ClientProperties{ProtocolVersion: 4, Clean: true}}, packets.Packet{})
		cls, err := h.StoredClients()
		require.NoError(t, err)
		require.Empty(t, cls)
	})
	t.Run("we write, mochi reads", func(t *testing.T) {
		dir := t.TempDir()
		h := open(t, dir)
		h.OnSessionEstablished(persistent, packets.Packet{})
		h.OnSubscribed(persistent, sub, []byte{1})
		h.OnRetainMessage(persistent, pk, 1)
		h.OnQosPublish(persistent, pk, 0, 0)
		require.NoError(t, h.Stop())

		m := openMochi(t, dir)
		checkStored(t, m.StoredClients, m.StoredSubscriptions, m.StoredRetainedMessages, m.StoredInflightMessages)
		_ = m.Stop()
	})
}

func checkStored[C, S, M any](t *testing.T, clients func() ([]C, error), subs func() ([]S, error),
	retained, inflight func() ([]M, error)) {
	t.Helper()
	for name, f := range map[string]func() (int, error){
		"clients":       func() (int, error) { v, err := clients(); return len(v), err },
		"subscriptions": func() (int, error) { v, err := subs(); return len(v), err },
		"retained":      func() (int, error) { v, err := retained(); return len(v), err },
		"inflight":      func() (int, error) { v, err := inflight(); return len(v), err },
	} {
		n, err := f()
		require.NoError(t, err, name)
		require.Equal(t, 1, n, name)
	}
}

// TestEveryMochiStorageEvent: every event mochi's pebble hook handles, ours
// handles too; a mochi upgrade that stores something more fails here.
func TestEveryMochiStorageEvent(t *testing.T) {
	m, h := new(pebblehook.Hook), new(Hook)
	for b := byte(0); b < 64; b++ {
		if m.Provides(b) {
			require.True(t, h.Provides(b), "mochi's pebble hook stores on event %d; ours does not", b)
		}
	}
}

// TestMochiDropPoints: the two places where mochi v2.7.9 drops a QoS 1
// message for a session, which the broker's hold (broker/server) keeps a
// session below, are where they were: past MaximumInflight messages in
// flight (counted in InflightDropped), and a full queue of writes (counted in
// MessagesDropped, with OnPublishDropped and no OnQosDropped).
func TestMochiDropPoints(t *testing.T) {
	const room = 4
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: quietLog(),
		Capabilities: func() *mqtt.Capabilities {
			c := mqtt.NewDefaultServerCapabilities()
			c.MaximumInflight = room
			c.MaximumClientWritesPending = 2
			return c
		}()})
	require.NoError(t, s.AddHook(new(auth.AllowHook), nil))
	cl := s.NewClient(nil, "local", "offline", false)
	cl.Properties.Clean = false
	cl.Properties.ProtocolVersion = 4
	s.Clients.Add(cl)
	s.Topics.Subscribe(cl.ID, packets.Subscription{Filter: "t", Qos: 1})
	for range room + 2 {
		require.NoError(t, s.Publish("t", []byte("x"), false, 1))
	}
	require.Equal(t, room, cl.State.Inflight.Len())
	require.EqualValues(t, 2, s.Info.InflightDropped)

	// A connected client whose writes are not taken: its queue of 2 fills.
	rec := &dropRecorder{}
	require.NoError(t, s.AddHook(rec, nil))
	conn, peer := net.Pipe()
	defer conn.Close()
	defer peer.Close()
	on := s.NewClient(conn, "local", "online", false)
	on.Properties.Clean = false
	on.Properties.ProtocolVersion = 4
	s.Clients.Add(on)
	s.Topics.Subscribe(on.ID, packets.Subscription{Filter: "u", Qos: 1})
	for range 3 {
		require.NoError(t, s.Publish("u", []byte("x"), false, 1))
	}
	require.EqualValues(t, 1, s.Info.MessagesDropped)
	require.Equal(t, 2, on.State.Inflight.Len(), "the dropped message was taken back out of the in-flight ones")
	require.Equal(t, 3, rec.qosPublish, "after OnQosPublish stored it")
	require.Equal(t, 1, rec.publishDropped)
	require.Zero(t, rec.qosDropped, "without OnQosDropped: OnPublishDropped must clean up")
}

type dropRecorder struct {
	mqtt.HookBase
	qosPublish, publishDropped, qosDropped int
}

func (*dropRecorder) ID() string { return "drop-recorder" }
func (*dropRecorder) Provides(b byte) bool {
	return b == mqtt.OnQosPublish || b == mqtt.OnPublishDropped || b == mqtt.OnQosDropped
}
func (r *dropRecorder) OnQosPublish(*mqtt.Client, packets.Packet, int64, int) { r.qosPublish++ }
func (r *dropRecorder) OnPublishDropped(*mqtt.Client, packets.Packet)         { r.publishDropped++ }
func (r *dropRecorder) OnQosDropped(*mqtt.Client, packets.Packet)             { r.qosDropped++ }

// TestTakeoverKeepsStoredMessages: when a connection resumes a persistent
// session, mochi v2.7.9 clones the old client's messages in flight into the
// new client and then clears the old client's, with OnQosDropped and the old
// client already marked taken over (inheritClientSession). The store keeps
// them on disk through that: the new client holds them and stores them again
// when it resends them. A probe hook after the store looks at the disk at the
// moment of the drop.
func TestTakeoverKeepsStoredMessages(t *testing.T) {
	h, opts, err := New(t.TempDir(), false, nil)
	require.NoError(t, err)
	s := mqtt.New(&mqtt.Options{Logger: quietLog()})
	require.NoError(t, s.AddHook(new(auth.AllowHook), nil))
	require.NoError(t, s.AddHook(h, opts))
	probe := &takeoverProbe{store: h}
	require.NoError(t, s.AddHook(probe, nil))
	defer s.Close()

	away := s.NewClient(nil, "local", "archiver", false)
	away.Properties.Clean = false
	away.Properties.ProtocolVersion = 4
	s.Clients.Add(away)
	for _, id := range []uint16{1, 2} {
		pk := inflightPk(id)
		away.State.Inflight.Set(pk)
		h.OnQosPublish(away, pk, 0, 0)
	}

	conn, peer := net.Pipe()
	defer peer.Close()
	go func() { _ = s.EstablishConnection("local", conn) }()
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "archiver", Keepalive: 30}}
	var buf bytes.Buffer
	require.NoError(t, connect.ConnectEncode(&buf))
	require.NoError(t, peer.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = peer.Write(buf.Bytes())
	require.NoError(t, err)
	head := make([]byte, 4)
	_, err = io.ReadFull(peer, head)
	require.NoError(t, err)
	require.Equal(t, []byte{0x20, 2, 1, 0}, head, "CONNACK, session present")

	probe.mu.Lock()
	defer probe.mu.Unlock()
	require.Equal(t, 2, probe.drops, "mochi clears the old client's messages, taken over, with OnQosDropped")
	require.Equal(t, 2, probe.stored, "each still on disk as it is dropped from the old client")
}

// takeoverProbe counts, at each OnQosDropped for a client taken over, whether
// the store still holds the message.
type takeoverProbe struct {
	mqtt.HookBase
	store         *Hook
	mu            sync.Mutex
	drops, stored int
}

func (*takeoverProbe) ID() string           { return "takeover-probe" }
func (*takeoverProbe) Provides(b byte) bool { return b == mqtt.OnQosDropped }
func (p *takeoverProbe) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if !cl.IsTakenOver() {
		return
	}
	msgs, _ := p.store.StoredInflightMessages()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drops++
	for _, m := range msgs {
		if m.Client == cl.ID && m.PacketID == pk.PacketID {
			p.stored++
		}
	}
}
