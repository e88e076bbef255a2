package natscluster

import (
	"net"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every node gets its own ports, on loopback, and names all three routes;
// the settings are exactly those nats.conf reads.
func TestPlan(t *testing.T) {
	nodes, err := Plan("/data", "/tls/crt", "/tls/key")
	require.NoError(t, err)
	require.Len(t, nodes, Size)
	seen := map[string]bool{}
	for _, n := range nodes {
		for _, a := range []string{n.Client, n.HTTP, n.MQTT, n.Route} {
			require.False(t, seen[a], "%s handed out twice", a)
			seen[a] = true
			host, _, err := net.SplitHostPort(a)
			require.NoError(t, err)
			require.Equal(t, "127.0.0.1", host)
		}
	}
	n := nodes[1]
	require.Equal(t, "nats-1", n.Name)
	require.Subset(t, n.Env, []string{"NATS_SERVER_NAME=nats-1", "NATS_HOST=127.0.0.1", "NATS_HTTP=" + n.HTTP,
		"NATS_STORE_DIR=/data/nats-1", "NATS_TLS_CERT=/tls/crt", "NATS_TLS_KEY=/tls/key",
		"NATS_CLUSTER_PORT=" + port(n.Route), "NATS_CLIENT_PORT=" + port(n.Client), "NATS_MQTT_PORT=" + port(n.MQTT),
		"NATS_ROUTE_0=nats-route://" + nodes[0].Route, "NATS_ROUTE_1=nats-route://" + n.Route, "NATS_ROUTE_2=nats-route://" + nodes[2].Route})
	require.Equal(t, "mqtts://localhost:"+port(n.MQTT), n.URL())
	argv := Argv("bin/nats-server", "conf/nats.conf", n.Env)
	require.Equal(t, "env", argv[0])
	require.Equal(t, []string{"bin/nats-server", "-c", "conf/nats.conf"}, argv[len(argv)-3:])

	// The settings are those the configuration file uses, no more, no less.
	conf, err := os.ReadFile("../../nats/k8s/nats.conf")
	require.NoError(t, err)
	used := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$(NATS_[A-Z0-9_]+)`).FindAllStringSubmatch(string(conf), -1) {
		used[m[1]] = true
	}
	set := map[string]bool{}
	for _, e := range n.Env {
		name, _, _ := strings.Cut(e, "=")
		set[name] = true
	}
	require.Equal(t, used, set)
}
