package store

import "sync"

// A Ticket stands for the fsync that makes a journal entry durable: Begin
// writes the entry without one and returns the ticket of the first fsync
// that starts after the write. 0 waits for nothing (--store-sync=false, or
// stock mode).
type Ticket uint64

// SyncGroup runs the write-ahead log's fsyncs one at a time, each for every
// write made before it started: the entries of all the publishes received
// while one fsync runs are made durable by the next, however many
// connections they came from and however many each sent. Pebble groups the
// fsyncs of concurrent synced writes too, but a synced write blocks its
// caller until its fsync ends, and mochi reads a client's next packet only
// after the previous one is handled: one fsync per publish per connection,
// so a bridge replaying its backlog with 16 readings unacknowledged had them
// made durable one at a time. With tickets the broker goes on reading and
// holds back only the acknowledgements (ackConn, in the server).
type SyncGroup struct {
	fsync func() error // makes every write made before the call durable

	mu        sync.Mutex
	done      *sync.Cond // signalled when an fsync ends
	started   uint64     // fsyncs started
	completed uint64     // the last fsync that ended
	running   bool
	err       error // the first fsync that failed: nothing after it is trusted
}

// NewSyncGroup returns a group whose fsyncs call fsync.
func NewSyncGroup(fsync func() error) *SyncGroup {
	g := &SyncGroup{fsync: fsync}
	g.done = sync.NewCond(&g.mu)
	return g
}

// Ticket is for a write that has just returned: the next fsync to start
// covers it (one running now may have started before it).
func (g *SyncGroup) Ticket() Ticket {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Ticket(g.started + 1)
}

// Synced reports whether t's fsync has ended, without waiting.
func (g *SyncGroup) Synced(t Ticket) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return uint64(t) <= g.completed && g.err == nil
}

// WaitSynced returns once t's fsync has ended. The first waiter that finds no fsync
// running runs the next one itself; the others wait for it. An fsync that
// failed fails every wait after it: what it was to make durable may not be,
// and the acknowledgements waiting for it must not be sent.
func (g *SyncGroup) WaitSynced(t Ticket) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.err == nil && g.completed < uint64(t) {
		if g.running {
			g.done.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.fsync()
		g.mu.Lock()
		g.running = false
		g.completed = n
		if err != nil && g.err == nil {
			g.err = err
		}
		g.done.Broadcast()
	}
	return g.err
}
