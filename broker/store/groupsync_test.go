package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSyncGroupCoversEveryWriteBeforeIt: a wait returns only after an fsync
// that started after the write, and concurrent writers share fsyncs. The
// fsync here records which writes it covers: those made before it started.
func TestSyncGroupCoversEveryWriteBeforeIt(t *testing.T) {
	var written, durable atomic.Int64
	var fsyncs atomic.Int64
	g := NewSyncGroup(func() error {
		covered := written.Load()
		fsyncs.Add(1)
		time.Sleep(500 * time.Microsecond) // a disk's fsync
		durable.Store(covered)
		return nil
	})
	const writers, each = 50, 40
	var wg sync.WaitGroup
	var early atomic.Int64
	for range writers {
		wg.Go(func() {
			for range each {
				w := written.Add(1)
				tk := g.Ticket()
				if err := g.WaitSynced(tk); err != nil {
					t.Error(err)
					return
				}
				if durable.Load() < w || !g.Synced(tk) {
					early.Add(1)
				}
			}
		})
	}
	wg.Wait()
	require.Zero(t, early.Load(), "waits that returned before an fsync covered their write")
	t.Logf("%d writes, %d fsyncs", writers*each, fsyncs.Load())
	require.Less(t, fsyncs.Load(), int64(writers*each/4), "concurrent writes share fsyncs")
}

// TestSyncGroupFailedFsync: once an fsync fails, nothing waiting for one is
// told it is on disk.
func TestSyncGroupFailedFsync(t *testing.T) {
	fail := errors.New("EIO")
	var calls atomic.Int64
	g := NewSyncGroup(func() error {
		if calls.Add(1) == 2 {
			return fail
		}
		return nil
	})
	first := g.Ticket()
	require.False(t, g.Synced(first), "no fsync has run")
	require.NoError(t, g.WaitSynced(first))
	require.True(t, g.Synced(first))
	second := g.Ticket()
	require.ErrorIs(t, g.WaitSynced(second), fail)
	require.False(t, g.Synced(second))
	require.ErrorIs(t, g.WaitSynced(g.Ticket()), fail, "later writes are not trusted either")
	require.Equal(t, int64(2), calls.Load())
}

// TestJournalTicket: with --store-sync an entry Begin wrote is not taken
// for durable until the fsync after it has run.
func TestJournalTicket(t *testing.T) {
	h, opts, err := New(t.TempDir(), true, nil)
	require.NoError(t, err)
	h.SetOpts(quietLog(), nil)
	require.NoError(t, h.Init(opts))
	defer h.Stop()
	key, tk, err := h.Begin(persistentClient("bridge"), inflightPk(1))
	require.NoError(t, err)
	require.NotEmpty(t, key)
	require.NotZero(t, tk, "--store-sync: the entry waits for an fsync")
	require.False(t, h.Synced(tk))
	require.NoError(t, h.WaitSynced(tk))
	require.True(t, h.Synced(tk))
}
