package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// chunkRows bounds the rows of one INSERT: 200 rows of 20 columns stay far
// below SQLite's 32766 parameters and PostgreSQL's 65535.
const chunkRows = 200

type readingKey struct {
	site, node, stream string
	seq                uint64
}

type streamKey struct{ site, node, stream string }

// Commit writes b in one transaction and says what became of it. On an
// error nothing of b is written.
func (s *Store) Commit(ctx context.Context, b Batch) (Result, error) {
	res := Result{Dead: map[string]int{}, InsertedByStream: map[string]int{}}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it does nothing

	// A key twice in one batch (a redelivery right behind the first copy)
	// is inserted once and the other copy classified against it.
	var fresh, again []*decode.Reading
	seen := map[readingKey]bool{}
	for _, it := range b.Items {
		if r := it.Reading; r != nil {
			k := readingKey{r.Site, r.Node, r.Stream, r.Seq}
			if seen[k] {
				again = append(again, r)
			} else {
				seen[k] = true
				fresh = append(fresh, r)
			}
		}
	}
	inserted := map[readingKey]bool{}
	for start := 0; start < len(fresh); start += chunkRows {
		chunk := fresh[start:min(start+chunkRows, len(fresh))]
		if err := s.insertReadings(ctx, tx, chunk, b.ReceivedAt, inserted); err != nil {
			return res, err
		}
	}
	res.Inserted = len(inserted)
	for k := range inserted {
		res.InsertedByStream[k.stream]++
	}
	for _, r := range fresh {
		if !inserted[readingKey{r.Site, r.Node, r.Stream, r.Seq}] {
			again = append(again, r)
		}
	}

	var dead []decode.DeadLetter
	stats := map[streamKey]*[2]int{} // duplicates, reused
	for _, r := range again {
		var v any
		if err := tx.QueryRowContext(ctx, "SELECT ts FROM readings WHERE site = "+s.d.placeholder(1)+" AND node = "+s.d.placeholder(2)+
			" AND stream = "+s.d.placeholder(3)+" AND seq = "+s.d.placeholder(4), r.Site, r.Node, r.Stream, int64(r.Seq)).Scan(&v); err != nil {
			return res, fmt.Errorf("read back %s/%s/%s seq %d: %w", r.Site, r.Node, r.Stream, r.Seq, err)
		}
		stored, err := s.scanTS(v)
		if err != nil {
			return res, fmt.Errorf("read back %s/%s/%s seq %d: %w", r.Site, r.Node, r.Stream, r.Seq, err)
		}
		sk := streamKey{r.Site, r.Node, r.Stream}
		if stats[sk] == nil {
			stats[sk] = &[2]int{}
		}
		switch {
		case stored.Equal(r.TS.Truncate(time.Microsecond)) && r.Retained:
			res.Retained++
		case stored.Equal(r.TS.Truncate(time.Microsecond)):
			res.Duplicates++
			stats[sk][0]++
		default:
			stats[sk][1]++
			dead = append(dead, decode.DeadLetter{Topic: r.Topic, Reason: decode.ReasonSeqReused, Payload: r.Payload, Size: len(r.Payload),
				Detail: fmt.Sprintf("seq %d was archived with ts %s; this reading says %s: its numbering went back", r.Seq,
					stored.Format(time.RFC3339Nano), r.TS.Format(time.RFC3339Nano))})
		}
	}
	for sk, n := range stats {
		if _, err := tx.ExecContext(ctx, `INSERT INTO stream_stats (site, node, stream, duplicates, reused) VALUES (`+s.places(1, 5)+`)
ON CONFLICT (site, node, stream) DO UPDATE SET duplicates = stream_stats.duplicates + excluded.duplicates, reused = stream_stats.reused + excluded.reused`,
			sk.site, sk.node, sk.stream, n[0], n[1]); err != nil {
			return res, fmt.Errorf("stream_stats: %w", err)
		}
	}

	for _, it := range b.Items {
		switch {
		case it.Health != nil:
			h := it.Health
			r, err := tx.ExecContext(ctx, `INSERT INTO health (site, node, ts, time_source, version, uptime_s, spool_depth, spool_bytes,
  dropped, gps_fix, sensor_errors, received_at) VALUES (`+s.places(1, 12)+`) ON CONFLICT DO NOTHING`,
				h.Site, h.Node, s.ts(h.TS), h.TimeSource, h.Version, h.UptimeS, int64(h.SpoolDepth), h.SpoolBytes,
				int64(h.Dropped), h.GPSFix, h.SensorErrors, s.ts(b.ReceivedAt))
			if err != nil {
				return res, fmt.Errorf("health of %s/%s: %w", h.Site, h.Node, err)
			}
			if n, err := r.RowsAffected(); err == nil {
				res.Health += int(n)
			}
		case it.Dead != nil:
			dead = append(dead, *it.Dead)
		}
	}
	for _, d := range dead {
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_letters (received_at, topic, reason, detail, payload, payload_bytes)
VALUES (`+s.places(1, 6)+`)`, s.ts(b.ReceivedAt), d.Topic, d.Reason, d.Detail, d.Payload, d.Size); err != nil {
			return res, fmt.Errorf("dead letter: %w", err)
		}
		res.Dead[d.Reason]++
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("commit: %w", err)
	}
	return res, nil
}

// places is the placeholders from..to, comma-separated.
func (s *Store) places(from, to int) string {
	p := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		p = append(p, s.d.placeholder(i))
	}
	return strings.Join(p, ", ")
}

// readingColumns are the readings table's columns in the order
// insertReadings passes them.
func readingColumns() []string {
	cols := []string{"site", "node", "stream", "seq", "ts", "time_source", "backlog", "received_at"}
	for _, c := range decode.ValueColumns() {
		cols = append(cols, c.Name)
	}
	return cols
}

// insertReadings inserts rs in one statement, skipping the keys archived
// before, and adds the keys it inserted to inserted.
func (s *Store) insertReadings(ctx context.Context, tx *sql.Tx, rs []*decode.Reading, receivedAt time.Time, inserted map[readingKey]bool) error {
	cols := readingColumns()
	values := decode.ValueColumns()
	var q strings.Builder
	q.WriteString("INSERT INTO readings (" + strings.Join(cols, ", ") + ") VALUES ")
	args := make([]any, 0, len(rs)*len(cols))
	for i, r := range rs {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(" + s.places(len(args)+1, len(args)+len(cols)) + ")")
		args = append(args, r.Site, r.Node, r.Stream, int64(r.Seq), s.ts(r.TS), r.TimeSource, r.Backlog, s.ts(receivedAt))
		for _, c := range values {
			args = append(args, r.Values[c.Name])
		}
	}
	q.WriteString(" ON CONFLICT DO NOTHING RETURNING site, node, stream, seq")
	rows, err := tx.QueryContext(ctx, q.String(), args...)
	if err != nil {
		return fmt.Errorf("insert readings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k readingKey
		var seq int64
		if err := rows.Scan(&k.site, &k.node, &k.stream, &seq); err != nil {
			return fmt.Errorf("insert readings: %w", err)
		}
		k.seq = uint64(seq)
		inserted[k] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("insert readings: %w", err)
	}
	return nil
}
