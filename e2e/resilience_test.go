package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// pahoClient connects a real MQTT 3.1.1 client (Eclipse Paho) for a test and
// disconnects it when the test ends.
func pahoClient(t *testing.T, o *paho.ClientOptions) paho.Client {
	t.Helper()
	o.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetWriteTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { t.Logf("paho %s: connection lost: %v", o.ClientID, err) })
	c := paho.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second), "paho connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// publishAll publishes n QoS 1 messages as fast as the client takes them and
// returns how many the broker acknowledged.
func publishAll(t *testing.T, c paho.Client, topic string, n int, payload func(i int) []byte) int {
	t.Helper()
	toks := make([]paho.Token, n)
	for i := range toks {
		toks[i] = c.Publish(topic, 1, false, payload(i))
	}
	acked := 0
	var firstErr error
	for _, tok := range toks {
		switch {
		case !tok.WaitTimeout(30 * time.Second):
		case tok.Error() != nil:
			if firstErr == nil {
				firstErr = tok.Error()
			}
		default:
			acked++
		}
	}
	if firstErr != nil {
		t.Logf("publish failed: %v", firstErr)
	}
	return acked
}

// TestConnectionFlood: with its file descriptors limited to 256, the broker
// takes 400 connections that never send CONNECT. It runs out of descriptors
// (EMFILE), closes each idle connection after --connect-timeout, accepts
// again by itself, and then serves a real client as if nothing happened.
// mochi's own listener stops accepting for good at the first EMFILE.
func TestConnectionFlood(t *testing.T) {
	need(t, "prlimit", "mosquitto_pub", "mosquitto_sub")
	const flood = 400
	p := start(t, "broker", "prlimit", "--nofile=256:256", "--", filepath.Join(bin, "broker"), "--listen", "127.0.0.1:0",
		"--demo", "--data", t.TempDir(), "--ops-listen", "127.0.0.1:0", "--connect-timeout", "1s")
	addr := p.waitLog(`msg=listening .*addr=(127\.0\.0\.1:\d+)`, 15*time.Second)[1]
	sub := subscribe(t, addr, "-t", "flood/#", "-q", "1")

	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err, "the kernel queues connections the broker has not accepted yet")
		conns = append(conns, c)
	}
	p.waitLog(`level=ERROR msg="cannot accept connections; retrying until it can".*too many open files`, 10*time.Second)

	// Every flood connection is closed by the broker: its CONNECT never came.
	closedBy := time.Now().Add(30 * time.Second)
	for i, c := range conns {
		require.NoError(t, c.SetReadDeadline(closedBy))
		_, err := c.Read(make([]byte, 1))
		require.Error(t, err, "connection %d", i)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d was still open 30 s after the flood: the pre-CONNECT deadline did not close it", i)
		}
	}
	p.waitLog(`msg="accepting connections again"`, 10*time.Second)

	code, out := runOnce(t, nil, "mosquitto_pub", "-h", "127.0.0.1", "-p", port(addr), "-q", "1", "-t", "flood/after", "-m", "still here")
	require.Equal(t, 0, code, out)
	require.Equal(t, "still here", sub.next("flood/after", 10*time.Second).Payload)
	require.True(t, p.running())
}

// TestSlowReader: one subscriber stops reading (SIGSTOP) while a publisher
// sends 20 MB. The broker stays up and small, closes the stopped reader's
// connection after --write-timeout (mochi would otherwise hold every
// publisher to it forever), the publisher gets every acknowledgement, and a
// subscriber that reads gets every message.
func TestSlowReader(t *testing.T) {
	need(t, "mosquitto_sub")
	const n, size = 20000, 1024
	broker, addr := startDemoBroker(t)
	slow := subscribe(t, addr, "-t", "slow/#", "-q", "1", "-i", "slow-reader")
	fast := subscribe(t, addr, "-t", "slow/#", "-q", "1", "-i", "fast-reader")
	subscribed(t, addr, "slow/probe", slow, fast)
	require.NoError(t, slow.cmd.Process.Signal(syscall.SIGSTOP))
	defer func() { _ = slow.cmd.Process.Signal(syscall.SIGCONT) }()

	// In bursts the reading subscriber keeps up with: mochi drops a message
	// for any subscriber whose queue (--client-pending-writes) is full, and
	// this one is a mosquitto_sub writing into the test's pipe.
	pub := pahoClient(t, paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("slow-publisher"))
	payload := []byte(strings.Repeat("x", size))
	const burst = 500
	for sent := 0; sent < n; sent += burst {
		require.Equal(t, burst, publishAll(t, pub, "slow/load", burst, func(int) []byte { return payload }), "every publish was acknowledged")
		require.Eventually(t, func() bool { return len(fast.history("slow/load")) >= sent+burst }, 30*time.Second, 20*time.Millisecond,
			"the reading subscriber gets every message (%d of %d)", len(fast.history("slow/load")), sent+burst)
	}
	require.Len(t, fast.history("slow/load"), n)

	rss := rssKiB(t, broker.cmd.Process.Pid)
	t.Logf("broker RSS with a stopped reader after %d MB: %d KiB", n*size>>20, rss)
	require.Less(t, rss, 200*1024, "the stopped reader's queue is bounded (pending writes, inflight)")
	broker.waitLog(`level=WARN msg="closed a connection that read nothing for the write timeout \(a stalled subscriber\)"`, time.Second)
	require.True(t, broker.running())
}

