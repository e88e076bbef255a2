// Command archive-bench measures the archive (bin/archive) against a naive
// archiver (bin/naive-archive: one INSERT per message, autocommit) on the
// farm's workload, on SQLite and on PostgreSQL, in one invocation: the env
// readings of 1,000 nodes (a farm of 1,000 bridges at 1 Hz makes 1,000 a
// second) published through our broker as fast as it takes them. Per run:
// rows/s from the first publish to the last row, CPU (utime+stime of the
// archiver) per reading, and database bytes per reading (SQLite: file and
// write-ahead log; PostgreSQL: pg_database_size).
// Writes results/archive.md.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/internal/child"
	"github.com/sensorfarm/sensorfarm/internal/loopback"
	"github.com/sensorfarm/sensorfarm/internal/pgtest"
)

// nodes is the farm's size: 1,000 bridges.
const nodes = 1000

type result struct {
	rowsPerS, cpuUsPerRow, bytesPerRow, peakRSSMiB float64
}

func main() {
	bin := flag.String("bin", "bin", "directory of archive, naive-archive and broker")
	out := flag.String("out", "bench/results", "directory for archive.md")
	quick := flag.Bool("quick", false, "one small run per peer: checks the tool, not the figures")
	readings := flag.Int("readings", 20000, "readings per run")
	runs := flag.Int("runs", 3, "runs per peer and store")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *quick {
		*readings, *runs = 2000, 1
	}
	if err := run(*bin, *out, *readings, *runs, log); err != nil {
		log.Error("archive bench failed", "err", err)
		os.Exit(1)
	}
}

func run(bin, out string, readings, runs int, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "archive-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pg, err := pgtest.Start(context.Background())
	if err != nil {
		return err
	}
	defer pg.Stop()
	addr, broker, err := startBroker(bin, dir)
	if err != nil {
		return err
	}
	defer broker.Stop(20 * time.Second)

	results := map[string][]result{}
	for r := 0; r < runs; r++ {
		for _, db := range []string{"sqlite", "postgres"} {
			// Peers alternate within a run, so a slow spell falls on both.
			for _, peer := range []string{"archive", "naive-archive"} {
				dsn := filepath.Join(dir, fmt.Sprintf("%s-%d.db", peer, r))
				if db == "postgres" {
					dsn = pg.DSN
					if err := resetPostgres(dsn); err != nil {
						return err
					}
				}
				res, err := once(bin, peer, dsn, addr, fmt.Sprintf("bench-%s-%s-%d", peer, db, r), readings, r)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", peer, db, err)
				}
				log.Info("run", "peer", peer, "db", db, "rows_per_s", int(res.rowsPerS), "cpu_us_per_row", int(res.cpuUsPerRow),
					"bytes_per_row", int(res.bytesPerRow), "peak_rss_mib", res.peakRSSMiB)
				results[peer+" "+db] = append(results[peer+" "+db], res)
			}
		}
	}
	return report(out, results, readings, runs)
}

