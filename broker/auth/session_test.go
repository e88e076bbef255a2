package auth

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestSessionOwnership: a client id held by another user, connected, as a
// persistent session or admitted a moment ago and not yet in mochi's list, is
// refused to everyone else; its holder and free ids are not.
func TestSessionOwnership(t *testing.T) {
	held := func(user string) Holder { return Holder{User: user, Held: true} }
	for _, tc := range []struct {
		desc, user, id string
		listed         Holder // in mochi's client list
		admitted       string // the user of a connection admitted on id, not yet listed
		failed         bool   // the admitted connection closed before it was listed
		want           error  // nil: accepted
	}{
		{desc: "a free id", user: "grafana", id: "archiver"},
		{desc: "its holder reconnects", user: "grafana", id: "archiver", listed: held("grafana")},
		{desc: "a reader on another reader's session", user: "hass", id: "archiver", listed: held("grafana"), want: ErrSessionOwner},
		{desc: "a reader on Home Assistant's id", user: "grafana", id: "homeassistant", listed: held("hass"), want: ErrSessionOwner},
		{desc: "an admin on a reader's session", user: "root", id: "archiver", listed: held("grafana"), want: ErrSessionOwner},
		{desc: "a reader on an admin's session", user: "grafana", id: "ops", listed: held("root"), want: ErrSessionOwner},
		{desc: "a user deleted since keeps its id", user: "grafana", id: "archiver", listed: held("gone"), want: ErrSessionOwner},
		{desc: "a bridge's own id held by itself", user: "b1", id: "bridge:farm1:node1", listed: held("b1")},
		{desc: "a bridge's own id held by another user", user: "b1", id: "bridge:farm1:node1", listed: held("b9"), want: ErrSessionOwner},
		{desc: "an id another user was just admitted on", user: "hass", id: "archiver", admitted: "grafana", want: ErrSessionOwner},
		{desc: "an id its own user was just admitted on", user: "grafana", id: "archiver", admitted: "grafana"},
		{desc: "an id whose admitted connection failed", user: "hass", id: "archiver", admitted: "grafana", failed: true},
		{desc: "the list has the say over an admission", user: "hass", id: "archiver", listed: held("hass"), admitted: "hass"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := newSessions(func(id string) Holder {
				if id == tc.id {
					return tc.listed
				}
				return Holder{}
			})
			if tc.admitted != "" {
				first := openClient(tc.id)
				require.NoError(t, s.claim(first, tc.admitted))
				if tc.failed {
					first.Stop(nil)
				}
			}
			err := s.claim(openClient(tc.id), tc.user)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ErrClientID, "every id refusal is a client id refusal")
		})
	}
}

// openClient is a client as mochi holds it while it connects: open until
// Stop.
func openClient(id string) *mqtt.Client {
	return mqtt.New(nil).NewClient(nil, "t", id, false)
}

// A claim lasts until mochi lists the client, and the claims of connections
// that failed in between do not pile up.
func TestSessionsRelease(t *testing.T) {
	s := newSessions(nil)
	a := openClient("archiver")
	require.NoError(t, s.claim(a, "grafana"))
	require.ErrorIs(t, s.claim(openClient("archiver"), "hass"), ErrSessionOwner)
	s.release(a)
	require.Empty(t, s.pending)
	require.NoError(t, s.claim(openClient("archiver"), "hass"), "released: mochi's list alone answers for the id now")

	for i := range 3 * sweepFloor {
		c := openClient(fmt.Sprintf("c%d", i))
		require.NoError(t, s.claim(c, "grafana"))
		c.Stop(nil)
	}
	require.LessOrEqual(t, len(s.pending), sweepFloor)
}

// Nobody may connect as mochi's inline client, an admin included.
func TestInlineClientID(t *testing.T) {
	require.Equal(t, mqtt.InlineClientId, InlineClientID)
	p := farmPolicy(t)
	for _, user := range []string{"grafana", "root"} {
		err := p.Authenticate(Login{Username: user, Password: []byte("pw-" + user), ClientID: InlineClientID})
		require.ErrorIs(t, err, ErrClientID, user)
		require.ErrorContains(t, err, "the broker's own client id")
	}
}

