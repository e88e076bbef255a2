package store

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Query selects readings to export.
type Query struct {
	From, To time.Time // ts in [From, To); zero: unbounded
	// Nodes are "site/node" or "node" names; empty: every node.
	Nodes []string
	// Streams; empty: every stream.
	Streams []string
}

// Export writes the readings q selects as CSV, a header line first, in
// (site, node, stream, seq) order, and returns how many rows it wrote. ts is
// RFC 3339 UTC with milliseconds, as on the wire; a null is an empty cell.
func (s *Store) Export(ctx context.Context, q Query, w *csv.Writer) (int, error) {
	cols := readingColumns()
	cols = append(cols[:7:7], cols[8:]...) // without received_at
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return s.d.placeholder(len(args))
	}
	if !q.From.IsZero() {
		where = append(where, "ts >= "+arg(s.ts(q.From)))
	}
	if !q.To.IsZero() {
		where = append(where, "ts < "+arg(s.ts(q.To)))
	}
	if len(q.Nodes) > 0 {
		var or []string
		for _, n := range q.Nodes {
			if site, node, ok := strings.Cut(n, "/"); ok {
				or = append(or, "(site = "+arg(site)+" AND node = "+arg(node)+")")
			} else {
				or = append(or, "node = "+arg(n))
			}
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	if len(q.Streams) > 0 {
		var in []string
		for _, st := range q.Streams {
			in = append(in, arg(st))
		}
		where = append(where, "stream IN ("+strings.Join(in, ", ")+")")
	}
	sqlq := "SELECT " + strings.Join(cols, ", ") + " FROM readings"
	if len(where) > 0 {
		sqlq += " WHERE " + strings.Join(where, " AND ")
	}
	sqlq += " ORDER BY site, node, stream, seq"
	rows, err := s.db.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	defer rows.Close()
	if err := w.Write(cols); err != nil {
		return 0, err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	rec := make([]string, len(cols))
	n := 0
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, fmt.Errorf("export: %w", err)
		}
		for i, v := range vals {
			rec[i], err = s.cell(cols[i], v)
			if err != nil {
				return n, fmt.Errorf("export: column %s: %w", cols[i], err)
			}
		}
		if err := w.Write(rec); err != nil {
			return n, err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	w.Flush()
	return n, w.Error()
}

// cell writes one value as CSV text.
func (s *Store) cell(col string, v any) (string, error) {
	if col == "ts" {
		t, err := s.scanTS(v)
		return t.UTC().Format(wire.TimeLayout), err
	}
	switch v := v.(type) {
	case nil:
		return "", nil
	case int64:
		if col == "backlog" {
			return strconv.FormatBool(v != 0), nil
		}
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	case int32:
		return strconv.FormatInt(int64(v), 10), nil
	}
	return "", fmt.Errorf("value of type %T", v)
}
