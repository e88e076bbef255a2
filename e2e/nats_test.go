package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/internal/natscluster"
	"github.com/sensorfarm/sensorfarm/wire"
)

// natsNode is one nats-server of a test's three-node cluster, run on the
// configuration file nats/k8s carries (nats/README.md), with its settings for
// loopback in the environment.
type natsNode struct {
	name       string
	env        []string
	mqtt, http string // addresses
	proc       *process
}

// natsCluster starts three real nats-server processes (bin/nats-server, the
// Go module's v2.15.2) on 127.0.0.1 with cluster routes, JetStream and the
// MQTT listener over TLS, users and permissions from `broker user export
// --format nats` of users, and waits until each is healthy. It returns the
// nodes and the CA that signed their certificate (for "localhost").
func natsCluster(t *testing.T, users string) ([]*natsNode, string) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	code, out := runOnce(t, nil, filepath.Join(bin, "broker"), "user", "export", "--users", users, "--format", "nats", "--out", conf)
	require.Equal(t, 0, code, out)
	text, err := os.ReadFile(filepath.Join("..", "nats", "k8s", "nats.conf"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(conf, "nats.conf"), text, 0o600))

	ca := newCA(t, "sensorfarm NATS CA")
	certPEM, keyPEM := ca.issue(t, 2, "localhost")
	caFile, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{caFile: ca.pem, cert: certPEM, key: keyPEM} {
		require.NoError(t, os.WriteFile(f, b, 0o600))
	}
	planned, err := natscluster.Plan(dir, cert, key)
	require.NoError(t, err)
	nodes := make([]*natsNode, len(planned))
	for i, p := range planned {
		n := &natsNode{name: p.Name, env: p.Env, mqtt: p.MQTT, http: p.HTTP}
		nodes[i] = n
		n.start(t, conf)
	}
	for _, n := range nodes {
		n.proc.waitLog(`Server is ready`, 30*time.Second)
		n.healthy(t, 60*time.Second)
	}
	return nodes, caFile
}

// start runs the node through env(1), which execs nats-server: the PID the
// test ends is nats-server's own.
func (n *natsNode) start(t *testing.T, conf string) {
	n.proc = start(t, n.name, natscluster.Argv(filepath.Join(bin, "nats-server"), filepath.Join(conf, "nats.conf"), n.env)...)
}

// healthy waits until the node's /healthz says ok: JetStream is up and
// current with the cluster's meta leader.
func (n *natsNode) healthy(t *testing.T, limit time.Duration) {
	t.Helper()
	require.NoError(t, natscluster.Healthy(n.http, limit), n.name)
}

func (n *natsNode) url() string { return "mqtts://localhost:" + port(n.mqtt) }

