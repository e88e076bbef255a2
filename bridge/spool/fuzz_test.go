package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzOpenCorrupt opens spools whose two segment files are damaged in every
// way the fuzzer finds. Open must succeed, replay must yield well-formed
// readings in order, the next seq must follow the last one known, and a
// second Open must find nothing new to count.
func FuzzOpenCorrupt(f *testing.F) {
	dir := f.TempDir()
	o := Options{SyncEvery: -1, SegmentBytes: 1024, MaxBytes: 1 << 20, bootID: bootFn(1)}
	s, err := Open(dir, &o)
	require.NoError(f, err)
	for i := 0; i < 24; i++ {
		st := []string{"env", "gps"}[i%2]
		rec, err := s.Append(st, payloadFor(st, crashTime, nil))
		require.NoError(f, err)
		if i%3 == 0 {
			require.NoError(f, s.Ack(rec.ID))
		}
		if i%7 == 0 {
			require.NoError(f, s.Sync())
		}
	}
	abandon(s)
	paths := segmentPaths(f, dir)
	require.GreaterOrEqual(f, len(paths), 2)
	var files [2][]byte
	var names [2]string
	for i, p := range paths[:2] {
		files[i], err = os.ReadFile(p)
		require.NoError(f, err)
		names[i] = filepath.Base(p)
	}
	a, b := files[0], files[1]
	f.Add(a, b)
	f.Add(a[:len(a)/2], b)
	f.Add(a, b[:len(b)-3])
	f.Add(bytes.Repeat([]byte{0}, 64), b)
	f.Add(append(append([]byte{}, a[:100]...), a[140:]...), append(append([]byte{}, b...), b...))

	f.Fuzz(func(t *testing.T, a, b []byte) {
		dir := tempDir(t)
		t.Cleanup(func() {
			if t.Failed() {
				t.Log(dumpDir(dir))
			}
		})
		require.NoError(t, os.WriteFile(filepath.Join(dir, names[0]), a, 0o640))
		require.NoError(t, os.WriteFile(filepath.Join(dir, names[1]), b, 0o640))
		s, err := Open(dir, &o)
		require.NoError(t, err)
		rs := drain(t, s)
		last := map[string]uint64{}
		for i, r := range rs {
			if i > 0 {
				require.Greater(t, r.ID, rs[i-1].ID)
			}
			require.Greater(t, r.Seq, last[r.Stream], "each stream in seq order")
			last[r.Stream] = r.Seq
		}
		for st, q := range last {
			require.GreaterOrEqual(t, s.LastSeq(st), q)
			if s.LastSeq(st) == MaxSeq {
				continue
			}
			rec, err := s.Append(st, payloadFor("env", crashTime, nil))
			require.NoError(t, err)
			require.Equal(t, s.LastSeq(st), rec.Seq)
			require.Greater(t, rec.Seq, q)
			rs = append(rs, rec)
		}
		drops := s.Stats().Drops
		require.NoError(t, s.Close())

		s, err = Open(dir, &o)
		require.NoError(t, err)
		defer s.Close()
		require.Zero(t, s.Recovery().CorruptRegions, "damage is counted once")
		require.Equal(t, drops, s.Stats().Drops)
		again := drain(t, s)
		require.Len(t, again, len(rs))
		for i := range again {
			require.Equal(t, rs[i].ID, again[i].ID)
			require.Equal(t, rs[i].Payload, again[i].Payload)
		}
	})
}

// FuzzDeltaRoundTrip checks that any payload survives the delta codec
// against any reference, and that decoding arbitrary bytes never panics.
func FuzzDeltaRoundTrip(f *testing.F) {
	r1 := reading("gps", 1, crashTime)
	f.Add(r1, reading("gps", 2, crashTime.Add(time.Second)))
	f.Add(reading("env", 1, crashTime), reading("env", 99, crashTime))
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), []byte("aaaa"))
	f.Fuzz(func(t *testing.T, ref, src []byte) {
		if len(ref) < minMatch || len(ref) > maxRef {
			return
		}
		enc := encodeDelta(nil, src, newRefIndex(ref))
		dec, err := decodeDelta(nil, enc, ref, len(src))
		require.NoError(t, err)
		require.Equal(t, string(src), string(dec))
		_, _ = decodeDelta(nil, src, ref, MaxPayload) // garbage in: an error, no panic
	})
}
