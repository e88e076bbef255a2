package auth

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// testHash hashes at bcrypt's lowest cost, so that tests stay fast under -race
// (cost 10 takes 0.6 s there); the cost does not change what is checked.
func testHash(t testing.TB, password string) string {
	t.Helper()
	h, err := HashPassword([]byte(password), bcrypt.MinCost)
	require.NoError(t, err)
	return h
}

// hashes are made once per password for the whole package.
var hashes sync.Map

func hashOf(t testing.TB, password string) string {
	if h, ok := hashes.Load(password); ok {
		return h.(string)
	}
	h := testHash(t, password)
	hashes.Store(password, h)
	return h
}

// The farm every policy test runs against: one user of each role.
func farmUsers(t testing.TB) []User {
	return []User{
		{Name: "b1", Role: RoleBridge, Site: "farm1", Node: "node1", PasswordHash: hashOf(t, "pw-b1")},
		{Name: "b2", Role: RoleBridge, Site: "farm1", Node: "node2", PasswordHash: hashOf(t, "pw-b2")},
		{Name: "grafana", Role: RoleReader, PasswordHash: hashOf(t, "pw-grafana")},
		{Name: "hass", Role: RoleHomeAssistant, PasswordHash: hashOf(t, "pw-hass")},
		{Name: "root", Role: RoleAdmin, PasswordHash: hashOf(t, "pw-root")},
	}
}

func farmPolicy(t testing.TB) *Policy {
	p, err := NewPolicy("sensorfarm", farmUsers(t))
	require.NoError(t, err)
	return p
}

// access is one role's expected verdict for a topic: may publish, may subscribe.
type access struct{ pub, sub bool }

var (
	none    = access{}
	pubOnly = access{pub: true}
	subOnly = access{sub: true}
	both    = access{true, true}
)

