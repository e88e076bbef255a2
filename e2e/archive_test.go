package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/internal/pgtest"
	"github.com/sensorfarm/sensorfarm/wire"
)

// eachArchiveDB runs f with the embedded store (a SQLite file) and with a
// real PostgreSQL server (Debian's, started and stopped here).
func eachArchiveDB(t *testing.T, f func(t *testing.T, db string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "archive.db")) })
	t.Run("postgres", func(t *testing.T) {
		pg, err := pgtest.Start(context.Background())
		require.NoError(t, err)
		t.Cleanup(pg.Stop)
		f(t, pg.DSN)
	})
}

// startArchive runs bin/archive against the broker at addr with a
// persistent session and returns it with its ops address.
func startArchive(t *testing.T, addr, db string, extra ...string) (*process, string) {
	t.Helper()
	args := append([]string{filepath.Join(bin, "archive"), "--broker", "tcp://" + addr, "--db", db,
		"--client-id", "archive-e2e", "--ops-listen", "127.0.0.1:0", "--batch-wait", "100ms"}, extra...)
	p := start(t, "archive", args...)
	ops := p.waitLog(`msg="ops listening" addr=(127\.0\.0\.1:\d+)`, 30*time.Second)[1]
	p.waitLog(`msg="connected to the broker"`, 30*time.Second)
	return p, ops
}

// openArchive opens the archive's database beside the running archive.
func openArchive(t *testing.T, db string) *store.Store {
	t.Helper()
	st, err := store.OpenReadOnly(context.Background(), db)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func count(t *testing.T, st *store.Store, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, st.DB().QueryRow(query, args...).Scan(&n), query)
	return n
}

// streamAudit is one line of the audit_streams view.
type streamAudit struct {
	readings, lastSeq, missing, duplicates, reused int64
}

func audit(t *testing.T, st *store.Store) map[string]streamAudit {
	t.Helper()
	rows, err := st.DB().Query("SELECT site, node, stream, readings, last_seq, missing, duplicates, reused FROM audit_streams")
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]streamAudit{}
	for rows.Next() {
		var site, node, stream string
		var a streamAudit
		require.NoError(t, rows.Scan(&site, &node, &stream, &a.readings, &a.lastSeq, &a.missing, &a.duplicates, &a.reused))
		out[site+"/"+node+"/"+stream] = a
	}
	require.NoError(t, rows.Err())
	return out
}

// brokerUnderTest is the broker an archive scenario runs against: start
// starts it (again, on the same address and data), crash ends it.
type brokerUnderTest struct {
	start func() string
	crash func()
}

// mosquittoBroker is Debian's mosquitto with persistence on: a crash is a
// SIGTERM (mosquitto writes its persistence file only then; a SIGKILL
// loses every queue), queues deep enough for the scenario.
func mosquittoBroker(t *testing.T) *brokerUnderTest {
	need(t, "mosquitto")
	// Not under t.TempDir(), whose parent only root may enter.
	dir, err := os.MkdirTemp("", "archive-mosquitto-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	// Run as root, mosquitto drops to its own user, which must be able to
	// write its persistence file.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mosquitto")
		require.NoError(t, err, "Debian's mosquitto package creates the mosquitto user")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("listener %s %s\nallow_anonymous true\npersistence true\npersistence_location %s/\n"+
		"max_queued_messages 100000\nmax_inflight_messages 100\n", port, host, dir)), 0o600))
	var p *process
	b := &brokerUnderTest{}
	b.start = func() string {
		p = start(t, "mosquitto", "mosquitto", "-c", conf)
		require.Eventually(t, func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		}, 10*time.Second, 50*time.Millisecond, "mosquitto listening")
		return addr
	}
	b.crash = func() { p.stop() }
	return b
}

// ourBroker is the farm's broker on its pebble store: a crash is a SIGKILL.
func ourBroker(t *testing.T) *brokerUnderTest {
	data := t.TempDir()
	addr := freeAddr(t)
	var p *process
	b := &brokerUnderTest{}
	b.start = func() string {
		p, _ = startBroker(t, data, addr)
		return addr
	}
	b.crash = func() { p.kill() }
	return b
}

