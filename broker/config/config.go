// Package config holds the broker's settings: their names, defaults and the
// rules a value must pass before the broker starts.
//
// Every setting is a --flag, and may also come from a SENSORFARM_* environment
// variable or from the YAML file named by --config (see internal/cliconf); the
// command line beats the environment, which beats the file.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/sensorfarm/sensorfarm/internal/cliconf"
	"github.com/sensorfarm/sensorfarm/wire"
)

// DefaultListen is where the broker listens unless told otherwise: loopback
// only, so that a broker started by hand is not reachable from the network.
const DefaultListen = "127.0.0.1:1883"

// DefaultOpsListen serves the HTTP endpoints on loopback unless told
// otherwise; on Kubernetes the probes and Prometheus need the pod's address
// (--ops-listen :9883).
const DefaultOpsListen = "127.0.0.1:9883"

// Config is everything the broker needs to start.
type Config struct {
	// Listen is the TCP address of the MQTT listener, HOST:PORT. Port 0 picks a
	// free port (tests); the real address is logged at start.
	Listen string
	// DataDir is the directory that holds the broker's persistent state
	// (retained messages, sessions, in-flight messages). Required.
	DataDir string
	// Demo lets anonymous clients publish and subscribe to anything. It is
	// accepted only on a loopback address, and never with Users.
	Demo bool
	// Users is the users file: who may connect, with which role (see
	// broker/auth). Required unless Demo; reread on SIGHUP.
	Users string
	// OpsListen is the HTTP address of /healthz, /readyz and /metrics;
	// empty turns the HTTP side off.
	OpsListen string
	// Prefix is the first topic level of the farm, as the bridges' --prefix;
	// the ACL grants topics under it.
	Prefix string
	// StoreSync makes the store fsync every write before the broker goes on,
	// and so before it acknowledges a QoS 1 message: on by default, because a
	// PUBACK tells a bridge it may forget the reading. Pebble commits
	// concurrent writes as one group, so the cost is one fsync per batch.
	// Turned off, pebble keeps its newest writes in a 32 KiB write-ahead-log
	// buffer inside the process: a graceful stop (SIGTERM, which Kubernetes
	// sends first) still loses nothing, but a SIGKILL, an OOM kill or a crash
	// loses what is in that buffer (a minute or more of a quiet broker's
	// writes), and a power cut also what the kernel had not written back.
	// Turn it off only to spare an SD card, knowing that.
	StoreSync bool
	// LogLevel is the lowest level that is logged.
	LogLevel slog.Level
	// ConfigFile is the YAML file the settings were read from, if any.
	ConfigFile string
	// Version asks only for the version to be printed. When it is set, Load
	// returns at once: no other field is filled in or validated.
	Version bool
}

