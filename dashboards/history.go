package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// HistoryFile is the history dashboard's file.
const HistoryFile = "history.json"

// seriesSQL is a time series of one readings column per node, in Grafana's
// long format (time, metric, value).
func seriesSQL(table, stream, column string) string {
	where := "$__timeFilter(ts)"
	if stream != "" {
		where = "stream = '" + stream + "' AND " + where
	}
	return `SELECT ts AS "time", site || '/' || node AS metric, ` + column + `
FROM ` + table + `
WHERE ` + where + `
ORDER BY 1`
}

// History is the dashboard of the archive (archive/README.md), on Grafana's
// PostgreSQL data source: every reading at its own ts, backlog included, the
// bridges' health over time, and the audit views.
func History() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("Sensorfarm history").
		Uid("sensorfarm-history").
		Description("The archive (bin/archive with --db postgres://…): every reading at the time it was taken, the bridges' health, and the audit of what the farm collected.").
		Tags([]string{"sensorfarm", "postgresql", "archive"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-24h", "now").
		Refresh("1m")

	b.WithRow(dashboard.NewRowBuilder("Readings"))
	b.WithPanel(sqlSeries("Temperature", "celsius", 8, seriesSQL("readings", "env", "temperature_c")))
	b.WithPanel(sqlSeries("Humidity", "percent", 8, seriesSQL("readings", "env", "humidity_pct")))
	b.WithPanel(sqlSeries("Pressure", "pressurehpa", 8, seriesSQL("readings", "env", "pressure_hpa")))
	b.WithPanel(sqlSeries("Readings archived per minute", "short", 12, `SELECT $__timeGroupAlias(ts, '1m'), site || '/' || node || ' ' || stream AS metric, COUNT(*) AS readings
FROM readings
WHERE $__timeFilter(ts)
GROUP BY 1, 2
ORDER BY 1`).Description("By the time they were taken: a dip that fills later is a backlog replayed."))
	b.WithPanel(sqlSeries("Backlog readings per minute", "short", 12, `SELECT $__timeGroupAlias(ts, '1m'), site || '/' || node || ' ' || stream AS metric, COUNT(*) AS readings
FROM readings
WHERE backlog AND $__timeFilter(ts)
GROUP BY 1, 2
ORDER BY 1`).Description("Readings taken while their bridge could not reach the broker, replayed later."))

	b.WithRow(dashboard.NewRowBuilder("Bridges' health"))
	b.WithPanel(sqlSeries("Spool depth", "short", 8, seriesSQL("health", "", "spool_depth")).
		Description("Readings in a bridge's spool the broker has not acknowledged."))
	b.WithPanel(sqlSeries("Readings dropped", "short", 8, seriesSQL("health", "", "dropped")).
		Description("Readings a bridge had to discard: the one number that says data was lost."))
	b.WithPanel(sqlSeries("GPS fix", "short", 8, seriesSQL("health", "", "gps_fix")))

	b.WithRow(dashboard.NewRowBuilder("Audit"))
	b.WithPanel(sqlTable("Streams", 24, `SELECT site, node, stream, readings, last_seq, missing, duplicates, reused, last_ts
FROM audit_streams
ORDER BY site, node, stream`).Description("Per stream: readings archived, last seq, seq numbers missing, duplicate deliveries dropped, seq numbers reused (resets)."))
	b.WithPanel(sqlTable("Missing seq ranges", 12, `SELECT site, node, stream, first_seq, last_seq, missing
FROM audit_missing
ORDER BY missing DESC, site, node, stream
LIMIT 200`))
	b.WithPanel(sqlTable("Dead letters", 12, `SELECT reason, messages, first_at, last_at
FROM audit_dead_letters
ORDER BY messages DESC`).Description("Messages that were not readings of the contract, kept aside in dead_letters."))

	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("history dashboard: %w", err)
	}
	numberPanels(&d)
	return d, nil
}

func sqlSeries(title, unit string, width uint32, rawSQL string) *timeseries.PanelBuilder {
	return timeseries.NewPanelBuilder().
		Title(title).
		Datasource(archiveRef()).
		Targets([]cog.Builder[variants.Dataquery]{NewSQLQueryBuilder("A", SQLFormatTimeSeries, rawSQL)}).
		Height(8).Span(width).
		Unit(unit).
		Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom))
}

func sqlTable(title string, width uint32, rawSQL string) *table.PanelBuilder {
	return table.NewPanelBuilder().
		Title(title).
		Datasource(archiveRef()).
		Targets([]cog.Builder[variants.Dataquery]{NewSQLQueryBuilder("A", SQLFormatTable, rawSQL)}).
		Height(8).Span(width).
		// No footer; Grafana's schema requires its reducer list all the same.
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{}))
}

// SQL returns every SQL query of a dashboard's panels, for the tests.
func SQL(d dashboard.Dashboard) []SQLQuery {
	var out []SQLQuery
	for _, p := range panels(d) {
		for _, t := range p.Targets {
			if q, ok := t.(SQLQuery); ok {
				out = append(out, q)
			}
		}
	}
	return out
}
