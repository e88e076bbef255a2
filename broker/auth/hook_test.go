package auth

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	mochiauth "github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writeUsers writes users to a file in a fresh directory and returns its path.
func writeUsers(t *testing.T, users []User) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users.yaml")
	require.NoError(t, WriteUsers(p, users))
	return p
}

// newHook does what mochi's AddHook does: SetOpts, then Init.
func newHook(t *testing.T, path string) (*Hook, *syncBuffer) {
	t.Helper()
	buf := new(syncBuffer)
	h := new(Hook)
	h.SetOpts(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	require.NoError(t, h.Init(&Options{UsersFile: path}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return h, buf
}

// client is a client as mochi holds it once its CONNECT is parsed.
func client(id, user string) *mqtt.Client {
	cl := &mqtt.Client{ID: id}
	cl.Properties.Username = []byte(user)
	cl.Net.Remote = "192.0.2.7:50000"
	return cl
}

func connectPacket(user, password string) packets.Packet {
	return packets.Packet{Connect: packets.ConnectParams{Username: []byte(user), Password: []byte(password)}}
}

func TestHookIdentity(t *testing.T) {
	h := new(Hook)
	require.Equal(t, "sensorfarm-auth", h.ID())
	for b := byte(0); b < 255; b++ {
		require.Equal(t, b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSessionEstablished, h.Provides(b), "event %d", b)
	}
}

func TestHookInit(t *testing.T) {
	h := new(Hook)
	h.SetOpts(slog.New(slog.DiscardHandler), nil)
	for _, config := range []any{nil, Options{UsersFile: "x"}, &mochiauth.Options{}, (*Options)(nil), "users.yaml"} {
		require.ErrorIs(t, h.Init(config), mqtt.ErrInvalidConfigType, "%#v", config)
	}
	require.ErrorContains(t, h.Init(&Options{}), "no users file")
	err := h.Init(&Options{UsersFile: filepath.Join(t.TempDir(), "missing.yaml")})
	require.ErrorIs(t, err, os.ErrNotExist)

	// The prefix defaults to the wire's.
	path := writeUsers(t, farmUsers(t))
	h, _ = newHook(t, path)
	require.True(t, h.Policy().Allowed("b1", "bridge:farm1:node1", "sensorfarm/farm1/node1/env", true))
	require.Equal(t, 5, h.Policy().Len())

	h2 := new(Hook)
	h2.SetOpts(slog.New(slog.DiscardHandler), nil)
	require.NoError(t, h2.Init(&Options{UsersFile: path, Prefix: "farmx"}))
	require.True(t, h2.Policy().Allowed("b1", "bridge:farm1:node1", "farmx/farm1/node1/env", true))
	require.ErrorContains(t, new(Hook).Init(&Options{UsersFile: path, Prefix: "Bad"}), `prefix "Bad"`)

	// A file without users starts, and says that nobody can connect.
	_, log := newHook(t, writeUsers(t, nil))
	require.Contains(t, log.String(), "nobody can connect")
}

func TestHookConnect(t *testing.T) {
	h, log := newHook(t, writeUsers(t, farmUsers(t)))

	require.True(t, h.OnConnectAuthenticate(client("bridge:farm1:node1", "b1"), connectPacket("b1", "pw-b1")))
	require.Contains(t, log.String(), `msg="client authenticated" user=b1 role=bridge client=bridge:farm1:node1 remote=192.0.2.7:50000`)

	for _, tc := range []struct {
		desc, id, user, password, reason string
	}{
		{"wrong password", "g", "grafana", "pw-root", `user=grafana client=g remote=192.0.2.7:50000 reason="wrong password"`},
		{"unknown user", "g", "mallory", "pw-root", `user=mallory client=g remote=192.0.2.7:50000 reason="unknown user"`},
		{"anonymous", "g", "", "", `user="" client=g remote=192.0.2.7:50000 reason="no user name (anonymous clients are refused)"`},
		{"another node's client id", "bridge:farm1:node2", "b1", "pw-b1", `reason="client id not allowed: \"bridge:farm1:node2\" is not this bridge's`},
		{"a bridge id for a reader", "bridge:farm1:node1", "grafana", "pw-grafana", `reason="client id not allowed: \"bridge:farm1:node1\": client ids starting with \"bridge:\" are reserved`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.False(t, h.OnConnectAuthenticate(client(tc.id, tc.user), connectPacket(tc.user, tc.password)))
			require.Contains(t, log.String(), `level=WARN msg="connection refused" user=`+tc.user)
			require.Contains(t, log.String(), tc.reason)
		})
	}

	// The will is checked as a publish.
	pk := connectPacket("b1", "pw-b1")
	pk.Connect.WillFlag, pk.Connect.WillTopic = true, "sensorfarm/farm1/node2/status"
	require.False(t, h.OnConnectAuthenticate(client("bridge:farm1:node1", "b1"), pk))
	require.Contains(t, log.String(), `reason="will topic not allowed: \"sensorfarm/farm1/node2/status\"`)
	pk.Connect.WillTopic = "sensorfarm/farm1/node1/status"
	require.True(t, h.OnConnectAuthenticate(client("bridge:farm1:node1", "b1"), pk))

	for _, pw := range []string{"pw-b1", "pw-grafana", "pw-root"} {
		require.NotContains(t, log.String(), pw, "no password is ever logged")
	}
}

func TestHookACL(t *testing.T) {
	h, log := newHook(t, writeUsers(t, farmUsers(t)))
	b1 := client("bridge:farm1:node1", "b1")
	require.True(t, h.OnACLCheck(b1, "sensorfarm/farm1/node1/env", true))
	require.False(t, h.OnACLCheck(b1, "sensorfarm/farm1/node2/env", true))
	require.Contains(t, log.String(), `level=WARN msg="access denied" user=b1 client=bridge:farm1:node1 access=write topic=sensorfarm/farm1/node2/env`)
	require.False(t, h.OnACLCheck(b1, "#", false))
	require.Contains(t, log.String(), `access=read topic=#`)
	require.True(t, h.OnACLCheck(client("g", "grafana"), "sensorfarm/+/+/env", false))
	require.False(t, h.OnACLCheck(client("g", "nobody"), "sensorfarm/+/+/env", false))

	// A client repeating a denied publish is logged once a minute, not each time.
	n := strings.Count(log.String(), "access denied")
	for range 100 {
		require.False(t, h.OnACLCheck(b1, "sensorfarm/farm1/node2/env", true))
	}
	require.Equal(t, n, strings.Count(log.String(), "access denied"))
}

func TestHookReload(t *testing.T) {
	users := farmUsers(t)
	path := writeUsers(t, users)
	h, _ := newHook(t, path)
	before := h.Policy()
	require.False(t, h.OnConnectAuthenticate(client("late", "late"), connectPacket("late", "pw-late")))

	// A good file: the new user is in, the old ones stay.
	require.NoError(t, WriteUsers(path, append(users, User{Name: "late", Role: RoleReader, PasswordHash: hashOf(t, "pw-late")})))
	n, err := h.Reload()
	require.NoError(t, err)
	require.Equal(t, 6, n)
	require.True(t, h.OnConnectAuthenticate(client("late", "late"), connectPacket("late", "pw-late")))
	require.True(t, h.OnConnectAuthenticate(client("g", "grafana"), connectPacket("grafana", "pw-grafana")))
	require.NotSame(t, before, h.Policy())

	// A deleted user's open connection may do nothing more.
	g := client("g", "grafana")
	require.True(t, h.OnACLCheck(g, "sensorfarm/#", false))
	require.NoError(t, WriteUsers(path, append(users[:2:2], users[3:]...)))
	_, err = h.Reload()
	require.NoError(t, err)
	require.False(t, h.OnACLCheck(g, "sensorfarm/#", false))
	require.False(t, h.OnACLCheck(g, "sensorfarm/farm1/node1/env", false), "nor receive")
	good := h.Policy()

	// Broken files: each is refused with its reason, and what was in force stays.
	for _, tc := range []struct{ desc, content, want string }{
		{"not YAML", "users: [\n", "not a users file"},
		{"a plain-text password", "users:\n- name: late\n  role: reader\n  password: pw-late\n", `a plain-text "password" is refused`},
		{"a bad role", "users:\n" + entry("late", "god", "", hashOf(t, "pw-late")), `role "god" is not one of`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, err := h.Reload()
			require.ErrorContains(t, err, "users file "+path)
			require.ErrorContains(t, err, tc.want)
			require.Same(t, good, h.Policy())
			require.True(t, h.OnConnectAuthenticate(client("hass", "hass"), connectPacket("hass", "pw-hass")))
		})
	}
	require.NoError(t, os.Remove(path))
	_, err = h.Reload()
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Same(t, good, h.Policy())
}

func TestThrottle(t *testing.T) {
	var th throttle
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	require.True(t, th.first("a", t0))
	require.False(t, th.first("a", t0.Add(59*time.Second)))
	require.True(t, th.first("b", t0.Add(time.Second)))
	require.True(t, th.first("a", t0.Add(61*time.Second)))

	// It stays bounded, and a key seen recently stays quiet while it can.
	for i := range 3 * throttleKeys {
		th.first(string(rune('a'+i%26))+strings.Repeat("x", i), t0.Add(2*time.Minute))
	}
	require.LessOrEqual(t, len(th.last), throttleKeys)
}
