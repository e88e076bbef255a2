package dashboards

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/internal/pgtest"
)

func TestHistoryCommittedIsGenerated(t *testing.T) {
	d, err := History()
	require.NoError(t, err)
	want, err := Encode(d)
	require.NoError(t, err)
	got, err := os.ReadFile(HistoryFile)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "%s is stale: run make dashboards", HistoryFile)
	back, err := Encode(committed(t, HistoryFile))
	require.NoError(t, err)
	require.JSONEq(t, string(got), string(back), "%s does not survive a decode into the SDK's types", HistoryFile)
	require.Len(t, SQL(committed(t, HistoryFile)), 11, "every panel's SQL query decodes")

	alerts, err := AlertRules()
	require.NoError(t, err)
	committedAlerts, err := os.ReadFile(AlertsFile)
	require.NoError(t, err)
	require.Equal(t, string(alerts), string(committedAlerts), "%s is stale: run make dashboards", AlertsFile)
}

// grafanaMacros expands the macros of Grafana's PostgreSQL data source the
// dashboards use, as Grafana does (pkg/tsdb/grafana-postgresql-datasource,
// macros.go): $__timeFilter(c) is c BETWEEN two RFC 3339 literals,
// $__timeGroupAlias(c, 'd') is floor(extract(epoch from c)/s)*s AS "time".
func grafanaMacros(t *testing.T, sql string, from, to time.Time) string {
	t.Helper()
	sql = regexp.MustCompile(`\$__timeFilter\((\w+)\)`).ReplaceAllString(sql,
		fmt.Sprintf("$1 BETWEEN '%s' AND '%s'", from.UTC().Format(time.RFC3339Nano), to.UTC().Format(time.RFC3339Nano)))
	sql = regexp.MustCompile(`\$__timeGroupAlias\((\w+), '(\w+)'\)`).ReplaceAllStringFunc(sql, func(m string) string {
		p := regexp.MustCompile(`\$__timeGroupAlias\((\w+), '(\w+)'\)`).FindStringSubmatch(m)
		d, err := time.ParseDuration(p[2])
		require.NoError(t, err)
		s := int(d.Seconds())
		return fmt.Sprintf(`floor(extract(epoch from %s)/%d)*%d AS "time"`, p[1], s, s)
	})
	require.NotContains(t, sql, "$__", "a macro the test does not expand")
	return sql
}

// archiveWithData is a real PostgreSQL holding the archive's schema and an
// hour of readings and health of two nodes: n1 healthy, n2 silent for 20
// minutes with a growing spool and dropped readings, one seq missing.
func archiveWithData(t *testing.T) (*store.Store, time.Time) {
	pg, err := pgtest.Start(context.Background())
	require.NoError(t, err)
	t.Cleanup(pg.Stop)
	st, err := store.Open(context.Background(), pg.DSN)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	dec := decode.Decoder{Prefix: "sensorfarm", MaxPayload: decode.DefaultMaxPayload}
	now := time.Now().UTC()
	var items []decode.Item
	msg := func(topic, payload string, args ...any) {
		it := dec.Decode(decode.Message{Topic: topic, Payload: fmt.Appendf(nil, payload, args...)})
		require.Nil(t, it.Dead, "%s", payload)
		items = append(items, it)
	}
	for i := 1; i <= 60; i++ {
		ts := now.Add(time.Duration(i-60) * time.Minute).Format("2006-01-02T15:04:05.000Z")
		for _, node := range []string{"n1", "n2"} {
			if node == "n2" && (i > 40 || i == 7) {
				continue
			}
			topic := "sensorfarm/s/" + node + "/env"
			if i%10 == 0 {
				topic = "sensorfarm/s/" + node + "/backlog/env"
			}
			msg(topic, `{"site":"s","node":%q,"seq":%d,"ts":%q,"time_source":"system","temperature_c":%d.5,"humidity_pct":40,"pressure_hpa":1013.2}`, node, i, ts, 15+i%5)
			depth, dropped := 0, 0
			if node == "n2" {
				depth, dropped = 20*i, i/20
			}
			msg("sensorfarm/s/"+node+"/health", `{"site":"s","node":%q,"ts":%q,"time_source":"system","version":"v1","uptime_s":%d,"spool_depth":%d,"spool_bytes":%d,"dropped":%d,"sensor_errors":{"bme280":0},"gps_fix":3,"last_publish_ts":null}`,
				node, ts, i*60, depth, depth*100, dropped)
		}
	}
	// received_at is the commit's time: n2's readings committed 20 minutes ago.
	var n1, n2 []decode.Item
	for _, it := range items {
		if (it.Reading != nil && it.Reading.Node == "n2") || (it.Health != nil && it.Health.Node == "n2") {
			n2 = append(n2, it)
		} else {
			n1 = append(n1, it)
		}
	}
	_, err = st.Commit(context.Background(), store.Batch{Items: n1, ReceivedAt: now})
	require.NoError(t, err)
	_, err = st.Commit(context.Background(), store.Batch{Items: n2, ReceivedAt: now.Add(-20 * time.Minute)})
	require.NoError(t, err)
	return st, now
}

// TestHistoryQueriesRunOnPostgreSQL runs every panel's query, macros
// expanded as Grafana does, against a real PostgreSQL holding the archive's
// schema: each runs, a time series has its time column, and each returns
// rows from the data.
func TestHistoryQueriesRunOnPostgreSQL(t *testing.T) {
	st, now := archiveWithData(t)
	for _, q := range SQL(committed(t, HistoryFile)) {
		sql := grafanaMacros(t, q.RawSQL, now.Add(-2*time.Hour), now)
		rows, err := st.DB().Query(sql)
		require.NoError(t, err, sql)
		cols, err := rows.Columns()
		require.NoError(t, err)
		n := 0
		for rows.Next() {
			n++
		}
		require.NoError(t, rows.Err())
		rows.Close()
		if q.Format == SQLFormatTimeSeries {
			require.Equal(t, "time", cols[0], sql)
			require.Equal(t, "metric", cols[1], sql)
		}
		if !strings.Contains(sql, "audit_dead_letters") {
			require.Positive(t, n, "no rows from\n%s", sql)
		}
	}
}

// TestAlertRulesFireOnPostgreSQL: each alert query, run on the archive,
// puts the troubled node above its threshold and the healthy one below.
func TestAlertRulesFireOnPostgreSQL(t *testing.T) {
	st, _ := archiveWithData(t)
	var file alertFile
	b, err := os.ReadFile(AlertsFile)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(b, &file))
	require.Len(t, file.Groups, 1)
	rules := file.Groups[0].Rules
	alerts := Alerts()
	require.Len(t, rules, len(alerts))
	for i, a := range alerts {
		require.Equal(t, a.UID, rules[i].UID)
		rows, err := st.DB().Query(a.SQL)
		require.NoError(t, err, a.SQL)
		values := map[string]float64{}
		for rows.Next() {
			var site, node string
			var v float64
			require.NoError(t, rows.Scan(&site, &node, &v))
			values[site+"/"+node] = v
		}
		require.NoError(t, rows.Err())
		rows.Close()
		require.Greater(t, values["s/n2"], a.Above, "%s fires for n2", a.Title)
		require.LessOrEqual(t, values["s/n1"], a.Above, "%s stays quiet for n1", a.Title)
	}
}
