package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/internal/cliconf"
)

// exportMain is `archive export`: readings as CSV on stdout (or --out), for
// analysis. It reads the archive and changes nothing.
func exportMain(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("archive export", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String(cliconf.ConfigFlag, "", "optional YAML file of settings, keys named as the flags")
	db := fs.String("db", "archive.db", "the archive: a SQLite `file` or a postgres:// URL")
	from := fs.String("from", "", "first ts exported, RFC 3339 (e.g. 2026-11-24T00:00:00Z) or a duration back from now (e.g. 24h)")
	to := fs.String("to", "", "ts exported before this, RFC 3339 or a duration back from now")
	nodes := fs.String("nodes", "", "comma-separated nodes, each NODE or SITE/NODE (default: all)")
	streams := fs.String("streams", "", "comma-separated streams: env, gps (default: all)")
	out := fs.String("out", "", "write to this `file` instead of standard output")
	err := cliconf.Parse(fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprintln(stdout, "Usage: archive export [flags]\n\nReadings as CSV, ordered by site, node, stream and seq. Flags can also be set as SENSORFARM_<FLAG>.")
		fs.PrintDefaults()
		return 0
	}
	q, qerr := exportQuery(*from, *to, *nodes, *streams, time.Now())
	if err = errors.Join(err, qerr); err != nil {
		fmt.Fprintf(stderr, "archive export: %v\n", err)
		return 2
	}
	ctx := context.Background()
	st, err := store.OpenReadOnly(ctx, *db)
	if err != nil {
		fmt.Fprintf(stderr, "archive export: %v\n", err)
		return 1
	}
	defer st.Close()
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintf(stderr, "archive export: %v\n", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	n, err := st.Export(ctx, q, csv.NewWriter(w))
	if err != nil {
		fmt.Fprintf(stderr, "archive export: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "archive export: %d readings\n", n)
	return 0
}

func exportQuery(from, to, nodes, streams string, now time.Time) (store.Query, error) {
	var q store.Query
	var errs []error
	parse := func(flag, v string) time.Time {
		if v == "" {
			return time.Time{}
		}
		if d, err := time.ParseDuration(v); err == nil {
			return now.Add(-d)
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s %q: want RFC 3339 (2026-11-24T00:00:00Z) or a duration (24h)", flag, v))
		}
		return t
	}
	q.From, q.To = parse("from", from), parse("to", to)
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		errs = append(errs, fmt.Errorf("--from %s is not before --to %s", from, to))
	}
	q.Nodes = split(nodes)
	q.Streams = split(streams)
	for _, s := range q.Streams {
		if !slices.Contains(decode.Streams(), s) {
			errs = append(errs, fmt.Errorf("--streams: %q is not a stream (%s)", s, strings.Join(decode.Streams(), ", ")))
		}
	}
	return q, errors.Join(errs...)
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
