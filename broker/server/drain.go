package server

import (
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// drainHook refuses publishes once a graceful stop has begun. A refused QoS 1
// publish gets no PUBACK, so its publisher keeps it (a bridge in its spool)
// and sends it again to the broker it reconnects to: nothing taken in at the
// last moment can be lost between the store's last write and the exit.
type drainHook struct {
	mqtt.HookBase
	draining atomic.Bool
}

func (*drainHook) ID() string { return "sf-drain" }

func (*drainHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *drainHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if h.draining.Load() && !cl.Net.Inline {
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// drainPoll is how often the drain looks at what subscribers still hold.
const drainPoll = 20 * time.Millisecond

// drainClients is the first half of a graceful stop: no new connection, no
// new publish, and up to DrainTimeout for every connected client to
// acknowledge the QoS 1 and 2 messages sent or queued to it, which a clean
// session would otherwise lose with its connection. Then everyone is
// disconnected: an MQTT 5 client with a DISCONNECT "server shutting down",
// an MQTT 3.1.1 client by closing its connection.
func (s *Server) drainClients() {
	s.drain.draining.Store(true)
	noClients := func(string) {}
	s.tcp.Close(noClients)
	if s.tls != nil {
		s.tls.Close(noClients)
	}
	start := time.Now()
	deadline := start.Add(s.cfg.DrainTimeout)
	held, waiting := s.unacknowledged()
	for held > 0 && time.Now().Before(deadline) {
		time.Sleep(drainPoll)
		held, waiting = s.unacknowledged()
	}
	if held > 0 {
		s.log.Warn("drain timed out: messages still unacknowledged; persistent sessions keep them in the store",
			"messages", held, "clients", waiting, "drain_timeout", s.cfg.DrainTimeout)
	} else {
		s.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
	}
	for _, cl := range s.mqtt.Clients.GetAll() {
		switch {
		case cl.Net.Inline || cl.Closed():
		case cl.Properties.ProtocolVersion >= 5:
			_ = s.mqtt.DisconnectClient(cl, packets.ErrServerShuttingDown)
		default:
			// MQTT 3.1.1 has no DISCONNECT from the server (it goes client
			// to server only), and mochi would send one: mosquitto_sub
			// reads it as a protocol error and exits instead of
			// reconnecting. Closing the connection is the 3.1.1 way.
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
}

// unacknowledged counts the QoS 1/2 messages connected clients hold: mochi
// puts an outgoing message in the session's inflight store before it queues
// it for writing, and takes it out at the client's PUBACK (PUBCOMP).
func (s *Server) unacknowledged() (messages, clients int) {
	for _, cl := range s.mqtt.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		if n := cl.State.Inflight.Len(); n > 0 {
			messages += n
			clients++
		}
	}
	return messages, clients
}
