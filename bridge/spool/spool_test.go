package spool

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAppendNumbersEachStreamAndReplaysOldestFirst(t *testing.T) {
	c := newClock()
	s := openT(t, t.TempDir(), Options{SyncEvery: -1, Now: c.now})
	defer s.Close()
	var want []string
	for i := 0; i < 30; i++ {
		st := []string{"env", "gps", "env"}[i%3]
		var p []byte
		rec, err := s.Append(st, payloadFor(st, c.t, &p))
		require.NoError(t, err)
		require.NotZero(t, rec.ID)
		require.Equal(t, p, rec.Payload)
		want = append(want, string(p))
		c.add(time.Second)
	}
	rs := drain(t, s)
	require.Len(t, rs, 30)
	for i, r := range rs {
		require.Equal(t, want[i], string(r.Payload), "replay is oldest first")
		if i > 0 {
			require.Greater(t, r.ID, rs[i-1].ID)
		}
	}
	require.Equal(t, span(1, 20), seqs(rs, "env"), "each stream counts on its own")
	require.Equal(t, span(1, 10), seqs(rs, "gps"))
	st := s.Stats()
	require.Equal(t, 30, st.Depth)
	require.Equal(t, map[string]uint64{"env": 20, "gps": 10}, st.LastSeq)
	require.Equal(t, uint64(20), s.LastSeq("env"))
}

func TestAcksMayComeOutOfOrder(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SyncEvery: -1})
	defer s.Close()
	var ids []uint64
	for i := 0; i < 10; i++ {
		rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
		ids = append(ids, rec.ID)
	}
	for _, i := range []int{6, 2, 0, 9, 2} { // 2 twice: a duplicate PUBACK
		require.NoError(t, s.Ack(ids[i]))
	}
	require.NoError(t, s.Ack(1<<40), "an unknown id is no error")
	require.Equal(t, []uint64{2, 4, 5, 6, 8, 9}, seqs(drain(t, s), "env"))
	require.Equal(t, 6, s.Stats().Depth)

	// Acks taken while a cursor is part way through are honoured.
	c := s.Replay()
	r, err := c.Next()
	require.NoError(t, err)
	require.Equal(t, uint64(2), r.Seq)
	require.NoError(t, s.Ack(ids[4])) // seq 5
	var rest []uint64
	for r, err := c.Next(); err == nil; r, err = c.Next() {
		rest = append(rest, r.Seq)
	}
	require.Equal(t, []uint64{4, 6, 8, 9}, rest)
}

func TestCursorCoversOnlyWhatWasThereWhenItStarted(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SyncEvery: -1})
	defer s.Close()
	for i := 0; i < 3; i++ {
		_, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
	}
	c := s.Replay()
	_, err := s.Append("env", payloadFor("env", time.Now(), nil)) // goes live
	require.NoError(t, err)
	var got []uint64
	for r, err := c.Next(); err == nil; r, err = c.Next() {
		got = append(got, r.Seq)
	}
	require.Equal(t, []uint64{1, 2, 3}, got)
}

func TestReopenKeepsUnackedReadingsAndSeq(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(*Spool)
	}{
		{"close", func(s *Spool) { require.NoError(t, s.Close()) }},
		{"crash", abandon}, // same boot: the page cache keeps everything
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SyncEvery: -1, SegmentBytes: 2048, bootID: bootFn(1)}
			s := openT(t, dir, o)
			payloads := map[uint64]string{}
			for i := 0; i < 100; i++ {
				var p []byte
				rec, err := s.Append("env", payloadFor("env", time.Now(), &p))
				require.NoError(t, err)
				payloads[rec.Seq] = string(p)
				if i%3 == 0 {
					require.NoError(t, s.Ack(rec.ID))
					delete(payloads, rec.Seq)
				}
			}
			require.NoError(t, s.Sync()) // the acks reach the log
			tc.stop(s)

			s = openT(t, dir, o)
			defer s.Close()
			require.Equal(t, dirBytes(t, dir), s.Stats().Bytes, "Stats.Bytes is what is on disk")
			rec := s.Recovery()
			require.Equal(t, tc.name == "close", rec.Clean)
			require.True(t, rec.SameBoot)
			rs := drain(t, s)
			require.Len(t, rs, len(payloads))
			for _, r := range rs {
				require.Equal(t, payloads[r.Seq], string(r.Payload))
			}
			next, err := s.Append("env", payloadFor("env", time.Now(), nil))
			require.NoError(t, err)
			require.Equal(t, uint64(101), next.Seq, "no number skipped, none reused")
			require.Zero(t, s.Stats().Dropped)
		})
	}
}

