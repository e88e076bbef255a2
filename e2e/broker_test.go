package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// runOnce runs a binary to completion, bounded, and returns its exit code and
// combined output.
func runOnce(t *testing.T, env []string, argv ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil {
		require.ErrorAs(t, err, &exit, "%s", out)
		return exit.ExitCode(), string(out)
	}
	return 0, string(out)
}

// publish sends a retained QoS 1 message with the real mosquitto_pub, which
// exits only once the broker's PUBACK is in.
func publish(t *testing.T, addr, topic, payload string) {
	t.Helper()
	need(t, "mosquitto_pub")
	host, port, _ := net.SplitHostPort(addr)
	code, out := runOnce(t, nil, "mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-r", "-t", topic, "-m", payload)
	require.Equal(t, 0, code, out)
}

func TestBrokerBinary(t *testing.T) {
	broker := filepath.Join(bin, "broker")

	t.Run("version is stamped by the build", func(t *testing.T) {
		code, out := runOnce(t, nil, broker, "--version")
		require.Equal(t, 0, code)
		want, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
		require.NoError(t, err)
		require.Equal(t, string(want), out)
	})

	t.Run("help lists the settings", func(t *testing.T) {
		code, out := runOnce(t, nil, broker, "-h")
		require.Equal(t, 0, code)
		for _, f := range []string{"-listen", "-data", "-demo", "-store-sync", "-log-level", "-config", "-version"} {
			require.Contains(t, out, f)
		}
	})

	t.Run("SIGTERM stops it gracefully", func(t *testing.T) {
		p, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
		lost := make(chan struct{})
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(t.Name()).
			SetAutoReconnect(false).SetConnectionLostHandler(func(paho.Client, error) { close(lost) }))
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(5*time.Second))
		require.NoError(t, tok.Error())
		defer c.Disconnect(0)

		require.Equal(t, 0, p.stop(), "exit code after SIGTERM")
		require.Regexp(t, `msg=stopped\b`, p.out.String())
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatal("the client was not disconnected")
		}
	})

	t.Run("by default a SIGKILL loses nothing acknowledged", func(t *testing.T) {
		need(t, "mosquitto_sub")
		data := t.TempDir()
		p, addr := startBroker(t, data, "127.0.0.1:0")
		publish(t, addr, "sensorfarm/farm1/node1/status", "online")
		p.kill() // as the OOM killer would, right after the PUBACK

		_, addr = startBroker(t, data, "127.0.0.1:0")
		sub := subscribe(t, addr, "-C", "1", "-W", "5", "-t", "sensorfarm/farm1/#")
		m := sub.next("sensorfarm/farm1/node1/status", 5*time.Second)
		require.Equal(t, "online", m.Payload)
		require.True(t, m.Retained)
	})

	t.Run("a new subscriber gets every retained message of a big farm", func(t *testing.T) {
		// 1,000 nodes with 10 retained topics each (a bridge has about
		// 35): a burst ten times the write queue (--client-pending-writes
		// 1024), sent to mosquitto_sub at QoS 0. mochi dropped what did
		// not fit; the broker writes it behind the queue
		// (broker/server/redeliver.go).
		const nodes, fields = 1000, 10
		need(t, "mosquitto_sub")
		p, addr := startBroker(t, t.TempDir(), "127.0.0.1:0")
		ops := opsAddr(p)
		c := pahoClient(t, paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("seed"))
		// At QoS 0, but the last: the broker handles one client's packets
		// in order, so its PUBACK means every one before it is retained.
		for i := range nodes * fields {
			qos := byte(0)
			if i == nodes*fields-1 {
				qos = 1
			}
			tok := c.Publish(fmt.Sprintf("sensorfarm/s/n%04d/f%d", i/fields, i%fields), qos, true, fmt.Sprint(i))
			if qos == 1 {
				require.True(t, tok.WaitTimeout(30*time.Second))
				require.NoError(t, tok.Error())
			}
		}
		host, port, _ := net.SplitHostPort(addr)
		code, out := runOnce(t, nil, "mosquitto_sub", "-h", host, "-p", port, "-t", "sensorfarm/s/#",
			"-C", fmt.Sprint(nodes*fields), "-W", "8", "-F", "%t")
		got := map[string]bool{}
		for _, topic := range strings.Fields(out) {
			got[topic] = true
		}
		_, body := get(t, "http://"+ops+"/metrics")
		t.Logf("mosquitto_sub got %d of %d retained messages; the broker wrote %v behind the queue", len(got), nodes*fields,
			metric(t, body, "sensorfarm_broker_redelivered_total"))
		require.Equal(t, 0, code, "mosquitto_sub timed out: %d of %d retained messages", len(got), nodes*fields)
		require.Len(t, got, nodes*fields)
		require.NotZero(t, metric(t, body, "sensorfarm_broker_redelivered_total"), "the burst overflowed the queue")
	})

	t.Run("demo refused on every interface", func(t *testing.T) {
		code, out := runOnce(t, nil, broker, "--listen", "0.0.0.0:1883", "--demo", "--data", t.TempDir())
		require.Equal(t, 2, code)
		require.Contains(t, out, "--demo allows anonymous clients and is accepted only on a loopback address; --listen is 0.0.0.0:1883")
	})

	t.Run("refused without demo", func(t *testing.T) {
		code, out := runOnce(t, nil, broker, "--data", t.TempDir())
		require.Equal(t, 2, code)
		require.Contains(t, out, "without --demo nobody may connect")
	})

	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		code, out := runOnce(t, nil, broker, "--listen", l.Addr().String(), "--demo", "--data", t.TempDir())
		require.Equal(t, 1, code)
		require.True(t, strings.Contains(out, "already in use"), out)
	})
}