// TestDrainOnSIGTERM: a subscriber with a clean session is stopped, holding
// messages it has not acknowledged, when the broker gets SIGTERM. The broker
// refuses new connections and new publishes (not acknowledged, so a bridge
// keeps them), waits for the subscriber (resumed 1 s later) to acknowledge
// what it was sent, then exits 0; the subscriber has every message the
// publisher was acknowledged for.
func TestDrainOnSIGTERM(t *testing.T) {
	need(t, "mosquitto_sub")
	// Little enough for the sockets' buffers: mochi holds a publisher while
	// a write to a subscriber blocks (see TestSlowReader).
	const n, size = 20, 16 << 10
	broker, addr := startDemoBroker(t, "--drain-timeout", "20s")
	sub := subscribe(t, addr, "-t", "drain/#", "-q", "1", "-i", "drain-reader")
	subscribed(t, addr, "drain/probe", sub)
	require.NoError(t, sub.cmd.Process.Signal(syscall.SIGSTOP))
	pub := pahoClient(t, paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("drain-publisher"))
	payload := strings.Repeat("d", size)
	acked := publishAll(t, pub, "drain/big", n, func(int) []byte { return []byte(payload) })
	require.Equal(t, n, acked)

	require.NoError(t, broker.cmd.Process.Signal(syscall.SIGTERM))
	broker.waitLog(`msg=stopping`, 5*time.Second)
	late := pub.Publish("drain/big", 1, false, []byte("late"))
	require.False(t, late.WaitTimeout(500*time.Millisecond) && late.Error() == nil, "a publish during the drain is not acknowledged")
	_, err := net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the listener is closed while draining")
	time.Sleep(time.Second)
	require.True(t, broker.running(), "the broker waits for the subscriber's acknowledgements")
	require.NotContains(t, broker.out.String(), "msg=drained")

	require.NoError(t, sub.cmd.Process.Signal(syscall.SIGCONT))
	broker.waitLog(`msg=drained`, 20*time.Second)
	require.Equal(t, 0, broker.exited(25*time.Second), "the stop ends cleanly")
	require.Eventually(t, func() bool { return len(sub.history("drain/big")) >= n }, 10*time.Second, 50*time.Millisecond,
		"every acknowledged message reached the subscriber (%d of %d)", len(sub.history("drain/big")), n)
	for _, m := range sub.history("drain/big") {
		require.NotEqual(t, "late", m.Payload)
	}
}

