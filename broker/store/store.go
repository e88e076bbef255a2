// Package store keeps the broker's state on disk (retained messages, client
// sessions and subscriptions, in-flight QoS messages, $SYS counters) so that a
// restart of the broker, or of its pod, loses none of it.
//
// It uses mochi's own pebble storage hook, configured with our defaults. Why
// pebble among mochi's storage hooks:
//   - bolt is deprecated in mochi;
//   - badger's default memory use (memtables, block and index caches of
//     hundreds of MiB) is too large for a Raspberry Pi 4 that also runs other
//     things;
//   - redis needs a second server to run, watch and back up;
//   - pebble is pure Go (it cross-compiles and links statically for arm64 with
//     CGO_ENABLED=0), and it is crash-safe: every write goes to a write-ahead
//     log first, which is replayed when the database is opened again.
//
// Durability: by default (--store-sync, pebblehook.Sync) every write is
// fsynced before mochi goes on, so nothing the broker acknowledged is lost,
// even on a power cut; pebble commits concurrent writes as one group, one
// fsync per batch. With --store-sync=false (pebblehook.NoSync) pebble keeps
// its newest writes in a 32 KiB write-ahead-log buffer inside the process and
// hands them to the OS only when that buffer fills, a synced write comes, or
// the database is closed. A graceful stop closes it: nothing is lost. A
// SIGKILL, OOM kill or crash loses what is still in the buffer, and a power
// cut of the node may also lose what the kernel had not written back yet.
package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	pebblehook "github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
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

// Hook is mochi's pebble storage hook, made safe to stop while the server
// may still call it: mochi's Server.Close stops the hooks while its event loop
// may be in the middle of a $SYS tick or a retained-message expiry pass, and a
// connection accepted just before the listener closed may still be setting up.
// Pebble panics on a write to a closed database, so every call takes a read
// lock and is dropped once Stop has run. Stop is idempotent and returns the
// same result every time, so the owner can call it again after mochi's Close
// to learn whether the store was closed cleanly.
type Hook struct {
	*pebblehook.Hook
	errs ErrorCounter

	mu      sync.RWMutex
	open    bool
	stopped bool
	stopErr error
	path    string
}

var _ mqtt.Hook = (*Hook)(nil)

// ErrorCounter is told of every error the store logs, by operation: write,
// delete, background, or other. The broker's metrics count them.
type ErrorCounter interface{ StoreError(op string) }

// New prepares the store under dataDir: it creates dataDir and the database
// directory inside it (mode 0700) if they are missing, checks that dataDir is
// writable, and returns the hook with the options to pass to
// mqtt.Server.AddHook, which opens the database. sync selects an fsync on
// every write (pebblehook.Sync) or none (pebblehook.NoSync). errs, if not nil,
// is told of every error the store logs.
func New(dataDir string, sync bool, errs ErrorCounter) (*Hook, *pebblehook.Options, error) {
	path, err := prepare(dataDir)
	if err != nil {
		return nil, nil, err
	}
	h := &Hook{Hook: new(pebblehook.Hook), path: path, errs: errs}
	mode := pebblehook.NoSync
	if sync {
		mode = pebblehook.Sync
	}
	opts := &pebblehook.Options{
		Path: path,
		Mode: mode,
		Options: &pebble.Options{
			MemTableSize:  memTableSize,
			Logger:        pebbleLogger{h},
			EventListener: events(pebbleLogger{h}),
		},
	}
	return h, opts, nil
}

// SetOpts takes the logger mochi gives every hook. The store's failures,
// mochi's and pebble's alike, reach us only as error logs (mochi's pebble hook
// logs a failed write and goes on), so with an ErrorCounter each error record
// is also counted.
func (h *Hook) SetOpts(l *slog.Logger, opts *mqtt.HookOptions) {
	if h.errs != nil && l != nil {
		l = slog.New(countingHandler{Handler: l.Handler(), errs: h.errs})
	}
	h.Hook.SetOpts(l, opts)
}

// countingHandler counts the error records passing through it by operation.
type countingHandler struct {
	slog.Handler
	errs ErrorCounter
}

func (c countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		c.errs.StoreError(errorOp(r.Message))
	}
	return c.Handler.Handle(ctx, r)
}

func (c countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{Handler: c.Handler.WithAttrs(as), errs: c.errs}
}

func (c countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{Handler: c.Handler.WithGroup(name), errs: c.errs}
}

// errorOp names the operation of an error log line of mochi's pebble hook or
// of ours.
func errorOp(msg string) string {
	switch {
	case strings.HasPrefix(msg, "failed to update"):
		return "write"
	case strings.HasPrefix(msg, "failed to delete"):
		return "delete"
	case strings.HasPrefix(msg, "store background"):
		return "background"
	}
	return "other"
}

