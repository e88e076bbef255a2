package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// Pruned counts what Prune deleted.
type Pruned struct {
	Readings, RolledUp, Health, DeadLetters, Rollups int64
}

// Prune deletes, per stream, the readings up to the highest seq taken
// before cutoff, first summing them into readings_rollup by buckets of
// rollup (0: no rollup), and records how many seq numbers were missing among
// them (stream_stats.pruned_missing) and the new floor, so that the audit
// stays whole. Health, dead letters and rollups before forget are deleted
// (zero: keep them).
func (s *Store) Prune(ctx context.Context, cutoff time.Time, rollup time.Duration, forget time.Time) (Pruned, error) {
	var out Pruned
	type stream struct {
		site, node, stream string
		top                int64
	}
	rows, err := s.db.QueryContext(ctx, "SELECT site, node, stream, MAX(seq) FROM readings WHERE ts < "+s.d.placeholder(1)+
		" GROUP BY site, node, stream", s.ts(cutoff))
	if err != nil {
		return out, fmt.Errorf("prune: %w", err)
	}
	var streams []stream
	for rows.Next() {
		var st stream
		if err := rows.Scan(&st.site, &st.node, &st.stream, &st.top); err != nil {
			rows.Close()
			return out, fmt.Errorf("prune: %w", err)
		}
		streams = append(streams, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("prune: %w", err)
	}
	for _, st := range streams {
		n, rolled, err := s.pruneStream(ctx, st.site, st.node, st.stream, st.top, rollup)
		if err != nil {
			return out, fmt.Errorf("prune %s/%s/%s: %w", st.site, st.node, st.stream, err)
		}
		out.Readings += n
		out.RolledUp += rolled
	}
	for _, t := range []struct {
		table string
		n     *int64
		at    time.Time
		col   string
	}{{"health", &out.Health, forget, "ts"}, {"dead_letters", &out.DeadLetters, forget, "received_at"}, {"readings_rollup", &out.Rollups, forget, "bucket"}} {
		if t.at.IsZero() {
			continue
		}
		r, err := s.db.ExecContext(ctx, "DELETE FROM "+t.table+" WHERE "+t.col+" < "+s.d.placeholder(1), s.ts(t.at))
		if err != nil {
			return out, fmt.Errorf("prune %s: %w", t.table, err)
		}
		*t.n, _ = r.RowsAffected()
	}
	return out, nil
}

// pruneStream moves one stream's readings up to seq top into the rollup
// (if any) and deletes them, in one transaction.
func (s *Store) pruneStream(ctx context.Context, site, node, stream string, top int64, rollup time.Duration) (deleted, rolled int64, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it does nothing
	ph := s.d.placeholder
	key := "site = " + ph(1) + " AND node = " + ph(2) + " AND stream = " + ph(3)
	var floor int64
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(floor_seq), 0) FROM stream_stats WHERE "+key, site, node, stream).Scan(&floor); err != nil {
		return 0, 0, err
	}
	if top <= floor {
		return 0, 0, nil
	}
	if rollup > 0 {
		var cols, avgs, merge []string
		for _, c := range decode.ValueColumns() {
			cols = append(cols, c.Name)
			avgs = append(avgs, "AVG("+c.Name+")")
			// A bucket rolled up twice (readings that came late, below
			// an earlier cutoff) averages both parts by their counts.
			merge = append(merge, fmt.Sprintf("%[1]s = (COALESCE(readings_rollup.%[1]s * readings_rollup.readings, 0) + COALESCE(excluded.%[1]s * excluded.readings, 0)) / "+
				"NULLIF(CASE WHEN readings_rollup.%[1]s IS NULL THEN 0 ELSE readings_rollup.readings END + CASE WHEN excluded.%[1]s IS NULL THEN 0 ELSE excluded.readings END, 0)", c.Name))
		}
		secs := int64(rollup / time.Second)
		q := "INSERT INTO readings_rollup (site, node, stream, bucket, seconds, readings, first_seq, last_seq, " + strings.Join(cols, ", ") + ")\n" +
			"SELECT site, node, stream, " + s.d.bucket(ph(5)) + ", " + ph(6) + ", COUNT(*), MIN(seq), MAX(seq), " + strings.Join(avgs, ", ") +
			"\nFROM readings WHERE " + key + " AND seq <= " + ph(4) + "\nGROUP BY site, node, stream, " + s.d.bucket(ph(5)) +
			"\nON CONFLICT (site, node, stream, bucket) DO UPDATE SET " + strings.Join(merge, ", ") +
			", readings = readings_rollup.readings + excluded.readings, first_seq = MIN(readings_rollup.first_seq, excluded.first_seq), last_seq = MAX(readings_rollup.last_seq, excluded.last_seq)"
		if s.d.name == postgres.name {
			q = strings.Replace(q, "first_seq = MIN(", "first_seq = LEAST(", 1)
			q = strings.Replace(q, "last_seq = MAX(", "last_seq = GREATEST(", 1)
		}
		if _, err := tx.ExecContext(ctx, q, site, node, stream, top, secs, secs); err != nil {
			return 0, 0, fmt.Errorf("rollup: %w", err)
		}
	}
	r, err := tx.ExecContext(ctx, "DELETE FROM readings WHERE "+key+" AND seq <= "+ph(4), site, node, stream, top)
	if err != nil {
		return 0, 0, err
	}
	deleted, _ = r.RowsAffected()
	// The seq numbers in (floor, top] not deleted were never archived.
	missing := top - floor - deleted
	if _, err := tx.ExecContext(ctx, `INSERT INTO stream_stats (site, node, stream, floor_seq, pruned_missing) VALUES (`+s.places(1, 5)+`)
ON CONFLICT (site, node, stream) DO UPDATE SET floor_seq = excluded.floor_seq, pruned_missing = stream_stats.pruned_missing + excluded.pruned_missing`,
		site, node, stream, top, missing); err != nil {
		return 0, 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, err
	}
	if rollup > 0 {
		rolled = deleted
	}
	return deleted, rolled, nil
}
