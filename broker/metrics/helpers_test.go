package metrics

import (
	"fmt"

	"github.com/mochi-mqtt/server/v2/packets"
)

func packet(topic string, seq uint64) packets.Packet {
	return packetRaw(topic, fmt.Sprintf(`{"site":"rpi4","node":"x","seq":%d,"ts":"2026-11-24T10:15:04.123Z"}`, seq))
}

func packetRaw(topic, payload string) packets.Packet {
	return packets.Packet{TopicName: topic, Payload: []byte(payload)}
}
