package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemo runs what `make demo` runs, bounded by --duration instead of Ctrl-C,
// and checks that three bridges' readings are shown, the mosquitto_sub command
// is printed, the archive kept every node's readings, and every process the
// demo started is gone afterwards.
func TestDemo(t *testing.T) {
	cmd := exec.Command(filepath.Join(bin, "demo"), "--bin", bin, "--dir", t.TempDir(), "--interval", "500ms", "--duration", "4s")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	text := string(out)
	require.Regexp(t, `mosquitto_sub -h 127\.0\.0\.1 -p \d+ -t 'sensorfarm/#' -v`, text)
	for _, node := range []string{"pizero-01", "pizero-02", "pizero-03"} {
		require.Regexp(t, `demo/`+node+` +env #\d+ +-?\d+\.\d\d °C +\d+\.\d %`, text)
		require.Regexp(t, `demo/`+node+` +is offline`, text, "a stopped bridge says so")
	}
	stopped := regexp.MustCompile(`stopped (\S+) \(pid (\d+)\)`).FindAllStringSubmatch(text, -1)
	require.Len(t, stopped, 5, "a broker, the archive and three bridges stopped: %s", text)
	// The archive's history, once everything stopped.
	require.Regexp(t, `archive export --db \S+archive\.db`, text)
	for _, node := range []string{"pizero-01", "pizero-02", "pizero-03"} {
		require.Regexp(t, `demo/`+node+` env +[1-9]\d* readings, last seq \d+, 0 missing`, text)
	}
	for _, m := range stopped {
		pid, _ := strconv.Atoi(m[2])
		p, _ := os.FindProcess(pid)
		require.ErrorIs(t, p.Signal(syscall.Signal(0)), os.ErrProcessDone, "%s (pid %d) is gone", m[1], pid)
	}
}