// natsClient connects a paho MQTT 3.1.1 client to the first reachable url over
// TLS, as a; it is disconnected when the test ends.
func natsClient(t *testing.T, caFile string, a account, clientID string, clean bool, urls ...string) (paho.Client, error) {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	o := paho.NewClientOptions().SetClientID(clientID).SetUsername(a.name).SetPassword(a.password).
		SetProtocolVersion(4).SetCleanSession(clean).SetTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(10 * time.Second).SetOrderMatters(false)
	for _, u := range urls {
		o.AddBroker(strings.Replace(u, "mqtts://", "ssl://", 1))
	}
	c := paho.NewClient(o)
	// A node closes MQTT connections (EOF) until its JetStream is ready
	// after a start or an election: those are retried; a refused login is
	// an answer, returned at once.
	for deadline := time.Now().Add(30 * time.Second); ; {
		tok := c.Connect()
		if !tok.WaitTimeout(20 * time.Second) {
			return nil, fmt.Errorf("connect as %s: timed out", a.name)
		}
		err := tok.Error()
		if err == nil {
			break
		}
		// paho says "network Error : EOF" for a closed connection; a CONNACK
		// refusal is its own error.
		if !strings.Contains(err.Error(), "network Error") || time.Now().After(deadline) {
			return nil, err
		}
		t.Logf("connect as %s to %v: %v; trying again", a.name, urls, err)
		time.Sleep(500 * time.Millisecond)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// natsConnect sends the NATS protocol's CONNECT as a to a node's client port
// and returns the server's answer to the PING after it (PONG or -ERR).
func natsConnect(t *testing.T, n *natsNode, a account) string {
	t.Helper()
	answer, _ := natsRequest(t, n, a, "", "")
	return answer
}

// natsRequest connects as a over the NATS protocol and, if the server
// answers PONG, sends a request with body on subject and returns the reply's
// payload.
func natsRequest(t *testing.T, n *natsNode, a account, subject, body string) (answer, reply string) {
	t.Helper()
	var clientPort string
	for _, e := range n.env {
		if p, ok := strings.CutPrefix(e, "NATS_CLIENT_PORT="); ok {
			clientPort = p
		}
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+clientPort, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second)))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(info, "INFO "), info)
	connect, err := json.Marshal(map[string]any{"user": a.name, "pass": a.password, "verbose": false, "pedantic": false})
	require.NoError(t, err)
	_, err = fmt.Fprintf(c, "CONNECT %s\r\nPING\r\n", connect)
	require.NoError(t, err)
	answer, err = r.ReadString('\n')
	require.NoError(t, err)
	answer = strings.TrimSpace(answer)
	if answer != "PONG" || subject == "" {
		return answer, ""
	}
	_, err = fmt.Fprintf(c, "SUB _INBOX.e2e 1\r\nPUB %s _INBOX.e2e %d\r\n%s\r\n", subject, len(body), body)
	require.NoError(t, err)
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "no reply to %s", subject)
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "MSG" {
			size, err := strconv.Atoi(f[3])
			require.NoError(t, err)
			payload := make([]byte, size+2)
			_, err = io.ReadFull(r, payload)
			require.NoError(t, err)
			return answer, string(payload[:size])
		}
		if f[0] == "PING" {
			_, err = fmt.Fprint(c, "PONG\r\n")
			require.NoError(t, err)
		}
	}
}

// archived is what an archiving consumer received of one reading.
type archived struct {
	live bool      // on the live topic, not backlog
	ts   time.Time // when it was measured
	at   time.Time // when it arrived
}

type readingKey struct {
	node, stream string
	seq          uint64
}

// readingArchive counts every reading it receives by (node, stream, seq), as the
// contract's archive stores them.
type readingArchive struct {
	mu    sync.Mutex
	got   map[readingKey][]archived
	wrong []string // payloads that are not the contract's readings
}

var readingTopic = regexp.MustCompile(`^sensorfarm/[a-z0-9_-]+/([a-z0-9_-]+)/(backlog/)?(env|gps)$`)

func (a *readingArchive) handle(_ paho.Client, m paho.Message) {
	sm := readingTopic.FindStringSubmatch(m.Topic())
	if sm == nil {
		return
	}
	var r struct {
		Node string `json:"node"`
		Seq  uint64 `json:"seq"`
		TS   string `json:"ts"`
	}
	err := json.Unmarshal(m.Payload(), &r)
	ts, tsErr := time.Parse(wire.TimeLayout, r.TS)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil || tsErr != nil || r.Node != sm[1] || r.Seq == 0 {
		a.wrong = append(a.wrong, m.Topic()+" "+string(m.Payload()))
		return
	}
	k := readingKey{sm[1], sm[3], r.Seq}
	a.got[k] = append(a.got[k], archived{live: sm[2] == "", ts: ts, at: time.Now()})
}

// seqs returns how often each seq of node's stream arrived.
func (a *readingArchive) seqs(node, stream string) map[uint64]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[uint64]int{}
	for k, v := range a.got {
		if k.node == node && k.stream == stream {
			out[k.seq] = len(v)
		}
	}
	return out
}

// firstLiveAfter returns when the first live reading of node measured after
// t0 arrived, or the zero time.
func (a *readingArchive) firstLiveAfter(node string, t0 time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var first time.Time
	for k, v := range a.got {
		for _, r := range v {
			if k.node == node && r.live && r.ts.After(t0) && (first.IsZero() || r.at.Before(first)) {
				first = r.at
			}
		}
	}
	return first
}

