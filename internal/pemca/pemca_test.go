package pemca

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadRefusesWhatIsNotPEM(t *testing.T) {
	f := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(f, []byte("not a certificate"), 0o600))
	_, err := Load(f)
	require.ErrorContains(t, err, "holds no PEM certificate")
	_, err = Load(filepath.Join(t.TempDir(), "missing.pem"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
