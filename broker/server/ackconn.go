package server

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sensorfarm/sensorfarm/broker/store"
)

// ackConn holds back what the broker writes to a client once it has received
// a publish whose journal entry is not yet on disk, until it is: the PUBACK
// (or PUBREC) that promises the reading survives a crash goes out only after
// the fsync that makes it true, and everything written after it waits too,
// so that the client's stream stays in order.
//
// Waiting for that fsync inside mochi's OnPublish instead would stop the
// publisher's connection from being read meanwhile: mochi reads a client's
// next packet only once the previous one is handled. A bridge replaying its
// backlog with 16 readings unacknowledged then has them made durable one
// fsync at a time. Holding the bytes lets mochi read on, and all that the
// publishers sent during one fsync shares the next (store.SyncGroup); the
// PUBACKs it releases go out in one write.
type ackConn struct {
	net.Conn
	mu       sync.Mutex
	synced   syncWaiter
	held     []heldWrite // in order: fsyncs to wait for, bytes to write after them
	heldLen  int         // bytes in held
	flushing bool        // a flush goroutine owns the writes until held is empty
	idle     chan struct{}
	space    *sync.Cond // signalled as held bytes leave
	err      error      // a failed write or fsync: nothing more is written
}

// syncWaiter is the store's side: is a ticket's fsync done, and wait for it.
type syncWaiter interface {
	Synced(store.Ticket) bool
	WaitSynced(store.Ticket) error
}

// heldWrite is a barrier (ticket, nothing after it leaves before its fsync)
// or bytes.
type heldWrite struct {
	ticket store.Ticket
	b      []byte
}

// maxHeldBytes bounds what one connection holds: past it a write waits for
// the fsync, as it did before tickets. A publisher's PUBACKs are 4 bytes
// each; this is for a client that also subscribes to much.
const maxHeldBytes = 256 << 10

// closeFlushTimeout bounds how long a close waits for held bytes to leave:
// the PUBACKs of readings already on disk spare their publisher a duplicate
// after it reconnects, and a DISCONNECT says why.
const closeFlushTimeout = 2 * time.Second

func newAckConn(c net.Conn) *ackConn {
	a := &ackConn{Conn: c}
	a.space = sync.NewCond(&a.mu)
	return a
}

// NetConn returns the connection it wraps (see closeWrite).
func (c *ackConn) NetConn() net.Conn { return c.Conn }

// hold makes what is written from now on wait for t's fsync.
func (c *ackConn) hold(t store.Ticket, s syncWaiter) {
	if t == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = s
	c.held = append(c.held, heldWrite{ticket: t})
	c.startFlush()
}

// startFlush, with c.mu held.
func (c *ackConn) startFlush() {
	if c.flushing {
		return
	}
	c.flushing = true
	c.idle = make(chan struct{})
	go c.flush()
}

func (c *ackConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && c.heldLen >= maxHeldBytes {
		c.space.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if !c.flushing {
		n, err := c.Conn.Write(p)
		if err != nil {
			c.err = err
		}
		return n, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.held = append(c.held, heldWrite{b: append([]byte(nil), p...)})
	c.heldLen += len(p)
	return len(p), nil
}

// flush writes what is held as its fsyncs end: each time, every byte up to
// the first barrier whose fsync is still to come, in one write.
func (c *ackConn) flush() {
	var out []byte
	for {
		c.mu.Lock()
		c.heldLen -= len(out)
		c.space.Broadcast()
		out = out[:0]
		if c.err != nil {
			// What a dead connection held is dropped: its publisher
			// sends it again.
			clear(c.held)
			c.held, c.heldLen = nil, 0
		}
		n := 0
		for ; n < len(c.held); n++ {
			h := c.held[n]
			if h.b == nil && !c.synced.Synced(h.ticket) {
				break
			}
			out = append(out, h.b...)
		}
		if n == 0 && len(c.held) == 0 {
			c.flushing = false
			close(c.idle)
			c.mu.Unlock()
			return
		}
		clear(c.held[:n])
		c.held = c.held[n:]
		var wait store.Ticket
		if len(out) == 0 && len(c.held) > 0 {
			wait = c.held[0].ticket // its fsync is still to come
		}
		c.mu.Unlock()

		switch {
		case wait != 0:
			if err := c.synced.WaitSynced(wait); err != nil {
				c.fail(fmt.Errorf("the store's fsync failed; acknowledgements withheld: %w", err))
			}
		case len(out) > 0:
			if _, err := c.Conn.Write(out); err != nil {
				c.fail(err)
			}
		}
	}
}

// fail ends the connection: nothing more may be written to it.
func (c *ackConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.space.Broadcast()
	c.mu.Unlock()
	_ = c.Conn.Close()
}

// drain waits, up to closeFlushTimeout, until nothing is held.
func (c *ackConn) drain() {
	c.mu.Lock()
	idle, flushing := c.idle, c.flushing
	c.mu.Unlock()
	if !flushing {
		return
	}
	t := time.NewTimer(closeFlushTimeout)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

func (c *ackConn) Close() error {
	c.drain()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.space.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}