// TestPersistenceWithUsersAndTLS: with users and TLS on, the broker is killed
// (SIGKILL) and restarted on the same data. The retained readings, the
// bridge's status and a reader's persistent session (its subscription and
// the messages queued while it was away) are all still there.
func TestPersistenceWithUsersAndTLS(t *testing.T) {
	need(t, "mosquitto_sub")
	dir := t.TempDir()
	ca := newCA(t, "sensorfarm persistence CA")
	certPEM, keyPEM := ca.issue(t, 7, "localhost")
	caFile, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	for f, b := range map[string][]byte{caFile: ca.pem, cert: certPEM, key: keyPEM} {
		require.NoError(t, os.WriteFile(f, b, 0o600))
	}
	users := filepath.Join(dir, "users.yaml")
	userAdd(t, users, grafana)
	userAdd(t, users, node1)
	data := filepath.Join(dir, "data")
	tlsPort, plain := freePort(t), freeAddr(t)
	args := []string{filepath.Join(bin, "broker"), "--listen", plain, "--users", users, "--data", data, "--ops-listen", "127.0.0.1:0",
		"--tls-listen", "127.0.0.1:" + tlsPort, "--tls-cert", cert, "--tls-key", key}
	broker := start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	server := "ssl://localhost:" + tlsPort

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	var got atomic.Int64
	received := make(chan string, 1000)
	reader := func() *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker(server).SetTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}).
			SetUsername(grafana.name).SetPassword(grafana.password).SetClientID(grafana.clientID()).SetCleanSession(false).
			SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
				got.Add(1)
				received <- string(m.Payload())
			})
	}
	r := pahoClient(t, reader())
	tok := r.Subscribe("sensorfarm/farm1/node1/env", 1, nil)
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	r.Disconnect(100) // away: its session and subscription stay

	pwFile := filepath.Join(dir, "node1.pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(node1.password+"\n"), 0o600))
	bridge := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, "unused:1", node1.site, node1.node,
		"--sim", "--gps=false", "--interval", "200ms", "--broker", "mqtts://localhost:"+tlsPort, "--ca-file", caFile,
		"--username", node1.name, "--password-file", pwFile)...)...)
	bridge.waitLog(`(?s)connected to broker.*`, 15*time.Second)
	// Readings queue for the reader; then the bridge stops cleanly.
	time.Sleep(2 * time.Second)
	require.Equal(t, 0, bridge.stop())

	broker.kill()
	broker = start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)

	// The reader comes back without subscribing again: the session must.
	pahoClient(t, reader())
	var queued []string
	timeout := time.After(15 * time.Second)
collect:
	for {
		select {
		case m := <-received:
			queued = append(queued, m)
		case <-time.After(time.Second):
			if len(queued) > 0 {
				break collect
			}
		case <-timeout:
			break collect
		}
	}
	require.GreaterOrEqual(t, len(queued), 5, "the readings queued for the persistent session survived the SIGKILL")
	for _, m := range queued {
		require.Contains(t, m, `"node":"node1"`)
	}

	// A new reader over TLS gets the retained status and latest reading.
	sub := subscribe(t, net.JoinHostPort("localhost", tlsPort), "--cafile", caFile, "-u", grafana.name, "-P", grafana.password,
		"-i", "grafana-fresh", "-t", "sensorfarm/farm1/node1/+")
	retained := func(topic string) message {
		t.Helper()
		require.Eventually(t, func() bool { return len(sub.history(topic)) > 0 }, 10*time.Second, 20*time.Millisecond, "retained %s", topic)
		m := sub.history(topic)[0]
		require.True(t, m.Retained, topic)
		return m
	}
	require.Equal(t, "offline", retained("sensorfarm/farm1/node1/status").Payload, "the clean stop's offline, kept across the SIGKILL")
	env := retained("sensorfarm/farm1/node1/env")
	require.Contains(t, env.Payload, `"seq":`)
}

