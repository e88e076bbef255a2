// Package config builds the bridge's settings once, from flags, SENSORFARM_*
// environment variables and an optional YAML file, and validates them so that
// a bad setting stops the bridge at start-up with a message naming it.
package config

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/bridge/sensor"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/internal/brokerurl"
	"github.com/sensorfarm/sensorfarm/internal/cliconf"
	"github.com/sensorfarm/sensorfarm/internal/pemca"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Config is everything the bridge needs to run.
type Config struct {
	// Broker is --broker as given: a comma-separated failover list of
	// tcp://host:port or mqtt://host:port, or mqtts://host:port (also
	// ssl://, tls://) for TLS; Brokers is the same list parsed.
	Broker  string
	Brokers []*url.URL
	// CAFile is the PEM file of the CAs that may sign the brokers' TLS
	// certificates; empty trusts the system's roots. Only with TLS
	// brokers. CAs is its content, read once.
	CAFile   string
	CAs      *x509.CertPool
	Username string
	Password string // read from PasswordFile, never from argv
	Node     wire.Node
	Spool    string // directory for state that must survive restarts
	Interval time.Duration
	// SensorRetry paces attempts to open a sensor that is missing or failed:
	// slow, because a sensor that is not there will not appear every second.
	SensorRetry time.Duration
	Sim         bool
	I2CBus      string // periph bus name; "" opens the first bus
	BME280      uint16 // I2C address of the BME280
	LogLevel    slog.Level
	Version     bool

	// GPS says whether the node has a PA1010D (at 0x10) to read.
	GPS bool
	// GPSOpts configure the receiver and the quality gate.
	GPSOpts pa1010d.Opts
	// GPSReplay is an NMEA capture for the simulated receiver to serve
	// (with --sim); empty serves a built-in track per node.
	GPSReplay string
	// GPSReplaySpeed replays the capture this many times faster.
	GPSReplaySpeed float64
	// SimI2CHz is the simulated I2C bus's clock; 0 takes no time.
	SimI2CHz int64

	// SpoolOpts bound the spool and set how often it is made durable.
	SpoolOpts spool.Options

	// HADiscovery publishes Home Assistant discovery configs under
	// HADiscoveryPrefix; HARemoveGone removes the entities of a sensor that
	// went away or is disabled.
	HADiscovery       bool
	HADiscoveryPrefix string
	HARemoveGone      bool
	// FieldTopics also publishes each live reading's fields one per topic.
	FieldTopics bool
}

// MinInterval keeps a misconfigured bridge from flooding the broker; a BME280
// in forced mode takes ~10 ms per measurement, so faster makes no sense.
const MinInterval = 100 * time.Millisecond

// Load parses args, the environment (through getenv) and the optional config
// file into a validated Config. hostname supplies the default node name.
func Load(args []string, getenv func(string) string, hostname func() (string, error)) (Config, error) {
	var c Config
	var passwordFile string
	addr := addrFlag(0x76)
	fs := newFlagSet(&c, &passwordFile, &addr)
	if err := cliconf.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	if c.Version {
		return c, nil
	}
	c.BME280 = uint16(addr)

	if c.Node.Site == "" {
		c.Node.Site = getenv("NOMAD_DC")
	}
	if c.Node.Node == "" {
		h, err := hostname()
		if err != nil {
			return c, fmt.Errorf("--node is not set and the host name cannot be read: %w", err)
		}
		// A host name may be fully qualified; the node is its first label.
		c.Node.Node = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return c, fmt.Errorf("--password-file: %w", err)
		}
		c.Password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	if err := c.validate(passwordFile); err != nil {
		return c, err
	}
	return c, nil
}

// Usage describes every flag, for --help.
func Usage() string {
	var c Config
	var pw string
	addr := addrFlag(0x76)
	fs := newFlagSet(&c, &pw, &addr)
	var b strings.Builder
	fs.SetOutput(&b)
	fmt.Fprintf(&b, "Usage: bridge [flags]\n\nEvery flag can also be set as %s<FLAG> (e.g. SENSORFARM_I2C_BUS) or as a key in the --config file.\n\n", cliconf.EnvPrefix)
	fs.PrintDefaults()
	return b.String()
}

