package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/sensorfarm/sensorfarm/archive/store"
)

// startArchive runs the archive on the demo broker with the embedded store,
// so the demo's history fills as it runs.
func startArchive(o options, addr string) (*proc, error) {
	ops, err := pickAddr("127.0.0.1:9884")
	if err != nil {
		return nil, err
	}
	db := filepath.Join(o.dir, "archive.db")
	p, err := start(o, "archive", "--broker", "tcp://"+addr, "--db", db, "--client-id", "demo-archive", "--ops-listen", ops)
	if err != nil {
		return nil, err
	}
	fmt.Printf("the archive keeps every reading in %s (metrics: http://%s/metrics); export it with:\n\n    %s export --db %s --from 1h\n\n",
		db, ops, filepath.Join(o.bin, "archive"), db)
	return p, nil
}

// printHistory says what the archive holds once everything has stopped.
func printHistory(o options) {
	db := filepath.Join(o.dir, "archive.db")
	st, err := store.OpenReadOnly(context.Background(), db)
	if err != nil {
		fmt.Printf("archive: %v\n", err)
		return
	}
	defer st.Close()
	rows, err := st.DB().Query("SELECT site, node, stream, readings, last_seq, missing FROM audit_streams ORDER BY site, node, stream")
	if err != nil {
		fmt.Printf("archive: %v\n", err)
		return
	}
	defer rows.Close()
	fmt.Printf("\nthe archive (%s) holds:\n", db)
	for rows.Next() {
		var site, node, stream string
		var n, last, missing int64
		if err := rows.Scan(&site, &node, &stream, &n, &last, &missing); err != nil {
			fmt.Printf("archive: %v\n", err)
			return
		}
		fmt.Printf("  %s/%s %-4s %6d readings, last seq %d, %d missing\n", site, node, stream, n, last, missing)
	}
}