// TestACL runs every role against every kind of topic and filter, both ways.
// b1 is the bridge of farm1/node1, connected on its own client ID.
func TestACL(t *testing.T) {
	p := farmPolicy(t)
	const own = "sensorfarm/farm1/node1"
	const disc = "homeassistant/sensor/sensorfarm_farm1_node1"
	for _, tc := range []struct {
		desc, topic                 string
		bridge, reader, hass, admin access
	}{
		// The bridge's own subtree.
		{"own env", own + "/env", pubOnly, subOnly, subOnly, both},
		{"own status (its will)", own + "/status", pubOnly, subOnly, subOnly, both},
		{"own backlog", own + "/backlog/env", pubOnly, subOnly, subOnly, both},
		{"own per-field topic", own + "/env/temperature_c", pubOnly, subOnly, subOnly, both},
		{"own root itself", own, none, subOnly, subOnly, both},
		{"own gps", own + "/gps", pubOnly, subOnly, subOnly, both},
		{"own health", own + "/health", pubOnly, subOnly, subOnly, both},
		{"own gps backlog", own + "/backlog/gps", pubOnly, subOnly, subOnly, both},
		{"own backlog of no stream", own + "/backlog/x", none, subOnly, subOnly, both},
		{"own backlog one level deeper", own + "/backlog/env/x", none, subOnly, subOnly, both},
		{"own unknown topic", own + "/x", none, subOnly, subOnly, both},
		{"own unknown subtree", own + "/x/y/z", none, subOnly, subOnly, both},
		{"below own status", own + "/status/x", none, subOnly, subOnly, both},
		{"a field of a field", own + "/env/temperature_c/x", none, subOnly, subOnly, both},
		{"own subtree as a filter", own + "/#", none, subOnly, subOnly, subOnly},
		// Someone else's.
		{"another node's env", "sensorfarm/farm1/node2/env", none, subOnly, subOnly, both},
		{"same node name at another site", "sensorfarm/farm2/node1/env", none, subOnly, subOnly, both},
		{"a node whose name extends ours", "sensorfarm/farm1/node10/env", none, subOnly, subOnly, both},
		{"another prefix", "otherfarm/farm1/node1/env", none, none, none, both},
		{"own names without the prefix", "farm1/node1/env", none, none, none, both},
		// The prefix itself.
		{"prefix root", "sensorfarm", none, subOnly, subOnly, both},
		{"site level", "sensorfarm/farm1", none, subOnly, subOnly, both},
		{"prefix/#", "sensorfarm/#", none, subOnly, subOnly, subOnly},
		// Wildcard filters (a publish with a wildcard is never valid).
		{"every node's env", "sensorfarm/+/+/env", none, subOnly, subOnly, subOnly},
		{"every node of a site", "sensorfarm/farm1/+/#", none, subOnly, subOnly, subOnly},
		{"single-level wildcard under prefix", "sensorfarm/+", none, subOnly, subOnly, subOnly},
		{"everything", "#", none, none, none, subOnly},
		{"prefix as a wildcard", "+/farm1/node1/env", none, none, none, subOnly},
		{"backlog of every node", "sensorfarm/+/+/backlog/#", none, subOnly, subOnly, subOnly},
		{"shared subscription to readings", "$share/archivers/sensorfarm/+/+/env", none, subOnly, subOnly, subOnly},
		{"shared subscription to everything", "$share/g/#", none, none, none, subOnly},
		{"malformed shared subscription", "$share/g", none, none, none, both},
		// Home Assistant discovery.
		{"own discovery config", disc + "/temperature/config", pubOnly, subOnly, subOnly, both},
		{"own discovery, other component", "homeassistant/binary_sensor/sensorfarm_farm1_node1/gps_fix/config", pubOnly, subOnly, subOnly, both},
		{"own device discovery", "homeassistant/device/sensorfarm_farm1_node1/config", pubOnly, subOnly, subOnly, both},
		{"own discovery node level itself", disc, none, subOnly, subOnly, both},
		{"own discovery, not a config", disc + "/temperature/state", none, subOnly, subOnly, both},
		{"own discovery, deeper", disc + "/temperature/x/config", none, subOnly, subOnly, both},
		{"another node's discovery", "homeassistant/sensor/sensorfarm_farm1_node2/temperature/config", none, subOnly, subOnly, both},
		{"discovery id that extends ours", "homeassistant/sensor/sensorfarm_farm1_node1x/temperature/config", none, subOnly, subOnly, both},
		{"discovery id without the prefix", "homeassistant/sensor/farm1_node1/temperature/config", none, subOnly, subOnly, both},
		{"discovery id one level too high", "homeassistant/sensorfarm_farm1_node1/config", none, subOnly, subOnly, both},
		{"someone else's discovery", "homeassistant/light/kitchen/config", none, subOnly, subOnly, both},
		{"own discovery as a filter", disc + "/#", none, subOnly, subOnly, subOnly},
		{"all discovery", "homeassistant/#", none, subOnly, subOnly, subOnly},
		{"discovery level wildcard", "homeassistant/+", none, subOnly, subOnly, subOnly},
		// Home Assistant's status.
		{"homeassistant/status", "homeassistant/status", subOnly, subOnly, both, both},
		{"shared homeassistant/status", "$share/g/homeassistant/status", subOnly, subOnly, subOnly, both},
		// The broker's statistics.
		{"$SYS topic", "$SYS/broker/clients/connected", none, subOnly, subOnly, both},
		{"$SYS/#", "$SYS/#", none, subOnly, subOnly, subOnly},
		{"$-topic that is not $SYS", "$internal/x", none, none, none, both},
		// Anything else.
		{"random topic", "weather/today", none, none, none, both},
		{"empty topic (an MQTT 5 alias-only publish)", "", none, none, none, both},
		{"leading slash", "/sensorfarm/farm1/node1/env", none, none, none, both},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			for _, r := range []struct {
				user, clientID string
				want           access
			}{
				{"b1", "bridge:farm1:node1", tc.bridge},
				{"grafana", "grafana-1", tc.reader},
				{"hass", "homeassistant", tc.hass},
				{"root", "admin-shell", tc.admin},
			} {
				require.Equal(t, r.want.pub, p.Allowed(r.user, r.clientID, tc.topic, true), "%s publish %q", r.user, tc.topic)
				require.Equal(t, r.want.sub, p.Allowed(r.user, r.clientID, tc.topic, false), "%s subscribe %q", r.user, tc.topic)
				// Nobody else gets anything.
				require.False(t, p.Allowed("nobody", r.clientID, tc.topic, true))
				require.False(t, p.Allowed("nobody", r.clientID, tc.topic, false))
				require.False(t, p.Allowed("", r.clientID, tc.topic, false))
			}
			// A bridge off its own client ID gets nothing (only a reload
			// that changed its node can lead there).
			require.False(t, p.Allowed("b1", "bridge:farm1:node2", tc.topic, true))
			require.False(t, p.Allowed("b1", "bridge:farm1:node2", tc.topic, false))
		})
	}
}

