package server

import (
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/broker/store"
)

// The hold keeps a persistent session's messages in flight below its room,
// so that mochi's queue of writes to the client (--client-pending-writes)
// never fills with what the broker acknowledged. One thing fills it anyway:
// the retained messages mochi sends a subscriber on SUBSCRIBE, all at once
// and outside the hold. An archiver that subscribes again on every connection
// (as paho's users, Home Assistant's and Telegraf's do) gets one per node
// from a farm-wide filter: 1,000 at once from 1,000 bridges, more than the
// queue's room beyond the hold. A publish admitted just before is then fanned
// out into the full queue, and mochi drops it after its PUBACK
// (MessagesDropped, OnPublishDropped): make bench-reconnect lost 342 of
// 22,431 readings that way, the readings of the moment the archiver came
// back.
//
// OnPublishDropped therefore puts a QoS 1/2 message mochi dropped for a
// persistent session back in flight under a new packet identifier, stores it,
// and writes it to the client itself (WritePacket takes the client's lock, as
// mochi's own writes do, and waits behind the queue): it arrives later than
// it would have, or after the client's next reconnection if the write fails,
// but it arrives.

// OnPublishDropped runs in the goroutine that fanned pk out (a publisher's,
// or the subscriber's own for its retained messages), after mochi took the
// message back out of cl's messages in flight.
func (h *durableHook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if pk.FixedHeader.Qos == 0 || !store.Persistent(cl) || cl.Closed() {
		return
	}
	sub, ok := h.srv.Topics.Subscribers(pk.TopicName).Subscriptions[cl.ID]
	if !ok || sub.Qos == 0 {
		return
	}
	out := pk.Copy(false)
	out.FixedHeader.Qos = min(pk.FixedHeader.Qos, sub.Qos)
	if cl.Properties.ProtocolVersion < 5 || !sub.RetainAsPublished {
		out.FixedHeader.Retain = false
	}
	id, err := cl.NextPacketID()
	if err != nil {
		h.log.Warn("a message dropped for a persistent session could not be put back: no packet identifier free",
			"client", cl.ID, "topic", pk.TopicName)
		return
	}
	out.PacketID = uint16(id)
	if !cl.State.Inflight.Set(out) {
		return
	}
	atomic.AddInt64(&h.srv.Info.Inflight, 1)
	h.store.OnQosPublish(cl, out, out.Created, 0)
	h.redelivered.Add(1)
	// A failed write leaves the message in flight: mochi resends it when the
	// client comes back.
	_ = cl.WritePacket(out)
}
