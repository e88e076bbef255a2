package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var tokenRe = regexp.MustCompile(`(?m)^password: ([A-Za-z0-9_-]{43})$`)

// A bridge user made with the real `broker user add --generate` connects and
// publishes with the token it printed, and with nothing else.
func TestGeneratedToken(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	users := filepath.Join(t.TempDir(), "users.yaml")
	code, out := runWithStdin(t, "", filepath.Join(bin, "broker"), "user", "add", "--users", users,
		"--role", "bridge", "--site", "farm1", "--node", "node1", "--generate", "farm1-node1")
	require.Equal(t, 0, code, out)
	m := tokenRe.FindStringSubmatch(out)
	require.NotNil(t, m, "no token in: %s", out)
	userAdd(t, users, grafana)

	bridge := account{name: "farm1-node1", password: m[1], role: "bridge", site: "farm1", node: "node1"}
	broker, addr := startBrokerWithUsers(t, users)
	sub := subscribe(t, addr, append(mqttArgs(addr, grafana, "g-token"), "-t", "sensorfarm/#")...)
	broker.waitLog(`msg="client authenticated" .* client=g-token `, 15*time.Second)
	// The subscription follows the login by a moment: publish until it is in.
	require.True(t, pubAs(t, addr, bridge, "sensorfarm/farm1/node1/env", `{"seq":1}`))
	require.Eventually(t, func() bool {
		if len(sub.history("sensorfarm/farm1/node1/env")) > 0 {
			return true
		}
		require.True(t, pubAs(t, addr, bridge, "sensorfarm/farm1/node1/env", `{"seq":1}`))
		return false
	}, 15*time.Second, 500*time.Millisecond)

	wrong := bridge
	wrong.password = m[1][:42] + "x"
	code, out = runOnce(t, nil, append([]string{"mosquitto_pub"}, append(mqttArgs(addr, wrong, wrong.clientID()), "-q", "1", "-t", "sensorfarm/farm1/node1/env", "-m", "x")...)...)
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "not authorised")
}

// Connections over TLS leave the count of connections not yet authenticated
// (--max-pending) once they have, as plain ones do: three subscribers stay
// connected over TLS with --max-pending 2, and a fourth client still gets in.
func TestMaxPendingOverTLS(t *testing.T) {
	need(t, "mosquitto_sub")
	dir := t.TempDir()
	ca := newCA(t, "sensorfarm test CA")
	certPEM, keyPEM := ca.issue(t, 100, "localhost")
	caFile, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for f, b := range map[string][]byte{caFile: ca.pem, cert: certPEM, key: keyPEM} {
		require.NoError(t, os.WriteFile(f, b, 0o600))
	}
	users := filepath.Join(dir, "users.yaml")
	userAdd(t, users, grafana)
	broker, port := startTLSBroker(t, users, cert, key, "--max-pending", "2")
	addr := net.JoinHostPort("localhost", port)
	tlsArgs := func(id string, extra ...string) []string {
		return append([]string{"mosquitto_sub", "-h", "localhost", "-p", port, "--cafile", caFile, "-u", grafana.name, "-P", grafana.password,
			"-i", id, "-t", "sensorfarm/#"}, extra...)
	}
	var subs []*subscriber
	for i := range 3 {
		id := fmt.Sprintf("tls-%d", i)
		subs = append(subs, subscribe(t, addr, tlsArgs(id)[5:]...)) // host and port come from addr
		broker.waitLog(`msg="client authenticated" .* client=`+id+` `, 15*time.Second)
		code, out := runOnce(t, nil, tlsArgs(id+"-probe", "-E", "-W", "5")...)
		require.Equal(t, 0, code, "client %d: %s", i, out)
	}
	for i, s := range subs {
		require.True(t, s.running(), "subscriber %d was disconnected: %s", i, s.out)
	}
}
