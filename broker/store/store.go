// Package store keeps the broker's state on disk (retained messages, client
// sessions and subscriptions, in-flight QoS messages, $SYS counters) so that a
// restart of the broker, or of its pod, loses none of it.
//
// It is a mochi storage hook on pebble, with the keys and encoding of mochi's
// own pebble hook (hooks/storage/pebble, v2.7.9), so that a data directory
// written by either reads back with the other (TestMochiLayout). Why pebble
// among mochi's storage hooks:
//   - bolt is deprecated in mochi;
//   - badger's default memory use (memtables, block and index caches of
//     hundreds of MiB) is too large for a Raspberry Pi 4 that also runs other
//     things;
//   - redis needs a second server to run, watch and back up;
//   - pebble is pure Go (it cross-compiles and links statically for arm64 with
//     CGO_ENABLED=0), and it is crash-safe: every write goes to a write-ahead
//     log first, which is replayed when the database is opened again.
//
// Why our own hook rather than mochi's: mochi's writes every event with one
// write option (all fsynced, or none), reports a failed write only as a log
// line, and has the quirks listed at the events (session.go). Ours decides
// per write what must be on disk before the broker goes on:
//
// Durability (--store-sync, the default): a QoS 1/2 publish is written to the
// journal (journal.go) before its PUBACK, and its PUBACK leaves only after an
// fsync that covers it (SyncGroup; the server holds the PUBACK back, not the
// publisher's connection); what follows from it (the retained message, the
// copies queued for persistent sessions, their acknowledgements) is written
// without one, and the journal entry is deleted after the fan-out, also
// without one. Pebble's write-ahead log is replayed in order up to the first
// missing record, so after a crash either the entry's deletion and
// everything before it are on disk, or the entry is, and the broker publishes
// it again at start (a duplicate at worst, which QoS 1 allows), or neither
// is, and then its PUBACK was never sent and the publisher sends it again.
// One fsync per batch of acknowledged publishes, from every publisher, instead
// of two or more per delivery. Session state a client relies on (its session,
// subscriptions) is written with an fsync. Writes are committed to pebble in
// groups, in order (queue.go). With --store-sync=false nothing is fsynced:
// pebble keeps its newest writes in a 32 KiB buffer inside the process and
// hands them to the OS when it fills; a graceful stop loses nothing, a SIGKILL
// what is in that buffer (and the writes queued for the next commit), a power
// cut also what the kernel had not written back.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble"
	mqtt "github.com/mochi-mqtt/server/v2"
)

// DirName is the pebble database's directory inside the data directory.
const DirName = "mqtt.pebble"

// Memory bounds, chosen for a Raspberry Pi 4 (1 to 8 GiB, shared with other
// services). The broker's data is small: one retained message per topic
// (a few hundred bytes each) plus sessions, so these are generous.
const (
	// memTableSize is the in-memory write buffer; it is flushed to a table
	// file when full. Two may exist at once while one is being flushed.
	memTableSize = 4 << 20
	// pebble's block cache is left at its default, 8 MiB.
)

// Options is the store's configuration, passed to mqtt.Server.AddHook.
type Options struct {
	// Path is the database directory.
	Path string
	// Sync fsyncs what must survive a crash (see the package comment).
	Sync bool
	// Stock writes every event with Sync's write option, as mochi's own
	// pebble hook does, and keeps no journal: the behaviour before this
	// store, for the control runs of the tests and benchmarks.
	Stock bool
	// MinFree is the free space, in bytes, the volume must keep: below it
	// the store refuses journal entries (space.go), and so the publishes
	// they are for, rather than let pebble fail on a full disk.
	MinFree uint64
	// Pebble are the database's options.
	Pebble *pebble.Options
}

// Hook is the store. mochi's Server.Close stops the hooks while its event loop
// may be in the middle of a $SYS tick or a retained-message expiry pass, and a
// connection accepted just before the listener closed may still be setting
// up; pebble panics on a write to a closed database, so every call takes a
// read lock and is dropped once Stop has run. Stop is idempotent and returns
// the same result every time, so the owner can call it again after mochi's
// Close to learn whether the store was closed cleanly.
type Hook struct {
	mqtt.HookBase
	errs ErrorCounter

	mu      sync.RWMutex
	db      *pebble.DB
	opts    Options
	open    bool
	stopped bool
	stopErr error
	path    string

	// durable is the write option of what must survive a crash: Sync, or
	// NoSync with --store-sync=false.
	durable *pebble.WriteOptions
	// follow is the write option of what the journal covers: NoSync, or
	// durable in stock mode.
	follow *pebble.WriteOptions

	// persisted are the ids of the clients with a session on disk, so that
	// a clean session, which is never written, costs no delete either.
	persisted sync.Map
	// journalSeq numbers the journal's entries; group makes them durable.
	journalSeq atomic.Uint64
	group      *SyncGroup
	// q holds the writes until they are committed (queue.go); nil in stock
	// mode, which writes each at once as mochi's hook does.
	q *queue
	// lastSys is when $SYS counters were last written (unix seconds).
	lastSys atomic.Int64
	// swept is when each client's stored messages were last swept for
	// ghosts (unix nanoseconds; OnPublishDropped).
	swept sync.Map
	space space
}