// TestNATSClusterNodeKill runs the farm on three real nats-server nodes with
// the users and permissions `broker user export --format nats` writes: the
// permissions hold (a bridge cannot publish under another node), then a node
// with two bridges on it is SIGKILLed, in three cases by which of the streams
// MQTT needs it leads: none, messages and retained, all. Those bridges publish
// live through another node from their failover lists within 10 s (15 s when
// the dead node led the sessions' stream), the archiving consumer (a
// persistent session) misses no reading, and a reading arrives twice only as
// a replay on a backlog topic.
func TestNATSClusterNodeKill(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	bridges := []account{
		{name: "farm1-node-a", password: "a-pw", role: "bridge", site: "farm1", node: "node-a"},
		{name: "farm1-node-b", password: "b-pw", role: "bridge", site: "farm1", node: "node-b"},
		{name: "farm1-node-c", password: "c-pw", role: "bridge", site: "farm1", node: "node-c"},
		{name: "farm1-node-d", password: "d-pw", role: "bridge", site: "farm1", node: "node-d"},
	}
	for _, a := range append([]account{root, grafana}, bridges...) {
		userAdd(t, users, a)
	}
	// Our users file takes $2a$, $2b$ and $2y$ hashes (the same algorithm);
	// nats-server must log in all three.
	data, err := os.ReadFile(users)
	require.NoError(t, err)
	yaml := string(data)
	for name, version := range map[string]string{"farm1-node-b": "$2b$", "grafana": "$2y$"} {
		i := strings.Index(yaml, `name: "`+name+`"`)
		require.Positive(t, i, name)
		j := i + strings.Index(yaml[i:], "$2a$")
		yaml = yaml[:j] + version + yaml[j+4:]
	}
	require.NoError(t, os.WriteFile(users, []byte(yaml), 0o600))

	// Each case on a cluster of its own: which streams the killed node leads
	// decides what waits for a new leader (nats/README.md).
	t.Run("leaders moved away first", func(t *testing.T) {
		nodes, caFile := natsCluster(t, users)
		t.Run("permissions from the export", func(t *testing.T) { natsPermissions(t, nodes, caFile, bridges) })
		// As before planned maintenance: an admin hands the node's
		// leaderships to the others.
		natsNodeKill(t, nodes, caFile, bridges, 2, nil, 10*time.Second)
	})
	t.Run("the killed node leads messages and retained", func(t *testing.T) {
		// Publishes wait for new leaders, connections do not.
		nodes, caFile := natsCluster(t, users)
		natsNodeKill(t, nodes, caFile, bridges, 2, []string{"$MQTT_msgs", "$MQTT_rmsgs"}, 10*time.Second)
	})
	t.Run("the killed node leads every MQTT stream", func(t *testing.T) {
		// No node accepts a connection until $MQTT_sess has a new leader:
		// nats-server's Raft elects one 4 to 9 s after the last heartbeat
		// (not configurable), and a request sent before that waits out
		// js_api_timeout. 6.6-8.4 s in seven runs here; 10 s is not
		// guaranteed, so the bound is the election's longest plus two
		// timeouts and the bridge's backoff.
		nodes, caFile := natsCluster(t, users)
		natsNodeKill(t, nodes, caFile, bridges, 2, natscluster.MQTTStreams(), 15*time.Second)
	})
}

