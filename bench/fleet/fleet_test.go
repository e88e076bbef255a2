package fleet

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/wire"
)

// The users the fleet writes are what the broker's own policy accepts: each
// bridge with its password, its client id and its will, and nowhere else.
func TestUsersFileIsTheBrokers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.yaml")
	u, err := NewUsers(path, "bench", 3)
	require.NoError(t, err)
	users, err := auth.ReadUsers(path)
	require.NoError(t, err)
	require.Len(t, users, 4)
	p, err := auth.NewPolicy(wire.DefaultPrefix, users)
	require.NoError(t, err)

	for i, c := range u.Bridges {
		node := u.Node(i)
		require.NoError(t, p.Authenticate(auth.Login{Username: c.Name, Password: []byte(c.Password), ClientID: node.ClientID(),
			HasWill: true, WillTopic: node.Status()}))
		require.True(t, p.Allowed(c.Name, node.ClientID(), node.Live(wire.StreamEnv), true))
		other := u.Node((i + 1) % len(u.Bridges))
		require.False(t, p.Allowed(c.Name, node.ClientID(), other.Live(wire.StreamEnv), true), "a bridge publishes for its own node only")
		require.Error(t, p.Authenticate(auth.Login{Username: c.Name, Password: []byte("wrong"), ClientID: node.ClientID()}))
	}
	require.NoError(t, p.Authenticate(auth.Login{Username: u.Reader.Name, Password: []byte(u.Reader.Password), ClientID: "bench-sub-1"}))
	require.True(t, p.Allowed(u.Reader.Name, "bench-sub-1", wire.AllReadings(wire.DefaultPrefix), false))
	require.False(t, p.Allowed(u.Reader.Name, "bench-sub-1", u.Node(0).Live(wire.StreamEnv), true), "a reader publishes nothing")
}

// A simulated bridge's settings come from the bridge's own loader.
func TestBridgeConfigIsTheBridges(t *testing.T) {
	dir := t.TempDir()
	u, err := NewUsers(filepath.Join(dir, "users.yaml"), "bench", 2)
	require.NoError(t, err)
	c, err := bridgeConfig(Options{Addr: "127.0.0.1:1883", Users: u, Interval: time.Second, Dir: dir}, 1, u.Bridges[1])
	require.NoError(t, err)
	require.Equal(t, u.Node(1), c.Node)
	require.Equal(t, "tcp://127.0.0.1:1883", c.Broker)
	require.Equal(t, u.Bridges[1].Name, c.Username)
	require.Equal(t, u.Bridges[1].Password, c.Password, "read back from its password file")
	require.True(t, c.Sim)
	require.False(t, c.GPS)
	require.Equal(t, time.Second, c.Interval)
	require.Equal(t, filepath.Join(dir, "n00001", "spool"), c.Spool)
}
