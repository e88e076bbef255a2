package spool

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// failingCard models what Linux does on a failing SD card: an fsync that
// fails loses the pages written since the last good one (the kernel marks
// them clean and reports the error once), and later fsyncs of the same file
// succeed. powerCut then leaves each segment file as the card has it.
type failingCard struct {
	mu       sync.Mutex
	failNext bool
	synced   map[string]int64    // size at the last good fsync, per file
	lost     map[string][2]int64 // byte range dropped by a failed fsync
}

func (c *failingCard) sync(f *os.File) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if c.failNext {
		c.failNext = false
		if _, ok := c.lost[f.Name()]; !ok {
			c.lost[f.Name()] = [2]int64{c.synced[f.Name()], fi.Size()}
		}
		return &os.PathError{Op: "sync", Path: f.Name(), Err: syscall.EIO}
	}
	c.synced[f.Name()] = fi.Size()
	return f.Sync()
}

// powerCut zeroes the dropped pages and cuts what was never synced.
func (c *failingCard) powerCut(t *testing.T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, size := range c.synced {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		if r, ok := c.lost[name]; ok {
			_, err = f.WriteAt(make([]byte, r[1]-r[0]), r[0])
			require.NoError(t, err)
		}
		require.NoError(t, f.Truncate(size))
		require.NoError(t, f.Close())
	}
}

// TestFailedFsyncNeverLetsASeqBeReused: after a failed fsync, a later one
// that succeeds must not make the seq reservation written before the failure
// count as durable; otherwise the spool hands out numbers under a
// reservation a power cut takes away, and hands them out again after it.
func TestFailedFsyncNeverLetsASeqBeReused(t *testing.T) {
	dir := t.TempDir()
	card := &failingCard{synced: map[string]int64{}, lost: map[string][2]int64{}}
	o := Options{SyncEvery: -1, bootID: bootFn(1), syncSegment: card.sync}
	s := openT(t, dir, o)
	appendN := func(n int) uint64 {
		var last uint64
		for range n {
			rec, _ := s.Append("env", payloadFor("env", time.Now(), nil))
			require.NotZero(t, rec.Seq)
			last = rec.Seq
		}
		return last
	}
	appendN(7) // the first reserves 1..8, synced
	card.failNext = true
	require.Error(t, s.Sync(), "the sync that extends the reservation fails")
	require.NoError(t, s.Sync(), "the next one succeeds, as on Linux")
	handed := appendN(5) // numbers past the first reservation
	require.Equal(t, uint64(1), s.Stats().SyncErrors)

	abandon(s)
	card.powerCut(t)
	o.bootID = bootFn(2)
	s = openT(t, dir, o)
	defer s.Close()
	rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.Greater(t, rec.Seq, handed, "seq %d was handed out before the power cut", rec.Seq)
}
