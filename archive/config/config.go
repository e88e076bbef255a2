// Package config builds the archive's settings from flags, SENSORFARM_*
// environment variables and an optional YAML file (internal/cliconf), as the
// bridge and the broker take theirs, and validates them so that a bad
// setting stops the archive at start with a message naming it.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/internal/brokerurl"
	"github.com/sensorfarm/sensorfarm/internal/cliconf"
	"github.com/sensorfarm/sensorfarm/internal/pemca"
	"github.com/sensorfarm/sensorfarm/wire"
)

// DefaultOpsListen is loopback, as the broker's; on Kubernetes the probes
// and Prometheus need the pod's address (--ops-listen :9884).
const DefaultOpsListen = "127.0.0.1:9884"

// Config is everything the archive service needs.
type Config struct {
	Broker   string
	CAFile   string
	Username string
	Password string // read from --password-file, never from argv
	// ClientID names the archive's persistent session on the broker: fixed,
	// so that a restarted archive resumes it and gets what it missed.
	ClientID string
	Prefix   string
	// DB is a SQLite file or a postgres:// URL.
	DB         string
	OpsListen  string
	BatchSize  int
	BatchWait  time.Duration
	BatchIdle  time.Duration
	MaxPending int
	MaxPayload int
	// Retention deletes readings older than this (0 keeps everything);
	// DownsampleAfter replaces readings older than this by one per
	// DownsampleTo per stream (0: never).
	Retention       time.Duration
	DownsampleAfter time.Duration
	DownsampleTo    time.Duration
	LogLevel        slog.Level
	Version         bool
}

// Load parses args and the environment (through getenv) into a validated
// Config.
func Load(args []string, getenv func(string) string) (Config, error) {
	var c Config
	var passwordFile string
	fs := newFlagSet(&c, &passwordFile)
	if err := cliconf.Parse(fs, args, getenv); err != nil {
		return c, err
	}
	if c.Version {
		return c, nil
	}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return c, fmt.Errorf("--password-file: %w", err)
		}
		c.Password = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
	}
	return c, c.validate(passwordFile)
}

// Usage describes every flag, for --help.
func Usage() string {
	var c Config
	var pw string
	fs := newFlagSet(&c, &pw)
	var b strings.Builder
	fs.SetOutput(&b)
	fmt.Fprintf(&b, "Usage: archive [flags]\n       archive export [flags] (archive export -h)\n\nEvery flag can also be set as %s<FLAG> (e.g. SENSORFARM_DB) or as a key in the --config file.\n\n", cliconf.EnvPrefix)
	fs.PrintDefaults()
	return b.String()
}

