package spool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSeqCountsPerStreamAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSeq(dir)
	require.NoError(t, err)
	for want := uint64(1); want <= 3; want++ {
		got, err := s.Next("env")
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	got, err := s.Next("gps")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got, "each stream counts on its own")

	s, err = OpenSeq(dir)
	require.NoError(t, err)
	got, err = s.Next("env")
	require.NoError(t, err)
	require.Equal(t, uint64(4), got, "a reopened counter goes on where it stopped")
}

func TestSeqRefusesCorruptState(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, seqFile), []byte("{not json"), 0o600))
	_, err := OpenSeq(dir)
	require.ErrorContains(t, err, "corrupt")
}

func TestSeqDoesNotHandOutANumberItCouldNotSave(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSeq(dir)
	require.NoError(t, err)
	// A directory where the temporary file must go makes every save fail.
	require.NoError(t, os.Mkdir(filepath.Join(dir, seqFile+".tmp"), 0o700))
	_, err = s.Next("env")
	require.Error(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, seqFile+".tmp")))
	got, err := s.Next("env")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got, "a failed save must not use up the number")
}
