// Package config holds the broker's settings: their names, defaults and the
// rules a value must pass before the broker starts.
//
// Every setting is a --flag, and may also come from a SENSORFARM_* environment
// variable or from the YAML file named by --config (see internal/cliconf); the
// command line beats the environment, which beats the file.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

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
	// StoreSync makes the store fsync what a PUBACK promises before the
	// PUBACK leaves: on by default, because a PUBACK tells a bridge it may
	// forget the reading. One fsync covers every publish received while the
	// one before it ran (store.SyncGroup), so the cost is one fsync per batch.
	// Turned off, pebble keeps its newest writes in a 32 KiB write-ahead-log
	// buffer inside the process: a graceful stop (SIGTERM, which Kubernetes
	// sends first) still loses nothing, but a SIGKILL, an OOM kill or a crash
	// loses what is in that buffer (a minute or more of a quiet broker's
	// writes), and a power cut also what the kernel had not written back.
	// Turn it off only to spare an SD card, knowing that.
	StoreSync bool
	// TLSListen is the TCP address of the MQTT-over-TLS listener, HOST:PORT
	// (8883 is MQTT's TLS port); empty turns it off. Port 0 picks a free
	// port; the real address is logged as msg="tls listening".
	TLSListen string
	// TLSCert and TLSKey are the PEM files of the server certificate (chain,
	// leaf first) and its key. Both are reread when either changes, so that
	// a rotated certificate is served without a restart.
	TLSCert, TLSKey string
	// TLSClientCA, when set, makes the TLS listener require a client
	// certificate signed by a CA in this PEM file. The password is still
	// checked: a certificate alone never lets a client in.
	TLSClientCA string
	// Limits bound what one client, and all of them, may cost the broker.
	Limits Limits
	// Durability is how the broker keeps what it acknowledged.
	Durability Durability
	// DrainTimeout bounds the drain of a graceful stop (SIGTERM): new
	// connections and publishes are refused, and the broker waits up to
	// this long for every connected subscriber to acknowledge the QoS 1
	// messages it holds for it before disconnecting everyone. What is still
	// unacknowledged then stays in the store for persistent sessions. The
	// drain, then the stop (at most 20 s), fit Kubernetes' 30 s grace period.
	DrainTimeout time.Duration
	// LogLevel is the lowest level that is logged.
	LogLevel slog.Level
	// ConfigFile is the YAML file the settings were read from, if any.
	ConfigFile string
	// Version asks only for the version to be printed. When it is set, Load
	// returns at once: no other field is filled in or validated.
	Version bool
}

// Limits bound the broker's memory for clients. A Config built in code may
// leave any of them zero: each zero takes its default (DefaultLimits).
type Limits struct {
	// MaxPacketSize is the largest MQTT packet accepted, in bytes; a client
	// that sends a larger one is disconnected before its payload is read.
	MaxPacketSize uint32
	// MaxClients is how many clients may be connected at once; the next one
	// gets CONNACK "Server unavailable" (3.1.1) or "Server busy" (5).
	MaxClients int64
	// ClientPendingWrites is the length of each client's queue of packets
	// waiting to be written to it. A message that finds the queue full is
	// dropped for that client (counted in messages_dropped_total).
	ClientPendingWrites int32
	// MaxInflight is how many QoS 1/2 messages one session may hold
	// unacknowledged (also while its client is away); past it new ones are
	// dropped for that session.
	MaxInflight uint16
	// MaxKeepalive is the longest keepalive allowed, in seconds: an MQTT 5
	// client that asks for more, or for none, gets this in the CONNACK's
	// Server Keep Alive and must ping at least that often.
	MaxKeepalive uint16
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT (and finish the TLS handshake) before it is closed.
	ConnectTimeout time.Duration
	// WriteTimeout is how long a write to a client may block (the client
	// reads nothing and its socket buffer is full) before its connection
	// is closed. Meanwhile every publisher whose messages reach that client
	// waits (a limit of mochi's), so it is short.
	WriteTimeout time.Duration
	// AuthSlots is how many slow password checks (bcrypt) may run at once;
	// AuthWait is how long a connection may wait for one before it is
	// refused with CONNACK "server busy" (see auth.Admission). Generated
	// tokens and unknown names are checked at once, without a slot.
	AuthSlots int64
	AuthWait  time.Duration
	// MaxPending is how many connections may be open before they
	// authenticate (MaxClients counts only those that did); past it a new
	// connection is closed at once.
	MaxPending int64
}

