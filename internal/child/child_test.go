package child

import (
	"os/exec"
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

func TestStartReportsAMissingProgram(t *testing.T) {
	_, err := Start(exec.Command("/nonexistent/program"))
	require.ErrorContains(t, err, "start /nonexistent/program")
}
