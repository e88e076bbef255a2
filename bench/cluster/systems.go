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
func (b *ours) stop()       { b.srv.proc.Stop(20 * time.Second) }
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
	nodes []*natsNode
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
	c := &natsCluster{}
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

// kill SIGKILLs the leader of $MQTT_msgs, the stream every QoS 1 publish goes
// through: the worst case, where the bridges of the other nodes stall too
// until a new leader is elected.
func (c *natsCluster) kill(context.Context) (string, error) {
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.HTTP)
	}
	leaders, err := natscluster.Leaders(addrs...)
	if err != nil {
		return "", err
	}
	victim := leaders["$MQTT_msgs"]
	var led []string
	for stream, leader := range leaders {
		if leader == victim && strings.HasPrefix(stream, "$MQTT_") {
			led = append(led, stream)
		}
	}
	slices.Sort(led)
	for _, n := range c.nodes {
		if victim != "" && n.Node.Name == victim {
			n.sigkill()
			return victim + ", leader of " + strings.Join(led, ", "), nil
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
