package dashboards

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// promQuery is one PromQL expression of a panel and its legend.
type promQuery struct {
	expr, legend string
}

// Broker is the dashboard of the broker, from its Prometheus metrics (the
// sensorfarm_broker_* names of broker/metrics, and the Go and process
// collectors' own): clients and traffic, the readings and their gaps per
// node, refusals, store errors and the process.
func Broker() (dashboard.Dashboard, error) {
	const rate = "[$__rate_interval]"
	b := dashboard.NewDashboardBuilder("Sensorfarm broker").
		Uid("sensorfarm-broker").
		Description("The broker's Prometheus metrics (/metrics on --ops-listen): traffic, readings and gaps per node, refusals, store and process.").
		Tags([]string{"sensorfarm", "prometheus"}).
		Editable().
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		Time("now-6h", "now").
		Refresh("30s")

	b.WithRow(dashboard.NewRowBuilder("Clients and traffic"))
	b.WithPanel(promStat("Clients connected", "", promQuery{"sensorfarm_broker_clients_connected", ""}))
	b.WithPanel(promStat("Retained messages", "", promQuery{"sensorfarm_broker_retained_messages", ""}))
	b.WithPanel(promStat("Subscriptions", "", promQuery{"sensorfarm_broker_subscriptions", ""}))
	b.WithPanel(promStat("In flight", "QoS 1 messages waiting for a client's acknowledgement, persistent sessions of absent clients included.",
		promQuery{"sensorfarm_broker_inflight_messages", ""}))
	b.WithPanel(promSeries("Messages", "PUBLISH packets per second. Dropped: a subscriber's queue was full (--client-pending-writes).", "mps", 12,
		promQuery{"rate(sensorfarm_broker_messages_received_total" + rate + ")", "received"},
		promQuery{"rate(sensorfarm_broker_messages_sent_total" + rate + ")", "sent"},
		promQuery{"rate(sensorfarm_broker_messages_dropped_total" + rate + ")", "dropped"}))
	b.WithPanel(promSeries("Bytes", "", "Bps", 12,
		promQuery{"rate(sensorfarm_broker_received_bytes_total" + rate + ")", "received"},
		promQuery{"rate(sensorfarm_broker_sent_bytes_total" + rate + ")", "sent"}))

	b.WithRow(dashboard.NewRowBuilder("Readings and gaps"))
	b.WithPanel(promSeries("Readings received", "Readings with a valid seq per second, per node and stream, backlog replays included.", "rps", 12,
		promQuery{"sum by (site, node, stream) (rate(sensorfarm_broker_readings_received_total" + rate + "))", "{{site}}/{{node}} {{stream}}"}))
	b.WithPanel(promSeries("Readings missing", "Seq numbers never received: gaps less what the backlog replay filled. A gap that stays open is data lost.", "short", 12,
		promQuery{"sensorfarm_broker_readings_missing > 0", "{{site}}/{{node}} {{stream}}"}))
	b.WithPanel(promSeries("Duplicates and seq resets", "Duplicates are harmless (at-least-once delivery); a reset is a bridge that lost its spool.", "short", 12,
		promQuery{"sum by (site, node, stream) (increase(sensorfarm_broker_readings_duplicates_total" + rate + ")) > 0", "duplicates {{site}}/{{node}} {{stream}}"},
		promQuery{"sum by (site, node, stream) (increase(sensorfarm_broker_seq_resets_total" + rate + ")) > 0", "resets {{site}}/{{node}} {{stream}}"}))
	b.WithPanel(promSeries("Readings not tracked", "Stale: below a stream's window; invalid: no usable seq; untracked: past the stream limit.", "short", 12,
		promQuery{"increase(sensorfarm_broker_readings_stale_total" + rate + ")", "stale"},
		promQuery{"increase(sensorfarm_broker_readings_invalid_total" + rate + ")", "invalid"},
		promQuery{"increase(sensorfarm_broker_readings_untracked_total" + rate + ")", "untracked"},
		promQuery{"sensorfarm_broker_streams_tracked", "streams tracked"}))

	b.WithRow(dashboard.NewRowBuilder("Refusals and store"))
	b.WithPanel(promSeries("Refusals", "Connections refused by authentication, and accesses the ACL denied.", "short", 8,
		promQuery{"increase(sensorfarm_broker_auth_failures_total" + rate + ")", "auth failures"},
		promQuery{"sum by (access) (increase(sensorfarm_broker_acl_denials_total" + rate + "))", "ACL denied {{access}}"}))
	b.WithPanel(promSeries("Store errors", "Failures of the persistent store by operation: anything here means acknowledged messages may not be on disk.", "short", 8,
		promQuery{"sum by (op) (increase(sensorfarm_broker_store_errors_total" + rate + ")) > 0", "{{op}}"}))
	b.WithPanel(promSeries("Collectors", "1 when a metrics collector's last scrape worked.", "short", 8,
		promQuery{"sensorfarm_broker_collector_success", "{{collector}}"}))

	b.WithRow(dashboard.NewRowBuilder("Process"))
	b.WithPanel(promSeries("Memory", "", "bytes", 8,
		promQuery{"process_resident_memory_bytes", "resident {{instance}}"},
		promQuery{"go_memstats_heap_inuse_bytes", "Go heap in use {{instance}}"}))
	b.WithPanel(promSeries("CPU", "", "percentunit", 8,
		promQuery{"rate(process_cpu_seconds_total" + rate + ")", "{{instance}}"}))
	b.WithPanel(promSeries("Goroutines and open files", "Each MQTT client costs two goroutines and a socket.", "short", 8,
		promQuery{"go_goroutines", "goroutines {{instance}}"},
		promQuery{"process_open_fds", "open files {{instance}}"}))

	d, err := b.Build()
	if err != nil {
		return dashboard.Dashboard{}, fmt.Errorf("broker dashboard: %w", err)
	}
	numberPanels(&d)
	return d, nil
}

func promTargets(qs []promQuery) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], len(qs))
	for i, q := range qs {
		b := prometheus.NewDataqueryBuilder().
			Datasource(prometheusRef()).
			RefId(string(rune('A' + i))).
			Expr(q.expr).
			Range()
		if q.legend != "" {
			b.LegendFormat(q.legend)
		}
		out[i] = b
	}
	return out
}

func promSeries(title, description, unit string, width uint32, qs ...promQuery) cog.Builder[dashboard.Panel] {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Datasource(prometheusRef()).
		Targets(promTargets(qs)).
		Height(8).Span(width).
		Unit(unit).
		Legend(common.NewVizLegendOptionsBuilder().ShowLegend(true).DisplayMode(common.LegendDisplayModeList).Placement(common.LegendPlacementBottom))
	if description != "" {
		p.Description(description)
	}
	return p
}

func promStat(title, description string, q promQuery) cog.Builder[dashboard.Panel] {
	p := stat.NewPanelBuilder().
		Title(title).
		Orientation(common.VizOrientationAuto).
		Datasource(prometheusRef()).
		Targets(promTargets([]promQuery{q})).
		Height(4).Span(6).
		GraphMode(common.BigValueGraphModeArea).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
	if description != "" {
		p.Description(description)
	}
	return p
}