// DefaultDrainTimeout is --drain-timeout's default.
const DefaultDrainTimeout = 5 * time.Second

// DefaultLimits fit a Raspberry Pi 4 serving a farm of a few hundred nodes;
// the README explains each.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketSize:       64 << 10,
		MaxClients:          5000,
		ClientPendingWrites: 1024,
		MaxInflight:         8192,
		MaxKeepalive:        120,
		ConnectTimeout:      10 * time.Second,
		WriteTimeout:        5 * time.Second,
		// One core stays for the readings; a 2-core machine gets one slot.
		AuthSlots: int64(max(1, runtime.GOMAXPROCS(0)-1)),
		// Well below the bridge's 10 s connect timeout: no check runs for a
		// bridge that already gave up.
		AuthWait:   3 * time.Second,
		MaxPending: 1024,
	}
}

// WithDefaults returns l with each zero replaced by its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	l.MaxPacketSize = cmp.Or(l.MaxPacketSize, d.MaxPacketSize)
	l.MaxClients = cmp.Or(l.MaxClients, d.MaxClients)
	l.ClientPendingWrites = cmp.Or(l.ClientPendingWrites, d.ClientPendingWrites)
	l.MaxInflight = cmp.Or(l.MaxInflight, d.MaxInflight)
	l.MaxKeepalive = cmp.Or(l.MaxKeepalive, d.MaxKeepalive)
	l.ConnectTimeout = cmp.Or(l.ConnectTimeout, d.ConnectTimeout)
	l.WriteTimeout = cmp.Or(l.WriteTimeout, d.WriteTimeout)
	l.AuthSlots = cmp.Or(l.AuthSlots, d.AuthSlots)
	l.AuthWait = cmp.Or(l.AuthWait, d.AuthWait)
	l.MaxPending = cmp.Or(l.MaxPending, d.MaxPending)
	return l
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
	fs.BoolVar(&c.StoreSync, "store-sync", true, "fsync what a PUBACK promises before sending it: nothing acknowledged is lost on SIGKILL or power cut; =false spares an SD card but a SIGKILL then loses up to the last 32 KiB of writes")
	fs.StringVar(&c.TLSListen, "tls-listen", "", "TCP `address` of the MQTT-over-TLS listener, HOST:PORT, e.g. :8883 (empty: off; needs --tls-cert and --tls-key)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM `file` of the TLS server certificate, leaf first; reread when it changes")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM `file` of the TLS server certificate's private key; reread when it changes")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM `file` of CAs: TLS clients must present a certificate signed by one (the password is still checked)")
	c.Limits = DefaultLimits()
	fs.Var(uintFlag[uint32]{&c.Limits.MaxPacketSize, 16, 1 << 28}, "max-packet-size", "largest MQTT packet accepted, in `bytes` (16 to 268435456); a larger one disconnects its client")
	fs.Var(uintFlag[int64]{&c.Limits.MaxClients, 1, 1 << 31}, "max-clients", "most `clients` connected at once; the next is refused with CONNACK server unavailable/busy")
	fs.Var(uintFlag[int32]{&c.Limits.ClientPendingWrites, 16, 1 << 20}, "client-pending-writes", "`packets` queued for writing to one client; past it a message is dropped for that client")
	fs.Var(uintFlag[uint16]{&c.Limits.MaxInflight, 16, 65535}, "max-inflight", "QoS 1 `messages` one session may hold unacknowledged; a full persistent session holds its publishers back (--hold-timeout)")
	fs.Var(keepaliveFlag{&c.Limits.MaxKeepalive}, "max-keepalive", "longest client keepalive, a `duration` in whole seconds (5s to 18h12m15s); MQTT 5 clients asking for more or none get this as Server Keep Alive")
	fs.DurationVar(&c.Limits.ConnectTimeout, "connect-timeout", DefaultLimits().ConnectTimeout, "how long a new connection may take to send CONNECT (and finish TLS) before it is closed, a `duration`")
	fs.DurationVar(&c.Limits.WriteTimeout, "write-timeout", DefaultLimits().WriteTimeout, "how long a write to a client that reads nothing may block before its connection is closed, a `duration`; publishers to that client wait meanwhile")
	c.Durability.addFlags(fs)
	fs.Var(uintFlag[int64]{&c.Limits.AuthSlots, 1, 1024}, "auth-slots", "bcrypt password `checks` run at once (default: CPUs minus one); generated tokens need none")
	fs.DurationVar(&c.Limits.AuthWait, "auth-wait", DefaultLimits().AuthWait, "how long a connection may wait for a password check slot before CONNACK server busy, a `duration`; keep it below the clients' connect timeout")
	fs.Var(uintFlag[int64]{&c.Limits.MaxPending, 1, 1 << 20}, "max-pending", "most `connections` open before they authenticate; past it a new one is closed at once")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", DefaultDrainTimeout, "on SIGTERM, how long to wait for subscribers to acknowledge what they were sent before disconnecting everyone, a `duration` (0: no wait)")
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
	tlsListenOK := true
	if c.TLSListen != "" {
		if err := checkListen("--tls-listen", c.TLSListen); err != nil {
			errs = append(errs, err)
			tlsListenOK = false
		}
		if c.TLSCert == "" {
			errs = append(errs, errors.New("--tls-listen needs --tls-cert, the PEM file of the server certificate"))
		}
		if c.TLSKey == "" {
			errs = append(errs, errors.New("--tls-listen needs --tls-key, the PEM file of the server certificate's key"))
		}
	} else {
		for _, f := range []struct{ name, v string }{{"--tls-cert", c.TLSCert}, {"--tls-key", c.TLSKey}, {"--tls-client-ca", c.TLSClientCA}} {
			if f.v != "" {
				errs = append(errs, fmt.Errorf("%s is set without --tls-listen: say where the TLS listener listens, e.g. --tls-listen :8883", f.name))
			}
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
	case c.Demo && c.TLSListen != "" && tlsListenOK && !isLoopback(c.TLSListen):
		errs = append(errs, fmt.Errorf("--demo allows anonymous clients and is accepted only on a loopback address; --tls-listen is %s", c.TLSListen))
	case !c.Demo && !users:
		errs = append(errs, errors.New("without --demo nobody may connect unless --users names the users file "+
			"(create it with `broker user add --users FILE ...`); or run with --demo on a loopback address"))
	}
	if t := c.Limits.ConnectTimeout; t < 0 || (t > 0 && t < 100*time.Millisecond) || t > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--connect-timeout %s: want 100ms to 10m; a client's CONNECT and TLS handshake take well under a second on a LAN", t))
	}
	if t := c.Limits.WriteTimeout; t < 0 || (t > 0 && t < 100*time.Millisecond) || t > 10*time.Minute {
		errs = append(errs, fmt.Errorf("--write-timeout %s: want 100ms to 10m", t))
	}
	if t := c.Limits.AuthWait; t < 0 || (t > 0 && t < 10*time.Millisecond) || t > time.Minute {
		errs = append(errs, fmt.Errorf("--auth-wait %s: want 10ms to 1m, below the clients' connect timeout (the bridge's is 10s)", t))
	}
	if t := c.DrainTimeout; t < 0 || t > time.Minute {
		errs = append(errs, fmt.Errorf("--drain-timeout %s: want 0 to 1m, and with the stop's 20 s within the pod's terminationGracePeriodSeconds", t))
	}
	if err := c.Durability.WithDefaults().validate(); err != nil {
		errs = append(errs, err)
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

// uintFlag reads a whole number from min to max into an integer field.
type uintFlag[T ~int32 | ~int64 | ~uint16 | ~uint32 | ~uint64] struct {
	v        *T
	min, max int64
}

func (f uintFlag[T]) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(int64(*f.v), 10)
}

func (f uintFlag[T]) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < f.min || n > f.max {
		return fmt.Errorf("want a whole number from %d to %d: %q", f.min, f.max, s)
	}
	*f.v = T(n)
	return nil
}

// keepaliveFlag reads a duration in whole seconds that fits MQTT's 16-bit
// keepalive, at least mochi's recommended minimum of 5 s.
type keepaliveFlag struct{ v *uint16 }

func (f keepaliveFlag) String() string {
	if f.v == nil {
		return ""
	}
	return (time.Duration(*f.v) * time.Second).String()
}

func (f keepaliveFlag) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil || d%time.Second != 0 || d < 5*time.Second || d > 65535*time.Second {
		return fmt.Errorf("want a duration in whole seconds from 5s to 18h12m15s: %q", s)
	}
	*f.v = uint16(d / time.Second)
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
