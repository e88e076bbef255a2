package server

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// pending counts the connections that are open but not yet authenticated,
// across every listener. mochi's MaximumClients counts only clients that
// logged in, so without this anyone could open any number of sockets (each
// with two goroutines and its buffers) and start as many password checks.
type pending struct {
	max  int64
	n    atomic.Int64
	log  *slog.Logger
	mu   sync.Mutex
	last time.Time // when a refusal was last logged
}

// take reports whether one more pending connection fits, and counts it if so.
func (p *pending) take() bool {
	if p.n.Add(1) > p.max {
		p.n.Add(-1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if now := time.Now(); now.Sub(p.last) >= time.Minute {
			p.last = now
			p.log.Warn("closed a new connection: too many connections have not authenticated yet; logged once a minute", "max_pending", p.max)
		}
		return false
	}
	return true
}

// pendingConn is a connection counted in pending until it authenticates or
// closes, whichever comes first.
type pendingConn struct {
	net.Conn
	p    *pending
	done atomic.Bool
}

func (c *pendingConn) release() {
	if c.done.CompareAndSwap(false, true) {
		c.p.n.Add(-1)
	}
}

// NetConn returns the connection it wraps (see closeWrite).
func (c *pendingConn) NetConn() net.Conn { return c.Conn }

func (c *pendingConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// admittedHook releases a connection from pending once it has authenticated.
type admittedHook struct{ mqtt.HookBase }

func (*admittedHook) ID() string { return "sf-admitted" }

func (*admittedHook) Provides(b byte) bool { return b == mqtt.OnSessionEstablish }

// OnSessionEstablish runs right after OnConnectAuthenticate allowed the client.
func (*admittedHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if pc, ok := wrapped[*pendingConn](cl.Net.Conn); ok {
		pc.release()
	}
}

// refuseBusy answers a connection that found no password check slot: CONNACK
// "server busy" (MQTT 5) or "server unavailable" (3.1.1, which has no busy),
// as mochi answers past MaximumClients, then closes it, so that mochi's own
// "bad user name or password" that follows finds it closed and is never sent.
func refuseBusy(m *mqtt.Server) func(*mqtt.Client) {
	return func(cl *mqtt.Client) {
		code := packets.ErrServerBusy
		if cl.Properties.ProtocolVersion < 5 {
			code = packets.ErrServerUnavailable
		}
		_ = m.SendConnack(cl, code, false, nil)
		cl.Stop(code)
	}
}