var _ mqtt.Hook = (*Hook)(nil)

// ErrorCounter is told of every error the store meets, by operation: one of
// the metrics.StoreOp values. The broker's metrics count them.
type ErrorCounter interface{ StoreError(op string) }

// New prepares the store under dataDir: it creates dataDir and the database
// directory inside it (mode 0700) if they are missing, checks that dataDir is
// writable, and returns the hook with the options to pass to
// mqtt.Server.AddHook, which opens the database. sync selects fsyncs on what
// must survive a crash. errs, if not nil, is told of every error.
func New(dataDir string, sync bool, errs ErrorCounter) (*Hook, *Options, error) {
	path, err := prepare(dataDir)
	if err != nil {
		return nil, nil, err
	}
	h := &Hook{path: path, errs: errs}
	opts := &Options{
		Path:    path,
		Sync:    sync,
		MinFree: DefaultMinFree,
		Pebble: &pebble.Options{
			MemTableSize:  memTableSize,
			Logger:        pebbleLogger{h},
			EventListener: events(pebbleLogger{h}),
		},
	}
	return h, opts, nil
}

// ID is the hook's name in mochi's logs.
func (h *Hook) ID() string { return "sf-store" }

// Provides lists the events the store handles.
func (h *Hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnPublishDropped, mqtt.OnSysInfoTick, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages,
		mqtt.StoredSubscriptions, mqtt.StoredSysInfo:
		return true
	}
	return false
}

// Ready is nil while the database is open and its volume has room, for the
// broker's readiness check.
func (h *Hook) Ready() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.open || h.stopped {
		return errors.New("the store is not open")
	}
	return h.space.err()
}

// Path is the database directory.
func (h *Hook) Path() string { return h.path }

// prepare makes sure dataDir exists and is writable and returns the database
// directory inside it.
func prepare(dataDir string) (string, error) {
	if dataDir == "" {
		return "", errors.New("store: no data directory given")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data directory %q: cannot create it: %w", dataDir, err)
	}
	f, err := os.CreateTemp(dataDir, ".write-check-*")
	if err != nil {
		return "", fmt.Errorf("data directory %q is not writable by this process (uid %d): %w", dataDir, os.Getuid(), err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", fmt.Errorf("data directory %q: %w", dataDir, err)
	}
	path := filepath.Join(dataDir, DirName)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return "", fmt.Errorf("data directory %q: cannot create %s: %w", dataDir, DirName, err)
	}
	return path, nil
}

