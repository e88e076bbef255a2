package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// opsAddr reads the HTTP side's address from the broker's log.
func opsAddr(p *process) string {
	return p.waitLog(`msg="ops listening" addr=(127\.0\.0\.1:\d+)`, 10*time.Second)[1]
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// metric returns the value of one series in a Prometheus exposition.
func metric(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	require.NotNil(t, m, "series %s in /metrics", series)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// TestOps: /healthz, /readyz and /metrics of the real broker, and gap
// detection that counts readings withheld, filled by a backlog replay,
// repeated, and a bridge that starts again at seq 1 because its spool was
// deleted, exactly.
func TestOps(t *testing.T) {
	need(t, "mosquitto_pub")
	p, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
	ops := "http://" + opsAddr(p)

	code, _ := get(t, ops+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, ops+"/readyz")
	require.Equal(t, http.StatusOK, code, body)

	node := wire.Node{Prefix: wire.DefaultPrefix, Site: "gaps", Node: "pizero-09"}
	send := func(topic string, seq int) {
		publish(t, addr, topic, fmt.Sprintf(`{"site":%q,"node":%q,"seq":%d,"ts":"2026-11-27T01:00:00.000Z","temperature_c":20}`, node.Site, node.Node, seq))
	}
	// 1, 2, 3, then 7: 4, 5 and 6 are missing. 5 comes from the backlog;
	// 3 replayed again is a duplicate (on the live topic, a lower seq would
	// be a bridge starting over: a reset).
	for _, seq := range []int{1, 2, 3, 7} {
		send(node.Live(wire.StreamEnv), seq)
	}
	send(node.Backlog(wire.StreamEnv), 5)
	send(node.Backlog(wire.StreamEnv), 3)

	labels := fmt.Sprintf(`{node=%q,site=%q,stream="env"}`, node.Node, node.Site)
	require.Eventually(t, func() bool {
		_, body = get(t, ops+"/metrics")
		return regexp.MustCompile(`sensorfarm_broker_readings_received_total` + regexp.QuoteMeta(labels) + ` 6\b`).MatchString(body)
	}, 5*time.Second, 100*time.Millisecond, "six readings counted")
	require.Equal(t, 2.0, metric(t, body, "sensorfarm_broker_readings_missing"+labels), "4 and 6 are missing")
	require.Equal(t, 1.0, metric(t, body, "sensorfarm_broker_readings_duplicates_total"+labels))
	require.Equal(t, 7.0, metric(t, body, "sensorfarm_broker_seq_last"+labels))
	require.Equal(t, 0.0, metric(t, body, "sensorfarm_broker_seq_resets_total"+labels))
	require.GreaterOrEqual(t, metric(t, body, "sensorfarm_broker_messages_received_total"), 6.0)

	// A real bridge whose spool is deleted between two runs starts again
	// at seq 1: the broker counts a reset.
	bridged := wire.Node{Prefix: wire.DefaultPrefix, Site: "gaps", Node: "pizero-10"}
	args := bridgeArgs(t, addr, bridged.Site, bridged.Node, "--sim", "--gps=false")
	spool := args[7]
	require.Equal(t, "--spool", args[6])
	b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, args...)...)
	bl := fmt.Sprintf(`{node=%q,site=%q,stream="env"}`, bridged.Node, bridged.Site)
	require.Eventually(t, func() bool {
		_, body = get(t, ops+"/metrics")
		m := regexp.MustCompile(`sensorfarm_broker_seq_last` + regexp.QuoteMeta(bl) + ` (\d+)`).FindStringSubmatch(body)
		if m == nil {
			return false
		}
		n, _ := strconv.Atoi(m[1])
		return n >= 3
	}, 10*time.Second, 100*time.Millisecond)
	require.Equal(t, 0, b.stop())
	require.NoError(t, os.RemoveAll(spool))
	b = start(t, "bridge again", append([]string{filepath.Join(bin, "bridge")}, args...)...)
	require.Eventually(t, func() bool {
		_, body = get(t, ops+"/metrics")
		return regexp.MustCompile(`sensorfarm_broker_seq_resets_total` + regexp.QuoteMeta(bl) + ` 1\b`).MatchString(body)
	}, 10*time.Second, 100*time.Millisecond, "the restart at seq 1 is counted as a reset")
	require.Equal(t, 0.0, metric(t, body, "sensorfarm_broker_readings_missing"+bl), "a bridge that loses nothing has nothing missing")
	require.Equal(t, 0, b.stop())
	require.Equal(t, 0, p.stop())
}
