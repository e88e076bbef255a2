package spool

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// mountTmpfs mounts a tmpfs of the given size under a temporary directory
// and unmounts it when the test ends. It fails the test (it does not skip
// it) when it cannot mount: the test needs root.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "full")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput()
	require.NoError(t, err, "mount a %s tmpfs (the full-disk test needs root): %s", size, out)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; ; i++ {
		require.Less(t, i, 1<<20, "the disk never filled")
		if _, err := f.Write(chunk); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			return
		}
	}
}

func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "spool")
	o := Options{SyncEvery: -1, SegmentBytes: 32 << 10, MaxBytes: 64 << 20, bootID: bootFn(1)}
	s := openT(t, dir, o)
	t.Cleanup(func() { closeQuietly(s) }) // before the unmount

	spooled := map[uint64]string{} // unacked readings by id
	lastSeq := uint64(0)
	appendOK := func() {
		t.Helper()
		rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
		require.NotZero(t, rec.ID)
		require.Equal(t, lastSeq+1, rec.Seq)
		lastSeq = rec.Seq
		spooled[rec.ID] = string(rec.Payload)
	}
	requireSpooled := func() {
		t.Helper()
		got := map[uint64]string{}
		for _, r := range drain(t, s) {
			got[r.ID] = string(r.Payload)
		}
		require.Equal(t, spooled, got, "the spool holds exactly what it held")
		require.Equal(t, len(spooled), s.Stats().Depth)
	}
	for i := 0; i < 50; i++ {
		appendOK()
	}

	fill(t, filepath.Join(mnt, "filler"))
	full := 0
	for i := 0; full < 20; i++ {
		require.Less(t, i, 10000, "Append never hit the full disk")
		rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
		if err == nil { // it fitted in the last page
			require.Equal(t, lastSeq+1, rec.Seq)
			lastSeq = rec.Seq
			spooled[rec.ID] = string(rec.Payload)
			continue
		}
		require.ErrorIs(t, err, syscall.ENOSPC)
		require.ErrorIs(t, err, ErrNoSpace)
		require.Zero(t, rec.ID, "not in the spool")
		require.Equal(t, lastSeq+1, rec.Seq, "but numbered, to be published straight through")
		require.NotEmpty(t, rec.Payload)
		lastSeq = rec.Seq
		full++
		require.NoError(t, s.CountDropped(1), "the caller could not deliver it either")
	}
	requireSpooled()
	_ = s.Sync() // may fail for want of space; must not break anything
	requireSpooled()
	require.Equal(t, uint64(20), s.Stats().Drops.Caller)

	// A crash while the disk is full, and an Open on the full disk.
	abandon(s)
	s = openT(t, dir, o)
	requireSpooled()
	require.Equal(t, uint64(20), s.Stats().Drops.Caller)
	rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.ErrorIs(t, err, syscall.ENOSPC)
	// A write cut short by the full disk leaves a torn tail; the spool then
	// cannot tell where the stream stopped and resumes past its reservation,
	// counting every number it skips. Either way no number comes back.
	skipped := s.Recovery().Skipped["env"]
	require.Equal(t, lastSeq+1+skipped, rec.Seq, "numbers handed out on the full disk are not handed out again; a skip is counted")
	require.Equal(t, skipped, s.Stats().Drops.Skipped)
	lastSeq = rec.Seq

	// Space comes back: the spool goes on by itself.
	require.NoError(t, os.Remove(filepath.Join(mnt, "filler")))
	for i := 0; i < 20; i++ {
		appendOK()
	}
	requireSpooled()
	require.NoError(t, s.Close())
	s = openT(t, dir, o)
	requireSpooled()
	require.Equal(t, DropCounts{Caller: 20, Skipped: skipped}, s.Stats().Drops)
	require.NoError(t, s.Close())
}

// closeQuietly releases a spool a failed test left open.
func closeQuietly(s *Spool) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed {
		abandon(s)
	}
}

// Filled before the first reading: Open must still work, and so must the
// spool once there is room.
func TestOpenOnAFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "256k")
	dir := filepath.Join(mnt, "spool")
	o := Options{SyncEvery: time.Millisecond, SegmentBytes: 8 << 10, MaxBytes: 64 << 20}
	s := openT(t, dir, o)
	_, err := s.Append("gps", payloadFor("gps", time.Now(), nil))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	fill(t, filepath.Join(mnt, "filler"))
	s = openT(t, dir, o)
	t.Cleanup(func() { closeQuietly(s) })
	require.Equal(t, 1, s.Stats().Depth)
	rec, err := s.Append("gps", payloadFor("gps", time.Now(), nil))
	require.True(t, errors.Is(err, ErrNoSpace), "%v", err)
	require.Equal(t, uint64(2), rec.Seq)
	time.Sleep(5 * time.Millisecond) // the sync timer runs on the full disk
	require.NoError(t, os.Remove(filepath.Join(mnt, "filler")))
	rec, err = s.Append("gps", payloadFor("gps", time.Now(), nil))
	require.NoError(t, err)
	require.Equal(t, uint64(3), rec.Seq)
	require.Equal(t, []uint64{1, 3}, seqs(drain(t, s), "gps"))
	require.NoError(t, s.Close())
}
