package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNoSessionTakeover: an archiver's persistent session keeps its queued
// readings for the archiver, across a broker restart, although a reader whose
// password leaked connects on the archiver's client id. Without the session
// ownership check, mochi hands the thief the archiver's queue, the thief acks
// it, and the archiver never sees those seqs.
func TestNoSessionTakeover(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	archiverUser := account{name: "archiver", password: "archiver-pw", role: "reader"}
	leaked := account{name: "grafana", password: "grafana-pw", role: "reader"}
	bridge := account{name: "farm1-node1", password: "node1-pw", role: "bridge", site: "farm1", node: "node1"}
	users := filepath.Join(t.TempDir(), "users.yaml")
	for _, a := range []account{archiverUser, leaked, bridge} {
		userAdd(t, users, a)
	}
	data := t.TempDir()
	startAt := func(listen string) *process {
		p := start(t, "broker", filepath.Join(bin, "broker"), "--listen", listen, "--users", users, "--data", data, "--ops-listen", "127.0.0.1:0")
		p.waitLog(`msg=listening addr=127\.0\.0\.1:\d+ users=`, 15*time.Second)
		return p
	}
	addr := freeAddr(t)
	b := startAt(addr)

	const id, filter = "archiver-1", "sensorfarm/+/+/backlog/#"
	persistent := func(a account, extra ...string) []string {
		return append(append(mqttArgs(addr, a, id), "-c", "-q", "1", "-t", filter, "-F", "%t %p"), extra...)
	}
	// The archiver makes its persistent session, then goes away.
	code, out := runOnce(t, nil, append([]string{"mosquitto_sub"}, persistent(archiverUser, "-E")...)...)
	require.Equal(t, 0, code, out)

	// Readings arrive while it is away; they queue in its session.
	const n = 5
	for seq := 1; seq <= n; seq++ {
		args := append(mqttArgs(addr, bridge, bridge.clientID()), "-q", "1", "-t", "sensorfarm/farm1/node1/backlog/env",
			"-m", fmt.Sprintf(`{"seq":%d}`, seq))
		code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, args...)...)
		require.Equal(t, 0, code, out)
	}
	// The session, its owner and its queue survive a restart.
	require.Equal(t, 0, b.stop())
	startAt(addr)

	// The thief, with the leaked reader's password, on the archiver's id:
	// refused, and it receives nothing.
	code, out = runOnce(t, nil, append([]string{"mosquitto_sub"}, persistent(leaked, "-C", "1", "-W", "3")...)...)
	require.NotContains(t, out, "backlog", "the thief read the archiver's queue")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "not authorised", out)

	// The archiver gets every queued reading.
	code, out = runOnce(t, nil, append([]string{"mosquitto_sub"}, persistent(archiverUser, "-C", fmt.Sprint(n), "-W", "5")...)...)
	require.Equal(t, 0, code, out)
	for seq := 1; seq <= n; seq++ {
		require.Contains(t, out, fmt.Sprintf(`sensorfarm/farm1/node1/backlog/env {"seq":%d}`, seq), out)
	}
	require.Equal(t, n, strings.Count(out, "backlog/env"), out)
}
