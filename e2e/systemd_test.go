package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// TestSystemdUnitCommandLine runs the ExecStart of
// systemd/sensorfarm-bridge.service as systemd would: the specifiers
// resolved (%S the state directory's parent, %d the credentials
// directory, holding the LoadCredential file), the environment from
// systemd/bridge.env, the binary at bin/bridge, and SENSORFARM_BROKER and
// SENSORFARM_SIM set for this machine as a user would set them in that
// file. The readings must reach our broker as the unit's user, and
// KillSignal must stop the bridge cleanly within TimeoutStopSec.
// (systemd/systemd_test.go checks the unit with systemd-analyze.)
func TestSystemdUnitCommandLine(t *testing.T) {
	need(t, "mosquitto_sub")
	unit := readUnit(t, filepath.Join(repoRoot(), "systemd", "sensorfarm-bridge.service"))
	env := readEnvFile(t, filepath.Join(repoRoot(), "systemd", "bridge.env"))
	site, node := env["SENSORFARM_SITE"], env["SENSORFARM_NODE"]
	bridgeUser := account{name: env["SENSORFARM_USERNAME"], password: "unit-pw", role: "bridge", site: site, node: node}
	reader := account{name: "grafana", password: "grafana-pw", role: "reader"}
	users := filepath.Join(t.TempDir(), "users.yaml")
	userAdd(t, users, bridgeUser)
	userAdd(t, users, reader)
	_, addr := startBrokerWithUsers(t, users)
	env["SENSORFARM_BROKER"] = "tcp://" + addr
	env["SENSORFARM_SIM"] = "true"
	env["PATH"] = os.Getenv("PATH")

	// LoadCredential=NAME:PATH: systemd copies PATH into %d/NAME.
	name, _, ok := strings.Cut(unit["LoadCredential"], ":")
	require.True(t, ok, "LoadCredential=%s", unit["LoadCredential"])
	creds, state := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(creds, name), []byte(bridgeUser.password+"\n"), 0o400))
	cmdline := strings.NewReplacer("%S", state, "%d", creds).Replace(unit["ExecStart"])
	argv := strings.Fields(cmdline)
	require.Equal(t, "/usr/local/bin/bridge", argv[0])
	argv[0] = filepath.Join(bin, "bridge")
	envv := []string{"env", "-i"}
	for k, v := range env {
		envv = append(envv, k+"="+v)
	}

	wn := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: node}
	watch := subscribe(t, addr, append(mqttArgs(addr, reader, "unit-reader"), "-t", wn.Root()+"/#")...)
	bridge := start(t, "bridge (the unit's ExecStart)", append(envv, argv...)...)
	require.Equal(t, wire.StatusOnline, watch.next(wn.Status(), 30*time.Second).Payload)
	checkEnv(t, watch.next(wn.Live(wire.StreamEnv), 30*time.Second).Payload, site, node)
	require.DirExists(t, filepath.Join(state, "sensorfarm"), "the spool in the StateDirectory")

	require.Equal(t, "SIGTERM", unit["KillSignal"])
	limit, err := time.ParseDuration(unit["TimeoutStopSec"])
	require.NoError(t, err)
	require.NoError(t, bridge.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, bridge.exited(limit))
	require.Equal(t, wire.StatusOffline, watch.next(wn.Status(), 5*time.Second).Payload)
}

// readUnit reads the last value of each key of a unit file.
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, "%s: %q", path, line)
		kv[k] = v
	}
	require.NoError(t, sc.Err())
	return kv
}

// readEnvFile reads KEY=VALUE lines, as systemd's EnvironmentFile= does for
// lines without quotes.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	kv := readUnit(t, path)
	require.NotEmpty(t, kv)
	return kv
}