func TestACLOtherPrefix(t *testing.T) {
	p, err := NewPolicy("farmx", farmUsers(t))
	require.NoError(t, err)
	id := "bridge:farm1:node1"
	require.True(t, p.Allowed("b1", id, "farmx/farm1/node1/env", true))
	require.False(t, p.Allowed("b1", id, "sensorfarm/farm1/node1/env", true), "the default prefix means nothing here")
	require.True(t, p.Allowed("b1", id, "homeassistant/sensor/farmx_farm1_node1/t/config", true))
	require.False(t, p.Allowed("b1", id, "homeassistant/sensor/sensorfarm_farm1_node1/t/config", true))
	require.True(t, p.Allowed("grafana", "g", "farmx/+/+/env", false))
	require.False(t, p.Allowed("grafana", "g", "sensorfarm/#", false))

	_, err = NewPolicy("Farm X", nil)
	require.ErrorContains(t, err, `prefix "Farm X"`)
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		rule, filter string
		want         bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/#", "a", true}, // # matches the parent level too
		{"a/#", "a/b/c", true},
		{"a/#", "a/+", true},
		{"a/#", "a/#", true},
		{"a/#", "b", false},
		{"a/#", "#", false},
		{"a/#", "+/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/+/c/#", "a/b/c", true},
		{"a/+/c/#", "a/+/c/d", true},
		{"a/+/c/#", "a/b/d/e", false},
		{"#", "x/y", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a//b", "a//b", true},
		{"a//b", "a/x/b", false},
	} {
		t.Run(fmt.Sprintf("%s covers %s", tc.rule, tc.filter), func(t *testing.T) {
			require.Equal(t, tc.want, compile(Grants{Read: []string{tc.rule}}).read[0].covers(tc.filter))
		})
	}
}

func TestGrants(t *testing.T) {
	p := farmPolicy(t)
	u, _ := p.User("b1")
	require.Equal(t, Grants{
		Read: []string{"homeassistant/status"},
		Write: []string{
			"sensorfarm/farm1/node1/status", "sensorfarm/farm1/node1/health",
			"sensorfarm/farm1/node1/env", "sensorfarm/farm1/node1/env/+", "sensorfarm/farm1/node1/backlog/env",
			"sensorfarm/farm1/node1/gps", "sensorfarm/farm1/node1/gps/+", "sensorfarm/farm1/node1/backlog/gps",
			"homeassistant/+/sensorfarm_farm1_node1/+/config", "homeassistant/+/sensorfarm_farm1_node1/config",
		},
	}, p.Grants(u))
	u, _ = p.User("grafana")
	require.Equal(t, Grants{Read: []string{"sensorfarm/#", "homeassistant/#", "$SYS/#"}}, p.Grants(u))
	u, _ = p.User("hass")
	require.Equal(t, Grants{Read: []string{"sensorfarm/#", "homeassistant/#", "$SYS/#"}, Write: []string{"homeassistant/status"}}, p.Grants(u))
	u, _ = p.User("root")
	require.Equal(t, Grants{All: true}, p.Grants(u))
	require.Equal(t, Grants{}, p.Grants(User{Role: "superuser"}), "an unknown role gets nothing")
}

