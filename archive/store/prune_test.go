package store

import (
	"bytes"
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/archive/decode"
)

// TestPruneKeepsTheAudit: readings 1..20 a minute apart, 5 missing; pruning
// the first ten minutes into 5-minute rollups keeps their averages, and the
// audit still counts the missing one below the new floor.
func TestPruneKeepsTheAudit(t *testing.T) {
	eachStore(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
		var items []decode.Item
		for seq := 1; seq <= 20; seq++ {
			if seq != 5 {
				items = append(items, env("a", seq, t0.Add(time.Duration(seq-1)*time.Minute), false))
			}
		}
		_, err := s.Commit(ctx, Batch{Items: items, ReceivedAt: t0})
		require.NoError(t, err)
		n, err := s.Prune(ctx, t0.Add(10*time.Minute), 5*time.Minute, time.Time{})
		require.NoError(t, err)
		require.Equal(t, int64(9), n.Readings, "seq 1..10 less the missing 5")
		require.Equal(t, int64(9), n.RolledUp)

		var rows, rolled, buckets int64
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*) FROM readings").Scan(&rows))
		require.Equal(t, int64(10), rows)
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*), SUM(readings) FROM readings_rollup").Scan(&buckets, &rolled))
		require.Equal(t, []int64{2, 9}, []int64{buckets, rolled})
		var avg float64
		require.NoError(t, s.DB().QueryRow("SELECT temperature_c FROM readings_rollup WHERE first_seq = 1").Scan(&avg))
		require.InDelta(t, 21.5, avg, 1e-9)
		var missing, readings int64
		require.NoError(t, s.DB().QueryRow("SELECT missing, readings FROM audit_streams").Scan(&missing, &readings))
		require.Equal(t, int64(1), missing, "seq 5, pruned, still counted")
		require.Equal(t, int64(10), readings)
		require.NoError(t, s.DB().QueryRow("SELECT COUNT(*) FROM audit_missing").Scan(&missing))
		require.Zero(t, missing, "no false gap at the floor")

		// Pruning again changes nothing.
		n, err = s.Prune(ctx, t0.Add(10*time.Minute), 5*time.Minute, time.Time{})
		require.NoError(t, err)
		require.Zero(t, n.Readings)

		var buf bytes.Buffer
		got, err := s.Export(ctx, Query{From: t0.Add(15 * time.Minute), Nodes: []string{"s1/a"}, Streams: []string{"env"}}, csv.NewWriter(&buf))
		require.NoError(t, err)
		require.Equal(t, 5, got)
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		require.Equal(t, "site,node,stream,seq,ts,time_source,backlog,temperature_c,humidity_pct,pressure_hpa,latitude,longitude,altitude_m,speed_kmh,course_deg,fix,sats,hdop,gps_accuracy", lines[0])
		require.Equal(t, "s1,a,env,16,2026-11-24T10:15:00.000Z,system,false,21.5,,1013.2,,,,,,,,,", lines[1])
	})
}
