package auth

import (
	"sync/atomic"
	"time"
)

// Admission bounds the slow password checks (bcrypt) that run at once, and how
// long a connection may wait for one.
//
// After a broker restart every client reconnects at once. Unbounded, every
// bcrypt check shares the CPU and they all finish together, late: with a
// thousand clients and 0.2 s a check on a Pi 4, none within a client's 10 s
// connect timeout; and the checks of clients that gave up go on running.
// Bounded, checks finish one slot at a time, and a connection that cannot get
// a slot within Wait is refused at once with "server busy" (the client retries
// later), before its check runs. A connection is also refused at once when the
// queue ahead of it cannot be served within Wait at the measured cost of a
// check, so a hopeless wait costs neither the client's time nor a goroutine
// parked for seconds.
type Admission struct {
	// Slots is how many slow checks may run at once.
	Slots int
	// Wait is how long a connection may wait for a slot. Keep it well below
	// the clients' connect timeout (the bridge's is 10 s), so that no check
	// runs for a client that already gave up.
	Wait time.Duration
}

// admission is the gate an Admission describes.
type admission struct {
	slots   chan struct{}
	wait    time.Duration
	waiting atomic.Int64
	// cost is a moving average of a check's duration in nanoseconds.
	cost atomic.Int64
}

func newAdmission(a Admission) *admission {
	return &admission{slots: make(chan struct{}, max(a.Slots, 1)), wait: a.Wait}
}

// enter waits for a slot and reports whether it got one; a true must be
// followed by leave.
func (g *admission) enter() bool {
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	ahead := g.waiting.Add(1)
	defer g.waiting.Add(-1)
	if time.Duration(ahead*g.cost.Load()/int64(cap(g.slots))) > g.wait {
		return false
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// leave frees the slot and records how long the check took.
func (g *admission) leave(took time.Duration) {
	<-g.slots
	for {
		old := g.cost.Load()
		next := int64(took)
		if old != 0 {
			next = old + (int64(took)-old)/8
		}
		if g.cost.CompareAndSwap(old, next) {
			return
		}
	}
}