func startBroker(bin, dir string) (string, *child.Process, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(filepath.Join(bin, "broker"), "--listen", addr, "--demo", "--data", filepath.Join(dir, "broker"),
		"--max-inflight", "65535", "--ops-listen", "", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	p, err := child.Start(cmd)
	if err != nil {
		return "", nil, err
	}
	return addr, p, waitTCP(addr)
}

// once starts the archiver, publishes n readings as fast as the broker
// takes them (256 in flight) and times until the last is a row; CPU and
// bytes are what the archiver and the database added meanwhile.
func once(bin, peer, dsn, addr, id string, n, run int) (result, error) {
	cmd := exec.Command(filepath.Join(bin, peer), "--broker", "tcp://"+addr, "--db", dsn, "--client-id", id)
	if peer == "archive" {
		cmd.Args = append(cmd.Args, "--ops-listen", "", "--log-level", "warn")
	}
	p, err := child.Start(cmd)
	if err != nil {
		return result{}, err
	}
	defer p.Stop(10 * time.Second)
	st, err := waitOpen(dsn)
	if err != nil {
		return result{}, err
	}
	defer st.Close()
	time.Sleep(2 * time.Second) // connected and subscribed
	before, err := size(st, dsn)
	if err != nil {
		return result{}, err
	}
	cpu0, err := cpuTime(p.PID())
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	if err := publish(addr, n, run); err != nil {
		return result{}, err
	}
	for {
		var rows int
		if err := st.DB().QueryRow("SELECT COUNT(*) FROM readings").Scan(&rows); err != nil {
			return result{}, err
		}
		if rows >= n {
			break
		}
		if time.Since(t0) > 5*time.Minute || !p.Running() {
			return result{}, fmt.Errorf("%d of %d rows after %s", rows, n, time.Since(t0))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(t0)
	cpu1, err := cpuTime(p.PID())
	if err != nil {
		return result{}, err
	}
	after, err := size(st, dsn)
	if err != nil {
		return result{}, err
	}
	rss, err := peakRSS(p.PID())
	if err != nil {
		return result{}, err
	}
	return result{rowsPerS: float64(n) / took.Seconds(), cpuUsPerRow: float64((cpu1 - cpu0).Microseconds()) / float64(n),
		bytesPerRow: float64(after-before) / float64(n), peakRSSMiB: rss}, nil
}

// publish queues n env readings of 1,000 nodes, seq continuing run to run.
func publish(addr string, n, run int) error {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench-archive-publisher").SetCleanSession(true))
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		return t.Error()
	}
	defer c.Disconnect(250)
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	var pending []mqtt.Token
	for i := 0; i < n; i++ {
		node, seq := i%nodes, run*n/nodes+i/nodes+1
		ts := base.Add(time.Duration(seq) * time.Second).Format("2006-01-02T15:04:05.000Z")
		payload := fmt.Sprintf(`{"site":"bench","node":"n%05d","seq":%d,"ts":%q,"time_source":"system","temperature_c":%.2f,"humidity_pct":%.1f,"pressure_hpa":%.2f}`,
			node, seq, ts, 15+float64(i%1000)/100, 40+float64(i%300)/10, 1000+float64(i%2000)/100)
		pending = append(pending, c.Publish(fmt.Sprintf("sensorfarm/bench/n%05d/env", node), 1, false, payload))
		if len(pending) == 256 {
			for _, t := range pending {
				if t.Wait(); t.Error() != nil {
					return t.Error()
				}
			}
			pending = pending[:0]
		}
	}
	for _, t := range pending {
		if t.Wait(); t.Error() != nil {
			return t.Error()
		}
	}
	return nil
}

func waitOpen(dsn string) (*store.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := store.OpenReadOnly(context.Background(), dsn)
		if err == nil {
			var n int
			if err = st.DB().QueryRow("SELECT COUNT(*) FROM readings").Scan(&n); err == nil {
				return st, nil
			}
			st.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the archive's tables did not appear: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// size is the database's bytes on disk: SQLite's file and write-ahead log,
// PostgreSQL's pg_database_size.
func size(st *store.Store, dsn string) (int64, error) {
	if store.IsPostgres(dsn) {
		var n int64
		return n, st.DB().QueryRow("SELECT pg_database_size(current_database())").Scan(&n)
	}
	var total int64
	for _, f := range []string{dsn, dsn + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			total += fi.Size()
		}
	}
	return total, nil
}

func resetPostgres(dsn string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
	return err
}

// cpuTime is a process's utime + stime (/proc/PID/stat, clock ticks of
// 1/100 s on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond, nil
}

// peakRSS is a process's peak resident set (VmHWM), in MiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kib, err := strconv.ParseFloat(f[1], 64)
			return kib / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func report(out string, results map[string][]result, n, runs int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# The archive: %d env readings of %d nodes through our broker\n\n", n, nodes)
	fmt.Fprintf(&b, "%d run(s) per peer, peers alternating; median [min–max]. Ratios: archive / naive, run by run.\n\n", runs)
	b.WriteString("| store | archiver | rows/s | CPU µs per reading | bytes per reading | peak RSS MiB |\n|---|---|---:|---:|---:|---:|\n")
	for _, db := range []string{"sqlite", "postgres"} {
		for _, peer := range []string{"archive", "naive-archive"} {
			rs := results[peer+" "+db]
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", db, peer,
				spread(rs, func(r result) float64 { return r.rowsPerS }),
				spread(rs, func(r result) float64 { return r.cpuUsPerRow }),
				spread(rs, func(r result) float64 { return r.bytesPerRow }),
				spread(rs, func(r result) float64 { return r.peakRSSMiB }))
		}
		a, nv := results["archive "+db], results["naive-archive "+db]
		ratio := func(f func(result) float64) string {
			var rs []result
			for i := range a {
				rs = append(rs, result{rowsPerS: f(a[i]) / f(nv[i])})
			}
			return spread(rs, func(r result) float64 { return r.rowsPerS }) + "×"
		}
		fmt.Fprintf(&b, "| %s | ratio | %s | %s | %s | |\n", db, ratio(func(r result) float64 { return r.rowsPerS }),
			ratio(func(r result) float64 { return r.cpuUsPerRow }), ratio(func(r result) float64 { return r.bytesPerRow }))
	}
	fmt.Print(b.String())
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "archive.md"), []byte(b.String()), 0o644)
}

func spread(rs []result, f func(result) float64) string {
	if len(rs) == 0 {
		return "-"
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	med := v[len(v)/2]
	if len(v) == 1 {
		return format(med)
	}
	return fmt.Sprintf("%s [%s–%s]", format(med), format(v[0]), format(v[len(v)-1]))
}

func format(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker not listening on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
