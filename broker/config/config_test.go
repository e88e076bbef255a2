package config

import (
	"bytes"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// env turns a map into a getenv.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "broker.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

const refusedNonDemo = "without --demo nobody may connect unless --users names the users file (create it with `broker user add --users FILE ...`); or run with --demo on a loopback address"

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		desc string
		args []string
		want string
	}{
		{"listen is not HOST:PORT", []string{"--data", "d", "--demo", "--listen", "foo"}, `--listen "foo": want HOST:PORT, e.g. 127.0.0.1:1883 or [::1]:1883`},
		{"listen without port", []string{"--data", "d", "--demo", "--listen", "127.0.0.1"}, `--listen "127.0.0.1": want HOST:PORT`},
		{"listen with unbracketed IPv6", []string{"--data", "d", "--demo", "--listen", "::1:1883"}, `--listen "::1:1883": want HOST:PORT`},
		{"listen with empty port", []string{"--data", "d", "--demo", "--listen", "127.0.0.1:"}, `--listen "127.0.0.1:": the port is missing`},
		{"listen with port name", []string{"--data", "d", "--demo", "--listen", "127.0.0.1:mqtt"}, `--listen "127.0.0.1:mqtt": port "mqtt" is not a number from 0 to 65535`},
		{"listen with negative port", []string{"--data", "d", "--demo", "--listen", "127.0.0.1:-1"}, `port "-1" is not a number from 0 to 65535`},
		{"port out of range", []string{"--data", "d", "--demo", "--listen", "127.0.0.1:70000"}, `--listen "127.0.0.1:70000": port 70000 is out of range 0-65535`},
		{"data missing", []string{"--demo"}, "--data is required"},
		{"data blank", []string{"--demo", "--data", " "}, "--data is required"},
		{"demo on every IPv4 interface", []string{"--data", "d", "--demo", "--listen", "0.0.0.0:1883"},
			"--demo allows anonymous clients and is accepted only on a loopback address; --listen is 0.0.0.0:1883"},
		{"demo with empty host", []string{"--data", "d", "--demo", "--listen", ":1883"},
			"--demo allows anonymous clients and is accepted only on a loopback address; --listen is :1883"},
		{"demo on every IPv6 interface", []string{"--data", "d", "--demo", "--listen", "[::]:1883"}, "accepted only on a loopback address; --listen is [::]:1883"},
		{"demo on a LAN IP", []string{"--data", "d", "--demo", "--listen", "192.168.1.10:1883"}, "accepted only on a loopback address; --listen is 192.168.1.10:1883"},
		{"demo on a host name", []string{"--data", "d", "--demo", "--listen", "broker.farm.lan:1883"}, "accepted only on a loopback address"},
		{"no demo", []string{"--data", "d"}, refusedNonDemo},
		{"no demo, even on loopback", []string{"--data", "d", "--listen", "127.0.0.1:1883"}, refusedNonDemo},
		{"bad log level", []string{"--data", "d", "--demo", "--log-level", "verbose"}, `invalid value "verbose" for flag -log-level: want debug, info, warn or error`},
		{"bad bool", []string{"--data", "d", "--demo=maybe"}, `invalid boolean value "maybe" for -demo`},
		{"unknown flag", []string{"--data", "d", "--demo", "--tls-certificate", "c.pem"}, "flag provided but not defined: -tls-certificate"},
		{"tls cert without listener", []string{"--data", "d", "--demo", "--tls-cert", "c.pem"}, "--tls-cert is set without --tls-listen"},
		{"tls listener without cert", []string{"--data", "d", "--users", "u.yaml", "--tls-listen", ":8883", "--tls-key", "k.pem"}, "--tls-listen needs --tls-cert"},
		{"tls listener without key", []string{"--data", "d", "--users", "u.yaml", "--tls-listen", ":8883", "--tls-cert", "c.pem"}, "--tls-listen needs --tls-key"},
		{"tls listener bad address", []string{"--data", "d", "--users", "u.yaml", "--tls-listen", "8883", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, `--tls-listen "8883": want HOST:PORT`},
		{"demo with tls off loopback", []string{"--data", "d", "--demo", "--tls-listen", ":8883", "--tls-cert", "c.pem", "--tls-key", "k.pem"},
			"accepted only on a loopback address; --tls-listen is :8883"},
		{"packet size too small", []string{"--data", "d", "--demo", "--max-packet-size", "8"}, "want a whole number from 16 to 268435456"},
		{"max clients zero", []string{"--data", "d", "--demo", "--max-clients", "0"}, "want a whole number from 1"},
		{"inflight too large", []string{"--data", "d", "--demo", "--max-inflight", "70000"}, "want a whole number from 16 to 65535"},
		{"keepalive fraction", []string{"--data", "d", "--demo", "--max-keepalive", "1500ms"}, "whole seconds"},
		{"keepalive too long", []string{"--data", "d", "--demo", "--max-keepalive", "24h"}, "whole seconds from 5s"},
		{"demo with users", []string{"--data", "d", "--demo", "--users", "u.yaml"}, "--demo and --users exclude each other: demo mode lets anonymous clients publish and subscribe to anything, which would void the users' ACL; drop --demo to enforce the users file"},
		{"demo with users off loopback", []string{"--data", "d", "--demo", "--users", "u.yaml", "--listen", ":1883"}, "--demo and --users exclude each other"},
		{"blank users", []string{"--data", "d", "--users", " "}, refusedNonDemo},
		{"bad prefix", []string{"--data", "d", "--users", "u.yaml", "--prefix", "Sensor/Farm"}, `--prefix "Sensor/Farm" has 'S' at byte 0`},
		{"empty prefix", []string{"--data", "d", "--users", "u.yaml", "--prefix", ""}, "--prefix is empty"},
		{"positional argument", []string{"--data", "d", "--demo", "serve"}, `unexpected argument "serve"`},
		{"missing config file", []string{"--data", "d", "--demo", "--config", "/nonexistent/broker.yaml"}, "config file"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Load(tc.args, env(nil))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load([]string{"--listen", "127.0.0.1:99999"}, env(nil))
	require.ErrorContains(t, err, "out of range")
	require.ErrorContains(t, err, "--data is required")
	require.ErrorContains(t, err, refusedNonDemo)
}

func TestDemoOnLoopbackAccepted(t *testing.T) {
	for _, listen := range []string{
		"127.0.0.1:1883",
		"127.0.0.1:0",
		"127.1.2.3:1883",
		"[::1]:1883",
		"localhost:1883",
		"LocalHost:1883",
		"[::ffff:127.0.0.1]:1883",
	} {
		t.Run(listen, func(t *testing.T) {
			c, err := Load([]string{"--demo", "--data", "d", "--listen", listen}, env(nil))
			require.NoError(t, err)
			require.Equal(t, listen, c.Listen)
			require.True(t, c.Demo)
		})
	}
}

// With a users file the broker may listen anywhere: clients must log in.
func TestUsersAccepted(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:1883", "0.0.0.0:1883", ":1883", "[::]:8883", "broker.farm.lan:1883"} {
		t.Run(listen, func(t *testing.T) {
			c, err := Load([]string{"--users", "/etc/sensorfarm/users.yaml", "--data", "d", "--listen", listen}, env(nil))
			require.NoError(t, err)
			require.Equal(t, "/etc/sensorfarm/users.yaml", c.Users)
			require.False(t, c.Demo)
			require.Equal(t, "sensorfarm", c.Prefix)
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load([]string{"--demo", "--data", "/var/lib/broker"}, env(nil))
	require.NoError(t, err)
	require.Equal(t, Config{
		Listen:       DefaultListen,
		DataDir:      "/var/lib/broker",
		Demo:         true,
		OpsListen:    DefaultOpsListen,
		Prefix:       "sensorfarm",
		StoreSync:    true,
		LogLevel:     slog.LevelInfo,
		Limits:       DefaultLimits(),
		Durability:   DefaultDurability(),
		DrainTimeout: DefaultDrainTimeout,
	}, c)
	require.Equal(t, "127.0.0.1:1883", DefaultListen)
	require.Equal(t, "127.0.0.1:9883", DefaultOpsListen)
}

func TestLogLevels(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"WARNING": slog.LevelWarn, "Error": slog.LevelError,
	} {
		c, err := Load([]string{"--demo", "--data", "d", "--log-level", in}, env(nil))
		require.NoError(t, err, in)
		require.Equal(t, want, c.LogLevel, in)
	}
}

func TestEnvironment(t *testing.T) {
	c, err := Load(nil, env(map[string]string{
		"SENSORFARM_LISTEN":     "127.0.0.1:11883",
		"SENSORFARM_DATA":       "/data",
		"SENSORFARM_DEMO":       "true",
		"SENSORFARM_STORE_SYNC": "false",
		"SENSORFARM_LOG_LEVEL":  "debug",
		"SENSORFARM_OPS_LISTEN": ":9883",
	}))
	require.NoError(t, err)
	require.Equal(t, Config{Listen: "127.0.0.1:11883", DataDir: "/data", Demo: true, OpsListen: ":9883", Prefix: "sensorfarm", StoreSync: false, LogLevel: slog.LevelDebug, Limits: DefaultLimits(), Durability: DefaultDurability(), DrainTimeout: DefaultDrainTimeout}, c)

	c, err = Load(nil, env(map[string]string{
		"SENSORFARM_LISTEN": ":1883",
		"SENSORFARM_DATA":   "/data",
		"SENSORFARM_USERS":  "/etc/sensorfarm/users.yaml",
		"SENSORFARM_PREFIX": "farmx",
	}))
	require.NoError(t, err)
	require.Equal(t, "/etc/sensorfarm/users.yaml", c.Users)
	require.Equal(t, "farmx", c.Prefix)

	_, err = Load([]string{"--data", "d", "--demo"}, env(map[string]string{"SENSORFARM_LISTEN": "0.0.0.0:1883"}))
	require.ErrorContains(t, err, "--listen is 0.0.0.0:1883", "a value from the environment is validated too")

	_, err = Load([]string{"--data", "d", "--demo"}, env(map[string]string{"SENSORFARM_STORE_SYNC": "sometimes"}))
	require.ErrorContains(t, err, `SENSORFARM_STORE_SYNC="sometimes"`)
}

func TestConfigFile(t *testing.T) {
	p := writeFile(t, "listen: 127.0.0.1:21883\ndata: /srv/broker\ndemo: true\nstore-sync: false\nlog-level: warn\nops-listen: \"\"\n")
	c, err := Load([]string{"--config", p}, env(nil))
	require.NoError(t, err)
	require.Equal(t, Config{Listen: "127.0.0.1:21883", DataDir: "/srv/broker", Demo: true, Prefix: "sensorfarm", StoreSync: false,
		LogLevel: slog.LevelWarn, ConfigFile: p, Limits: DefaultLimits(), Durability: DefaultDurability(), DrainTimeout: DefaultDrainTimeout}, c)

	prod := writeFile(t, "listen: 0.0.0.0:1883\ndata: /srv/broker\nusers: /etc/sensorfarm/users.yaml\nprefix: farmx\nops-listen: \":9883\"\n")
	c, err = Load([]string{"--config", prod}, env(nil))
	require.NoError(t, err)
	require.Equal(t, Config{Listen: "0.0.0.0:1883", DataDir: "/srv/broker", Users: "/etc/sensorfarm/users.yaml", Prefix: "farmx", OpsListen: ":9883",
		StoreSync: true, LogLevel: slog.LevelInfo, ConfigFile: prod, Limits: DefaultLimits(), Durability: DefaultDurability(), DrainTimeout: DefaultDrainTimeout}, c)

	// The file may also be named by the environment.
	c, err = Load(nil, env(map[string]string{"SENSORFARM_CONFIG": p}))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:21883", c.Listen)
}

func TestConfigFileUnknownKey(t *testing.T) {
	p := writeFile(t, "data: d\ndemo: true\nacl: acl.yaml\n")
	_, err := Load([]string{"--config", p}, env(nil))
	require.ErrorContains(t, err, `config file `+p+`: unknown setting "acl"`)
}

func TestPrecedence(t *testing.T) {
	p := writeFile(t, "listen: 127.0.0.1:3\ndata: from-file\ndemo: true\n")
	e := env(map[string]string{"SENSORFARM_LISTEN": "127.0.0.1:2", "SENSORFARM_DATA": "from-env"})

	c, err := Load([]string{"--config", p, "--listen", "127.0.0.1:1"}, e)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:1", c.Listen, "flag beats env and file")
	require.Equal(t, "from-env", c.DataDir, "env beats file")
	require.True(t, c.Demo, "file fills what is left")

	c, err = Load([]string{"--config", p}, e)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:2", c.Listen, "env beats file")

	c, err = Load([]string{"--config", p}, env(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:3", c.Listen)
}

func TestVersion(t *testing.T) {
	c, err := Load([]string{"--version"}, env(nil))
	require.NoError(t, err)
	require.Equal(t, Config{Version: true}, c, "--version needs no other setting")

	c, err = Load([]string{"--version"}, env(map[string]string{"SENSORFARM_DEMO": "maybe", "SENSORFARM_CONFIG": "/nonexistent"}))
	require.NoError(t, err, "--version works whatever the environment holds")
	require.True(t, c.Version)

	// SENSORFARM_VERSION is not read: it is no setting, and a deployment may
	// use the name for something else.
	c, err = Load([]string{"--demo", "--data", "d"}, env(map[string]string{"SENSORFARM_VERSION": "v1.2.3"}))
	require.NoError(t, err)
	require.False(t, c.Version)

	p := writeFile(t, "data: d\ndemo: true\nversion: true\n")
	_, err = Load([]string{"--config", p}, env(nil))
	require.ErrorContains(t, err, `unknown setting "version"`)
}

func TestHelp(t *testing.T) {
	_, err := Load([]string{"-h"}, env(nil))
	require.ErrorIs(t, err, flag.ErrHelp)

	var b bytes.Buffer
	Usage(&b)
	for _, f := range []string{"-listen", "-data", "-demo", "-users", "-prefix", "-store-sync", "-log-level", "-config", "-version",
		"SENSORFARM_", `"127.0.0.1:1883"`, `"sensorfarm"`, "broker user add|del|list"} {
		require.Contains(t, b.String(), f)
	}
}
