package server

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// packetIDHook keeps the two directions' packet identifiers apart, as MQTT
// has them (3.1.1 section 2.3.1, 5.0 section 2.2.1: a client and a server
// each choose theirs). mochi keeps both in one map per session, so a client
// packet that reuses the number of a message the broker has in flight to it
// is taken for a duplicate: a SUBSCRIBE or UNSUBSCRIBE is refused with
// "packet identifier in use" (an archiver resuming its persistent session
// after a broker restart: mosquitto_sub -c numbers its SUBSCRIBE 1, the
// broker resends the queued messages from 1, and mosquitto_sub exits with
// "All subscription requests were denied"), and a QoS 1 PUBLISH deletes the
// message in flight, which is then never sent again.
//
// Before mochi looks at such a packet, the hook moves the message in flight
// to a free number. The client may already hold it under the old number: its
// PUBACK for that then matches nothing, and the message is sent again under
// the new one at the next reconnection, a duplicate that QoS 1 allows.
type packetIDHook struct {
	mqtt.HookBase
	store interface {
		OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int)
		OnQosComplete(cl *mqtt.Client, pk packets.Packet)
	}
}

func (*packetIDHook) ID() string { return "sf-packet-ids" }

func (*packetIDHook) Provides(b byte) bool { return b == mqtt.OnPacketRead }

func (h *packetIDHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Subscribe, packets.Unsubscribe:
	case packets.Publish:
		if pk.FixedHeader.Qos == 0 {
			return pk, nil
		}
	default:
		return pk, nil
	}
	held, ok := cl.State.Inflight.Get(pk.PacketID)
	// Only a PUBLISH is the broker's own: the other kinds in the map
	// (PUBREC, PUBREL) belong to QoS 2 exchanges the client numbered.
	if !ok || held.FixedHeader.Type != packets.Publish {
		return pk, nil
	}
	id, err := cl.NextPacketID()
	if err != nil {
		return pk, nil // every number in use: mochi's own handling applies
	}
	moved := held
	moved.PacketID = uint16(id)
	cl.State.Inflight.Set(moved)
	cl.State.Inflight.Delete(held.PacketID)
	h.store.OnQosPublish(cl, moved, moved.Created, 0)
	h.store.OnQosComplete(cl, held)
	return pk, nil
}
