package cliconf

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

type settings struct {
	listen  string
	demo    bool
	size    int
	version bool
}

func newSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String(ConfigFlag, "", "")
	fs.StringVar(&s.listen, "listen", "default", "")
	fs.BoolVar(&s.demo, "demo", false, "")
	fs.IntVar(&s.size, "max-size", 1, "")
	fs.BoolVar(&s.version, VersionFlag, false, "")
	return fs
}

func TestEnvName(t *testing.T) {
	require.Equal(t, "SENSORFARM_I2C_BUS", EnvName("i2c-bus"))
	require.Equal(t, "SENSORFARM_LISTEN", EnvName("listen"))
}

func TestParsePrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(file, []byte("listen: file\ndemo: true\nmax-size: 1000000\n"), 0o600))
	tt := []struct {
		desc string
		args []string
		env  map[string]string
		want settings
	}{
		{"defaults", nil, nil, settings{"default", false, 1, false}},
		{"file", []string{"--config", file}, nil, settings{"file", true, 1000000, false}},
		{"file named by env", nil, map[string]string{"SENSORFARM_CONFIG": file}, settings{"file", true, 1000000, false}},
		{"env beats file", []string{"--config", file}, map[string]string{"SENSORFARM_LISTEN": "env", "SENSORFARM_DEMO": "false"}, settings{"env", false, 1000000, false}},
		{"version only from the command line", nil, map[string]string{"SENSORFARM_VERSION": "1.2.3"}, settings{"default", false, 1, false}},
		{"flag beats env", []string{"--config", file, "--listen", "flag"}, map[string]string{"SENSORFARM_LISTEN": "env"}, settings{"flag", true, 1000000, false}},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			var s settings
			err := Parse(newSet(&s), tc.args, func(k string) string { return tc.env[k] })
			require.NoError(t, err)
			require.Equal(t, tc.want, s)
		})
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	tt := []struct {
		desc string
		args []string
		env  map[string]string
		want string
	}{
		{"bad env value", nil, map[string]string{"SENSORFARM_MAX_SIZE": "big"}, `SENSORFARM_MAX_SIZE="big"`},
		{"unknown file key", []string{"--config", write("u.yaml", "lisen: x\n")}, nil, `unknown setting "lisen"`},
		{"version in a file", []string{"--config", write("v.yaml", "version: true\n")}, nil, `unknown setting "version"`},
		{"config inside config", []string{"--config", write("c.yaml", "config: other.yaml\n")}, nil, `unknown setting "config"`},
		{"bad file value", []string{"--config", write("b.yaml", "max-size: many\n")}, nil, `max-size: "many"`},
		{"nested value", []string{"--config", write("n.yaml", "listen: [a, b]\n")}, nil, "want a single value"},
		{"not a mapping", []string{"--config", write("l.yaml", "- a\n- b\n")}, nil, "not a YAML mapping"},
		{"missing file", []string{"--config", filepath.Join(dir, "none")}, nil, "no such file"},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			var s settings
			err := Parse(newSet(&s), tc.args, func(k string) string { return tc.env[k] })
			require.ErrorContains(t, err, tc.want)
		})
	}
}
