package store

import (
	"sync"

	"github.com/cockroachdb/pebble"
)

// queue collects the store's writes, in the order they are made, into one
// pebble batch, which a committer commits with the other writes made while
// the previous commit ran: one pass through pebble's commit pipeline (its
// locks, a log record, the sequence numbers) for many writes. A reading costs
// five writes (journal entry, retained message, the archiver's copy, and the
// deletion of the first and last), and each commit of its own was a quarter
// of the broker's CPU on the farm's workload.
//
// Commits reach pebble's write-ahead log in the order of the writes: a
// commit takes commitMu before it takes the batch, and holds it until the
// batch is in the log. So what the package comment promises still holds: a
// journal entry's deletion is never on disk before the copies written ahead
// of it. A write is in the log once a commit after it has run: the committer
// runs one as soon as it can; an fsync (sync, through SyncGroup) commits
// whatever is queued first; a read (flush) too, so that it sees every write
// made before it.
type queue struct {
	commitMu sync.Mutex // held from taking the batch until it is committed
	mu       sync.Mutex
	batch    *pebble.Batch // the writes not yet committed; nil: none
	kick     chan struct{} // a write is waiting for the committer
	stop     chan struct{}
	stopped  chan struct{}
}

func newQueue() *queue {
	return &queue{kick: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
}

// add queues a write made by op on the batch.
func (q *queue) add(db *pebble.DB, op func(*pebble.Batch) error) error {
	q.mu.Lock()
	if q.batch == nil {
		q.batch = db.NewBatch()
	}
	err := op(q.batch)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
	return err
}

// commit commits what is queued with wo. With pebble.Sync it also makes every
// earlier commit durable, even when nothing is queued.
func (q *queue) commit(db *pebble.DB, wo *pebble.WriteOptions) error {
	q.commitMu.Lock()
	defer q.commitMu.Unlock()
	q.mu.Lock()
	b := q.batch
	q.batch = nil
	q.mu.Unlock()
	if b == nil {
		if wo.Sync {
			return db.LogData(nil, pebble.Sync)
		}
		return nil
	}
	defer b.Close()
	return b.Commit(wo)
}

// run is the committer: it calls commit (which commits what is queued,
// without an fsync) each time there is something, until stopped.
func (q *queue) run(commit func()) {
	defer close(q.stopped)
	for {
		select {
		case <-q.kick:
			commit()
		case <-q.stop:
			return
		}
	}
}

// halt ends the committer and waits for it; what is still queued is the
// caller's to commit.
func (q *queue) halt() {
	select {
	case <-q.stop:
	default:
		close(q.stop)
	}
	<-q.stopped
}
