package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/internal/pgtest"
)

// eachStore runs f against a fresh SQLite file and a fresh database on a
// real PostgreSQL server.
func eachStore(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Run("sqlite", func(t *testing.T) {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "archive.db"))
		require.NoError(t, err)
		defer s.Close()
		f(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		pg, err := pgtest.Start(context.Background())
		require.NoError(t, err)
		defer pg.Stop()
		s, err := Open(context.Background(), pg.DSN)
		require.NoError(t, err)
		defer s.Close()
		f(t, s)
	})
}

var dec = decode.Decoder{Prefix: "sensorfarm", MaxPayload: decode.DefaultMaxPayload}

func env(node string, seq int, ts time.Time, backlog bool) decode.Item {
	topic := "sensorfarm/s1/" + node + "/env"
	if backlog {
		topic = "sensorfarm/s1/" + node + "/backlog/env"
	}
	return dec.Decode(decode.Message{Topic: topic, Payload: fmt.Appendf(nil,
		`{"site":"s1","node":"%s","seq":%d,"ts":"%s","time_source":"system","temperature_c":21.5,"humidity_pct":null,"pressure_hpa":1013.2}`,
		node, seq, ts.UTC().Format("2006-01-02T15:04:05.000Z"))})
}

func TestCommitOnceAndAudit(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC)
		at := func(seq int) time.Time { return t0.Add(time.Duration(seq) * time.Second) }
		// seq 1-3 and 6, then a redelivery of 2 and 3 (one twice in the
		// batch), 5 from the backlog, and 4 never: a gap of one.
		b1 := Batch{ReceivedAt: t0, Items: []decode.Item{env("a", 1, at(1), false), env("a", 2, at(2), false), env("a", 3, at(3), false), env("a", 6, at(6), false)}}
		res, err := s.Commit(ctx, b1)
		require.NoError(t, err)
		require.Equal(t, 4, res.Inserted)
		b2 := Batch{ReceivedAt: t0, Items: []decode.Item{env("a", 2, at(2), false), env("a", 3, at(3), false), env("a", 3, at(3), false),
			env("a", 5, at(5), true), env("a", 1, at(100), false),
			dec.Decode(decode.Message{Topic: "sensorfarm/s1/a/env", Payload: []byte("garbage")})}}
		res, err = s.Commit(ctx, b2)
		require.NoError(t, err)
		require.Equal(t, 1, res.Inserted)
		require.Equal(t, 3, res.Duplicates)
		require.Equal(t, map[string]int{decode.ReasonSeqReused: 1, decode.ReasonNotJSON: 1}, res.Dead)

		var n int
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*) FROM readings").Scan(&n))
		require.Equal(t, 5, n)
		// The backlog reading is at its own ts.
		var ts any
		var backlog bool
		require.NoError(t, s.DB().QueryRow("SELECT ts, backlog FROM readings WHERE seq = 5").Scan(&ts, &backlog))
		got, err := s.scanTS(ts)
		require.NoError(t, err)
		require.True(t, at(5).Equal(got), "ts %v, want %v", got, at(5))
		require.True(t, backlog)

		var first, last, missing int64
		require.NoError(t, s.DB().QueryRow("SELECT first_seq, last_seq, missing FROM audit_missing").Scan(&first, &last, &missing))
		require.Equal(t, []int64{4, 4, 1}, []int64{first, last, missing})
		var readings, lastSeq, dups, reused int64
		require.NoError(t, s.DB().QueryRow("SELECT readings, last_seq, missing, duplicates, reused FROM audit_streams").Scan(&readings, &lastSeq, &missing, &dups, &reused))
		require.Equal(t, []int64{5, 6, 1, 3, 1}, []int64{readings, lastSeq, missing, dups, reused})
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*) FROM dead_letters").Scan(&n))
		require.Equal(t, 2, n)

		// Opening again keeps everything and recreates the views.
		require.NoError(t, s.migrate(ctx))
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*) FROM audit_missing").Scan(&n))
		require.Equal(t, 1, n)
	})
}