func TestAuthenticate(t *testing.T) {
	p := farmPolicy(t)
	for _, tc := range []struct {
		desc string
		l    Login
		want error // nil: accepted
	}{
		{"bridge on its own id", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node1"}, nil},
		{"reader", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "grafana-1"}, nil},
		{"reader with a server-assigned id", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "d0abc"}, nil},
		{"admin", Login{Username: "root", Password: []byte("pw-root"), ClientID: "x"}, nil},
		{"anonymous", Login{ClientID: "x"}, ErrAnonymous},
		{"anonymous with a password", Login{Password: []byte("pw-root"), ClientID: "x"}, ErrAnonymous},
		{"unknown user", Login{Username: "mallory", Password: []byte("pw-root"), ClientID: "x"}, ErrUnknownUser},
		{"wrong password", Login{Username: "root", Password: []byte("pw-b1"), ClientID: "x"}, ErrWrongPassword},
		{"empty password", Login{Username: "root", ClientID: "x"}, ErrWrongPassword},
		{"password with a suffix", Login{Username: "root", Password: []byte("pw-root "), ClientID: "x"}, ErrWrongPassword},
		{"user name in another case", Login{Username: "Root", Password: []byte("pw-root"), ClientID: "x"}, ErrUnknownUser},
		// Client IDs.
		{"bridge on another node's id", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node2"}, ErrClientID},
		{"bridge on a free id", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "b1"}, ErrClientID},
		{"bridge with an empty id", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: ""}, ErrClientID},
		{"reader on a bridge's id", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "bridge:farm1:node1"}, ErrClientID},
		{"reader on an unused bridge id", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "bridge:x:y"}, ErrClientID},
		{"admin on a bridge's id", Login{Username: "root", Password: []byte("pw-root"), ClientID: "bridge:farm1:node1"}, ErrClientID},
		{"reader on an id that only looks alike", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "bridge-farm1-node1"}, nil},
		// Wills.
		{"bridge's will on its status", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node1",
			HasWill: true, WillTopic: "sensorfarm/farm1/node1/status"}, nil},
		{"bridge's will on another node's status", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node1",
			HasWill: true, WillTopic: "sensorfarm/farm1/node2/status"}, ErrWill},
		{"reader with a will", Login{Username: "grafana", Password: []byte("pw-grafana"), ClientID: "g",
			HasWill: true, WillTopic: "sensorfarm/farm1/node1/status"}, ErrWill},
		{"Home Assistant's will", Login{Username: "hass", Password: []byte("pw-hass"), ClientID: "hass",
			HasWill: true, WillTopic: "homeassistant/status"}, nil},
		{"Home Assistant's will elsewhere", Login{Username: "hass", Password: []byte("pw-hass"), ClientID: "hass",
			HasWill: true, WillTopic: "homeassistant/light/x/set"}, ErrWill},
		{"a will on an empty topic", Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node1", HasWill: true}, ErrWill},
		{"admin's will anywhere", Login{Username: "root", Password: []byte("pw-root"), ClientID: "x",
			HasWill: true, WillTopic: "anything/at/all"}, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := p.Authenticate(tc.l)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			if len(tc.l.Password) > 0 {
				require.NotContains(t, err.Error(), string(tc.l.Password), "a reason never holds the password")
			}
		})
	}
}

// An unknown user costs a token check, never a bcrypt check: a CONNECT with
// a name that does not exist must not buy a slow hash. Before, it cost a
// bcrypt check at the file's highest cost (0.6 s at cost 10 under -race).
func TestUnknownUserIsCheap(t *testing.T) {
	h, err := HashPassword([]byte("pw-slow"), bcrypt.DefaultCost)
	require.NoError(t, err)
	p, err := NewPolicy("sensorfarm", append(farmUsers(t), User{Name: "slow", Role: RoleReader, PasswordHash: h}))
	require.NoError(t, err)
	start := time.Now()
	for range 10 {
		require.ErrorIs(t, p.Authenticate(Login{Username: "mallory", Password: []byte("x")}), ErrUnknownUser)
	}
	require.Less(t, time.Since(start), 100*time.Millisecond, "10 unknown users cost less than one bcrypt check")
	require.True(t, p.Costly("slow"))
	require.False(t, p.Costly("mallory"))

	empty, err := NewPolicy("sensorfarm", nil)
	require.NoError(t, err)
	require.Zero(t, empty.Len())
	require.False(t, empty.Allowed("root", "x", "sensorfarm/#", false))
	require.True(t, errors.Is(empty.Authenticate(Login{Password: []byte("x")}), ErrAnonymous))
}
