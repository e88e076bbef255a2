package server

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// keepaliveHook caps the keepalive of MQTT 5 clients. A client that asks for
// more than max seconds, or for none (0), is given max in the CONNACK's
// Server Keep Alive property, which it must then follow [MQTT-3.1.2-21]; the
// broker drops it after 1.5 times that without a packet. MQTT 3.1.1 has no
// way to tell a client, so its keepalive is left as asked: cutting it short
// would only disconnect a client that pings as agreed.
type keepaliveHook struct {
	mqtt.HookBase
	max uint16
}

func (*keepaliveHook) ID() string { return "sf-keepalive" }

func (*keepaliveHook) Provides(b byte) bool {
	return b == mqtt.OnConnect
}

// OnConnect runs before mochi sets the connection's read deadline from
// cl.State.Keepalive and before it builds the CONNACK.
func (h *keepaliveHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if cl.Properties.ProtocolVersion < 5 {
		return nil
	}
	if ka := pk.Connect.Keepalive; ka == 0 || ka > h.max {
		cl.State.Keepalive = h.max
		cl.State.ServerKeepalive = true
	}
	return nil
}