// natsPermissions checks that the permissions of the export hold on the
// cluster: a bridge publishes and subscribes only where the contract lets it,
// a reader publishes nothing, and only an admin uses the NATS protocol.
func natsPermissions(t *testing.T, nodes []*natsNode, caFile string, bridges []account) {
	watch := &readingArchive{got: map[readingKey][]archived{}}
	var seen sync.Map
	reader, err := natsClient(t, caFile, grafana, "permissions-reader", true, nodes[0].url())
	require.NoError(t, err, "a $2y$ hash logs in")
	tok := reader.Subscribe("sensorfarm/#", 1, func(c paho.Client, m paho.Message) {
		seen.Store(m.Topic()+" "+string(m.Payload()), true)
		watch.handle(c, m)
	})
	require.True(t, tok.WaitTimeout(20*time.Second))
	require.Equal(t, byte(1), tok.(*paho.SubscribeToken).Result()["sensorfarm/#"], "a reader subscribes to the farm")

	c, err := natsClient(t, caFile, bridges[2], "node-c-forger", true, nodes[1].url())
	require.NoError(t, err)
	forged := `{"site":"farm1","node":"node-a","seq":999,"ts":"2026-01-01T00:00:00.000Z"}`
	require.True(t, c.Publish(bridges[0].nodeRoot()+"/env", 1, false, forged).WaitTimeout(10*time.Second))
	require.True(t, c.Publish(bridges[0].nodeRoot()+"/status", 1, true, "offline").WaitTimeout(10*time.Second))
	b, err := natsClient(t, caFile, bridges[1], "node-b-own", true, nodes[2].url())
	require.NoError(t, err, "a $2b$ hash logs in")
	require.True(t, b.Publish(bridges[1].nodeRoot()+"/env/marker", 1, false, "after").WaitTimeout(10*time.Second))
	require.Eventually(t, func() bool { _, ok := seen.Load(bridges[1].nodeRoot() + "/env/marker after"); return ok },
		20*time.Second, 50*time.Millisecond, "a bridge publishes under its own node, through another node of the cluster")
	require.True(t, c.Publish(bridges[2].nodeRoot()+"/env/marker", 1, false, "own").WaitTimeout(10*time.Second))
	require.Eventually(t, func() bool { _, ok := seen.Load(bridges[2].nodeRoot() + "/env/marker own"); return ok },
		20*time.Second, 50*time.Millisecond, "the forger's own topic works")
	seen.Range(func(k, _ any) bool {
		require.False(t, strings.HasPrefix(k.(string), bridges[0].nodeRoot()+"/"), "a bridge published under another node: %s", k)
		return true
	})
	require.Empty(t, watch.got, "no forged reading")

	tok = c.Subscribe("sensorfarm/#", 1, func(paho.Client, paho.Message) {})
	require.True(t, tok.WaitTimeout(20*time.Second))
	require.Equal(t, byte(0x80), tok.(*paho.SubscribeToken).Result()["sensorfarm/#"], "a bridge reads nobody's readings")
	tok = c.Subscribe("homeassistant/status", 1, func(paho.Client, paho.Message) {})
	require.True(t, tok.WaitTimeout(20*time.Second))
	require.Equal(t, byte(1), tok.(*paho.SubscribeToken).Result()["homeassistant/status"], "a bridge listens for Home Assistant")

	require.True(t, reader.Publish("sensorfarm/farm1/node-a/env", 1, false, "from a reader").WaitTimeout(10*time.Second))
	require.True(t, c.Publish(bridges[2].nodeRoot()+"/env/marker", 1, false, "second").WaitTimeout(10*time.Second))
	require.Eventually(t, func() bool { _, ok := seen.Load(bridges[2].nodeRoot() + "/env/marker second"); return ok },
		20*time.Second, 50*time.Millisecond)
	_, ok := seen.Load("sensorfarm/farm1/node-a/env from a reader")
	require.False(t, ok, "a reader publishes nothing")

	wrong := bridges[0]
	wrong.password = "guess"
	_, err = natsClient(t, caFile, wrong, "wrong-password", true, nodes[0].url())
	require.Error(t, err, "a wrong password is refused")
	_, err = natsClient(t, caFile, account{}, "anonymous", true, nodes[0].url())
	require.Error(t, err, "an anonymous client is refused")
	require.Contains(t, natsConnect(t, nodes[0], bridges[0]), "Authorization Violation", "a bridge's password opens MQTT only, not the NATS protocol")
	require.Equal(t, "PONG", natsConnect(t, nodes[0], root), "an admin may use the NATS protocol")
}

// moveLeaders makes nodes[victim] the leader of exactly the MQTT streams
// (natscluster.MQTTStreams) in leads, with an admin's step-down requests
// (naming it as the preferred leader of those it is to lead), until /jsz
// reports it so.
func moveLeaders(t *testing.T, nodes []*natsNode, victim int, leads []string) {
	t.Helper()
	name := nodes[victim].name
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := leaderships(t, nodes)
		var move []string
		for _, stream := range natscluster.MQTTStreams() {
			if slices.Contains(now[name], stream) != slices.Contains(leads, stream) {
				move = append(move, stream)
			}
		}
		if len(move) == 0 {
			t.Logf("%s leads %v", name, now[name])
			return
		}
		require.True(t, time.Now().Before(deadline), "the leaderships of %v did not move within 60 s", move)
		for _, stream := range move {
			body := ""
			if slices.Contains(leads, stream) {
				body = fmt.Sprintf(`{"placement":{"preferred":%q}}`, name)
			}
			_, reply := natsRequest(t, nodes[(victim+1)%3], root, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, body)
			t.Logf("step-down of %s's leader %s: %s", stream, body, reply)
		}
		time.Sleep(time.Second)
	}
}

