package server

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// guardedListener is the MQTT listeners' socket, with what mochi's own TCP
// listener lacks (and ackConn, which holds a publisher's PUBACKs until the
// fsync that makes them true):
//
//   - A deadline for the CONNECT packet. mochi reads it with no deadline, so
//     a connection that never sends one (a port scanner, a half-open Wi-Fi
//     link, a flood) holds a socket and two goroutines forever. mochi
//     replaces the deadline with the keepalive's once CONNECT is read.
//   - A write timeout. mochi writes a packet while holding its client's
//     lock, which every publisher delivering to that client also takes: one
//     subscriber that stops reading (a stalled process, a dead Wi-Fi link
//     with a full socket buffer) would stall every publisher whose messages
//     reach it, for good. A write that cannot finish within the timeout
//     closes that connection (as EMQX's send_timeout does), which ends the
//     stall; a persistent session keeps its messages for the reconnect.
//   - A limit on connections that have not authenticated (see pending):
//     past it a new connection is closed at once.
//   - Accept errors that pass. mochi's Serve loop returns on the first Accept
//     error, so one EMFILE during a connection flood would stop the broker
//     from accepting anyone, for good. Here Accept waits and tries again, as
//     net/http does, and says so in the log once per episode.
type guardedListener struct {
	net.Listener
	connectTimeout time.Duration
	writeTimeout   time.Duration
	log            *slog.Logger
	pending        *pending // nil: no limit

	mu       sync.Mutex
	failing  bool // the last Accept failed with a passing error
	failures int
}

func newGuardedListener(l net.Listener, connectTimeout, writeTimeout time.Duration, pending *pending, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: l, connectTimeout: connectTimeout, writeTimeout: writeTimeout, pending: pending, log: log}
}

func (l *guardedListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.Listener.Accept()
		if err == nil {
			l.recovered()
			if l.pending != nil && !l.pending.take() {
				_ = conn.Close()
				continue
			}
			if l.connectTimeout > 0 {
				_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
			}
			if l.writeTimeout > 0 {
				conn = &timedConn{Conn: conn, timeout: l.writeTimeout, log: l.log}
			}
			conn = newAckConn(conn)
			if l.pending != nil {
				// Outermost: admittedHook finds it on mochi's client.
				conn = &pendingConn{Conn: conn, p: l.pending}
			}
			return conn, nil
		}
		if !passing(err) {
			return nil, err
		}
		l.failed(err)
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

// passing reports whether an Accept error goes away by itself: out of file
// descriptors or memory (the flood ends, or connections time out), or a
// connection reset before it was accepted.
func passing(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *guardedListener) failed(err error) {
	l.mu.Lock()
	first := !l.failing
	l.failing = true
	l.failures++
	l.mu.Unlock()
	if first {
		l.log.Error("cannot accept connections; retrying until it can", "addr", l.Addr().String(), "err", err)
	}
}

func (l *guardedListener) recovered() {
	l.mu.Lock()
	was, n := l.failing, l.failures
	l.failing, l.failures = false, 0
	l.mu.Unlock()
	if was {
		l.log.Info("accepting connections again", "addr", l.Addr().String(), "failed_accepts", n)
	}
}

// wrapped finds the wrapper T among conn and the connections it wraps
// (tls.Conn, pendingConn, ackConn, timedConn).
func wrapped[T net.Conn](conn net.Conn) (T, bool) {
	for {
		if c, ok := conn.(T); ok {
			return c, true
		}
		inner, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			var none T
			return none, false
		}
		conn = inner.NetConn()
	}
}

// timedConn bounds each write and closes the connection when one fails: a
// write cut short by its deadline may have sent part of a packet, so nothing
// more may follow it on that connection. mochi only logs a failed write and
// goes on; the close makes its read loop end the client.
type timedConn struct {
	net.Conn
	timeout time.Duration
	log     *slog.Logger
}

// NetConn returns the connection it wraps (see closeWrite).
func (c *timedConn) NetConn() net.Conn { return c.Conn }

func (c *timedConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := c.Conn.Write(p)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.log.Warn("closed a connection that read nothing for the write timeout (a stalled subscriber)",
				"remote", c.RemoteAddr().String(), "write_timeout", c.timeout)
		}
		_ = c.Conn.Close()
	}
	return n, err
}