// Load reads the configuration from args (without the program name), the
// environment (through getenv) and the file named by --config, then validates
// it. A -h or --help on the command line gives an error that wraps flag.ErrHelp.
func Load(args []string, getenv func(string) string) (Config, error) {
	// --version is an action, taken from the command line only (cliconf
	// reads no SENSORFARM_VERSION and refuses it in the file). Look for it
	// on the command line alone first, so that it works whatever the
	// environment or the file hold.
	var probe Config
	if err := flagSet(&probe).Parse(args); err != nil {
		return Config{}, err
	}
	if probe.Version {
		return Config{Version: true}, nil
	}

	var c Config
	if err := cliconf.Parse(flagSet(&c), args, getenv); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Usage writes the list of settings with their defaults to w.
func Usage(w io.Writer) {
	fs := flagSet(new(Config))
	fs.SetOutput(w)
	fmt.Fprintf(w, "Usage: broker --data DIR --users FILE [--listen HOST:PORT] [flags]\n"+
		"       broker --data DIR --demo [--listen LOOPBACK:PORT] [flags]\n"+
		"       broker user add|del|list --users FILE ...   (broker user -h)\n\n"+
		"Every flag can also be set with %s<FLAG> (e.g. %s) or in the YAML file named by --config.\n\n",
		cliconf.EnvPrefix, cliconf.EnvName("store-sync"))
	fs.PrintDefaults()
}

// flagSet binds every setting to a field of c, with its default.
func flagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the caller prints the error and the usage
	fs.StringVar(&c.Listen, "listen", DefaultListen, "TCP `address` of the MQTT listener, HOST:PORT")
	fs.StringVar(&c.DataDir, "data", "", "`directory` for the broker's persistent state (required; created 0700 if missing)")
	fs.BoolVar(&c.Demo, "demo", false, "let anonymous clients publish and subscribe to anything (loopback --listen only; not with --users)")
	fs.StringVar(&c.Users, "users", "", "users `file`: who may connect and with which role (required unless --demo; reread on SIGHUP; see broker user -h)")
	fs.StringVar(&c.OpsListen, "ops-listen", DefaultOpsListen, "HTTP `address` of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&c.Prefix, "prefix", wire.DefaultPrefix, "first topic level of the farm, a `name` as the bridges' --prefix (the ACL grants topics under it)")
	fs.BoolVar(&c.StoreSync, "store-sync", true, "fsync every store write before acknowledging: nothing acknowledged is lost on SIGKILL or power cut; =false spares an SD card but a SIGKILL then loses up to the last 32 KiB of writes")
	c.LogLevel = slog.LevelInfo
	fs.Var(cliconf.LevelFlag{Level: &c.LogLevel}, "log-level", "lowest `level` logged: debug, info (default), warn or error")
	fs.StringVar(&c.ConfigFile, cliconf.ConfigFlag, "", "YAML `file` of settings, keyed by flag name")
	fs.BoolVar(&c.Version, cliconf.VersionFlag, false, "print the version and exit")
	return fs
}

// Validate checks every setting and reports each problem, naming the setting.
func (c Config) Validate() error {
	var errs []error
	listenOK := true
	if err := checkListen("--listen", c.Listen); err != nil {
		errs = append(errs, err)
		listenOK = false
	}
	if strings.TrimSpace(c.DataDir) == "" {
		errs = append(errs, errors.New("--data is required: the directory where the broker keeps retained messages and sessions "+
			"(e.g. /var/lib/sensorfarm-broker, or the volume mounted into the StatefulSet's pod)"))
	}
	if c.OpsListen != "" {
		if err := checkListen("--ops-listen", c.OpsListen); err != nil {
			errs = append(errs, err)
		}
	}
	users := strings.TrimSpace(c.Users) != ""
	// The prefix matters to the ACL only; a Config built in code for demo
	// mode may leave it empty.
	if users || c.Prefix != "" {
		if err := wire.ValidateName("--prefix", c.Prefix); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case c.Demo && users:
		errs = append(errs, errors.New("--demo and --users exclude each other: demo mode lets anonymous clients publish and subscribe "+
			"to anything, which would void the users' ACL; drop --demo to enforce the users file"))
	case c.Demo && listenOK && !isLoopback(c.Listen):
		errs = append(errs, fmt.Errorf("--demo allows anonymous clients and is accepted only on a loopback address; --listen is %s", c.Listen))
	case !c.Demo && !users:
		errs = append(errs, errors.New("without --demo nobody may connect unless --users names the users file "+
			"(create it with `broker user add --users FILE ...`); or run with --demo on a loopback address"))
	}
	return errors.Join(errs...)
}

// checkListen accepts HOST:PORT with a numeric port from 0 to 65535. HOST may
// be empty (every interface), an IP literal (IPv6 in brackets) or a name.
func checkListen(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want HOST:PORT, e.g. 127.0.0.1:1883 or [::1]:1883: %w", flag, addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 64)
	switch {
	case port == "":
		return fmt.Errorf("%s %q: the port is missing", flag, addr)
	case err != nil:
		return fmt.Errorf("%s %q: port %q is not a number from 0 to 65535", flag, addr, port)
	case n > 65535:
		return fmt.Errorf("%s %q: port %d is out of range 0-65535", flag, addr, n)
	}
	return nil
}

// isLoopback reports whether the host of a HOST:PORT address can only be
// reached from this machine: an IP literal in 127.0.0.0/8 or ::1, or the name
// "localhost". An empty host (":1883", every interface) and any other name are
// not loopback: a name could resolve to anything.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