// Init opens the database; mochi calls it from AddHook.
func (h *Hook) Init(config any) error {
	opts, ok := config.(*Options)
	if !ok || opts == nil {
		return mqtt.ErrInvalidConfigType
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.opts = *opts
	h.durable, h.follow = pebble.NoSync, pebble.NoSync
	if opts.Sync {
		h.durable = pebble.Sync
	}
	if opts.Stock {
		h.follow = h.durable
	}
	h.group = NewSyncGroup(h.syncLog)
	h.space.log = func(full bool, free, min uint64) {
		if full {
			h.logger().Error("store volume full: refusing publishes that need storing until there is room",
				"free_bytes", free, "min_free_bytes", min, "path", h.path)
			return
		}
		h.logger().Info("store volume has room again: taking publishes", "free_bytes", free, "min_free_bytes", min)
	}
	if err := h.space.check(h.path, opts.MinFree); err != nil {
		h.count(opStore)
		return fmt.Errorf("store %s: %w", h.path, err)
	}
	db, err := pebble.Open(h.path, opts.Pebble)
	if err != nil {
		h.count("open")
		if locked(err) {
			return fmt.Errorf("store %s is locked: is another broker using this data directory? (%w)", h.path, err)
		}
		return fmt.Errorf("store %s: %w", h.path, err)
	}
	h.db = db
	h.open = true
	if !opts.Stock {
		h.q = newQueue()
		go h.q.run(func() { h.guard(h.flush) })
	}
	if err := h.loadState(); err != nil {
		h.count("read")
		return fmt.Errorf("store %s: %w", h.path, err)
	}
	return nil
}

// locked reports whether opening the database failed on its LOCK file:
// pebble's in-process check, or fcntl refusing the lock another process holds
// (a file that could not be opened at all comes as a PathError instead).
// TestSecondOpenIsRefused holds pebble to the text.
func locked(err error) bool {
	if strings.Contains(err.Error(), "lock held by current process") {
		return true
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES)
}

// Stop commits what is queued and closes the database, once; later calls
// return the first call's result.
func (h *Hook) Stop() error {
	h.mu.RLock()
	q := h.q
	h.mu.RUnlock()
	if q != nil {
		q.halt() // before the lock: the committer may be waiting for a read lock
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || !h.open {
		return h.stopErr
	}
	h.stopped = true
	if q != nil {
		h.stopErr = h.commit(h.durable)
	}
	h.stopErr = errors.Join(h.stopErr, h.db.Close())
	if h.stopErr != nil {
		h.count("close")
	}
	return h.stopErr
}

// logger is the logger mochi gave the hook (SetOpts), or the default one.
func (h *Hook) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

// count tells the ErrorCounter of a failure.
func (h *Hook) count(op string) {
	if h.errs != nil {
		h.errs.StoreError(op)
	}
}

// opStore is the operation a refusal for lack of space is counted under.
const opStore = "write"

// guard runs f unless the store has been stopped, and reports whether it ran.
func (h *Hook) guard(f func()) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.stopped || !h.open {
		return false
	}
	f()
	return true
}

// set writes key=value with wo; a failure is logged and counted, and
// returned to the callers that can refuse what they were asked to store.
func (h *Hook) set(key string, value interface{ MarshalBinary() ([]byte, error) }, wo *pebble.WriteOptions) error {
	b, err := value.MarshalBinary()
	if err != nil {
		h.count("write")
		h.logger().Error("store write failed: cannot encode", "key", key, "err", err)
		return err
	}
	return h.failed("write", h.apply(func(batch *pebble.Batch) error { return batch.Set([]byte(key), b, nil) }, wo), "key", key)
}

// del deletes key with wo.
func (h *Hook) del(key string, wo *pebble.WriteOptions) error {
	return h.failed("delete", h.apply(func(b *pebble.Batch) error { return b.Delete([]byte(key), nil) }, wo), "key", key)
}

// failed logs and counts err, a failed op ("write", "delete") on what args
// name, unless the store was closed, and returns it.
func (h *Hook) failed(op string, err error, args ...any) error {
	if err != nil && !errors.Is(err, errStopped) {
		h.count(op)
		h.logger().Error("store "+op+" failed", append(args, "err", err)...)
	}
	return err
}

// apply makes the writes op makes on a batch: queued, and with pebble.Sync
// returned once they are on disk; in stock mode committed at once with wo.
func (h *Hook) apply(op func(*pebble.Batch) error, wo *pebble.WriteOptions) error {
	var err error
	if !h.guard(func() {
		if h.q != nil {
			err = h.q.add(h.db, op)
			return
		}
		b := h.db.NewBatch()
		defer b.Close()
		if err = op(b); err == nil {
			err = b.Commit(wo)
		}
	}) {
		return errStopped
	}
	if err == nil && wo.Sync && h.q != nil {
		err = h.group.WaitSynced(h.group.Ticket())
	}
	return err
}

// commit commits the queued writes with wo, with the lock held (guard); with
// pebble.Sync it makes every write made so far durable, queued or not (stock
// mode queues nothing). A failure is logged and counted: the writes are lost.
func (h *Hook) commit(wo *pebble.WriteOptions) error {
	var err error
	switch {
	case h.q != nil:
		err = h.q.commit(h.db, wo)
	case wo.Sync:
		err = h.db.LogData(nil, pebble.Sync)
	}
	if err != nil {
		h.count("write")
		h.logger().Error("store commit failed", "sync", wo.Sync, "err", err)
	}
	return err
}

// flush commits the queued writes, with the lock held, so that a read sees
// them.
func (h *Hook) flush() { _ = h.commit(pebble.NoSync) }

// syncLog makes every write made so far durable: the queued ones are
// committed with an fsync of the write-ahead log, which holds them in order
// after the earlier ones.
func (h *Hook) syncLog() error {
	var err error
	if !h.guard(func() { err = h.commit(pebble.Sync) }) {
		return errStopped
	}
	return err
}

// errStopped is what a write after Stop gets.
var errStopped = errors.New("the store is closed")

// events reports the pebble events an operator should see: failures in the
// background, a disk (SD card) too slow to keep up, and writes held back.
func events(l pebbleLogger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			l.h.count("background")
			l.log().Error("store background error", "err", err.Error())
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			l.log().Warn("store disk is slow", "info", info.String())
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			l.log().Warn("store writes stalled", "reason", info.Reason)
		},
	}
}

// pebbleLogger sends pebble's own messages to the hook's logger, which mochi
// sets (SetOpts) before it opens the database.
type pebbleLogger struct{ h *Hook }

func (l pebbleLogger) log() *slog.Logger { return l.h.logger() }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log().Info("pebble: " + strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// Fatalf must not return: pebble calls it on corruption it cannot go on from.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, args...))
	l.log().Error("pebble: " + msg)
	panic("pebble: " + msg)
}