// Ready is nil while the database is open, for the broker's readiness check.
func (h *Hook) Ready() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if !h.open || h.stopped {
		return errors.New("the store is not open")
	}
	return nil
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
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.Hook.Init(config); err != nil {
		if locked(err) {
			return fmt.Errorf("store %s is locked: is another broker using this data directory? (%w)", h.path, err)
		}
		return fmt.Errorf("store %s: %w", h.path, err)
	}
	h.open = true
	return nil
}

// locked reports whether opening the database failed on its LOCK file:
// pebble's in-process check, or fcntl refusing the lock another process holds
// (a file that could not be opened at all comes as a PathError instead).
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

// Stop closes the database, once; later calls return the first call's result.
func (h *Hook) Stop() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || !h.open {
		return h.stopErr
	}
	h.stopped = true
	err := h.Hook.Stop()
	if err != nil && strings.Contains(err.Error(), "leaked iterators") {
		// mochi's pebble hook (v2.7.9) never closes the iterators of its
		// Stored* methods, which mochi calls once at start, so pebble's
		// Close always reports them. It is harmless: Close has synced and
		// closed the write-ahead log and the manifest before it checks, and
		// the only cost of the leak is that the tables present at start stay
		// pinned (memory and disk) until the process exits.
		h.logger().Debug("store closed; ignoring pebble's report of iterators mochi's hook left open",
			"err", strings.SplitN(err.Error(), "\n", 2)[0])
		err = nil
	}
	h.stopErr = err
	return err
}

// logger is the logger mochi gave the hook (SetOpts), or the default one.
func (h *Hook) logger() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}

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

// The events the pebble hook provides, each guarded.

func (h *Hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.guard(func() { h.Hook.OnSessionEstablished(cl, pk) })
}

func (h *Hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.guard(func() { h.Hook.OnDisconnect(cl, err, expire) })
}

func (h *Hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	h.guard(func() { h.Hook.OnSubscribed(cl, pk, reasonCodes) })
}

func (h *Hook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	h.guard(func() { h.Hook.OnUnsubscribed(cl, pk) })
}

func (h *Hook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.guard(func() { h.Hook.OnRetainMessage(cl, pk, r) })
}

func (h *Hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h.guard(func() { h.Hook.OnWillSent(cl, pk) })
}

// A session that ends with its connection (MQTT 3.1.1 clean session, MQTT 5
// session expiry 0: mochi's own rule for expiring it) is never resumed, so
// the messages in flight to it are not written: a synced write per message
// per subscriber would make every mosquitto_sub and Grafana panel (both
// clean) cost the store as much as the farm's archiver, and bound the whole
// broker's throughput by the SD card's fsync rate.
func sessionOutlivesConnection(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *Hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if sessionOutlivesConnection(cl) {
		h.guard(func() { h.Hook.OnQosPublish(cl, pk, sent, resends) })
	}
}

func (h *Hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if sessionOutlivesConnection(cl) {
		h.guard(func() { h.Hook.OnQosComplete(cl, pk) })
	}
}

func (h *Hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if sessionOutlivesConnection(cl) {
		h.guard(func() { h.Hook.OnQosDropped(cl, pk) })
	}
}

func (h *Hook) OnSysInfoTick(info *system.Info) {
	h.guard(func() { h.Hook.OnSysInfoTick(info) })
}

func (h *Hook) OnClientExpired(cl *mqtt.Client) {
	h.guard(func() { h.Hook.OnClientExpired(cl) })
}

func (h *Hook) OnRetainedExpired(filter string) {
	h.guard(func() { h.Hook.OnRetainedExpired(filter) })
}

func (h *Hook) StoredClients() (v []storage.Client, err error) {
	if !h.guard(func() { v, err = h.Hook.StoredClients() }) {
		return nil, storage.ErrDBFileNotOpen
	}
	return v, err
}

func (h *Hook) StoredSubscriptions() (v []storage.Subscription, err error) {
	if !h.guard(func() { v, err = h.Hook.StoredSubscriptions() }) {
		return nil, storage.ErrDBFileNotOpen
	}
	return v, err
}

func (h *Hook) StoredInflightMessages() (v []storage.Message, err error) {
	if !h.guard(func() { v, err = h.Hook.StoredInflightMessages() }) {
		return nil, storage.ErrDBFileNotOpen
	}
	return v, err
}

func (h *Hook) StoredRetainedMessages() (v []storage.Message, err error) {
	if !h.guard(func() { v, err = h.Hook.StoredRetainedMessages() }) {
		return nil, storage.ErrDBFileNotOpen
	}
	return v, err
}

func (h *Hook) StoredSysInfo() (v storage.SystemInfo, err error) {
	if !h.guard(func() { v, err = h.Hook.StoredSysInfo() }) {
		return v, storage.ErrDBFileNotOpen
	}
	return v, err
}

// events reports the pebble events an operator should see: failures in the
// background, a disk (SD card) too slow to keep up, and writes held back.
func events(l pebbleLogger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
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
