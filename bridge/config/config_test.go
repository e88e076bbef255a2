package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func host(name string) func() (string, error) {
	return func() (string, error) { return name, nil }
}

func TestLoadDefaultsFromNomadAndHostname(t *testing.T) {
	c, err := Load([]string{"--spool", "/tmp/s"}, env(map[string]string{"NOMAD_DC": "rpi4"}), host("PiZero-01.farm.lan"))
	require.NoError(t, err)
	require.Equal(t, "sensorfarm", c.Node.Prefix)
	require.Equal(t, "rpi4", c.Node.Site)
	require.Equal(t, "pizero-01", c.Node.Node, "first label of the host name, lower-cased")
	require.Equal(t, uint16(0x76), c.BME280)
	require.Equal(t, 10*time.Second, c.Interval)
	require.Equal(t, "tcp://127.0.0.1:1883", c.Broker)
	require.True(t, c.GPS)
	require.Equal(t, pa1010d.DefaultOpts, c.GPSOpts)
}

func TestLoadSpool(t *testing.T) {
	c, err := Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--spool-max-bytes", "64KiB", "--spool-sync", "0"}, env(nil), host("h"))
	require.NoError(t, err)
	require.Equal(t, int64(64<<10), c.SpoolOpts.MaxBytes)
	require.Zero(t, c.SpoolOpts.SyncEvery)
	sp, err := spool.Open(t.TempDir(), &c.SpoolOpts)
	require.NoError(t, err, "the smallest cap the flag allows opens")
	require.NoError(t, sp.Close())

	_, err = Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--spool-max-bytes", "1MB"}, env(nil), host("h"))
	require.ErrorContains(t, err, `want a size such as 65536, 64KiB or 128MiB: "1MB"`)
	_, err = Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--spool-max-bytes", "1000"}, env(nil), host("h"))
	require.ErrorContains(t, err, "--spool-max-bytes 1000 is below the minimum of 64KiB")
}

func TestLoadGPS(t *testing.T) {
	c, err := Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--gps-sentences", "rmc,gga,gsa,zda",
		"--gps-interval", "200ms", "--gps-max-hdop", "2.5", "--gps-min-sats", "6", "--gps-not-before", "2000-01-01"}, env(nil), host("h"))
	require.NoError(t, err)
	require.Equal(t, pa1010d.RMC|pa1010d.GGA|pa1010d.GSA|pa1010d.ZDA, c.GPSOpts.Sentences)
	require.Equal(t, 200*time.Millisecond, c.GPSOpts.FixInterval)
	require.Equal(t, 2.5, c.GPSOpts.MaxHDOP)
	require.Equal(t, 6, c.GPSOpts.MinSats)
	require.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), c.GPSOpts.NotBefore)

	c, err = Load([]string{"--site", "s", "--node", "n", "--spool", "/x"}, env(map[string]string{"SENSORFARM_GPS": "false"}), host("h"))
	require.NoError(t, err)
	require.False(t, c.GPS, "a node without a GPS says so")
}

func TestLoadPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bridge.yaml")
	require.NoError(t, os.WriteFile(file, []byte("site: fromfile\nnode: fromfile\ninterval: 5s\nbme280-addr: 0x77\nspool: /var/lib/sf\n"), 0o600))
	getenv := env(map[string]string{"SENSORFARM_CONFIG": file, "SENSORFARM_NODE": "fromenv", "SENSORFARM_INTERVAL": "3s"})
	c, err := Load([]string{"--interval", "1s"}, getenv, host("h"))
	require.NoError(t, err)
	require.Equal(t, time.Second, c.Interval, "flag beats environment")
	require.Equal(t, "fromenv", c.Node.Node, "environment beats file")
	require.Equal(t, "fromfile", c.Node.Site, "file beats default")
	require.Equal(t, uint16(0x77), c.BME280, "YAML reads 0x77 as a number; it still means 0x77")
	require.Equal(t, "/var/lib/sf", c.Spool)
}

func TestLoadPassword(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	c, err := Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--username", "u", "--password-file", pw}, env(nil), host("h"))
	require.NoError(t, err)
	require.Equal(t, "s3cret", c.Password, "trailing newline is not part of the password")
}

func TestLoadRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(badFile, []byte("sight: typo\n"), 0o600))
	tt := []struct {
		desc string
		args []string
		env  map[string]string
		host string
		want string
	}{
		{"unknown broker scheme", []string{"--site", "s", "--broker", "wss://b:443"}, nil, "n", `scheme "wss" is not supported`},
		{"tls broker without port", []string{"--site", "s", "--broker", "mqtts://broker.farm"}, nil, "n", "want scheme://host:port"},
		{"ca file with a plain broker", []string{"--site", "s", "--ca-file", badFile}, nil, "n", "--ca-file is set but --broker"},
		{"ca file missing", []string{"--site", "s", "--broker", "mqtts://b:8883", "--ca-file", filepath.Join(dir, "nope.pem")}, nil, "n", "--ca-file: open"},
		{"ca file not PEM", []string{"--site", "s", "--broker", "mqtts://b:8883", "--ca-file", badFile}, nil, "n", "holds no PEM certificate"},
		{"empty node from an odd host name", []string{"--site", "s"}, nil, "", "--node is empty"},
		{"host name with a bad character", []string{"--site", "s"}, nil, "pi_zero#1", `--node "pi_zero#1" has '#'`},
		{"node too long", []string{"--site", "s", "--node", string(make([]byte, 65))}, nil, "h", "at most 64"},
		{"upper-case site", []string{"--site", "Farm", "--node", "n"}, nil, "h", `--site "Farm" has 'F'`},
		{"slash in prefix", []string{"--site", "s", "--node", "n", "--prefix", "a/b"}, nil, "h", `--prefix "a/b" has '/'`},
		{"no site and no NOMAD_DC", []string{"--node", "n"}, nil, "h", "--site is not set and $NOMAD_DC is empty"},
		{"address not a BME280's", []string{"--bme280-addr", "0x10"}, nil, "h", "0x10 is not a BME280 address"},
		{"address not a number", []string{"--bme280-addr", "seventy"}, nil, "h", `not a number: "seventy"`},
		{"interval too short", []string{"--site", "s", "--node", "n", "--interval", "1ms"}, nil, "h", "--interval 1ms is shorter than the minimum"},
		{"broker scheme", []string{"--site", "s", "--node", "n", "--broker", "ws://h:1"}, nil, "h", `scheme "ws" is not supported`},
		{"broker without port", []string{"--site", "s", "--node", "n", "--broker", "tcp://h"}, nil, "h", "want scheme://host:port"},
		{"broker list with a bad URL", []string{"--site", "s", "--node", "n", "--broker", "tcp://a:1,tcp://b"}, nil, "h", `"tcp://b": want scheme://host:port`},
		{"broker list with an empty entry", []string{"--site", "s", "--node", "n", "--broker", "tcp://a:1,,tcp://b:1"}, nil, "h", "an empty URL in the list"},
		{"broker listed twice", []string{"--site", "s", "--node", "n", "--broker", "tcp://a:1,mqtt://a:1"}, nil, "h", "a:1 is listed twice"},
		{"broker list mixing TLS and plain", []string{"--site", "s", "--node", "n", "--broker", "mqtts://a:8883,tcp://b:1883"}, nil, "h", "mixes TLS and plain URLs"},
		{"ca file with a plain broker list", []string{"--site", "s", "--node", "n", "--broker", "tcp://a:1,tcp://b:1", "--ca-file", badFile}, nil, "h", "--ca-file is set but --broker"},
		{"username alone", []string{"--site", "s", "--node", "n", "--username", "u"}, nil, "h", "--username is set without --password-file"},
		{"missing password file", []string{"--site", "s", "--node", "n", "--username", "u", "--password-file", filepath.Join(dir, "nope")}, nil, "h", "--password-file: open"},
		{"bad log level", []string{"--site", "s", "--node", "n", "--log-level", "loud"}, nil, "h", `invalid value "loud" for flag -log-level: want debug, info, warn or error`},
		{"bad environment value", []string{"--site", "s", "--node", "n"}, map[string]string{"SENSORFARM_SIM": "maybe"}, "h", `SENSORFARM_SIM="maybe"`},
		{"unknown key in file", []string{"--config", badFile}, nil, "h", `unknown setting "sight"`},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, nil, "h", "config file: open"},
		{"GPS sentences", []string{"--site", "s", "--node", "n", "--gps-sentences", "RMC,XXX"}, nil, "h", `unknown sentence "XXX"`},
		{"GPS without GGA", []string{"--site", "s", "--node", "n", "--gps-sentences", "RMC,GSA"}, nil, "h", "--gps-*: sentences must include RMC and GGA"},
		{"GPS interval", []string{"--site", "s", "--node", "n", "--gps-interval", "20s"}, nil, "h", "--gps-*: fix interval 20s is out of range"},
		{"GPS date", []string{"--site", "s", "--node", "n", "--gps-not-before", "2019"}, nil, "h", `want a date YYYY-MM-DD: "2019"`},
		{"HDOP zero", []string{"--site", "s", "--node", "n", "--gps-max-hdop", "0"}, nil, "h", "--gps-max-hdop 0: want more than 0"},
		{"sats zero", []string{"--site", "s", "--node", "n", "--gps-min-sats", "0"}, nil, "h", "--gps-min-sats 0: want at least 1"},
		{"replay without sim", []string{"--site", "s", "--node", "n", "--gps-replay", "x.log"}, nil, "h", "only apply with --sim"},
		{"replay missing", []string{"--site", "s", "--node", "n", "--sim", "--gps-replay", "/nonexistent.log"}, nil, "h", "--gps-replay: stat /nonexistent.log"},
		{"replay speed", []string{"--site", "s", "--node", "n", "--sim", "--gps-replay-speed", "0"}, nil, "h", "--gps-replay-speed 0 is out of range"},
		{"stray argument", []string{"--site", "s", "extra"}, nil, "h", `unexpected argument "extra"`},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			args := append([]string{"--spool", dir}, tc.args...)
			_, err := Load(args, env(tc.env), host(tc.host))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestLoadBrokerList: --broker takes a failover list, kept in order; the