func newFlagSet(c *Config, passwordFile *string, addr *addrFlag) *flag.FlagSet {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String(cliconf.ConfigFlag, "", "optional YAML file of settings, keys named as the flags")
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL, or a comma-separated failover list tried in order on every connection: tcp:// or mqtt:// (plain), mqtts://, ssl:// or tls:// (TLS; the certificate must name the host); all plain or all TLS")
	fs.StringVar(&c.CAFile, "ca-file", "", "with TLS --broker URLs: PEM `file` of the CAs that sign the brokers' certificates, for every URL in the list (default: the system's roots)")
	fs.StringVar(&c.Username, "username", "", "MQTT user name")
	fs.StringVar(passwordFile, "password-file", "", "file holding the MQTT password (first line)")
	fs.StringVar(&c.Node.Prefix, "prefix", wire.DefaultPrefix, "first topic level")
	fs.StringVar(&c.Node.Site, "site", "", "site name; default $NOMAD_DC")
	fs.StringVar(&c.Node.Node, "node", "", "node name; default the host name's first label, lower-cased")
	fs.StringVar(&c.Spool, "spool", "", "directory for the bridge's durable state (required)")
	fs.DurationVar(&c.Interval, "interval", 10*time.Second, "time between readings")
	fs.DurationVar(&c.SensorRetry, "sensor-retry", 30*time.Second, "time between attempts to open a missing or failed sensor")
	fs.BoolVar(&c.Sim, "sim", false, "read simulated sensors instead of the I2C hardware")
	fs.StringVar(&c.I2CBus, "i2c-bus", "", `I2C bus name or number, e.g. "1"; empty opens the first bus`)
	fs.Var(addr, "bme280-addr", "I2C address of the BME280: 0x76 or 0x77")
	c.LogLevel = slog.LevelInfo
	fs.Var(cliconf.LevelFlag{Level: &c.LogLevel}, "log-level", "lowest `level` logged: debug, info (default), warn or error")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")

	c.GPSOpts = pa1010d.DefaultOpts
	fs.BoolVar(&c.GPS, "gps", true, "read a PA1010D GPS at I2C address 0x10")
	fs.DurationVar(&c.GPSOpts.FixInterval, "gps-interval", c.GPSOpts.FixInterval, "time between GPS fixes (PMTK220), 100ms to 10s; one gps reading per fix")
	fs.Var(sentencesFlag{&c.GPSOpts.Sentences}, "gps-sentences", "NMEA sentences the receiver sends (PMTK314); RMC and GGA are required")
	fs.Float64Var(&c.GPSOpts.MaxHDOP, "gps-max-hdop", c.GPSOpts.MaxHDOP, "largest HDOP a published fix may have: a guard against meaningless geometry (beyond 20 a fix is more than 100 m off), not the gate, which is the fix's validity; accuracy travels in gps_accuracy")
	fs.IntVar(&c.GPSOpts.MinSats, "gps-min-sats", c.GPSOpts.MinSats, "fewest satellites a published fix may use")
	fs.Var(dateFlag{&c.GPSOpts.NotBefore}, "gps-not-before", "earliest date a published fix may carry (YYYY-MM-DD); older dates are a receiver without real time")
	fs.StringVar(&c.GPSReplay, "gps-replay", "", "with --sim: NMEA capture (gpsd .log) for the simulated GPS to serve; default a built-in track")
	fs.Float64Var(&c.GPSReplaySpeed, "gps-replay-speed", 1, "with --sim: replay the GPS capture this many times faster")
	fs.Int64Var(&c.SimI2CHz, "sim-i2c-hz", sensor.StandardHz, "with --sim: the simulated I2C bus's clock in Hz, each transaction taking its time on the wire (a Pi's default); 0 takes no time, faster than any real bus")

	c.SpoolOpts = spool.DefaultOptions()
	// The segment size follows the size cap (an eighth of it, at most the
	// default), so that a small cap still holds enough segments to evict.
	c.SpoolOpts.SegmentBytes = 0
	fs.Var(sizeFlag{&c.SpoolOpts.MaxBytes}, "spool-max-bytes", "size cap of the spool (e.g. 128MiB); past it the oldest readings are dropped, and counted")
	fs.DurationVar(&c.SpoolOpts.MaxAge, "spool-max-age", c.SpoolOpts.MaxAge, "age cap of the spool; older readings are dropped, and counted")
	fs.BoolVar(&c.HADiscovery, "ha-discovery", true, "publish Home Assistant MQTT discovery configs for this node's entities")
	fs.StringVar(&c.HADiscoveryPrefix, "ha-discovery-prefix", wire.HADiscoveryPrefix, "Home Assistant's discovery prefix (our broker's ACL grants bridges only "+wire.HADiscoveryPrefix+")")
	fs.BoolVar(&c.HARemoveGone, "ha-remove-gone", false, "remove from Home Assistant the entities of a sensor that stopped working or is disabled (default: keep them, shown unavailable)")
	fs.BoolVar(&c.FieldTopics, "field-topics", false, "also publish each field of a live reading on <prefix>/<site>/<node>/<stream>/<field>, retained")
	fs.DurationVar(&c.SpoolOpts.SyncEvery, "spool-sync", c.SpoolOpts.SyncEvery, "how often the spool is fsynced: a power cut loses at most this much of what the broker did not have; 0 syncs every reading (wears the SD card)")
	return fs
}

