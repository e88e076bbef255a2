package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sensorfarm/sensorfarm/internal/child"
)

// server is one server process, its output in a file.
type server struct {
	name string
	argv []string
	env  []string
	log  string
	proc *child.Process
}

func (s *server) start() error {
	f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = f, f
	s.proc, err = child.Start(cmd)
	return err
}

// waitLog waits until the server's output matches re.
func (s *server) waitLog(re *regexp.Regexp, limit time.Duration) ([]string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(s.log)
		if err != nil {
			return nil, err
		}
		if m := re.FindSubmatch(b); m != nil {
			out := make([]string, len(m))
			for i, g := range m {
				out[i] = string(g)
			}
			return out, nil
		}
		if !s.proc.Running() {
			return nil, fmt.Errorf("%s exited: %v", s.name, s.proc.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("%s did not log %q within %s", s.name, re, limit)
}

func (s *server) sigkill() {
	_ = s.proc.Cmd.Process.Kill()
	<-s.proc.Done()
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, p, err := net.SplitHostPort(l.Addr().String())
	return p, err
}

// ours is our broker: users, TLS, the pebble store.
type ours struct {
	srv *server
	url string
}

var listening = regexp.MustCompile(`msg=listening`)

func (s *setup) startOurs(context.Context) (system, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &ours{url: "mqtts://localhost:" + port}
	b.srv = &server{name: "ours", log: filepath.Join(s.dir, "ours.log"), argv: []string{filepath.Join(s.bin, "broker"),
		"--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:" + port, "--tls-cert", s.cert, "--tls-key", s.key,
		"--users", s.users, "--data", filepath.Join(s.dir, "ours-data"), "--ops-listen", "127.0.0.1:0"}}
	if err := b.srv.start(); err != nil {
		return nil, err
	}
	if _, err := b.srv.waitLog(listening, 30*time.Second); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

func (b *ours) name() string       { return "ours" }
func (b *ours) brokers(int) string { return b.url }
func (b *ours) archiverURLs() []string {
	return []string{strings.Replace(b.url, "mqtts://", "ssl://", 1)}
}
func (b *ours) pids() []int { return []int{b.srv.proc.PID()} }

func (b *ours) prepare(context.Context, *setup) error { return nil }

// homeKilled: every bridge's broker is the one killed.
func (b *ours) homeKilled(int) bool { return true }
func (b *ours) stop()               { b.srv.proc.Stop(20 * time.Second) }
func (b *ours) kill(context.Context) (string, error) {
	b.srv.sigkill()
	if err := os.Truncate(b.srv.log, 0); err != nil {
		return "", err
	}
	if err := b.srv.start(); err != nil {
		return "", err
	}
	_, err := b.srv.waitLog(listening, 60*time.Second)
	return "the broker, started again at once on its data", err
}

// natsCluster is three nats-server nodes on nats/k8s/nats.conf.
type natsCluster struct {
	nodes  []*natsNode
	killed int // the index of the node kill SIGKILLed
}

type natsNode struct {
	*server
	mqtt, http, client string // ports
}

func (s *setup) startNATS(context.Context) (system, error) {
	confDir := filepath.Join(s.dir, "nats-conf")
	text, err := os.ReadFile(s.natsConf)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(confDir, "nats.conf"), text, 0o600); err != nil {
		return nil, err
	}
	ports := make([]string, 12)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	c := &natsCluster{killed: -1}
	for i := range 3 {
		n := &natsNode{mqtt: ports[4*i], http: ports[4*i+1], client: ports[4*i+2]}
		name := fmt.Sprintf("nats-%d", i)
		n.server = &server{name: name, log: filepath.Join(s.dir, name+".log"),
			argv: []string{filepath.Join(s.bin, "nats-server"), "-c", filepath.Join(confDir, "nats.conf")},
			env: []string{
				"NATS_SERVER_NAME=" + name, "NATS_HOST=127.0.0.1", "NATS_CLIENT_PORT=" + ports[4*i+2], "NATS_HTTP=127.0.0.1:" + n.http,
				"NATS_STORE_DIR=" + filepath.Join(s.dir, name), "NATS_CLUSTER_PORT=" + ports[4*i+3],
				"NATS_ROUTE_0=nats-route://127.0.0.1:" + ports[3], "NATS_ROUTE_1=nats-route://127.0.0.1:" + ports[7],
				"NATS_ROUTE_2=nats-route://127.0.0.1:" + ports[11],
				"NATS_MQTT_PORT=" + n.mqtt, "NATS_TLS_CERT=" + s.cert, "NATS_TLS_KEY=" + s.key,
			}}
		if err := n.start(); err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.healthy(60 * time.Second); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (n *natsNode) healthy(limit time.Duration) error {
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://127.0.0.1:" + n.http + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s is not healthy within %s", n.name, limit)
}

func (c *natsCluster) name() string { return "nats" }

// homeKilled: bridge i's home is node i mod 3.
func (c *natsCluster) homeKilled(i int) bool { return i%3 == c.killed }

// brokers: bridge i's home is node i mod 3, the others follow.
func (c *natsCluster) brokers(i int) string {
	var urls []string
	for k := range 3 {
		urls = append(urls, "mqtts://localhost:"+c.nodes[(i+k)%3].mqtt)
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) archiverURLs() []string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, "ssl://localhost:"+n.mqtt)
	}
	return urls
}

func (c *natsCluster) pids() []int {
	var pids []int
	for _, n := range c.nodes {
		if n.proc.Running() {
			pids = append(pids, n.proc.PID())
		}
	}
	return pids
}

func (c *natsCluster) stop() {
	for _, n := range c.nodes {
		n.proc.Stop(20 * time.Second)
	}
}

// mqttStreams are the streams nats-server's MQTT layer needs for the farm:
// QoS 1 messages, sessions, retained messages.
var mqttStreams = []string{"$MQTT_msgs", "$MQTT_sess", "$MQTT_rmsgs"}

// prepare makes nats-0 the leader of mqttStreams, with an admin's step-down
// requests naming it as the preferred leader, so that kill takes all three
// down: the worst case, the same in every run. The streams exist once the
// archiver connected.
func (c *natsCluster) prepare(ctx context.Context, env *setup) error {
	want := c.nodes[0].name
	nc, err := nats.Connect("nats://127.0.0.1:"+c.nodes[1].client, nats.UserInfo(env.admin.Name, env.admin.Password), nats.NoReconnect())
	if err != nil {
		return fmt.Errorf("the NATS protocol as %s: %w", env.admin.Name, err)
	}
	defer nc.Close()
	body := fmt.Appendf(nil, `{"placement":{"preferred":%q}}`, want)
	for deadline := time.Now().Add(60 * time.Second); ; {
		leads, err := c.leaders()
		if err != nil {
			return err
		}
		var move []string
		for _, stream := range mqttStreams {
			if !slices.Contains(leads[want], stream) {
				move = append(move, stream)
			}
		}
		if len(move) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not lead %v within 60 s", want, move)
		}
		for _, stream := range move {
			// An answer or a timeout: either way /jsz says what happened.
			_, _ = nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, body)
		}
		time.Sleep(time.Second)
	}
}

