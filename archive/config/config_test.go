package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte("secret\nignored\n"), 0o600))
	file := filepath.Join(dir, "archive.yaml")
	require.NoError(t, os.WriteFile(file, []byte("db: /srv/archive.db\nbatch-size: 100\nusername: archive\npassword-file: "+pw+"\n"), 0o600))
	env := map[string]string{"SENSORFARM_BATCH_SIZE": "200", "SENSORFARM_RETENTION": "8760h"}
	c, err := Load([]string{"--config", file, "--broker", "mqtts://broker.example:8883"}, func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, "/srv/archive.db", c.DB)
	require.Equal(t, 200, c.BatchSize, "the environment beats the file")
	require.Equal(t, "secret", c.Password)
	require.Equal(t, 8760*time.Hour, c.Retention)
	require.Equal(t, "archive", c.ClientID)
}

func TestLoadRefusesBadSettings(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--broker", "http://x:1"}, "--broker"},
		{[]string{"--client-id", "bridge:s:n"}, "--client-id"},
		{[]string{"--db", "mysql://x/y"}, "--db"},
		{[]string{"--db", ""}, "--db is empty"},
		{[]string{"--batch-size", "0"}, "--batch-size"},
		{[]string{"--max-pending", "10"}, "--max-pending"},
		{[]string{"--max-payload", "10"}, "--max-payload"},
		{[]string{"--retention", "10m"}, "--retention"},
		{[]string{"--retention", "24h", "--downsample-after", "48h"}, "--downsample-after"},
		{[]string{"--username", "u"}, "without --password-file"},
		{[]string{"--ca-file", "x.pem"}, "--ca-file"},
		{[]string{"--prefix", "A"}, "--prefix"},
		{[]string{"--ops-listen", "nope"}, "--ops-listen"},
	} {
		_, err := Load(tc.args, noEnv)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}