// TestArchiveExactlyOnce: two simulated bridges (env and GPS) publish while
// the archive is SIGKILLed mid-stream, the broker goes down and comes back
// (the bridges then replay their backlog), and the archive is SIGKILLed in
// the middle of that replay: every reading the bridges took is archived once
// (0 missing, 0 duplicate rows), the readings taken during the outage are
// backlog rows at their own ts, and the audit views agree with the broker's
// gap counters. With our broker (SIGKILLed) and Debian's mosquitto; with
// SQLite and PostgreSQL.
func TestArchiveExactlyOnce(t *testing.T) {
	t.Run("mosquitto", func(t *testing.T) {
		eachArchiveDB(t, func(t *testing.T, db string) { archiveScenario(t, mosquittoBroker(t), db) })
	})
	t.Run("ours", func(t *testing.T) {
		eachArchiveDB(t, func(t *testing.T, db string) { archiveScenario(t, ourBroker(t), db) })
	})
}

func archiveScenario(t *testing.T, broker *brokerUnderTest, db string) {
	addr := broker.start()
	// Slow batches, so that every SIGKILL finds messages received and not
	// yet committed: acknowledged before their commit, they would be lost.
	slow := []string{"--batch-wait", "1s", "--batch-idle", "500ms"}
	arch, _ := startArchive(t, addr, db, slow...)

	site := "archive"
	nodes := []string{"pizero-a1", "pizero-a2"}
	spools := map[string]string{}
	var bridges []*process
	for _, n := range nodes {
		spools[n] = filepath.Join(t.TempDir(), n)
		bridges = append(bridges, start(t, "bridge "+n, filepath.Join(bin, "bridge"), "--broker", "tcp://"+addr,
			"--site", site, "--node", n, "--spool", spools[n], "--interval", "100ms", "--gps-interval", "200ms", "--sim"))
	}
	time.Sleep(2 * time.Second)
	arch.kill()
	time.Sleep(time.Second)
	arch, _ = startArchive(t, addr, db, slow...)
	time.Sleep(2 * time.Second)

	outageStart := time.Now()
	broker.crash()
	time.Sleep(3 * time.Second)
	outageEnd := time.Now()
	broker.start()
	// The bridges come back and replay their backlog.
	for _, b := range bridges {
		waitCount(t, b, `msg="connected to broker"`, 2, 60*time.Second)
	}
	time.Sleep(300 * time.Millisecond)
	arch.kill()
	arch, archOps := startArchive(t, addr, db, slow...)
	time.Sleep(2 * time.Second)

	// What the bridges took: their spools say, once they stopped.
	want := map[string]uint64{}
	var total uint64
	for i, n := range nodes {
		require.Equal(t, 0, bridges[i].stop(), "bridge %s exits cleanly", n)
		opts := spool.DefaultOptions()
		sp, err := spool.Open(spools[n], &opts)
		require.NoError(t, err)
		st := sp.Stats()
		for _, s := range []string{wire.StreamEnv, wire.StreamGPS} {
			want[site+"/"+n+"/"+s] = sp.LastSeq(s)
			total += sp.LastSeq(s)
		}
		require.NoError(t, sp.Close())
		require.Zero(t, st.Depth, "bridge %s: everything it took was acknowledged by the broker", n)
		require.Zero(t, st.Dropped, "bridge %s dropped nothing", n)
	}

	st := openArchive(t, db)
	deadline := time.Now().Add(60 * time.Second)
	for count(t, st, "SELECT COUNT(*) FROM readings") < int64(total) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if n := count(t, st, "SELECT COUNT(*) FROM readings"); n != int64(total) {
		rows, err := st.DB().Query("SELECT node, stream, first_seq, last_seq FROM audit_missing")
		require.NoError(t, err)
		for rows.Next() {
			var node, stream string
			var a, b int64
			require.NoError(t, rows.Scan(&node, &stream, &a, &b))
			t.Logf("missing %s %s %d..%d (outage %s to %s)", node, stream, a, b, outageStart.Format(time.StampMilli), outageEnd.Format(time.StampMilli))
		}
		rows.Close()
	}
	require.Equal(t, int64(total), count(t, st, "SELECT COUNT(*) FROM readings"), "every reading archived once")
	require.Zero(t, count(t, st, "SELECT COUNT(*) FROM audit_missing"), "no seq missing")
	require.Zero(t, count(t, st, "SELECT COUNT(*) FROM dead_letters"), "no dead letter")
	got := audit(t, st)
	require.Len(t, got, len(want))
	for k, last := range want {
		a := got[k]
		require.Equal(t, int64(last), a.lastSeq, k)
		require.Equal(t, int64(last), a.readings, "%s: seq 1..%d each once", k, last)
		require.Zero(t, a.missing, k)
		require.Zero(t, a.reused, k)
	}

	// The outage's readings came as backlog, stored at the time they were
	// taken, received after the broker came back.
	inside := []time.Time{outageStart.Add(500 * time.Millisecond), outageEnd.Add(-500 * time.Millisecond)}
	q := "SELECT COUNT(*) FROM readings WHERE ts > " + ph(db, 1) + " AND ts < " + ph(db, 2)
	taken := count(t, st, q, tsArg(db, inside[0]), tsArg(db, inside[1]))
	require.Greater(t, taken, int64(20), "readings taken during the outage are archived")
	require.Equal(t, taken, count(t, st, q+" AND backlog AND received_at > "+ph(db, 3), tsArg(db, inside[0]), tsArg(db, inside[1]), tsArg(db, outageEnd)),
		"each came on the backlog, after the outage, at its own ts")

	// And the archive's own counters.
	_, body := get(t, "http://"+archOps+"/metrics")
	require.Equal(t, 1.0, metric(t, body, "sensorfarm_archive_mqtt_connected"))
	require.Zero(t, metric(t, body, "sensorfarm_archive_commit_errors_total"))
	require.Equal(t, 0, arch.stop(), "the archive stops cleanly on SIGTERM")
	require.Greater(t, count(t, st, "SELECT COUNT(*) FROM health"), int64(0), "health reports archived")
}

