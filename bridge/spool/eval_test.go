package spool

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tidwall/wal"
)

// What the evaluation found about tidwall/wal's crash safety, kept as a
// test so that a new version that changes it is noticed: it has no
// checksums, so a torn last entry makes Open fail (the log cannot be opened
// at all until someone repairs it by hand) and a flipped byte inside an
// entry comes back as data.
func TestEvalWalTornTailAndBitRot(t *testing.T) {
	dir := t.TempDir()
	s := &walStore{every: 60}
	require.NoError(t, outage(s, dir, 10, 60))
	segs, err := filepath.Glob(filepath.Join(dir, "0*"))
	require.NoError(t, err)
	require.Len(t, segs, 1)
	b, err := os.ReadFile(segs[0])
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(segs[0], b[:len(b)-7], 0o640)) // torn
	_, err = wal.Open(dir, s.options())
	require.ErrorIs(t, err, wal.ErrCorrupt, "a torn tail makes the whole log unopenable")

	rot := append([]byte(nil), b...)
	rot[len(rot)-20] ^= 0x01 // inside the last entry's payload
	require.NoError(t, os.WriteFile(segs[0], rot, 0o640))
	var got [][]byte
	require.NoError(t, s.replay(dir, func(p []byte) { got = append(got, p) }))
	require.Len(t, got, 10)
	want := reading("gps", 5, crashTime.Add(4*time.Second)) // what outage wrote last
	require.Len(t, got[9], len(want))
	require.NotEqual(t, string(want), string(got[9]), "damaged data is returned as if intact")
}