// URLs share the TLS settings, the CA file read once.
func TestLoadBrokerList(t *testing.T) {
	c, err := Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--broker", "tcp://b1:1883, mqtt://b2:1883,tcp://10.0.0.3:1884"}, env(nil), host("h"))
	require.NoError(t, err)
	var got []string
	for _, u := range c.Brokers {
		got = append(got, u.String())
	}
	require.Equal(t, []string{"tcp://b1:1883", "mqtt://b2:1883", "tcp://10.0.0.3:1884"}, got)
	require.Nil(t, c.CAs, "no --ca-file: the system's roots")

	c, err = Load([]string{"--site", "s", "--node", "n", "--spool", "/x", "--broker", "tcp://b1:1883"}, env(nil), host("h"))
	require.NoError(t, err)
	require.Len(t, c.Brokers, 1, "one URL is a list of one")
}

func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Load([]string{"--site", "A", "--node", "B"}, env(nil), host("h"))
	require.ErrorContains(t, err, "--site")
	require.ErrorContains(t, err, "--node")
	require.ErrorContains(t, err, "--spool is not set")
}

func TestHostnameFailure(t *testing.T) {
	_, err := Load([]string{"--site", "s", "--spool", "/x"}, env(nil), func() (string, error) { return "", errors.New("no uts") })
	require.ErrorContains(t, err, "--node is not set and the host name cannot be read: no uts")
}

func TestUsageListsEveryFlag(t *testing.T) {
	u := Usage()
	var c Config
	var pw string
	addr := addrFlag(0x76)
	fs := newFlagSet(&c, &pw, &addr)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		require.Regexp(t, `(?m)^  -`+regexp.QuoteMeta(f.Name)+`( |$)`, u, "--help lists --%s", f.Name)
		_, usage := flag.UnquoteUsage(f)
		require.Contains(t, u, usage, "--help explains --%s", f.Name)
	})
	require.Greater(t, n, 30)
}
