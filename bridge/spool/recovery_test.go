package spool

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// copyDir copies the files of a spool directory into a new temporary one.
func copyDir(t testing.TB, from string) string {
	t.Helper()
	to := tempDir(t)
	es, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, e := range es {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), b, 0o640))
	}
	return to
}

// segmentPaths lists a spool directory's segment files, oldest first.
func segmentPaths(t testing.TB, dir string) []string {
	t.Helper()
	ps, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	require.NoError(t, err)
	return ps
}

type framed struct {
	off, n int
	typ    byte
	id     uint64 // DATA records
}

// records lists the framed records of a segment file.
func records(t testing.TB, path string) []framed {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	first, _, ok := parseSegmentName(filepath.Base(path))
	require.True(t, ok)
	var out []framed
	for off := 0; off < len(b); {
		typ, body, n, ok := parseRecord(b[off:])
		require.True(t, ok, "record at %d", off)
		f := framed{off: off, n: n, typ: typ}
		if typ == recData {
			h, _, err := parseData(body, first)
			require.NoError(t, err)
			f.id = h.id
		}
		out = append(out, f)
		off += n
	}
	return out
}

// A power cut can leave the last record half written, or followed by
// garbage. Open cuts it off, says how much it cut, keeps everything before
// it, and the torn reading's number is not handed out again.
func TestTornTailIsCutAndNothingBeforeItIsLost(t *testing.T) {
	base := tempDir(t)
	o := Options{SyncEvery: -1, bootID: bootFn(1)}
	s := openT(t, base, o)
	payloads := map[string]map[uint64]string{"env": {}, "gps": {}}
	var last Record
	for i := 0; i < 21; i++ {
		st := []string{"env", "gps"}[i%2]
		rec, err := s.Append(st, payloadFor(st, time.Now(), nil))
		require.NoError(t, err)
		payloads[st][rec.Seq] = string(rec.Payload)
		last = rec
	}
	abandon(s)
	segs := segmentPaths(t, base)
	seg := filepath.Base(segs[len(segs)-1])
	recs := records(t, segs[len(segs)-1])
	tail := recs[len(recs)-1]
	require.Equal(t, recData, tail.typ)
	require.Equal(t, last.ID, tail.id)
	delete(payloads[last.Stream], last.Seq)

	check := func(t *testing.T, dir string, cut int64) {
		o := o
		o.bootID = bootFn(2) // a power cut means a reboot
		s := openT(t, dir, o)
		defer s.Close()
		require.Equal(t, cut, s.Recovery().CutBytes)
		rs := drain(t, s)
		require.Len(t, rs, 20, "everything before the torn record is kept")
		for _, r := range rs {
			require.Equal(t, payloads[r.Stream][r.Seq], string(r.Payload))
		}
		next, err := s.Append(last.Stream, payloadFor(last.Stream, time.Now(), nil))
		require.NoError(t, err)
		require.Greater(t, next.Seq, last.Seq, "the torn reading's number is not reused")
		require.Equal(t, next.Seq-1-(last.Seq-1), s.Recovery().Skipped[last.Stream], "the skip is counted")
	}
	for size := tail.off; size < tail.off+tail.n; size++ {
		dir := copyDir(t, base)
		require.NoError(t, os.Truncate(filepath.Join(dir, seg), int64(size)))
		check(t, dir, int64(size-tail.off))
	}
	for i := 0; i < tail.n; i += 3 { // a flipped byte anywhere in it
		dir := copyDir(t, base)
		flip(t, filepath.Join(dir, seg), tail.off+i)
		check(t, dir, int64(tail.n))
	}
	for _, junk := range [][]byte{make([]byte, 4096), []byte("\xff\xff\xff\xff\x05\x03garbage")} {
		dir := copyDir(t, base)
		require.NoError(t, os.Truncate(filepath.Join(dir, seg), int64(tail.off+tail.n/2)))
		f, err := os.OpenFile(filepath.Join(dir, seg), os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.Write(junk)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		check(t, dir, int64(tail.n/2+len(junk)))
	}
}

func flip(t testing.TB, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	b[off] ^= 0x5a
	require.NoError(t, os.WriteFile(path, b, 0o640))
}

// Damage inside the log (bit rot, a bad flash page) must not make Open fail
// nor cost more than the readings in the damaged bytes: Open skips them,
// counts them once, and keeps the rest.
func TestDamageInTheMiddleIsSkippedCountedOnceAndTheRestKept(t *testing.T) {
	base := tempDir(t)
	o := Options{SyncEvery: -1, SegmentBytes: 2048, bootID: bootFn(1)}
	s := openT(t, base, o)
	want := map[uint64]string{} // unacked readings by id
	for i := 0; i < 40; i++ {
		st := []string{"env", "gps"}[i%2]
		rec, err := s.Append(st, payloadFor(st, time.Now(), nil))
		require.NoError(t, err)
		want[rec.ID] = rec.Stream + string(rec.Payload)
		if i%5 == 0 {
			require.NoError(t, s.Ack(rec.ID))
			delete(want, rec.ID)
		}
		if i%10 == 0 {
			require.NoError(t, s.Sync()) // acks and snapshots in between
		}
	}
	require.NoError(t, s.Close())
	segs := segmentPaths(t, base)
	require.GreaterOrEqual(t, len(segs), 2)

	tried := 0
	for si, path := range segs {
		recs := records(t, path)
		for ri, r := range recs {
			if si == len(segs)-1 && ri == len(recs)-1 {
				continue // the very last record is a tail: the other test
			}
			for _, at := range []int{r.n / 3, r.n - 1} {
				tried++
				dir := copyDir(t, base)
				flip(t, filepath.Join(dir, filepath.Base(path)), r.off+at)
				lost := 0
				if _, ok := want[r.id]; r.typ == recData && ok {
					lost = 1
				}
				s := openT(t, dir, o)
				rec := s.Recovery()
				require.Equal(t, 1, rec.CorruptRegions, "segment %d record %d (type %d) byte %d", si, ri, r.typ, at)
				require.Equal(t, uint64(lost), rec.CorruptReadings, "segment %d record %d (type %d)", si, ri, r.typ)
				got := map[uint64]string{}
				for _, x := range drain(t, s) {
					got[x.ID] = x.Stream + string(x.Payload)
				}
				for id, p := range want {
					if r.typ == recData && id == r.id {
						continue
					}
					require.Equal(t, p, got[id], "reading %d kept (damage in segment %d record %d type %d)", id, si, ri, r.typ)
				}
				if r.typ != recAck { // a lost ack may bring acked readings back: at least once
					require.Len(t, got, len(want)-lost)
				}
				drops := s.Stats().Drops
				require.Equal(t, uint64(lost), drops.Corrupt)
				require.NoError(t, s.Close())

				s = openT(t, dir, o) // the same damage is not counted twice
				require.Zero(t, s.Recovery().CorruptRegions)
				require.Equal(t, drops, s.Stats().Drops)
				require.NoError(t, s.Close())
				quarantined, err := filepath.Glob(filepath.Join(dir, "quarantine", "*.bad"))
				require.NoError(t, err)
				require.Len(t, quarantined, 1, "the damaged bytes are kept aside")
			}
		}
	}
	require.Greater(t, tried, 80)
}