// waitCount waits until p's output holds re at least n times.
func waitCount(t *testing.T, p *process, re string, n int, limit time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(limit)
	for len(rx.FindAllStringIndex(p.out.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q %d times within %s", p.name, re, n, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestArchiveAuditMatchesBrokerGaps: readings with a gap, a late backlog
// fill and a duplicate, through our broker: the archive's audit views say
// what the broker's gap counters say (missing, duplicates, last seq, resets).
func TestArchiveAuditMatchesBrokerGaps(t *testing.T) {
	need(t, "mosquitto_pub")
	eachArchiveDB(t, func(t *testing.T, db string) {
		broker, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
		ops := opsAddr(broker)
		startArchive(t, addr, db)
		node := wire.Node{Prefix: wire.DefaultPrefix, Site: "gaps", Node: "pizero-g1"}
		send := func(topic string, seq int) {
			publish(t, addr, topic, fmt.Sprintf(`{"site":%q,"node":%q,"seq":%d,"ts":"2026-11-27T01:00:%02d.000Z","time_source":"system","temperature_c":20,"humidity_pct":null,"pressure_hpa":null}`,
				node.Site, node.Node, seq, seq))
		}
		// 1, 2, 3, 7 live; 5 from the backlog; 3 again: 4 and 6 missing,
		// one duplicate.
		for _, seq := range []int{1, 2, 3, 7} {
			send(node.Live(wire.StreamEnv), seq)
		}
		send(node.Backlog(wire.StreamEnv), 5)
		send(node.Backlog(wire.StreamEnv), 3)

		st := openArchive(t, db)
		deadline := time.Now().Add(30 * time.Second)
		for count(t, st, "SELECT COUNT(*) FROM readings") < 5 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		labels := fmt.Sprintf(`{node=%q,site=%q,stream="env"}`, node.Node, node.Site)
		var body string
		require.Eventually(t, func() bool {
			_, body = get(t, "http://"+ops+"/metrics")
			return regexp.MustCompile(`sensorfarm_broker_readings_received_total` + regexp.QuoteMeta(labels) + ` 6\b`).MatchString(body)
		}, 10*time.Second, 100*time.Millisecond)
		deadline = time.Now().Add(30 * time.Second)
		for count(t, st, "SELECT COALESCE(SUM(duplicates), 0) FROM audit_duplicates") < 1 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		a := audit(t, st)["gaps/pizero-g1/env"]
		require.Equal(t, metric(t, body, "sensorfarm_broker_readings_missing"+labels), float64(a.missing), "missing")
		require.Equal(t, metric(t, body, "sensorfarm_broker_readings_duplicates_total"+labels), float64(a.duplicates), "duplicates")
		require.Equal(t, metric(t, body, "sensorfarm_broker_seq_last"+labels), float64(a.lastSeq), "last seq")
		require.Equal(t, metric(t, body, "sensorfarm_broker_seq_resets_total"+labels), float64(a.reused), "resets")
		require.Equal(t, int64(2), a.missing)
		require.Equal(t, int64(2), count(t, st, "SELECT COUNT(*) FROM audit_missing"), "4..4 and 6..6")
	})
}

// ph is the n-th query placeholder of db's dialect.
func ph(db string, n int) string {
	if store.IsPostgres(db) {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// tsArg passes a time as db stores it (SQLite: RFC 3339 text).
func tsArg(db string, t time.Time) any {
	if store.IsPostgres(db) {
		return t.UTC()
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000Z")
}

// TestArchiveDeadLetters: payloads that are not readings of the contract are
// each kept aside with their reason, counted and logged once, and the
// readings behind them are archived: bad input never blocks the stream.
func TestArchiveDeadLetters(t *testing.T) {
	need(t, "mosquitto_pub")
	eachArchiveDB(t, func(t *testing.T, db string) {
		_, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
		arch, ops := startArchive(t, addr, db, "--max-payload", "1024")
		node := wire.Node{Prefix: wire.DefaultPrefix, Site: "dl", Node: "pizero-d1"}
		ok := func(seq int, ts string) string {
			return fmt.Sprintf(`{"site":"dl","node":"pizero-d1","seq":%d,"ts":%q,"time_source":"system","temperature_c":20.5,"humidity_pct":40,"pressure_hpa":null}`, seq, ts)
		}
		bad := map[string]string{
			"not_json":       `{"site":"dl",`,
			"wrong_type":     `{"site":"dl","node":"pizero-d1","seq":"7","ts":"2026-11-24T10:00:00.000Z","time_source":"system","temperature_c":20.5,"humidity_pct":40,"pressure_hpa":null}`,
			"unknown_field":  strings.Replace(ok(8, "2026-11-24T10:00:08.000Z"), `"pressure_hpa":null`, `"pressure_hpa":null,"co2_ppm":400`, 1),
			"missing_field":  strings.Replace(ok(9, "2026-11-24T10:00:09.000Z"), `,"humidity_pct":40`, ``, 1),
			"oversized":      strings.Replace(ok(10, "2026-11-24T10:00:10.000Z"), `"system"`, `"`+strings.Repeat("x", 2000)+`"`, 1),
			"bad_value":      ok(0, "2026-11-24T10:00:11.000Z"),
			"topic_mismatch": strings.Replace(ok(12, "2026-11-24T10:00:12.000Z"), `"pizero-d1"`, `"pizero-d2"`, 1),
			// seq 1 again, with another ts: a numbering that went back.
			"seq_reused": ok(1, "2026-11-24T11:00:00.000Z"),
		}
		publish(t, addr, node.Live(wire.StreamEnv), ok(1, "2026-11-24T10:00:01.000Z"))
		for _, reason := range []string{"not_json", "wrong_type", "unknown_field", "missing_field", "oversized", "bad_value", "topic_mismatch", "seq_reused"} {
			publish(t, addr, node.Backlog(wire.StreamEnv), bad[reason])
		}
		publish(t, addr, node.Backlog(wire.StreamEnv), bad["not_json"]) // the same again: counted, not logged again
		publish(t, addr, node.Live(wire.StreamEnv), ok(2, "2026-11-24T10:00:02.000Z"))

		st := openArchive(t, db)
		deadline := time.Now().Add(30 * time.Second)
		for (count(t, st, "SELECT COUNT(*) FROM readings") < 2 || count(t, st, "SELECT COUNT(*) FROM dead_letters") < 9) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		require.Equal(t, int64(2), count(t, st, "SELECT COUNT(*) FROM readings"), "the good readings around the bad ones")
		rows, err := st.DB().Query("SELECT reason, messages FROM audit_dead_letters")
		require.NoError(t, err)
		reasons := map[string]int64{}
		for rows.Next() {
			var r string
			var n int64
			require.NoError(t, rows.Scan(&r, &n))
			reasons[r] = n
		}
		require.NoError(t, rows.Err())
		rows.Close()
		want := map[string]int64{}
		for r := range bad {
			want[r] = 1
		}
		want["not_json"] = 2
		require.Equal(t, want, reasons)
		require.Equal(t, int64(2000+len(ok(10, "2026-11-24T10:00:10.000Z"))-len(`system`)), count(t, st, "SELECT payload_bytes FROM dead_letters WHERE reason = 'oversized'"),
			"an oversized payload's real size is kept")
		require.Equal(t, int64(1024), count(t, st, "SELECT LENGTH(payload) FROM dead_letters WHERE reason = 'oversized'"), "and its first --max-payload bytes")
		require.Equal(t, int64(1), count(t, st, "SELECT reused FROM audit_resets"))

		_, body := get(t, "http://"+ops+"/metrics")
		require.Equal(t, 2.0, metric(t, body, `sensorfarm_archive_dead_letters_total{reason="not_json"}`))
		require.Equal(t, 1.0, metric(t, body, `sensorfarm_archive_dead_letters_total{reason="seq_reused"}`))
		require.Equal(t, 1, strings.Count(arch.out.String(), "reason=not_json"), "logged once")
		require.True(t, arch.running())
		require.Equal(t, 0, arch.stop())
	})
}
