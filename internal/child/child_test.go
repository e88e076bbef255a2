package child

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestStopEndsAProcessThatTakesSIGTERM(t *testing.T) {
	p, err := Start(exec.Command("sleep", "30"))
	require.NoError(t, err)
	require.True(t, p.Running())
	p.Stop(5 * time.Second)
	require.False(t, p.Running())
	require.ErrorContains(t, p.Err(), "signal: terminated")
}

func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "trap '' TERM; while :; do :; done")) // no child of its own to orphan
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // the trap is set
	start := time.Now()
	p.Stop(300 * time.Millisecond)
	require.False(t, p.Running())
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "it waited the grace period")
	require.ErrorContains(t, p.Err(), "signal: killed")
}

// A process started again appends to its log.
func TestStartLogged(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	for _, word := range []string{"first", "second"} {
		p, err := StartLogged(exec.Command("sh", "-c", "echo "+word+"; echo "+word+" >&2"), log)
		require.NoError(t, err)
		<-p.Done()
		require.NoError(t, p.Err())
	}
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	require.Equal(t, "first\nfirst\nsecond\nsecond\n", string(b))
	_, err = StartLogged(exec.Command("true"), filepath.Join(t.TempDir(), "missing", "log"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestStartReportsAMissingProgram(t *testing.T) {
	_, err := Start(exec.Command("/nonexistent/program"))
	require.ErrorContains(t, err, "start /nonexistent/program")
}
