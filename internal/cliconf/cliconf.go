// Package cliconf fills a flag.FlagSet from, in order of precedence, the command
// line, SENSORFARM_* environment variables and an optional YAML file, so that
// both binaries take their settings the same way and every setting has one name
// in all three places.
package cliconf

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// EnvPrefix starts every environment variable that sets a flag.
const EnvPrefix = "SENSORFARM_"

// ConfigFlag is the flag that names the optional file.
const ConfigFlag = "config"

// VersionFlag is an action, not a setting: it is taken from the command line
// only, so that a stray SENSORFARM_VERSION (a deployment label, say) can
// neither stop a daemon from starting nor be refused as a bad value.
const VersionFlag = "version"

// EnvName is the environment variable that sets flag name: "i2c-bus" becomes
// SENSORFARM_I2C_BUS.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args into fs, then sets each flag the command line left alone
// from the environment (read through getenv) and then from the file named by
// --config (or SENSORFARM_CONFIG), whose keys are the flag names. fs must
// define a string flag named ConfigFlag. An unknown key in the file, or a value
// a flag refuses, is an error that names where the value came from.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if fs.Lookup(ConfigFlag) == nil {
		return errors.New("cliconf: the flag set has no --config flag")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == VersionFlag {
			return
		}
		env := EnvName(f.Name)
		if v, ok := lookup(getenv, env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
			set[f.Name] = true
		}
	})
	if err != nil {
		return err
	}

	path := fs.Lookup(ConfigFlag).Value.String()
	if path == "" {
		return nil
	}
	values, err := readFile(path)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if fs.Lookup(k) == nil || k == ConfigFlag || k == VersionFlag {
			return fmt.Errorf("config file %s: unknown setting %q", path, k)
		}
		if set[k] {
			continue
		}
		if e := fs.Set(k, values[k]); e != nil {
			return fmt.Errorf("config file %s: %s: %q: %w", path, k, values[k], e)
		}
	}
	return nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// readFile reads a flat YAML mapping of setting names to scalar values.
func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: not a YAML mapping of settings: %w", path, err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case string:
			out[k] = v
		case bool:
			out[k] = strconv.FormatBool(v)
		case float64:
			// 'f' keeps 1000000 from turning into 1e+06, which integer flags refuse.
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			return nil, fmt.Errorf("config file %s: %s: want a single value, got %T", path, k, v)
		}
	}
	return out, nil
}

// LevelFlag is a flag.Value over a slog.Level that takes only the four level
// names both binaries document.
type LevelFlag struct{ Level *slog.Level }

func (l LevelFlag) String() string {
	if l.Level == nil {
		return ""
	}
	return strings.ToLower(l.Level.String())
}

// Set parses debug, info, warn (or warning) and error, in any case.
func (l LevelFlag) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		*l.Level = slog.LevelDebug
	case "info":
		*l.Level = slog.LevelInfo
	case "warn", "warning":
		*l.Level = slog.LevelWarn
	case "error":
		*l.Level = slog.LevelError
	default:
		return errors.New("want debug, info, warn or error")
	}
	return nil
}
