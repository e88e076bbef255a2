package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestExportToMosquitto moves a farm's users to Debian's mosquitto: `broker
// user export` writes them and the contract's ACL, a real mosquitto runs on
// those files, and the real mosquitto_pub/sub check that the same passwords
// log in and the same rules hold there.
func TestExportToMosquitto(t *testing.T) {
	need(t, "mosquitto", "mosquitto_pub", "mosquitto_sub")
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	farm := []account{root, grafana, node1, node2}
	var pw strings.Builder
	for _, a := range farm {
		userAdd(t, users, a)
		fmt.Fprintf(&pw, "%s:%s\n", a.name, a.password)
	}
	passwords := filepath.Join(dir, "passwords")
	require.NoError(t, os.WriteFile(passwords, []byte(pw.String()), 0o600))

	out := filepath.Join(dir, "mosquitto")
	code, msg := runOnce(t, nil, filepath.Join(bin, "broker"), "user", "export", "--users", users,
		"--format", "mosquitto", "--passwords", passwords, "--out", out)
	require.Equal(t, 0, code, msg)

	t.Run("a wrong password is refused and nothing is written", func(t *testing.T) {
		bad := filepath.Join(dir, "bad-passwords")
		require.NoError(t, os.WriteFile(bad, []byte(strings.Replace(pw.String(), node2.password, "guess", 1)), 0o600))
		elsewhere := filepath.Join(dir, "not-written")
		code, msg := runOnce(t, nil, filepath.Join(bin, "broker"), "user", "export", "--users", users,
			"--format", "mosquitto", "--passwords", bad, "--out", elsewhere)
		require.Equal(t, 1, code, msg)
		require.Contains(t, msg, "the password of "+node2.name+" is not the one in the users file")
		require.NoDirExists(t, elsewhere)
	})

	// The exported mosquitto.conf as it is, plus a listener of our own.
	conf, err := os.ReadFile(filepath.Join(out, "mosquitto.conf"))
	require.NoError(t, err)
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	conf = fmt.Appendf(conf, "listener %s %s\n", port, host)
	if os.Geteuid() == 0 {
		// mosquitto started as root drops to the user "mosquitto", which
		// cannot read this test's private temporary directory.
		conf = append(conf, "user root\n"...)
	}
	confPath := filepath.Join(dir, "test.conf")
	require.NoError(t, os.WriteFile(confPath, conf, 0o600))
	broker := start(t, "mosquitto", "mosquitto", "-c", confPath)
	broker.waitLog(`mosquitto version [0-9.]+ running`, 10*time.Second)

	own := "sensorfarm/farm1/node1/env"
	reading := `{"site":"farm1","node":"node1","seq":1}`
	sub := subscribe(t, addr, append(mqttArgs(addr, grafana, grafana.clientID()), "-t", "sensorfarm/#")...)
	require.True(t, subAs(t, addr, grafana, "sensorfarm/#"), "a reader subscribes to the farm")
	require.True(t, subAs(t, addr, grafana, "$SYS/#"), "a reader subscribes to the broker's statistics")
	require.False(t, pubAs(t, addr, grafana, own, reading), "a reader publishes nothing")

	// The subscriber must be in before the bridge publishes.
	require.Eventually(t, func() bool { return pubAs(t, addr, node1, own, reading) && len(sub.history(own)) > 0 },
		10*time.Second, 200*time.Millisecond, "a bridge publishes its own readings and a reader gets them")
	require.Equal(t, reading, sub.history(own)[0].Payload)
	require.True(t, pubAs(t, addr, node1, "homeassistant/sensor/sensorfarm_farm1_node1/temperature/config", "{}"),
		"a bridge publishes its own discovery")
	require.False(t, pubAs(t, addr, node1, "sensorfarm/farm1/node2/env", reading), "a bridge does not publish another node's readings")
	require.False(t, pubAs(t, addr, node1, "homeassistant/sensor/sensorfarm_farm1_node2/temperature/config", "{}"),
		"nor its discovery")

	// mosquitto grants every subscription (its acl_file checks reads when it
	// delivers, not in the SUBACK), so what a bridge may read is checked by
	// what reaches it: a bridge subscribed to the whole farm gets only Home
	// Assistant's status. The marker on homeassistant/status goes out after
	// node2's reading, so once it is in, node2's reading would be too.
	spy := subscribe(t, addr, append(mqttArgs(addr, node1, "node1-spy"), "-t", "sensorfarm/#", "-t", "homeassistant/status")...)
	require.Eventually(t, func() bool {
		return pubAs(t, addr, root, "homeassistant/status", "online") && len(spy.history("homeassistant/status")) > 0
	},
		10*time.Second, 200*time.Millisecond, "a bridge listens for Home Assistant's birth")
	other := "sensorfarm/farm1/node2/env"
	require.True(t, pubAs(t, addr, node2, other, reading), "the other bridge publishes its own")
	sub.next(other, 5*time.Second)
	require.True(t, pubAs(t, addr, root, "homeassistant/status", "marker"))
	for spy.next("homeassistant/status", 5*time.Second).Payload != "marker" {
	}
	require.Empty(t, spy.history(other), "a bridge reads nobody's readings")
	require.Empty(t, spy.history(own), "not even its own")
	require.True(t, pubAs(t, addr, root, "anything/at/all", "x"), "an admin may do anything")

	// Wills: our broker refuses a CONNECT whose will is on a topic the user
	// may not publish; mosquitto accepts it but checks the ACL when it sends
	// the will. Either way a bridge cannot post "offline" for another node,
	// while its own will goes out (which shows the kill does send wills).
	will := func(clientID, topic string) {
		t.Helper()
		p := start(t, clientID, append([]string{"mosquitto_sub"}, append(mqttArgs(addr, node1, clientID),
			"-t", "homeassistant/status", "--will-topic", topic, "--will-payload", "offline", "--will-qos", "1")...)...)
		broker.waitLog(`New client connected from \S+ as `+clientID, 5*time.Second)
		p.kill()
		broker.waitLog(`Client `+clientID+` (closed its connection|disconnected)`, 5*time.Second)
	}
	forged, status := "sensorfarm/farm1/node2/status", "sensorfarm/farm1/node1/status"
	will("node1-forger", forged)
	will("node1-own", status)
	require.Equal(t, "offline", sub.next(status, 5*time.Second).Payload, "a bridge's own will")
	require.True(t, pubAs(t, addr, node2, forged, "online"))
	for sub.next(forged, 5*time.Second).Payload != "online" {
	}
	require.Equal(t, []message{{Topic: forged, Payload: "online"}}, sub.history(forged), "no forged will")

	wrong := node1
	wrong.password = "guess"
	code, msg = runOnce(t, nil, append([]string{"mosquitto_pub"}, append(mqttArgs(addr, wrong, wrong.clientID()), "-q", "1", "-t", own, "-m", "x")...)...)
	require.NotEqual(t, 0, code, msg)
	require.Contains(t, msg, "not authorised", "a wrong password is refused")
	code, msg = runOnce(t, nil, "mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-t", own, "-m", "x")
	require.NotEqual(t, 0, code, msg)
	require.Contains(t, msg, "not authorised", "an anonymous client is refused")
}