// leaders returns, for each node's name, the $MQTT_ streams it leads, as
// the running nodes' monitoring endpoints (/jsz) report them.
func (c *natsCluster) leaders() (map[string][]string, error) {
	leads := map[string][]string{}
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	hc := http.Client{Timeout: 2 * time.Second}
	for _, n := range c.nodes {
		if !n.proc.Running() {
			continue
		}
		resp, err := hc.Get("http://127.0.0.1:" + n.http + "/jsz?accounts=true&streams=true")
		if err != nil {
			return nil, err
		}
		err = json.NewDecoder(resp.Body).Decode(&jsz)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		for _, a := range jsz.Accounts {
			for _, s := range a.Streams {
				if l := s.Cluster.Leader; strings.HasPrefix(s.Name, "$MQTT_") && l != "" && !slices.Contains(leads[l], s.Name) {
					leads[l] = append(leads[l], s.Name)
				}
			}
		}
	}
	return leads, nil
}

// kill SIGKILLs the leader of $MQTT_msgs, the stream every QoS 1 publish goes
// through, and says what else it led (prepare made it lead the sessions'
// and retained streams too).
func (c *natsCluster) kill(context.Context) (string, error) {
	leads, err := c.leaders()
	if err != nil {
		return "", err
	}
	for i, n := range c.nodes {
		if slices.Contains(leads[n.name], "$MQTT_msgs") {
			c.killed = i
			n.sigkill()
			return n.name + ", leader of " + strings.Join(leads[n.name], ", "), nil
		}
	}
	return "", errors.New("no node leads $MQTT_msgs")
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// cpuOf sums the user and system CPU time of pids (/proc/PID/stat).
func cpuOf(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The fields after the command name, which is in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
		}
		for _, s := range f[11:13] { // utime, stime
			t, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			total += time.Duration(t) * clockTick
		}
	}
	return total, nil
}
