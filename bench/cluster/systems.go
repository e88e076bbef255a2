package main

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	"github.com/sensorfarm/sensorfarm/internal/loopback"
	"github.com/sensorfarm/sensorfarm/internal/natscluster"
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
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	var err error
	s.proc, err = child.StartLogged(cmd, s.log)
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

// ours is our broker: users, TLS, the pebble store.
type ours struct {
	srv *server
	url string
}

var listening = regexp.MustCompile(`msg=listening`)

func (s *setup) startOurs(context.Context) (system, error) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	b := &ours{url: "mqtts://localhost:" + port}
	b.srv = &server{name: "ours", log: filepath.Join(s.dir, "ours.log"), argv: []string{filepath.Join(s.bin, "broker"),
		"--listen", "127.0.0.1:0", "--tls-listen", addr, "--tls-cert", s.cert, "--tls-key", s.key,
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
	*natscluster.Node
}

func (s *setup) startNATS(context.Context) (system, error) {
	conf := filepath.Join(s.dir, "nats-conf", "nats.conf")
	text, err := os.ReadFile(s.natsConf)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(conf, text, 0o600); err != nil {
		return nil, err
	}
	planned, err := natscluster.Plan(s.dir, s.cert, s.key)
	if err != nil {
		return nil, err
	}
	c := &natsCluster{killed: -1}
	for _, p := range planned {
		n := &natsNode{Node: p, server: &server{name: p.Name, log: filepath.Join(s.dir, p.Name+".log"),
			argv: natscluster.Argv(filepath.Join(s.bin, "nats-server"), conf, p.Env)}}
		if err := n.start(); err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := natscluster.Healthy(n.HTTP, 60*time.Second); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *natsCluster) name() string { return "nats" }

// homeKilled: bridge i's home is node i mod 3.
func (c *natsCluster) homeKilled(i int) bool { return i%3 == c.killed }

// brokers: bridge i's home is node i mod 3, the others follow.
func (c *natsCluster) brokers(i int) string {
	var urls []string
	for k := range 3 {
		urls = append(urls, c.nodes[(i+k)%3].URL())
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) archiverURLs() []string {
	var urls []string
	for _, n := range c.nodes {
		urls = append(urls, strings.Replace(n.URL(), "mqtts://", "ssl://", 1))
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

// prepare makes nats-0 the leader of the MQTT streams (natscluster.MQTTStreams),
// with an admin's step-down requests naming it as the preferred leader, so
// that kill takes all three down: the worst case, the same in every run. The
// streams exist once the archiver connected.
func (c *natsCluster) prepare(ctx context.Context, env *setup) error {
	want := c.nodes[0].Node.Name
	nc, err := nats.Connect("nats://"+c.nodes[1].Client, nats.UserInfo(env.admin.Name, env.admin.Password), nats.NoReconnect())
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
		for _, stream := range natscluster.MQTTStreams() {
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
	var addrs []string
	for _, n := range c.nodes {
		if n.proc.Running() {
			addrs = append(addrs, n.HTTP)
		}
	}
	byStream, err := natscluster.Leaders(addrs...)
	if err != nil {
		return nil, err
	}
	leads := map[string][]string{}
	for stream, leader := range byStream {
		if strings.HasPrefix(stream, "$MQTT_") {
			leads[leader] = append(leads[leader], stream)
		}
	}
	for _, streams := range leads {
		slices.Sort(streams)
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
		if slices.Contains(leads[n.Node.Name], "$MQTT_msgs") {
			c.killed = i
			n.sigkill()
			return n.Node.Name + ", leader of " + strings.Join(leads[n.Node.Name], ", "), nil
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
