package server

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/broker/store"
)

// mochi fans a message out into a client's queue of writes
// (--client-pending-writes) and drops it when the queue is full, after the
// PUBACK to its publisher. Two kinds of drop lose what must not be lost:
//
//   - A QoS 1/2 message for a persistent session: the hold keeps a
//     persistent session's messages in flight below its room, so that the
//     queue never fills with what the broker acknowledged, but the retained
//     messages mochi sends a subscriber on SUBSCRIBE, all at once and
//     outside the hold, fill it anyway. An archiver that subscribes again on
//     every connection (as paho's users, Home Assistant's and Telegraf's do)
//     gets one per node from a farm-wide filter: 1,000 at once from 1,000
//     bridges. A publish admitted just before is then fanned out into the
//     full queue and dropped: make bench-reconnect lost 342 of 22,431
//     readings that way, the readings of the moment the archiver came back.
//   - The retained messages themselves, for any subscriber: a new
//     `sensorfarm/#` subscriber (mosquitto_sub, Grafana) is owed about 35 per
//     node, and Home Assistant's `homeassistant/#` about 10 per node: from a
//     farm of a few hundred nodes, more than the queue holds. mochi sends
//     them from the subscriber's own goroutine, so waiting for the
//     subscriber's socket instead of dropping holds back nobody else.
//
// OnPublishDropped therefore sends both anyway: a QoS 1/2 message goes back
// in flight under a new packet identifier (and into the store, for a
// persistent session), and the hook writes the message to the client itself
// (WritePacket takes the client's lock, as mochi's own writes do, and waits
// behind the queue, at most --write-timeout): it arrives later than it would
// have, or, in flight, after the client's next reconnection if the write
// fails, but it arrives. A live publish to a clean session that does not read
// fast enough is still dropped, as MQTT allows, so that one slow consumer
// cannot hold the farm back.

// retainedBurst reports whether a message dropped for cl is one of the
// retained messages owed for a SUBSCRIBE: retained, and stored before cl's
// last SUBACK. Created has whole seconds, so a live retained publish in the
// same second as the SUBACK passes too and is written from its publisher's
// goroutine: a bounded wait, as for any write.
func (h *durableHook) retainedBurst(cl *mqtt.Client, pk packets.Packet) bool {
	at, ok := h.subacked.Load(cl)
	return ok && pk.FixedHeader.Retain && pk.Created <= at.(int64)
}

// OnPublishDropped runs in the goroutine that fanned pk out (a publisher's,
// or the subscriber's own for its retained messages), just before mochi
// takes the dropped copy back out of cl's messages in flight: the copy sent
// here goes in under a packet identifier of its own.
func (h *durableHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.Closed() {
		return
	}
	sub, ok := h.srv.Topics.Subscribers(pk.TopicName).Subscriptions[cl.ID]
	if !ok {
		return
	}
	out := pk.Copy(false)
	out.FixedHeader.Qos = min(pk.FixedHeader.Qos, sub.Qos)
	burst := h.retainedBurst(cl, pk)
	switch {
	case burst:
		out.FixedHeader.Retain = true // sent for the subscription [MQTT-3.3.1-8]
	case out.FixedHeader.Qos > 0 && store.Persistent(cl):
		if cl.Properties.ProtocolVersion < 5 || !sub.RetainAsPublished {
			out.FixedHeader.Retain = false
		}
	default:
		return
	}
	if out.FixedHeader.Qos > 0 {
		id, err := cl.NextPacketID()
		if err != nil {
			h.log.Warn("a dropped message could not be put back in flight: no packet identifier free",
				"client", cl.ID, "topic", pk.TopicName)
			return
		}
		out.PacketID = uint16(id)
		if !cl.State.Inflight.Set(out) {
			return
		}
		atomic.AddInt64(&h.srv.Info.Inflight, 1)
		h.store.OnQosPublish(cl, out, out.Created, 0)
	}
	h.redelivered.Add(1)
	// A failed write leaves a QoS 1/2 message in flight: mochi resends it
	// when a persistent session's client comes back.
	_ = cl.WritePacket(out)
}
