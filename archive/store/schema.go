package store

import (
	"fmt"
	"strings"

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// dialect is what differs between PostgreSQL and SQLite: types, placeholders
// and how a timestamp is passed. The tables, the statements and the audit
// views are otherwise the same SQL.
type dialect struct {
	name string
	// tsType stores a timestamp: timestamptz, or in SQLite TEXT in
	// tsLayout, which sorts as time and which SQLite's date functions read.
	tsType, blobType, idColumn string
	placeholder                func(i int) string // i from 1
	// bucket is the SQL that rounds the ts column down to a multiple of
	// the seconds in placeholder p, as a timestamp of tsType.
	bucket func(p string) string
}

// tsLayout is how SQLite stores a timestamp: RFC 3339 in UTC with
// microseconds (PostgreSQL's precision), fixed width so that text order is
// time order.
const tsLayout = "2006-01-02T15:04:05.000000Z"

var postgres = dialect{
	name: "postgres", tsType: "TIMESTAMPTZ", blobType: "BYTEA", idColumn: "id BIGSERIAL PRIMARY KEY",
	placeholder: func(i int) string { return fmt.Sprintf("$%d", i) },
	bucket: func(p string) string {
		return "to_timestamp(floor(extract(epoch FROM ts) / " + p + ") * " + p + ")"
	},
}

var sqlite = dialect{
	name: "sqlite", tsType: "TEXT", blobType: "BLOB", idColumn: "id INTEGER PRIMARY KEY AUTOINCREMENT",
	// Numbered, so that a placeholder may occur twice in a statement.
	placeholder: func(i int) string { return fmt.Sprintf("?%d", i) },
	bucket: func(p string) string {
		return "strftime('%Y-%m-%dT%H:%M:%S.000000Z', (CAST(strftime('%s', ts) AS INTEGER) / " + p + ") * " + p + ", 'unixepoch')"
	},
}

// tables are the archive's tables (archive/README.md documents
// them). Every statement is idempotent: the archive runs it on every start.
func (d dialect) tables() []string {
	var values, avgs strings.Builder
	for _, c := range decode.ValueColumns() {
		fmt.Fprintf(&avgs, ",\n  %s DOUBLE PRECISION", c.Name)
		typ := "DOUBLE PRECISION"
		if c.Integer {
			typ = "INTEGER"
		}
		fmt.Fprintf(&values, ",\n  %s %s", c.Name, typ)
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS readings (
  site TEXT NOT NULL,
  node TEXT NOT NULL,
  stream TEXT NOT NULL,
  seq BIGINT NOT NULL,
  ts ` + d.tsType + ` NOT NULL,
  time_source TEXT NOT NULL,
  backlog BOOLEAN NOT NULL,
  received_at ` + d.tsType + ` NOT NULL` + values.String() + `,
  PRIMARY KEY (site, node, stream, seq)
)`,
		`CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts)`,
		`CREATE INDEX IF NOT EXISTS readings_node_ts ON readings (site, node, stream, ts)`,
		`CREATE TABLE IF NOT EXISTS health (
  site TEXT NOT NULL,
  node TEXT NOT NULL,
  ts ` + d.tsType + ` NOT NULL,
  time_source TEXT NOT NULL,
  version TEXT NOT NULL,
  uptime_s BIGINT NOT NULL,
  spool_depth BIGINT NOT NULL,
  spool_bytes BIGINT NOT NULL,
  dropped BIGINT NOT NULL,
  gps_fix INTEGER NOT NULL,
  sensor_errors TEXT NOT NULL,
  received_at ` + d.tsType + ` NOT NULL,
  PRIMARY KEY (site, node, ts)
)`,
		// stream_stats: per stream, what the readings table cannot show by
		// itself. floor_seq is the highest seq that retention deleted: the
		// audit counts missing readings above it from readings, and those
		// below it in pruned_missing, counted before they were deleted.
		`CREATE TABLE IF NOT EXISTS stream_stats (
  site TEXT NOT NULL,
  node TEXT NOT NULL,
  stream TEXT NOT NULL,
  duplicates BIGINT NOT NULL DEFAULT 0,
  reused BIGINT NOT NULL DEFAULT 0,
  floor_seq BIGINT NOT NULL DEFAULT 0,
  pruned_missing BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (site, node, stream)
)`,
		// readings_rollup: what downsampling keeps of pruned readings, one
		// row per stream and bucket of the given seconds: the count, the
		// seq range and each value's average.
		`CREATE TABLE IF NOT EXISTS readings_rollup (
  site TEXT NOT NULL,
  node TEXT NOT NULL,
  stream TEXT NOT NULL,
  bucket ` + d.tsType + ` NOT NULL,
  seconds INTEGER NOT NULL,
  readings BIGINT NOT NULL,
  first_seq BIGINT NOT NULL,
  last_seq BIGINT NOT NULL` + avgs.String() + `,
  PRIMARY KEY (site, node, stream, bucket)
)`,
		`CREATE TABLE IF NOT EXISTS dead_letters (
  ` + d.idColumn + `,
  received_at ` + d.tsType + ` NOT NULL,
  topic TEXT NOT NULL,
  reason TEXT NOT NULL,
  detail TEXT NOT NULL,
  payload ` + d.blobType + ` NOT NULL,
  payload_bytes INTEGER NOT NULL
)`,
		`CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at)`,
	}
}

// view is one audit view: created after the tables, dropped and created
// again on every start so that a new version's definition replaces the old.
type view struct{ name, query string }

// views are the audit in SQL, in dependency order.
func views() []view {
	return []view{
		// audit_missing: every run of seq numbers absent from readings,
		// above the stream's retention floor. A stream's first run starts
		// at floor_seq + 1 (1 when nothing was pruned): readings the
		// archive never got, whenever they were taken, are missing.
		{"audit_missing", `SELECT site, node, stream, prev + 1 AS first_seq, seq - 1 AS last_seq, seq - prev - 1 AS missing
FROM (
  SELECT r.site, r.node, r.stream, r.seq,
    COALESCE(LAG(r.seq) OVER (PARTITION BY r.site, r.node, r.stream ORDER BY r.seq), s.floor_seq, 0) AS prev
  FROM readings r LEFT JOIN stream_stats s ON s.site = r.site AND s.node = r.node AND s.stream = r.stream
) runs
WHERE seq > prev + 1`},
		{"audit_duplicates", `SELECT site, node, stream, duplicates FROM stream_stats WHERE duplicates > 0`},
		// audit_resets: seq numbers that came again with another ts, a
		// numbering that went back (a bridge whose spool was deleted): kept
		// in dead_letters, never over the reading already archived.
		{"audit_resets", `SELECT site, node, stream, reused FROM stream_stats WHERE reused > 0`},
		{"audit_last_seen", `SELECT site, node, stream, COUNT(*) AS readings, MIN(seq) AS first_seq, MAX(seq) AS last_seq,
  MAX(ts) AS last_ts, MAX(received_at) AS last_received_at
FROM readings GROUP BY site, node, stream`},
		// audit_streams: one line per stream, the figures to set beside the
		// broker's gap counters.
		{"audit_streams", `SELECT l.site, l.node, l.stream, l.readings, l.last_seq,
  CAST(COALESCE((SELECT SUM(m.missing) FROM audit_missing m WHERE m.site = l.site AND m.node = l.node AND m.stream = l.stream), 0)
    + COALESCE(s.pruned_missing, 0) AS BIGINT) AS missing,
  COALESCE(s.duplicates, 0) AS duplicates, COALESCE(s.reused, 0) AS reused, l.last_ts
FROM audit_last_seen l LEFT JOIN stream_stats s ON s.site = l.site AND s.node = l.node AND s.stream = l.stream`},
		{"audit_dead_letters", `SELECT reason, COUNT(*) AS messages, MIN(received_at) AS first_at, MAX(received_at) AS last_at
FROM dead_letters GROUP BY reason`},
	}
}
