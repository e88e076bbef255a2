package server

import (
	"crypto/tls"
	"io"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// lingerHook makes sure a client the broker throws out mid-stream reads the
// DISCONNECT that says why. mochi writes the DISCONNECT and closes the socket
// at once. A client that broke a limit (Receive Maximum: 0x93, a refused
// publish: 0x97, 0x87, a protocol error) has usually sent more packets that
// the broker has not read, and Linux answers a close with unread input by a
// reset: it drops what it still had to send, the DISCONNECT among it, and the
// client's kernel drops what it had received but the client had not read
// yet. The client sees "connection reset by peer", not the reason
// (TestDisconnectReasonReachesAGreedyClient).
//
// So, before mochi's close, the hook closes the connection for writing (a FIN
// after the DISCONNECT) and reads and discards what the client still sends,
// until the client closes its side or linger passes (Apache's "lingering
// close"). A client that reads nothing still loses the DISCONNECT after
// linger: nothing is owed to it.
//
// It runs on the goroutine that wrote the DISCONNECT, which for every reason
// but two is the client's own read loop, about to end. The two others are
// written from elsewhere and not lingered on: 0x8E, session taken over, on the
// new connection's goroutine, whose CONNECT must not wait for the old client;
// 0x8B, server shutting down, for every client in turn. Those clients are
// idle as a rule, so mochi's close is a FIN there already.
type lingerHook struct {
	mqtt.HookBase
	linger time.Duration
}

func (*lingerHook) ID() string { return "sf-linger" }

func (*lingerHook) Provides(b byte) bool { return b == mqtt.OnPacketSent }

func (h *lingerHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Disconnect || h.linger <= 0 || cl.Net.Conn == nil {
		return
	}
	switch pk.ReasonCode {
	case packets.ErrSessionTakenOver.Code, packets.ErrServerShuttingDown.Code:
		return
	}
	conn := cl.Net.Conn
	if err := closeWrite(conn); err != nil {
		return
	}
	if err := conn.SetReadDeadline(time.Now().Add(h.linger)); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, conn)
}

// closeWrite sends a FIN after what was written, through our wrappers and
// TLS (whose close_notify goes first).
func closeWrite(conn net.Conn) error {
	for {
		switch c := conn.(type) {
		case *net.TCPConn:
			return c.CloseWrite()
		case *ackConn:
			c.drain() // the FIN after what it holds
			conn = c.NetConn()
		case *tls.Conn:
			if err := c.CloseWrite(); err != nil {
				return err
			}
			conn = c.NetConn()
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return net.ErrClosed
		}
	}
}