// The hook asks Holders about the id the client connects with, after the
// password: a wrong one learns nothing about the id.
func TestHookHolders(t *testing.T) {
	path := writeUsers(t, farmUsers(t))
	h, log := newHook(t, path)
	h.owners.holders = func(id string) Holder {
		if id == "archiver" {
			return Holder{User: "grafana", Held: true}
		}
		return Holder{}
	}
	require.False(t, h.OnConnectAuthenticate(client("archiver", "hass"), connectPacket("hass", "wrong")))
	require.Contains(t, log.String(), `user=hass client=archiver remote=192.0.2.7:50000 reason="wrong password"`)
	require.NotContains(t, log.String(), "held by")
	require.False(t, h.OnConnectAuthenticate(client("archiver", "hass"), connectPacket("hass", "pw-hass")))
	require.Contains(t, log.String(), `client id held by another user: \"archiver\" is held by user \"grafana\"`)
	require.True(t, h.OnConnectAuthenticate(client("archiver", "grafana"), connectPacket("grafana", "pw-grafana")))
	require.True(t, h.OnConnectAuthenticate(client("other", "hass"), connectPacket("hass", "pw-hass")))
}

// TestNoTakeoverRace: users connect at the same moment with the same new client
// id, each asking for a persistent session, to mochi over TCP with the hook. No
// session exists yet, so each finds the id free while its password is checked;
// unless the first to pass holds the id from then on, both are admitted and the
// later takes over the earlier's session and queue. Only one user may win an id.
//
// Between authentication and the listing of the client, mochi runs the other
// hooks' OnSessionEstablish (the broker's pending-connection count) and a
// loaded Pi may deschedule the goroutine; here a hook stretches that step to a
// few milliseconds, so that the race shows within a few rounds also when the
// holder is looked up right after the password check.
func TestNoTakeoverRace(t *testing.T) {
	addr := startMochi(t, new(slowEstablish))
	users := []string{"grafana", "hass", "root"}
	const rounds = 30
	for round := range rounds {
		id := fmt.Sprintf("race-%d", round)
		won := make([]bool, len(users))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, user := range users {
			wg.Go(func() {
				<-start
				won[i] = connectPersistent(t, addr, id, user)
			})
		}
		close(start)
		wg.Wait()
		var winners []string
		for i, ok := range won {
			if ok {
				winners = append(winners, users[i])
			}
		}
		require.Len(t, winners, 1, "round %d: users admitted on client id %q", round, id)
	}
}

// slowEstablish stretches the step between authentication and mochi's
// listing of the client.
type slowEstablish struct{ mqtt.HookBase }

func (*slowEstablish) ID() string { return "slow-establish" }

func (*slowEstablish) Provides(b byte) bool { return b == mqtt.OnSessionEstablish }

func (*slowEstablish) OnSessionEstablish(*mqtt.Client, packets.Packet) {
	time.Sleep(5 * time.Millisecond)
}

// startMochi runs mochi on a free loopback port with the hook, which asks
// mochi's client list who holds an id, as the broker does, and then the
// other hooks.
func startMochi(t *testing.T, others ...mqtt.Hook) string {
	t.Helper()
	buf := new(syncBuffer)
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := mqtt.New(&mqtt.Options{Logger: log})
	require.NoError(t, m.AddHook(new(Hook), &Options{UsersFile: writeUsers(t, farmUsers(t)), Holders: ClientHolders(m)}))
	for _, h := range others {
		require.NoError(t, m.AddHook(h, nil))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, m.AddListener(listeners.NewNet("tcp", l)))
	require.NoError(t, m.Serve())
	t.Cleanup(func() {
		require.NoError(t, m.Close())
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return l.Addr().String()
}

// connectPersistent connects user on id with a persistent session (MQTT
// 3.1.1) and reports whether the broker admitted it; the connection stays
// open until the end of the test.
func connectPersistent(t *testing.T, addr, id, user string) bool {
	const wait = 10 * time.Second
	c := paho.NewClient(paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetUsername(user).
		SetPassword("pw-" + user).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(wait))
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Errorf("%s on %s: connect timed out", user, id)
		return false
	}
	if tok.Error() != nil {
		return false
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return true
}