func (c *Config) validate(passwordFile string) error {
	var errs []error
	if err := wire.ValidateName("--prefix", c.Node.Prefix); err != nil {
		errs = append(errs, err)
	}
	if c.Node.Site == "" {
		errs = append(errs, errors.New("--site is not set and $NOMAD_DC is empty: name the site, e.g. --site farm1"))
	} else if err := wire.ValidateName("--site", c.Node.Site); err != nil {
		errs = append(errs, err)
	}
	if err := wire.ValidateName("--node", c.Node.Node); err != nil {
		errs = append(errs, fmt.Errorf("%w (set --node when the host name does not fit)", err))
	}
	brokers, err := brokerurl.ParseList(c.Broker)
	if err != nil {
		errs = append(errs, fmt.Errorf("--broker %w", err))
	}
	c.Brokers = brokers
	if c.CAFile != "" {
		if err == nil && !brokerurl.IsTLS(brokers[0]) {
			errs = append(errs, fmt.Errorf("--ca-file is set but --broker %q is not TLS: use mqtts://host:8883", c.Broker))
		} else if c.CAs, err = pemca.Load(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("--ca-file: %w", err))
		}
	}
	if c.Spool == "" {
		errs = append(errs, errors.New("--spool is not set: the bridge needs a directory to keep its state across restarts"))
	}
	if c.SensorRetry < MinInterval {
		errs = append(errs, fmt.Errorf("--sensor-retry %s is shorter than the minimum %s", c.SensorRetry, MinInterval))
	}
	if c.Interval < MinInterval {
		errs = append(errs, fmt.Errorf("--interval %s is shorter than the minimum %s", c.Interval, MinInterval))
	}
	// pa1010d reads a zero as "the default", so zero cannot mean "no limit".
	if c.GPSOpts.MaxHDOP <= 0 {
		errs = append(errs, fmt.Errorf("--gps-max-hdop %v: want more than 0 (a large value such as 99 turns the check off)", c.GPSOpts.MaxHDOP))
	}
	if c.GPSOpts.MinSats < 1 {
		errs = append(errs, fmt.Errorf("--gps-min-sats %d: want at least 1", c.GPSOpts.MinSats))
	}
	if c.SpoolOpts.MaxBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("--spool-max-bytes %d is below the minimum of 64KiB", c.SpoolOpts.MaxBytes))
	}
	if c.SpoolOpts.MaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("--spool-max-age %s is shorter than a minute", c.SpoolOpts.MaxAge))
	}
	if c.SpoolOpts.SyncEvery < 0 {
		errs = append(errs, fmt.Errorf("--spool-sync %s is negative", c.SpoolOpts.SyncEvery))
	}
	if err := c.GPSOpts.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--gps-*: %w", err))
	}
	if !c.Sim && (c.GPSReplay != "" || c.GPSReplaySpeed != 1) {
		errs = append(errs, errors.New("--gps-replay and --gps-replay-speed only apply with --sim"))
	}
	if !c.Sim && c.SimI2CHz != sensor.StandardHz {
		errs = append(errs, errors.New("--sim-i2c-hz only applies with --sim"))
	}
	if c.SimI2CHz < 0 || c.SimI2CHz > 3_400_000 {
		errs = append(errs, fmt.Errorf("--sim-i2c-hz %d is out of range: 0 (no bus time) or up to 3400000 (I2C high-speed mode)", c.SimI2CHz))
	}
	if c.GPSReplaySpeed <= 0 || c.GPSReplaySpeed > 1000 {
		errs = append(errs, fmt.Errorf("--gps-replay-speed %v is out of range: more than 0, at most 1000", c.GPSReplaySpeed))
	}
	if c.GPSReplay != "" {
		if _, err := os.Stat(c.GPSReplay); err != nil {
			errs = append(errs, fmt.Errorf("--gps-replay: %w", err))
		}
	}
	if err := wire.ValidateName("--ha-discovery-prefix", c.HADiscoveryPrefix); err != nil {
		errs = append(errs, fmt.Errorf("%w (one topic level)", err))
	}
	if c.Username != "" && passwordFile == "" {
		errs = append(errs, errors.New("--username is set without --password-file"))
	}
	if passwordFile != "" && c.Username == "" {
		errs = append(errs, errors.New("--password-file is set without --username"))
	}
	return errors.Join(errs...)
}

