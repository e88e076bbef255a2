// Command gen writes the farm's Grafana dashboards as JSON: fleet.json,
// broker.json and history.json in -dir, and the archive's alert rules. `make dashboards` runs it with the defaults, which
// produce the committed files; -prefix and -nodes make a fleet dashboard for
// another farm.
package main

//lint:file-ignore SA1019 Grafana provisions dashboards from files in the v1 schema, dashboard.Dashboard; the SDK marks it deprecated in favour of v2, which file provisioning does not read by default.

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/sensorfarm/sensorfarm/dashboards"
)

func main() {
	def := dashboards.DefaultOptions()
	defNodes := make([]string, len(def.Nodes))
	for i, n := range def.Nodes {
		defNodes[i] = n.Site + "/" + n.Node
	}
	dir := flag.String("dir", "dashboards", "directory to write fleet.json and broker.json in")
	prefix := flag.String("prefix", def.Prefix, "first topic level of the farm (the bridges' --prefix)")
	nodes := flag.String("nodes", strings.Join(defNodes, ","), "comma-separated <site>/<node> the fleet dashboard offers")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dir, *prefix, *nodes); err != nil {
		log.Error("dashboards not written", "err", err)
		os.Exit(1)
	}
}

func run(dir, prefix, nodeList string) error {
	nodes, err := dashboards.ParseNodes(prefix, nodeList)
	if err != nil {
		return fmt.Errorf("-nodes: %w", err)
	}
	fleet, err := dashboards.Fleet(dashboards.Options{Prefix: prefix, Nodes: nodes})
	if err != nil {
		return err
	}
	broker, err := dashboards.Broker()
	if err != nil {
		return err
	}
	history, err := dashboards.History()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		d    dashboard.Dashboard
	}{{dashboards.FleetFile, fleet}, {dashboards.BrokerFile, broker}, {dashboards.HistoryFile, history}} {
		b, err := dashboards.Encode(f.d)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	alerts, err := dashboards.AlertRules()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, dashboards.AlertsFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, alerts, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
