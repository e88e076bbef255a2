package usercmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

func TestNATSSubjects(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{"homeassistant/status", []string{"homeassistant.status"}},
		{"farm/f1/n1/#", []string{"farm.f1.n1", "farm.f1.n1.>"}},
		{"homeassistant/+/farm_f1_n1/#", []string{"homeassistant.*.farm_f1_n1", "homeassistant.*.farm_f1_n1.>"}},
		{"#", []string{">"}},
		{"$SYS/#", nil},
	} {
		got, err := natsSubjects([]string{tc.filter})
		require.NoError(t, err, tc.filter)
		require.Equal(t, tc.want, got, tc.filter)
	}
	for _, bad := range []string{"a.b/c", "a//b", "a/b c", "a/#/b", "a/b*"} {
		_, err := natsSubjects([]string{bad})
		require.ErrorContains(t, err, "has no plain NATS subject", bad)
	}
}

// TestExportNATS writes the export and reads it back with nats-server's own
// configuration parser (v2.15.2, the version bin/nats-server is): the hashes
// arrive unchanged, and each role's permissions are the subjects it needs.
// e2e/nats_test.go runs a real cluster on the same output.
func TestExportNATS(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	require.Equal(t, 0, add(t, users, "node1-pw", "--role", "bridge", "--site", "farm1", "--node", "node1", "farm1-node1").code)
	require.Equal(t, 0, add(t, users, "grafana-pw", "--role", "reader", "grafana").code)
	require.Equal(t, 0, add(t, users, "hass-pw", "--role", "homeassistant", "hass").code)
	require.Equal(t, 0, add(t, users, "root-pw", "--role", "admin", "root").code)

	out := filepath.Join(dir, "nats")
	r := run(t, "", nil, "export", "--users", users, "--format", "nats", "--out", out, "--prefix", "farm")
	require.Equal(t, 0, r.code, r.stderr)
	file := filepath.Join(out, "users.conf")
	require.Contains(t, r.stdout, "wrote 4 users and their permissions to "+file)
	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the file holds password hashes")

	opts, err := natsserver.ProcessConfigFile(file)
	require.NoError(t, err, "nats-server parses the export")
	hashes := map[string]string{}
	written, err := read(users, false)
	require.NoError(t, err)
	for _, u := range written {
		hashes[u.Name] = u.PasswordHash
	}
	type perms struct{ pubAllow, pubDeny, subAllow, subDeny []string }
	want := map[string]*perms{
		"farm1-node1": {
			pubAllow: []string{"farm.farm1.node1.status", "farm.farm1.node1.health", "farm.farm1.node1.env", "farm.farm1.node1.env.*",
				"farm.farm1.node1.backlog.env", "farm.farm1.node1.gps", "farm.farm1.node1.gps.*", "farm.farm1.node1.backlog.gps",
				"homeassistant.*.farm_farm1_node1.*.config", "homeassistant.*.farm_farm1_node1.config"},
			subAllow: []string{"homeassistant.status"},
		},
		"grafana": {pubDeny: []string{">"}, subAllow: []string{"farm", "farm.>", "homeassistant", "homeassistant.>"}},
		"hass":    {pubAllow: []string{"homeassistant.status"}, subAllow: []string{"farm", "farm.>", "homeassistant", "homeassistant.>"}},
		"root":    nil,
	}
	require.Len(t, opts.Users, len(want))
	for _, u := range opts.Users {
		w, ok := want[u.Username]
		require.True(t, ok, u.Username)
		require.Equal(t, hashes[u.Username], u.Password, "%s: the users file's hash, unchanged", u.Username)
		if w == nil {
			require.Nil(t, u.Permissions, "an admin may do anything")
			require.Empty(t, u.AllowedConnectionTypes, "an admin may use NATS too")
			continue
		}
		require.Equal(t, map[string]struct{}{"MQTT": {}}, u.AllowedConnectionTypes, u.Username)
		p := u.Permissions
		require.NotNil(t, p, u.Username)
		got := perms{pubAllow: p.Publish.Allow, pubDeny: p.Publish.Deny, subAllow: p.Subscribe.Allow, subDeny: p.Subscribe.Deny}
		require.Equal(t, *w, got, u.Username)
	}

	t.Run("usage", func(t *testing.T) {
		r := run(t, "", nil, "export", "--users", users, "--format", "nats", "--passwords", users, "--prefix", "Farm")
		require.Equal(t, exitUsage, r.code)
		for _, w := range []string{"--passwords is for mosquitto", "--out DIR is required", "--prefix"} {
			require.Contains(t, r.stderr, w)
		}
	})
	t.Run("a broken users file writes nothing", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.yaml")
		data, err := os.ReadFile(users)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(string(data), "$2a$", "$9x$", 1)), 0o600))
		out := filepath.Join(t.TempDir(), "out")
		r := run(t, "", nil, "export", "--users", bad, "--format", "nats", "--out", out)
		require.Equal(t, exitError, r.code, r.stdout)
		require.Contains(t, r.stderr, "neither a bcrypt hash")
		require.NoDirExists(t, out)
	})
	t.Run("a generated token is refused, not written as a plain-text password", func(t *testing.T) {
		withToken := filepath.Join(t.TempDir(), "users.yaml")
		data, err := os.ReadFile(users)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(withToken, data, 0o600))
		require.Equal(t, 0, run(t, "", nil, "add", "--users", withToken, "--role", "bridge", "--site", "farm1", "--node", "node2", "--generate", "farm1-node2").code)
		out := filepath.Join(t.TempDir(), "out")
		r := run(t, "", nil, "export", "--users", withToken, "--format", "nats", "--out", out)
		require.Equal(t, exitError, r.code, r.stdout)
		require.Contains(t, r.stderr, "farm1-node2 have generated tokens")
		require.NoDirExists(t, out)
	})
}
