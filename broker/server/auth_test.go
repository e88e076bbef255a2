package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/broker/config"
)

// user makes a user with a fast hash of password (bcrypt's minimum cost).
func user(t *testing.T, name string, role auth.Role, site, node, password string) auth.User {
	t.Helper()
	h, err := auth.HashPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	return auth.User{Name: name, Role: role, Site: site, Node: node, PasswordHash: h}
}

func farm(t *testing.T) []auth.User {
	return []auth.User{
		user(t, "b1", auth.RoleBridge, "farm1", "node1", "pw-b1"),
		user(t, "b2", auth.RoleBridge, "farm1", "node2", "pw-b2"),
		user(t, "grafana", auth.RoleReader, "", "", "pw-grafana"),
		user(t, "root", auth.RoleAdmin, "", "", "pw-root"),
	}
}

func usersFile(t *testing.T, users []auth.User) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users.yaml")
	require.NoError(t, auth.WriteUsers(p, users))
	return p
}

func invalidUsers(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "users.yaml")
	require.NoError(t, os.WriteFile(p, []byte("users:\n- name: a\n  role: root\n  password_hash: x\n"), 0o600))
	return p
}

func startWithUsers(t *testing.T, path string) *broker {
	t.Helper()
	return startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Users: path, Prefix: "sensorfarm"})
}

func TestUsersAndACL(t *testing.T) {
	b := startWithUsers(t, usersFile(t, farm(t)))
	require.Regexp(t, `msg=listening addr=\S+ users=\S+ user_count=4 prefix=sensorfarm`, b.Log.String())

	// Refused: anonymous, a wrong password, an unknown user, a bridge on
	// another node's client ID. MQTT 3.1.1 says "not authorized".
	for _, c := range []struct{ id, user, password string }{
		{"anon", "", ""},
		{"g", "grafana", "pw-root"},
		{"m", "mallory", "pw-root"},
		{"bridge:farm1:node2", "b1", "pw-b1"},
	} {
		_, err := connectAs(t, b.Addr(), c.id, c.user, c.password)
		require.ErrorContains(t, err, "not Authorized", "%+v", c)
	}
	log := b.Log.String()
	require.Equal(t, 4, strings.Count(log, `msg="connection refused"`), log)
	for _, pw := range []string{"pw-b1", "pw-root"} {
		require.NotContains(t, log, pw)
	}

	reader, err := connectAs(t, b.Addr(), "grafana-1", "grafana", "pw-grafana")
	require.NoError(t, err)
	msgs := subscribe(t, reader, "sensorfarm/+/+/env")

	b1, err := connectAs(t, b.Addr(), "bridge:farm1:node1", "b1", "pw-b1")
	require.NoError(t, err)
	publish(t, b1, "sensorfarm/farm1/node1/env", `{"seq":1}`, true)
	m := receiveLive(t, msgs)
	require.Equal(t, "sensorfarm/farm1/node1/env", m.Topic())

	// A bridge may not subscribe to everything: SUBACK failure (0x80).
	tok := b1.Subscribe("#", 1, func(paho.Client, paho.Message) {})
	require.True(t, tok.WaitTimeout(waitFor))
	require.Equal(t, byte(0x80), tok.(*paho.SubscribeToken).Result()["#"])
	tok = b1.Subscribe("homeassistant/status", 1, func(paho.Client, paho.Message) {})
	require.True(t, tok.WaitTimeout(waitFor))
	require.Equal(t, byte(1), tok.(*paho.SubscribeToken).Result()["homeassistant/status"])

	// A bridge publishing for another node: MQTT 3.1.1 has no negative
	// PUBACK, so mochi disconnects it; the reader never sees the message.
	b2, err := connectAs(t, b.Addr(), "bridge:farm1:node2", "b2", "pw-b2")
	require.NoError(t, err)
	b2.Publish("sensorfarm/farm1/node1/env", 1, false, "forged").WaitTimeout(time.Second)
	require.Eventually(t, func() bool { return !b2.IsConnectionOpen() }, waitFor, 10*time.Millisecond)
	publish(t, b1, "sensorfarm/farm1/node1/env", `{"seq":2}`, true)
	require.Equal(t, `{"seq":2}`, string(receiveLive(t, msgs).Payload()), "the forged message was dropped")
	require.Contains(t, b.Log.String(), `msg="access denied" component=mqtt hook=sensorfarm-auth user=b2 client=bridge:farm1:node2 access=write topic=sensorfarm/farm1/node1/env`)

	// Another user may not take over a bridge's session: b1 stays connected.
	_, err = connectAs(t, b.Addr(), "bridge:farm1:node1", "root", "pw-root")
	require.ErrorContains(t, err, "not Authorized")
	time.Sleep(100 * time.Millisecond)
	require.True(t, b1.IsConnectionOpen())
	publish(t, b1, "sensorfarm/farm1/node1/env", `{"seq":3}`, true)
	require.Equal(t, `{"seq":3}`, string(receiveLive(t, msgs).Payload()))
}

func TestReload(t *testing.T) {
	users := farm(t)
	path := usersFile(t, users)
	b := startWithUsers(t, path)
	reader, err := connectAs(t, b.Addr(), "grafana-1", "grafana", "pw-grafana")
	require.NoError(t, err)
	msgs := subscribe(t, reader, "sensorfarm/#")

	_, err = connectAs(t, b.Addr(), "late", "late", "pw-late")
	require.Error(t, err)
	require.NoError(t, auth.WriteUsers(path, append(users, user(t, "late", auth.RoleAdmin, "", "", "pw-late"))))
	require.NoError(t, b.Reload())
	require.Contains(t, b.Log.String(), `msg="users reloaded" file=`+path+` user_count=5`)
	late, err := connectAs(t, b.Addr(), "late", "late", "pw-late")
	require.NoError(t, err)
	publish(t, late, "sensorfarm/farm1/node1/status", "online", false)
	require.Equal(t, "online", string(receive(t, msgs).Payload()), "the reader connected before the reload still receives")

	// A broken file: the reload fails, says why, and the users stay.
	require.NoError(t, os.WriteFile(path, []byte("users:\n- name: late\n  role: admin\n  password: pw-late\n"), 0o600))
	require.ErrorContains(t, b.Reload(), `a plain-text "password" is refused`)
	require.Contains(t, b.Log.String(), `level=ERROR msg="users not reloaded; the previous users stay in force" err="users file `+path)
	_, err = connectAs(t, b.Addr(), "late-2", "late", "pw-late")
	require.NoError(t, err)
	publish(t, late, "sensorfarm/farm1/node1/status", "still", false)
	require.Equal(t, "still", string(receive(t, msgs).Payload()))
	require.True(t, reader.IsConnectionOpen())
}

func TestReloadInDemoMode(t *testing.T) {
	b := startBroker(t, t.TempDir())
	require.ErrorContains(t, b.Reload(), "nothing to reload: demo mode has no users file")
	// Demo mode is unchanged: anonymous clients may do anything.
	c := connect(t, b.Addr(), "anyone")
	msgs := subscribe(t, c, "#")
	publish(t, c, "anything/at/all", "x", false)
	require.Equal(t, "anything/at/all", receive(t, msgs).Topic())
}
