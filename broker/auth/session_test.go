package auth

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/stretchr/testify/require"
)

// TestSessionOwnership: a client id held by another user, connected or as a
// persistent session, is refused to everyone else; its holder and free ids
// are not.
func TestSessionOwnership(t *testing.T) {
	p := farmPolicy(t)
	held := func(user string) Holder { return Holder{User: user, Held: true} }
	login := func(user, id string, h Holder) Login {
		return Login{Username: user, Password: []byte("pw-" + user), ClientID: id, Holder: h}
	}
	for _, tc := range []struct {
		desc string
		l    Login
		want error // nil: accepted
	}{
		{"a free id", login("grafana", "archiver", Holder{}), nil},
		{"its holder reconnects", login("grafana", "archiver", held("grafana")), nil},
		{"a reader on another reader's session", login("hass", "archiver", held("grafana")), ErrSessionOwner},
		{"a reader on Home Assistant's id", login("grafana", "homeassistant", held("hass")), ErrSessionOwner},
		{"an admin on a reader's session", login("root", "archiver", held("grafana")), ErrSessionOwner},
		{"a reader on an admin's session", login("grafana", "ops", held("root")), ErrSessionOwner},
		{"a user deleted since keeps its id", login("grafana", "archiver", held("gone")), ErrSessionOwner},
		{"a bridge's own id held by itself", login("b1", "bridge:farm1:node1", held("b1")), nil},
		{"a bridge's own id held by another user", login("b1", "bridge:farm1:node1", held("b9")), ErrSessionOwner},
		{"mochi's inline id, free", login("grafana", InlineClientID, Holder{}), ErrClientID},
		{"mochi's inline id, admin", login("root", InlineClientID, Holder{}), ErrClientID},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := p.Authenticate(tc.l)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ErrClientID, "every id refusal is a client id refusal")
		})
	}
	// The password is checked first: a wrong one learns nothing about the id.
	l := login("hass", "archiver", held("grafana"))
	l.Password = []byte("wrong")
	require.ErrorIs(t, p.Authenticate(l), ErrWrongPassword)
}

// InlineClientID is mochi's.
func TestInlineClientID(t *testing.T) {
	require.Equal(t, mqtt.InlineClientId, InlineClientID)
}

// The hook asks Holders about the id the client connects with.
func TestHookHolders(t *testing.T) {
	path := writeUsers(t, farmUsers(t))
	h, log := newHook(t, path)
	h.opts.Holders = func(id string) Holder {
		if id == "archiver" {
			return Holder{User: "grafana", Held: true}
		}
		return Holder{}
	}
	require.False(t, h.OnConnectAuthenticate(client("archiver", "hass"), connectPacket("hass", "pw-hass")))
	require.Contains(t, log.String(), `client id held by another user: \"archiver\" is held by user \"grafana\"`)
	require.True(t, h.OnConnectAuthenticate(client("archiver", "grafana"), connectPacket("grafana", "pw-grafana")))
	require.True(t, h.OnConnectAuthenticate(client("other", "hass"), connectPacket("hass", "pw-hass")))
}