// natsNodeKill runs four bridges with Home Assistant discovery and failover
// lists, two of them on nodes[victim], an archiving consumer with a
// persistent session and a QoS 0 live subscriber on the other nodes, then
// SIGKILLs nodes[victim], the leader of the streams in leads and of no other
// MQTT stream (natscluster.MQTTStreams). Its bridges must publish live
// through another node within limit, every reading a bridge had acknowledged
// must be at the archiver, and a reading may arrive twice only as a backlog
// replay.
func natsNodeKill(t *testing.T, nodes []*natsNode, caFile string, bridges []account, victim int, leads []string, limit time.Duration) {
	dir := t.TempDir()
	all := []string{nodes[0].url(), nodes[1].url(), nodes[2].url()}
	alive := []int{(victim + 1) % 3, (victim + 2) % 3}

	// The archiving consumer: a persistent session on a node that stays up,
	// subscribed before any bridge starts.
	arch := &readingArchive{got: map[readingKey][]archived{}}
	ac, err := natsClient(t, caFile, grafana, "archiver-e2e", false, nodes[alive[0]].url(), nodes[alive[1]].url())
	require.NoError(t, err)
	for _, f := range []string{"sensorfarm/+/+/env", "sensorfarm/+/+/gps", "sensorfarm/+/+/backlog/#"} {
		tok := ac.Subscribe(f, 1, arch.handle)
		require.True(t, tok.WaitTimeout(20*time.Second))
		require.Equal(t, byte(1), tok.(*paho.SubscribeToken).Result()[f], f)
	}
	// When a bridge publishes live again is seen by a QoS 0 subscriber on
	// the other surviving node: nats-server hands it each message as it is
	// published, while the archiver's QoS 1 deliveries come through
	// JetStream consumers, which wait for a new leader when theirs was on
	// the dead node.
	live := &readingArchive{got: map[readingKey][]archived{}}
	lc, err := natsClient(t, caFile, grafana, "live-e2e", true, nodes[alive[1]].url())
	require.NoError(t, err)
	for _, f := range []string{"sensorfarm/+/+/env", "sensorfarm/+/+/gps"} {
		tok := lc.Subscribe(f, 0, live.handle)
		require.True(t, tok.WaitTimeout(20*time.Second))
		require.Equal(t, byte(0), tok.(*paho.SubscribeToken).Result()[f], f)
	}
	// The streams exist once the first MQTT client connected; the
	// leaderships are checked again just before the kill.
	moveLeaders(t, nodes, victim, leads)

	// node-a and node-b are on two nodes, node-c and node-d on the third, the
	// one to be killed. Each bridge has the other nodes after its own in its
	// --broker list, and announces itself to Home Assistant.
	home := []int{(victim + 1) % 3, (victim + 2) % 3, victim, victim}
	procs := make([]*process, len(bridges))
	for i, a := range bridges {
		h := home[i]
		list := []string{all[h], all[(h+1)%3], all[(h+2)%3]}
		pw := filepath.Join(dir, a.name+".pw")
		require.NoError(t, os.WriteFile(pw, []byte(a.password+"\n"), 0o600))
		procs[i] = start(t, "bridge "+a.node, filepath.Join(bin, "bridge"), "--broker", strings.Join(list, ","),
			"--ca-file", caFile, "--username", a.name, "--password-file", pw, "--site", a.site, "--node", a.node,
			"--spool", filepath.Join(dir, "spool-"+a.node), "--sim", "--interval", "300ms")
	}
	for _, a := range bridges {
		require.Eventually(t, func() bool { return len(arch.seqs(a.node, wire.StreamEnv)) >= 5 }, 30*time.Second, 50*time.Millisecond,
			"%s publishes through the cluster", a.node)
	}

	moveLeaders(t, nodes, victim, leads)
	killed := time.Now()
	nodes[victim].proc.kill()
	t.Logf("SIGKILLed %s (pid %d), the home of node-c and node-d", nodes[victim].name, nodes[victim].proc.cmd.Process.Pid)
	// Every bridge publishes live again: those of the dead node within limit
	// (through another node), the others within 30 s (they stall, and may be
	// closed and reconnect, while a new leader is elected).
	require.Eventually(t, func() bool {
		for _, a := range bridges {
			if live.firstLiveAfter(a.node, killed).IsZero() {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "not every bridge publishes live readings within 30 s of the node kill")
	for i, a := range bridges {
		took := live.firstLiveAfter(a.node, killed).Sub(killed)
		t.Logf("%s (home %s): first live reading measured after the kill arrived %s after it", a.node, nodes[home[i]].name, took.Round(time.Millisecond))
		if home[i] == victim {
			require.Less(t, took, limit, "%s publishes live through another node within %s of its node's kill", a.node, limit)
		}
	}
	// A few more readings after the failover, then every bridge stops and
	// hands over what it had.
	time.Sleep(2 * time.Second)
	for i, p := range procs {
		require.Equal(t, 0, p.stop(), "%s exits 0 on SIGTERM", bridges[i].node)
	}

	// Each bridge's spool says which readings it took (seq 1 to its last)
	// and which the broker never acknowledged; the archiver must have all
	// the others.
	for _, a := range bridges {
		opts := spool.DefaultOptions()
		sp, err := spool.Open(filepath.Join(dir, "spool-"+a.node), &opts)
		require.NoError(t, err)
		pending := map[string]map[uint64]bool{wire.StreamEnv: {}, wire.StreamGPS: {}}
		for cur := sp.Replay(); ; {
			rec, err := cur.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			pending[rec.Stream][rec.Seq] = true
		}
		last := map[string]uint64{wire.StreamEnv: sp.LastSeq(wire.StreamEnv), wire.StreamGPS: sp.LastSeq(wire.StreamGPS)}
		require.NoError(t, sp.Close())
		for _, stream := range []string{wire.StreamEnv, wire.StreamGPS} {
			require.Positive(t, last[stream], "%s took %s readings", a.node, stream)
			var missing []uint64
			require.Eventually(t, func() bool {
				seqs := arch.seqs(a.node, stream)
				missing = nil
				for seq := uint64(1); seq <= last[stream]; seq++ {
					if seqs[seq] == 0 && !pending[stream][seq] {
						missing = append(missing, seq)
					}
				}
				return len(missing) == 0
			}, 30*time.Second, 100*time.Millisecond, "%s %s: readings acknowledged but not at the archiver: %v", a.node, stream, missing)
			t.Logf("%s %s: seq 1 to %d, %d still in the spool", a.node, stream, last[stream], len(pending[stream]))
		}
	}
	arch.mu.Lock()
	defer arch.mu.Unlock()
	require.Empty(t, arch.wrong, "only the contract's readings")
	var dups, total int
	for k, copies := range arch.got {
		total++
		live := 0
		for _, c := range copies {
			if c.live {
				live++
			}
		}
		require.LessOrEqual(t, live, 1, "%v arrived %d times on its live topic: a duplicate that is not a replay", k, live)
		dups += len(copies) - 1
	}
	t.Logf("archiver: %d readings, %d duplicates (replays on backlog topics)", total, dups)
}

// nodeRoot is a bridge account's <prefix>/<site>/<node>.
func (a account) nodeRoot() string {
	return wire.Node{Prefix: wire.DefaultPrefix, Site: a.site, Node: a.node}.Root()
}

// leaderships returns, for each node's name, the streams MQTT needs whose
// leader it is ($MQTT_msgs, $MQTT_sess, $MQTT_rmsgs), as the nodes'
// monitoring endpoints (/jsz) report them, once all three have a leader.
func leaderships(t *testing.T, nodes []*natsNode) map[string][]string {
	t.Helper()
	var leads map[string][]string
	require.Eventually(t, func() bool {
		var running []string
		for _, node := range nodes {
			if node.proc.running() {
				running = append(running, node.http)
			}
		}
		leaders, err := natscluster.Leaders(running...)
		if err != nil {
			return false
		}
		leads = map[string][]string{}
		for _, stream := range natscluster.MQTTStreams() {
			l := leaders[stream]
			if l == "" {
				return false
			}
			leads[l] = append(leads[l], stream)
		}
		return true
	}, 20*time.Second, 200*time.Millisecond, "the nodes do not report leaders of $MQTT_msgs, $MQTT_sess and $MQTT_rmsgs")
	return leads
}