// A power cut loses what was appended since the last sync, and the numbers
// of those readings may already have been published. The restart must not
// hand them out again: it resumes past the durable reservation and counts
// the skipped numbers as dropped.
func TestPowerCutNeverReusesASeq(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1, bootID: bootFn(1)}
	s := openT(t, dir, o)
	for i := 0; i < 5; i++ {
		_, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
	}
	require.NoError(t, s.Sync())
	s.mu.Lock()
	synced, path := s.active.size, s.active.path
	s.mu.Unlock()
	handed := uint64(0)
	for i := 0; i < 3; i++ { // appended, maybe published, never synced
		rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
		handed = rec.Seq
	}
	abandon(s)
	require.NoError(t, os.Truncate(path, synced)) // what the power cut leaves

	o.bootID = bootFn(2) // rebooted
	s = openT(t, dir, o)
	defer s.Close()
	rec := s.Recovery()
	require.False(t, rec.Clean)
	require.False(t, rec.SameBoot)
	require.Equal(t, span(1, 5), seqs(drain(t, s), "env"))
	next, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.Greater(t, next.Seq, handed, "a number handed out before the cut is never handed out again")
	skipped := next.Seq - 1 - 5
	require.Equal(t, map[string]uint64{"env": skipped}, rec.Skipped)
	require.Equal(t, skipped, s.Stats().Drops.Skipped, "every number jumped over is counted dropped")
	require.Equal(t, skipped, s.Stats().Dropped)
	require.LessOrEqual(t, skipped, uint64(5+5/4+4), "at most one interval's worth and a margin")
}

func TestFsyncEveryAppendSkipsNothingAfterAPowerCut(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: 0, bootID: bootFn(1)}
	s := openT(t, dir, o)
	for i := 0; i < 5; i++ {
		_, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
	}
	abandon(s)
	o.bootID = bootFn(2)
	s = openT(t, dir, o)
	defer s.Close()
	next, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.Equal(t, uint64(6), next.Seq)
	require.Zero(t, s.Stats().Dropped)
}

func TestSizeCapEvictsOldestFirstAndCountsThem(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1, SegmentBytes: 1024, MaxBytes: 4096}
	s := openT(t, dir, o)
	acked := 0
	for i := 1; i <= 600; i++ {
		rec, err := s.Append("gps", payloadFor("gps", time.Now(), nil))
		require.NoError(t, err)
		if i%4 == 0 {
			require.NoError(t, s.Ack(rec.ID))
			acked++
		}
		require.LessOrEqual(t, s.Stats().Bytes-2*stateSlot, o.MaxBytes)
	}
	st := s.Stats()
	require.Positive(t, st.Drops.Evicted)
	require.Equal(t, uint64(600-acked-st.Depth), st.Drops.Evicted, "each evicted unacked reading is counted, acked ones are not")
	rs := drain(t, s)
	require.Len(t, rs, st.Depth)
	first := rs[0].Seq
	var want []uint64
	for q := first; q <= 600; q++ {
		if q%4 != 0 {
			want = append(want, q)
		}
	}
	require.Equal(t, want, seqs(rs, "gps"), "what is left is the newest, complete")
	require.NoError(t, s.Close())

	s = openT(t, dir, o)
	defer s.Close()
	// At the cap, the segment a restart starts may push one more old one out.
	after := s.Stats()
	require.Equal(t, st.Drops.Evicted+uint64(st.Depth-after.Depth), after.Drops.Evicted, "dropped survives a restart")
	require.Len(t, drain(t, s), after.Depth)
}

// TestDroppedNeverDecreases: dropped is a counter (Home Assistant reads a
// decrease as a meter reset). Acknowledging readings after the cap evicted
// them, as a late PUBACK does, must not take the count back.
func TestDroppedNeverDecreases(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1, SegmentBytes: 1024, MaxBytes: 4096}
	s := openT(t, dir, o)
	defer s.Close()
	first, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	for s.Stats().Drops.Evicted == 0 {
		_, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
	}
	evicted := s.Stats().Dropped
	for id := first.ID; id < first.ID+3; id++ {
		require.NoError(t, s.Ack(id))
		require.Equal(t, evicted, s.Stats().Dropped, "an ack after the eviction does not lower dropped")
	}
}

