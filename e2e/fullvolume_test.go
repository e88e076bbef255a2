package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// tryPublish connects a fresh client and reports whether the broker
// acknowledged one retained QoS 1 reading within a few seconds.
func tryPublish(t *testing.T, addr, topic, payload string) bool {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("full-pub").
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second))
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return false
	}
	defer c.Disconnect(100)
	tok = c.Publish(topic, 1, true, payload)
	return tok.WaitTimeout(4*time.Second) && tok.Error() == nil
}

// leaveFree fills dir's file system with a file until about free bytes are
// left, and returns the file's path.
func leaveFree(t *testing.T, dir string, free int64) string {
	t.Helper()
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	avail := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for n := avail - free; n > 0; n -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), n)]); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	return path
}

// TestFullVolume: the store is on a 64 MiB tmpfs, and a file leaves it 8 MiB,
// below --store-min-free 16 MiB. The broker refuses publishes it would have
// to store (no PUBACK: the bridges keep them), says so in its log, /readyz
// and /metrics, starts again on the full volume instead of crash-looping, and
// takes publishes again once there is room. TestFullVolumeControl is the
// same volume without the guard.
func TestFullVolume(t *testing.T) {
	fs := mountTmpfs(t, "64m")
	data := filepath.Join(fs, "data")
	addr := freeAddr(t)
	args := []string{filepath.Join(bin, "broker"), "--listen", addr, "--demo", "--data", data, "--ops-listen", "127.0.0.1:0",
		"--store-min-free", fmt.Sprint(16 << 20)}
	broker := start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	ops := "http://" + opsAddr(broker)
	got := newSeen()
	persistentArchiver(t, addr, got, 0)
	require.True(t, tryPublish(t, addr, "farm/n1/env", "before"), "acknowledged while there is room")

	filler := leaveFree(t, fs, 8<<20)
	time.Sleep(1200 * time.Millisecond) // the broker looks at the volume at most once a second
	require.False(t, tryPublish(t, addr, "farm/n1/env", "full"), "refused: it could not be stored")
	broker.waitLog(`msg="store volume full`, 5*time.Second)
	code, body := get(t, ops+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "volume is full")
	_, body = get(t, ops+"/metrics")
	require.Equal(t, 1.0, metric(t, body, "sensorfarm_broker_store_volume_full"))
	require.GreaterOrEqual(t, metric(t, body, "sensorfarm_broker_publishes_refused_total"), 1.0)

	// A restart on the full volume: it comes up, not ready, and stays up.
	require.Equal(t, 0, broker.stop())
	broker = start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	ops = "http://" + opsAddr(broker)
	time.Sleep(2 * time.Second)
	require.True(t, broker.running(), "no crash loop on a full volume")
	code, _ = get(t, ops+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)

	require.NoError(t, os.Remove(filler))
	require.Eventually(t, func() bool { return tryPublish(t, addr, "farm/n1/env", "after") }, 10*time.Second, 500*time.Millisecond,
		"acknowledged again once there is room")
	code, body = get(t, ops+"/readyz")
	require.Equal(t, http.StatusOK, code, body)
	broker.waitLog(`msg="store volume has room again`, 5*time.Second)
}

// TestFullVolumeControl: mochi's delivery (--stock-delivery, which has no
// guard) on a volume filled to the last byte. Small writes still go into the
// space pebble preallocated for its log; a few MiB of readings later pebble
// cannot write its log ("fatal commit error"), the broker dies, and dies
// again at every start: the crash loop the guard prevents.
func TestFullVolumeControl(t *testing.T) {
	fs := mountTmpfs(t, "64m")
	data := filepath.Join(fs, "data")
	addr := freeAddr(t)
	args := []string{filepath.Join(bin, "broker"), "--listen", addr, "--demo", "--data", data, "--ops-listen", "127.0.0.1:0", "--stock-delivery"}
	broker := start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	persistentArchiver(t, addr, newSeen(), 0)
	require.True(t, tryPublish(t, addr, "farm/n1/env", "before"))
	leaveFree(t, fs, 0)
	big := string(make([]byte, 60<<10))
	for i := 0; i < 200 && broker.running(); i++ {
		tryPublish(t, addr, fmt.Sprintf("farm/n%d/env", i), big)
	}
	require.NotEqual(t, 0, broker.exited(10*time.Second), "the broker dies on the full volume")
	require.Contains(t, broker.out.String(), "pebble: ")

	broker = start(t, "broker", args...)
	require.NotEqual(t, 0, broker.exited(15*time.Second), "and again at the next start")
}
