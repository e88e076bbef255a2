package store

import (
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/stretchr/testify/require"
)

func persistentClient(id string) *mqtt.Client {
	cl := mqtt.New(nil).NewClient(nil, "test", id, false)
	cl.Properties.ProtocolVersion = 4
	cl.Properties.Clean = false
	return cl
}

func inflightPk(id uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName: "sensorfarm/s/n/env", Payload: []byte(`{"seq":1}`), PacketID: id, Created: time.Now().Unix()}
}

// walBytes is how much has been written to the database's log, queued
// writes included.
func walBytes(h *Hook) uint64 {
	h.guard(h.flush)
	return h.db.Metrics().WAL.BytesIn
}

func TestNoAliasForStoredMessages(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	v5 := func(expiry uint32) *mqtt.Client {
		cl := persistentClient("c")
		cl.Properties.ProtocolVersion = 5
		cl.Properties.Props.SessionExpiryInterval = expiry
		cl.Properties.Props.TopicAliasMaximum = 10
		return cl
	}
	p := v5(3600)
	require.NoError(t, h.OnConnect(p, packets.Packet{}))
	require.Zero(t, p.Properties.Props.TopicAliasMaximum, "a persistent session is sent no aliases: mochi would store its messages without a topic")
	c := v5(0)
	require.NoError(t, h.OnConnect(c, packets.Packet{}))
	require.EqualValues(t, 10, c.Properties.Props.TopicAliasMaximum, "a clean session keeps them")
}

func TestPublishDroppedLeavesNoGhost(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	cl := persistentClient("archiver")
	other := persistentClient("archiver:2") // its keys share the prefix
	for _, id := range []uint16{1, 2} {
		h.OnQosPublish(cl, inflightPk(id), 0, 0)
	}
	h.OnQosPublish(other, inflightPk(2), 0, 0)
	cl.State.Inflight.Set(inflightPk(1)) // mochi took 2 back after its queue was full
	h.OnPublishDropped(cl, inflightPk(0))

	msgs, err := h.StoredInflightMessages()
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	for _, m := range msgs {
		require.False(t, m.Client == "archiver" && m.PacketID == 2, "the dropped message is no longer on disk")
	}
}

func TestExpiredSessionLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	h := open(t, dir)
	cl, other := persistentClient("a"), persistentClient("a:b")
	for _, c := range []*mqtt.Client{cl, other} {
		h.OnSessionEstablished(c, packets.Packet{})
		h.OnSubscribed(c, packets.Packet{Filters: packets.Subscriptions{{Filter: "sensorfarm/#", Qos: 1}}}, []byte{1})
		h.OnQosPublish(c, inflightPk(1), 0, 0)
	}
	h.OnClientExpired(cl)
	require.NoError(t, h.Stop())

	h = open(t, dir)
	defer h.Stop()
	cls, err := h.StoredClients()
	require.NoError(t, err)
	subs, err := h.StoredSubscriptions()
	require.NoError(t, err)
	msgs, err := h.StoredInflightMessages()
	require.NoError(t, err)
	require.Len(t, cls, 1)
	require.Len(t, subs, 1, "the expired session's subscriptions are gone; the other's stay")
	require.Len(t, msgs, 1)
	require.Equal(t, "a:b", subs[0].Client)
	require.Equal(t, "a:b", msgs[0].Client)
}

func TestRefusedSubscriptionNotStored(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	cl := persistentClient("reader")
	h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "a/#", Qos: 1}, {Filter: "$SYS/#", Qos: 1}}},
		[]byte{1, packets.ErrNotAuthorized.Code})
	subs, err := h.StoredSubscriptions()
	require.NoError(t, err)
	require.Len(t, subs, 1)
	require.Equal(t, "a/#", subs[0].Filter)
}

// TestCleanSessionWritesNothing: a clean session's whole life (a bridge's, the
// PUBACK bookkeeping of its QoS 1 publishes included) writes nothing, and a
// persistent publisher's PUBACK is not stored either (its completion deletes
// a key that holds nothing: TestAcknowledgedLeavesTheStore in broker/server).
func TestCleanSessionWritesNothing(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	cl := persistentClient("grafana")
	cl.Properties.Clean = true
	before := walBytes(h)
	h.OnSessionEstablished(cl, packets.Packet{})
	h.OnSubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "a/#", Qos: 1}}}, []byte{1})
	h.OnQosPublish(cl, inflightPk(1), 0, 0)
	h.OnQosComplete(cl, inflightPk(1))
	h.OnUnsubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: "a/#"}}})
	h.OnDisconnect(cl, nil, true)
	bridge := persistentClient("bridge")
	bridge.Properties.Clean = true
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1}
	h.OnQosPublish(bridge, ack, 0, 0)
	h.OnQosComplete(bridge, ack)
	h.OnQosPublish(persistentClient("node-red"), ack, 0, 0)
	require.Equal(t, before, walBytes(h))
}

func TestSysInfoOncePerInterval(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	h.OnSysInfoTick(&system.Info{Uptime: 1})
	first := walBytes(h)
	require.Greater(t, first, uint64(0))
	for range 5 {
		h.OnSysInfoTick(&system.Info{Uptime: 2})
	}
	require.Equal(t, first, walBytes(h), "no second write within SysInterval")
}

func TestJournalReplay(t *testing.T) {
	dir := t.TempDir()
	h := open(t, dir)
	cl := persistentClient("bridge")
	k1, _, err := h.Begin(cl, inflightPk(1))
	require.NoError(t, err)
	_, _, err = h.Begin(cl, inflightPk(2))
	require.NoError(t, err)
	h.Done(k1)
	require.NoError(t, h.Stop()) // as a crash would leave it: the second was never fanned out

	h = open(t, dir)
	var got []uint16
	n, err := h.Replay(func(m storage.Message) error { got = append(got, m.PacketID); return nil })
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, []uint16{2}, got)
	k3, _, err := h.Begin(cl, inflightPk(3))
	require.NoError(t, err)
	require.Greater(t, k3, k1, "numbering goes on after a restart")
	require.NoError(t, h.Stop())

	h = open(t, dir)
	defer h.Stop()
	n, err = h.Replay(func(storage.Message) error { return nil })
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the entry added since")
}

// TestPublishDroppedCost: a burst of 1,000 drops for an archiver with 6,000
// messages in flight. Sweeping every stored message at each drop, decoding
// each, took 72 s for this burst (92 ms a drop with readings' payloads); now a
// client is swept at most every ghostSweepEvery, from the keys alone.
func TestPublishDroppedCost(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	cl := persistentClient("archiver")
	for id := uint16(1); id <= 6000; id++ {
		h.OnQosPublish(cl, inflightPk(id), 0, 0)
		cl.State.Inflight.Set(inflightPk(id))
	}
	start := time.Now()
	for range 1000 {
		h.OnPublishDropped(cl, inflightPk(1))
	}
	took := time.Since(start)
	t.Logf("1,000 drops with 6,000 messages in flight: %s", took)
	require.Less(t, took, 5*time.Second)
}