// addrFlag accepts an I2C address in any base strconv understands and allows
// only the two addresses a BME280 can have, set by its SDO pin.
type addrFlag uint16

func (a *addrFlag) String() string { return fmt.Sprintf("%#x", uint16(*a)) }

func (a *addrFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 16)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	if v != 0x76 && v != 0x77 {
		return fmt.Errorf("%#x is not a BME280 address: it answers at 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)", v)
	}
	*a = addrFlag(v)
	return nil
}

type sentencesFlag struct{ s *pa1010d.Sentences }

func (f sentencesFlag) String() string {
	if f.s == nil {
		return ""
	}
	return f.s.String()
}

func (f sentencesFlag) Set(v string) error {
	s, err := pa1010d.ParseSentences(v)
	if err != nil {
		return err
	}
	*f.s = s
	return nil
}

type dateFlag struct{ t *time.Time }

func (f dateFlag) String() string {
	if f.t == nil {
		return ""
	}
	return f.t.Format(time.DateOnly)
}

func (f dateFlag) Set(v string) error {
	t, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return fmt.Errorf("want a date YYYY-MM-DD: %q", v)
	}
	*f.t = t
	return nil
}

// sizeFlag reads a byte count with an optional binary suffix: 65536, 64KiB,
// 128MiB, 1GiB.
type sizeFlag struct{ n *int64 }

func (f sizeFlag) String() string {
	if f.n == nil {
		return ""
	}
	for _, u := range sizeUnits {
		if *f.n >= u.n && *f.n%u.n == 0 {
			return strconv.FormatInt(*f.n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(*f.n, 10)
}

var sizeUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

func (f sizeFlag) Set(v string) error {
	mult := int64(1)
	num := v
	for _, u := range sizeUnits {
		if strings.HasSuffix(v, u.suffix) {
			mult, num = u.n, strings.TrimSuffix(v, u.suffix)
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a size such as 65536, 64KiB or 128MiB: %q", v)
	}
	*f.n = n * mult
	return nil
}