func newFlagSet(c *Config, passwordFile *string) *flag.FlagSet {
	fs := flag.NewFlagSet("archive", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String(cliconf.ConfigFlag, "", "optional YAML file of settings, keys named as the flags")
	fs.StringVar(&c.Broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL: tcp:// or mqtt:// (plain), mqtts://, ssl:// or tls:// (TLS; the certificate must name the host)")
	fs.StringVar(&c.CAFile, "ca-file", "", "with a TLS --broker: PEM `file` of the CAs that sign the broker's certificate (default: the system's roots)")
	fs.StringVar(&c.Username, "username", "", "MQTT user name (a reader)")
	fs.StringVar(passwordFile, "password-file", "", "file holding the MQTT password (first line)")
	fs.StringVar(&c.ClientID, "client-id", "archive", "MQTT client id of the archive's persistent session: one per archive, never a bridge's")
	fs.StringVar(&c.Prefix, "prefix", wire.DefaultPrefix, "first topic level")
	fs.StringVar(&c.DB, "db", "archive.db", "the archive: a SQLite `file`, or postgres://user@host:5432/db (password in the URL, or PGPASSWORD)")
	fs.StringVar(&c.OpsListen, "ops-listen", DefaultOpsListen, "HTTP `address` of /healthz, /readyz and /metrics (empty: off)")
	fs.IntVar(&c.BatchSize, "batch-size", 500, "most messages per transaction")
	fs.DurationVar(&c.BatchWait, "batch-wait", 200*time.Millisecond, "longest a message waits for more before its batch is committed")
	fs.DurationVar(&c.BatchIdle, "batch-idle", 5*time.Millisecond, "commit as soon as no message came for this long")
	fs.IntVar(&c.MaxPending, "max-pending", 10000, "messages received and not yet committed, at most; past it the archive stops reading (back-pressure)")
	fs.IntVar(&c.MaxPayload, "max-payload", decode.DefaultMaxPayload, "largest payload in bytes; a longer one is a dead letter")
	fs.DurationVar(&c.Retention, "retention", 0, "delete readings, health and dead letters older than this, e.g. 8760h (0: keep all)")
	fs.DurationVar(&c.DownsampleAfter, "downsample-after", 0, "keep readings older than this only one per --downsample-to and stream, e.g. 720h (0: never)")
	fs.DurationVar(&c.DownsampleTo, "downsample-to", 5*time.Minute, "with --downsample-after: one reading kept per this interval")
	c.LogLevel = slog.LevelInfo
	fs.Var(cliconf.LevelFlag{Level: &c.LogLevel}, "log-level", "lowest `level` logged: debug, info (default), warn or error")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	return fs
}

func (c *Config) validate(passwordFile string) error {
	var errs []error
	if err := wire.ValidateName("--prefix", c.Prefix); err != nil {
		errs = append(errs, err)
	}
	broker, err := brokerurl.Parse(c.Broker)
	if err != nil {
		errs = append(errs, fmt.Errorf("--broker %w", err))
	}
	if c.CAFile != "" && err == nil {
		if !brokerurl.IsTLS(broker) {
			errs = append(errs, fmt.Errorf("--ca-file is set but --broker %q is not TLS: use mqtts://host:8883", c.Broker))
		} else if _, err := pemca.Load(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("--ca-file: %w", err))
		}
	}
	if c.ClientID == "" || strings.HasPrefix(c.ClientID, "bridge:") {
		errs = append(errs, fmt.Errorf("--client-id %q: want a fixed id of the archive's own (not empty, not a bridge's bridge:…)", c.ClientID))
	}
	if c.DB == "" {
		errs = append(errs, errors.New("--db is empty: give a SQLite file or a postgres:// URL"))
	} else if strings.Contains(c.DB, "://") && !store.IsPostgres(c.DB) {
		errs = append(errs, fmt.Errorf("--db %q: only postgres:// URLs and SQLite file paths are supported", store.Redact(c.DB)))
	}
	if c.OpsListen != "" {
		if _, _, err := net.SplitHostPort(c.OpsListen); err != nil {
			errs = append(errs, fmt.Errorf("--ops-listen %q: want HOST:PORT: %w", c.OpsListen, err))
		}
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("--batch-size %d: want 1 to 10000", c.BatchSize))
	}
	if c.BatchWait <= 0 || c.BatchIdle <= 0 {
		errs = append(errs, fmt.Errorf("--batch-wait %s and --batch-idle %s must be more than 0", c.BatchWait, c.BatchIdle))
	}
	if c.MaxPending < c.BatchSize {
		errs = append(errs, fmt.Errorf("--max-pending %d is below --batch-size %d", c.MaxPending, c.BatchSize))
	}
	if c.MaxPayload < 256 || c.MaxPayload > 1<<20 {
		errs = append(errs, fmt.Errorf("--max-payload %d: want 256 to 1048576 bytes", c.MaxPayload))
	}
	if c.Retention < 0 || c.DownsampleAfter < 0 || c.DownsampleTo <= 0 {
		errs = append(errs, errors.New("--retention and --downsample-after must not be negative, --downsample-to more than 0"))
	}
	if c.Retention > 0 && c.Retention < time.Hour {
		errs = append(errs, fmt.Errorf("--retention %s is shorter than an hour", c.Retention))
	}
	if c.DownsampleAfter > 0 && c.Retention > 0 && c.DownsampleAfter >= c.Retention {
		errs = append(errs, fmt.Errorf("--downsample-after %s is not shorter than --retention %s", c.DownsampleAfter, c.Retention))
	}
	if c.Username != "" && passwordFile == "" {
		errs = append(errs, errors.New("--username is set without --password-file"))
	}
	if passwordFile != "" && c.Username == "" {
		errs = append(errs, errors.New("--password-file is set without --username"))
	}
	return errors.Join(errs...)
}
