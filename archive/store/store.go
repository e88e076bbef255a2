// Package store keeps the archive in a SQL database: PostgreSQL, or SQLite
// embedded in the binary (modernc.org/sqlite, pure Go, so static builds stay
// static). Both hold the same tables and audit views (archive/README.md);
// only types and placeholders differ (dialect).
//
// Commit writes a batch in one transaction: readings that are new are
// inserted, a reading already archived with the same ts is a duplicate
// (counted), one with another ts is a numbering that went back (kept as a
// dead letter, counted). Nothing is acknowledged to the broker before Commit
// returns, so the database, not the archive's memory, says what was received.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// Store is an open archive database.
type Store struct {
	db *sql.DB
	d  dialect
	// Kind is "postgres" or "sqlite".
	Kind string
}

// IsPostgres reports whether dsn names a PostgreSQL database rather than a
// SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// Redact is dsn without its password, for logs.
func Redact(dsn string) string {
	if !IsPostgres(dsn) {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable)"
	}
	return u.Redacted()
}

// Open opens the database dsn names (postgres://… or a file path), creates
// the tables if they are missing and (re)creates the audit views.
func Open(ctx context.Context, dsn string) (*Store, error) {
	s, err := open(dsn)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens an archive that exists, for export: it creates nothing.
func OpenReadOnly(ctx context.Context, dsn string) (*Store, error) {
	s, err := open(dsn)
	if err != nil {
		return nil, err
	}
	if err := s.db.PingContext(ctx); err != nil {
		s.db.Close()
		return nil, fmt.Errorf("archive database %s: %w", Redact(dsn), err)
	}
	return s, nil
}

func open(dsn string) (*Store, error) {
	if IsPostgres(dsn) {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("archive database %s: %w", Redact(dsn), err)
		}
		// One writer, plus room for the health check and an export.
		db.SetMaxOpenConns(4)
		return &Store{db: db, d: postgres, Kind: postgres.name}, nil
	}
	if dsn == "" {
		return nil, errors.New("archive database: no --db given")
	}
	path, err := filepath.Abs(dsn)
	if err != nil {
		return nil, fmt.Errorf("archive database %s: %w", dsn, err)
	}
	// WAL lets an export read while the archive writes; synchronous FULL
	// makes a commit durable before it returns, since the archive
	// acknowledges to the broker right after (a power cut then loses
	// nothing the broker has forgotten); the busy timeout waits for a
	// reader's lock instead of failing.
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("archive database %s: %w", dsn, err)
	}
	// SQLite has one writer; one connection also keeps the pragmas on it.
	db.SetMaxOpenConns(1)
	return &Store{db: db, d: sqlite, Kind: sqlite.name}, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("archive database: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it does nothing
	for _, q := range s.d.tables() {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("archive schema: %w\n%s", err, q)
		}
	}
	vs := views()
	for i := len(vs) - 1; i >= 0; i-- {
		if _, err := tx.ExecContext(ctx, "DROP VIEW IF EXISTS "+vs[i].name); err != nil {
			return fmt.Errorf("archive schema: view %s: %w", vs[i].name, err)
		}
	}
	for _, v := range vs {
		if _, err := tx.ExecContext(ctx, "CREATE VIEW "+v.name+" AS\n"+v.query); err != nil {
			return fmt.Errorf("archive schema: view %s: %w", v.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("archive schema: %w", err)
	}
	return nil
}

// DB is the database, for queries of the audit views and the dashboards'.
func (s *Store) DB() *sql.DB { return s.db }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// TS is how a timestamp is passed to the database (for queries of others).
func (s *Store) TS(t time.Time) any { return s.ts(t) }

// ts is how a timestamp is passed to the database.
func (s *Store) ts(t time.Time) any {
	if s.d.name == sqlite.name {
		return t.UTC().Format(tsLayout)
	}
	return t.UTC()
}

// scanTS reads back a timestamp column.
func (s *Store) scanTS(v any) (time.Time, error) {
	switch v := v.(type) {
	case time.Time:
		return v.UTC(), nil
	case string:
		return time.Parse(time.RFC3339Nano, v)
	case []byte:
		return time.Parse(time.RFC3339Nano, string(v))
	}
	return time.Time{}, fmt.Errorf("timestamp of type %T", v)
}

// Batch is what one transaction writes: the decoded messages in the order
// they arrived.
type Batch struct {
	Items []decode.Item
	// ReceivedAt stamps the batch's rows (received_at).
	ReceivedAt time.Time
}

// Result counts what Commit did with a batch.
type Result struct {
	Inserted int // readings archived
	// InsertedByStream splits Inserted by stream.
	InsertedByStream map[string]int
	Duplicates       int // readings archived before (retained repeats not counted)
	Retained         int // retained repeats of a reading archived before
	Health           int // health reports archived (repeats are not counted)
	// Dead counts dead letters written by reason, seq_reused included.
	Dead map[string]int
}
