package e2e

import (
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
	_, addr := startBrokerWithUsers(t, users)

	bridge := account{name: "farm1-node1", password: m[1], role: "bridge", site: "farm1", node: "node1"}
	sub := subscribe(t, addr, append(mqttArgs(addr, grafana, "g-token"), "-t", "sensorfarm/#")...)
	time.Sleep(300 * time.Millisecond)
	require.True(t, pubAs(t, addr, bridge, "sensorfarm/farm1/node1/env", `{"seq":1}`))
	require.Equal(t, `{"seq":1}`, sub.next("sensorfarm/farm1/node1/env", 5*time.Second).Payload)

	wrong := bridge
	wrong.password = m[1][:42] + "x"
	code, out = runOnce(t, nil, append([]string{"mosquitto_pub"}, append(mqttArgs(addr, wrong, wrong.clientID()), "-q", "1", "-t", "sensorfarm/farm1/node1/env", "-m", "x")...)...)
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "not authorised")
}