// TestEvictionWaitsForReadingsInFlight: the cap does not evict a segment
// while a publisher has one of its readings in flight; it refuses new claims
// there, and once the claims settle it evicts, counting exactly the readings
// not delivered: those acked are not counted, the one released is.
func TestEvictionWaitsForReadingsInFlight(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1, SegmentBytes: 1024, MaxBytes: 4096}
	s := openT(t, dir, o)
	first, err := s.AppendLive("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.False(t, s.Claim(first.ID), "AppendLive returns the reading claimed: a replay cannot take it")
	second, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.True(t, s.Claim(second.ID), "a replay claims an unclaimed reading")
	require.False(t, s.Claim(second.ID), "once")
	third, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)

	for s.Stats().Segments < 6 {
		_, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
	}
	require.Zero(t, s.Stats().Dropped, "nothing evicted while readings of the oldest segment are in flight")
	require.Greater(t, s.Stats().Bytes, o.MaxBytes)
	require.False(t, s.Claim(third.ID), "no new claim in a segment waiting for eviction")

	pending := uint64(s.Stats().Depth)
	require.NoError(t, s.Ack(first.ID)) // delivered
	s.Release(second.ID)                // not delivered: it will count
	_, err = s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	st := s.Stats()
	require.Positive(t, st.Drops.Evicted)
	require.Equal(t, pending-1+1, uint64(st.Depth)+st.Drops.Evicted, "every reading counted once: kept, delivered or dropped")
	require.NoError(t, s.Close())
	s = openT(t, dir, o)
	defer s.Close()
	require.Equal(t, st.Drops.Evicted, s.Stats().Drops.Evicted, "the count is on disk")
}

func TestAgeCapEvictsOldReadingsAndCountsThem(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	o := Options{SyncEvery: -1, MaxAge: time.Hour, Now: c.now}
	s := openT(t, dir, o)
	for i := 0; i < 180; i++ { // one a minute for three hours
		_, err := s.Append("env", payloadFor("env", c.t, nil))
		require.NoError(t, err)
		c.add(time.Minute)
		require.NoError(t, s.Sync())
	}
	st := s.Stats()
	rs := drain(t, s)
	require.Equal(t, uint64(180-len(rs)), st.Drops.Evicted)
	cutoff := c.t.Add(-time.Hour)
	require.False(t, rs[0].Time.Before(cutoff.Add(-time.Hour/16-time.Minute)), "evicted within MaxAge/16 of the cap")
	for q, r := range rs {
		require.Equal(t, rs[0].Seq+uint64(q), r.Seq)
	}
	require.True(t, rs[0].Time.Before(cutoff.Add(time.Minute)), "nothing younger than MaxAge went")
	require.NoError(t, s.Close())
	s = openT(t, dir, o)
	defer s.Close()
	require.Equal(t, st.Drops.Evicted, s.Stats().Drops.Evicted)
}

func TestDroppedPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1}
	s := openT(t, dir, o)
	require.NoError(t, s.CountDropped(3))
	require.NoError(t, s.Close())
	s = openT(t, dir, o)
	require.Equal(t, uint64(3), s.Stats().Dropped)
	require.NoError(t, s.CountDropped(2))
	abandon(s) // same boot: the snapshot is in the page cache
	s = openT(t, dir, o)
	defer s.Close()
	require.Equal(t, DropCounts{Caller: 5}, s.Stats().Drops)
}

func TestQuarantineMovesAPoisonReadingAside(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SyncEvery: -1})
	defer s.Close()
	var recs []Record
	for i := 0; i < 3; i++ {
		rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
		require.NoError(t, err)
		recs = append(recs, rec)
	}
	require.NoError(t, s.Quarantine(recs[1], "broker refuses it"))
	require.Equal(t, []uint64{1, 3}, seqs(drain(t, s), "env"))
	require.Equal(t, uint64(1), s.Stats().Drops.Quarantined)
	b, err := os.ReadFile(filepath.Join(dir, "quarantine", "poison.jsonl"))
	require.NoError(t, err)
	var line struct {
		Seq     uint64
		Reason  string
		Payload string
	}
	require.NoError(t, json.Unmarshal(b, &line))
	require.Equal(t, uint64(2), line.Seq)
	require.Equal(t, string(recs[1].Payload), line.Payload)
}

func TestOneSpoolPerDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{SyncEvery: -1})
	_, err := Open(dir, &Options{SyncEvery: -1})
	require.ErrorContains(t, err, "in use")
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), ErrClosed)
	_, err = s.Append("env", payloadFor("env", time.Now(), nil))
	require.ErrorIs(t, err, ErrClosed)
	s = openT(t, dir, Options{SyncEvery: -1})
	require.NoError(t, s.Close())
}

func TestEncodeErrorUsesNoNumber(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SyncEvery: -1})
	defer s.Close()
	_, err := s.Append("env", func(uint64) ([]byte, error) { return nil, os.ErrInvalid })
	require.ErrorIs(t, err, os.ErrInvalid)
	rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.Equal(t, uint64(1), rec.Seq)
	_, err = s.Append("", payloadFor("env", time.Now(), nil))
	require.Error(t, err)
	_, err = s.Append("env", func(uint64) ([]byte, error) { return make([]byte, MaxPayload+1), nil })
	require.ErrorContains(t, err, "limit")
}

// A sensor goroutine appends while a publisher goroutine replays and acks,
// with the timer syncing underneath; run with -race.
func TestConcurrentAppendReplayAck(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SyncEvery: time.Millisecond, SegmentBytes: 4096})
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			st := []string{"env", "gps"}[i%2]
			_, err := s.Append(st, payloadFor(st, time.Now(), nil))
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	seen := map[uint64]bool{}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		for _, r := range drain(t, s) {
			require.False(t, seen[r.ID], "an acked reading is not replayed")
			seen[r.ID] = true
			require.NoError(t, s.Ack(r.ID))
		}
		if len(seen) == n {
			break
		}
	}
	wg.Wait()
	require.Len(t, seen, n)
	require.Zero(t, s.Stats().Depth)
	require.NoError(t, s.Close())
}

func TestLegacySeqFileIsContinued(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, legacySeqFile), []byte(`{"env":41}`), 0o600))
	s := openT(t, dir, Options{SyncEvery: -1})
	rec, err := s.Append("env", payloadFor("env", time.Now(), nil))
	require.NoError(t, err)
	require.Equal(t, uint64(42), rec.Seq)
	require.NoError(t, s.Close())

	dir = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, legacySeqFile), []byte("{not json"), 0o600))
	_, err = Open(dir, nil)
	require.ErrorContains(t, err, "corrupt")
}

// A Pi Zero has no real-time clock: readings taken before NTP set the clock
// carry a time decades old, and must not all be evicted by age the moment
// the clock jumps to the present.
func TestUnsetClockDoesNotTriggerTheAgeCap(t *testing.T) {
	c := &clock{t: time.Unix(86400, 0)} // 1970-01-02
	s := openT(t, t.TempDir(), Options{SyncEvery: -1, MaxAge: time.Hour, Now: c.now})
	defer s.Close()
	for i := 0; i < 10; i++ {
		_, err := s.Append("env", payloadFor("env", c.t, nil))
		require.NoError(t, err)
	}
	c.t = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC) // NTP
	_, err := s.Append("env", payloadFor("env", c.t, nil))
	require.NoError(t, err)
	require.NoError(t, s.Sync())
	require.Equal(t, 11, s.Stats().Depth)
	require.Zero(t, s.Stats().Dropped)
}

// dirBytes is the size of the spool's files (segments and state).
func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	n := int64(0)
	for _, e := range es {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

func TestRecoveryTellsAFreshSpoolFromACleanOne(t *testing.T) {
	dir := t.TempDir()
	o := Options{SyncEvery: -1, bootID: bootFn(1)}
	s := openT(t, dir, o)
	require.True(t, s.Recovery().Fresh, "nothing was there to recover")
	_, err := s.Append("env", payloadFor("env", time.Now(), new([]byte)))
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s = openT(t, dir, o)
	require.False(t, s.Recovery().Fresh)
	require.True(t, s.Recovery().Clean)
}