// subscribed returns once each subscriber gets a probe on topic: its
// subscription is in place.
func subscribed(t *testing.T, addr, topic string, subs ...*subscriber) {
	t.Helper()
	require.Eventually(t, func() bool {
		code, out := runOnce(t, nil, "mosquitto_pub", "-h", "127.0.0.1", "-p", port(addr), "-q", "1", "-t", topic, "-m", "probe")
		require.Equal(t, 0, code, out)
		for _, s := range subs {
			if len(s.history(topic)) == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 100*time.Millisecond, "the subscribers subscribe")
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func freePort(t *testing.T) string { return port(freeAddr(t)) }

// rssKiB is a process's resident set size from /proc.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib int
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib)
			require.NoError(t, err)
			return kib
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestPacketIDsPerDirection: a client's packet ids and the broker's are
// separate (MQTT 3.1.1 section 2.3.1). A persistent session has messages
// queued, resent with ids the broker chose; the client, not acknowledging
// them yet, sends a SUBSCRIBE and a QoS 1 PUBLISH numbered like two of them.
// The SUBSCRIBE is granted and the PUBLISH acknowledged, and none of the
// queued messages is lost: they come again on the next connection. mochi
// alone refuses the SUBSCRIBE ("packet identifier in use", which makes
// mosquitto_sub -c exit after a broker restart) and forgets the message whose
// id the PUBLISH reused.
func TestPacketIDsPerDirection(t *testing.T) {
	need(t, "mosquitto_pub")
	_, addr := startDemoBroker(t)
	const id = "archiver-raw"
	session := func() *rawClient {
		c := dialRaw(t, addr)
		connect := rawConnect(id, 4, 60)
		connect[len(mqttString("MQTT"))+3] = 0x00 // connect flags: clean session off
		c.write(connect)
		h, body, err := c.read(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, byte(0x20), h, "CONNACK")
		require.Equal(t, byte(0), body[1], "accepted")
		return c
	}
	subscribe := func(c *rawClient, pid uint16, filter string) {
		body := binary.BigEndian.AppendUint16(nil, pid)
		body = append(append(body, mqttString(filter)...), 1)
		c.write(rawPacket(0x82, body))
	}
	// until reads packets until one of type typ, returning the ids of the
	// PUBLISHes seen on the way.
	until := func(c *rawClient, typ byte) (body []byte, published []uint16) {
		for {
			h, b, err := c.read(5 * time.Second)
			require.NoError(t, err)
			if h>>4 == 3 { // PUBLISH, QoS 1: topic, then packet id
				n := int(binary.BigEndian.Uint16(b))
				published = append(published, binary.BigEndian.Uint16(b[2+n:]))
				continue
			}
			if h>>4 == typ {
				return b, published
			}
		}
	}

	c := session()
	subscribe(c, 1, "queued/#")
	sub, _ := until(c, 9)
	require.Equal(t, []byte{0, 1, 1}, sub, "SUBACK id 1, QoS 1")
	require.NoError(t, c.conn.Close())

	const n = 5
	for i := range n {
		code, out := runOnce(t, nil, "mosquitto_pub", "-h", "127.0.0.1", "-p", port(addr), "-q", "1", "-t", "queued/m", "-m", fmt.Sprint(i))
		require.Equal(t, 0, code, out)
	}

	c = session()
	var queued []uint16
	for len(queued) < n {
		h, b, err := c.read(5 * time.Second)
		require.NoError(t, err)
		require.Equal(t, byte(3), h>>4, "a queued PUBLISH")
		topic := int(binary.BigEndian.Uint16(b))
		queued = append(queued, binary.BigEndian.Uint16(b[2+topic:]))
	}
	subscribe(c, queued[0], "other/#")
	suback, _ := until(c, 9)
	require.Equal(t, queued[0], binary.BigEndian.Uint16(suback), "SUBACK for the client's id")
	require.Equal(t, byte(1), suback[2], "granted QoS 1, not 0x80/0x91 (packet identifier in use)")

	pub := binary.BigEndian.AppendUint16(mqttString("own/x"), queued[1]) // not a topic it reads
	pub = append(pub, "x"...)
	c.write(rawPacket(0x32, pub))
	puback, _ := until(c, 4)
	require.Equal(t, queued[1], binary.BigEndian.Uint16(puback), "PUBACK for the client's id")
	require.NoError(t, c.conn.Close())

	// Nothing was acknowledged: all n come again; mochi resends them before
	// it reads the PINGREQ.
	c = session()
	c.write([]byte{0xc0, 0})
	var again []string
	for {
		h, b, err := c.read(5 * time.Second)
		require.NoError(t, err)
		if h>>4 == 13 {
			break
		}
		require.Equal(t, byte(3), h>>4, "a PUBLISH resent")
		topic := int(binary.BigEndian.Uint16(b))
		again = append(again, string(b[2:2+topic])+" "+string(b[4+topic:]))
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("queued/m %d", i))
	}
	require.ElementsMatch(t, want, again, "every queued message is resent, none forgotten")
}

// TestStopClosesMQTT311ClientsCleanly: MQTT 3.1.1 has no DISCONNECT from the
// server, so a stopping broker closes a 3.1.1 client's connection instead of
// sending one (mochi would): mosquitto_sub then reconnects by itself and
// carries on with the broker that comes back, where a DISCONNECT made it exit
// with "protocol error".
func TestStopClosesMQTT311ClientsCleanly(t *testing.T) {
	need(t, "mosquitto_sub", "mosquitto_pub")
	data, addr := t.TempDir(), freeAddr(t)
	broker, _ := startBroker(t, data, addr)
	sub := subscribe(t, addr, "-t", "stop/#", "-V", "mqttv311")
	subscribed(t, addr, "stop/probe", sub)
	require.Equal(t, 0, broker.stop())
	time.Sleep(time.Second)
	require.True(t, sub.running(), "mosquitto_sub keeps trying to reconnect: %s", sub.out.String())
	require.NotContains(t, sub.out.String(), "rotocol error")

	startBroker(t, data, addr)
	subscribed(t, addr, "stop/again", sub)
}
