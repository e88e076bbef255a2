package server

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/broker/config"
)

// Connections that have not authenticated are limited; those that did are not
// counted. Without the limit the third idle socket stays open until the
// connect timeout (10 s).
func TestMaxPending(t *testing.T) {
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true,
		Limits: config.Limits{MaxPending: 2}})
	for _, id := range []string{"a", "b", "c"} {
		connect(t, b.Addr(), id) // each is released once it has authenticated
	}
	idle := func() net.Conn {
		c, err := net.Dial("tcp", b.Addr())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	first, _ := idle(), idle()
	closedAtOnce := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	require.True(t, closedAtOnce(idle()), "a third pending connection is closed at once")
	require.Contains(t, b.Log.String(), `too many connections have not authenticated yet`)
	connectFails(t, b.Addr())

	first.Close()
	require.Eventually(t, func() bool { return b.pending.n.Load() == 1 }, waitFor, 10*time.Millisecond)
	connect(t, b.Addr(), "d")
}

// connectFails checks that an MQTT client cannot get in while the pending
// connections are at their limit.
func connectFails(t *testing.T, addr string) {
	t.Helper()
	_, err := connectAs(t, addr, "x", "", "")
	require.Error(t, err)
}

// With one check slot and a short wait, a burst of bcrypt logins gets some
// "server unavailable" refusals (MQTT 3.1.1's busy) instead of queueing
// without bound, and none waits much longer than AuthWait plus a check. Without
// the gate every login is checked, all at once, and none is refused.
func TestAuthBusy(t *testing.T) {
	h, err := auth.HashPassword([]byte("pw-slow"), bcrypt.DefaultCost)
	require.NoError(t, err)
	users := usersFile(t, []auth.User{{Name: "slow", Role: auth.RoleReader, PasswordHash: h}})
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Users: users, Prefix: "sensorfarm",
		Limits: config.Limits{AuthSlots: 1, AuthWait: 50 * time.Millisecond}})

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = connectAs(t, b.Addr(), "slow-"+string(rune('a'+i)), "slow", "pw-slow")
		})
	}
	wg.Wait()
	var ok, busy int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case err.Error() == "server Unavailable":
			busy++
		default:
			t.Errorf("unexpected refusal: %v", err)
		}
	}
	t.Logf("%d admitted, %d refused busy", ok, busy)
	require.GreaterOrEqual(t, ok, 1)
	require.GreaterOrEqual(t, busy, 1)
	require.Contains(t, b.Log.String(), "connection refused: server busy")
	require.NotContains(t, b.Log.String(), `reason="wrong password"`)
}
