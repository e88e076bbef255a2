package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sensorfarm/sensorfarm/internal/child"
)

// Kind is a broker under test.
type Kind string

const (
	// Ours is bin/broker with everything on: users, ACL, the pebble store
	// with fsync, gap detection, metrics.
	Ours Kind = "ours"
	// Mochi is bare mochi-mqtt (bench/baremochi): allow-all, no store.
	Mochi Kind = "mochi"
	// Mosquitto is Debian's mosquitto with our users and ACL, persistence
	// on.
	Mosquitto Kind = "mosquitto"
)

// Kinds are the peers, in the order each run starts them.
var Kinds = []Kind{Ours, Mochi, Mosquitto}

// peer is one running broker, started by the runner and ended by its PID.
type peer struct {
	kind Kind
	addr string
	proc *child.Process
	log  string // its output, a file in its directory
	ops  string // ours: the address of /metrics
}

// peerEnv is what starting a peer needs.
type peerEnv struct {
	bin       string // directory of broker and linux-arm64/broker
	bareMochi string // the bench/baremochi binary
	cpu       int    // the core the broker is pinned to; -1: not pinned
	users     string // our broker's users file
	// mosqUsers is the same users and ACL for mosquitto (the mosquitto.conf
	// lines `broker user export` wrote).
	mosqUsers string
	// maxClients is what our broker must accept for the largest storm.
	maxClients int
	// qemu runs our arm64 broker under qemu-aarch64-static instead.
	qemu bool
}

// startPeer starts kind in dir (a fresh directory: its store, its log),
// pinned to env.cpu, and waits until it listens.
func startPeer(ctx context.Context, kind Kind, dir string, env peerEnv) (*peer, error) {
	p := &peer{kind: kind, log: filepath.Join(dir, "log")}
	var argv []string
	var waitFor *regexp.Regexp
	switch kind {
	case Ours:
		bin := filepath.Join(env.bin, "broker")
		if env.qemu {
			bin = filepath.Join(env.bin, "linux-arm64", "broker")
		}
		argv = []string{bin, "--listen", "127.0.0.1:0", "--users", env.users, "--data", filepath.Join(dir, "data"),
			"--ops-listen", "127.0.0.1:0", "--max-clients", strconv.Itoa(env.maxClients)}
		if env.qemu {
			argv = append([]string{"qemu-aarch64-static", "-cpu", "cortex-a72"}, argv...)
		}
		waitFor = regexp.MustCompile(`msg=listening addr=(127\.0\.0\.1:\d+)`)
	case Mochi:
		argv = []string{env.bareMochi, "--listen", "127.0.0.1:0"}
		waitFor = regexp.MustCompile(`msg=listening addr=(127\.0\.0\.1:\d+)`)
	case Mosquitto:
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		users, err := os.ReadFile(env.mosqUsers)
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(conf, []byte(mosquittoConf(addr, string(users), dir)), 0o600); err != nil {
			return nil, fmt.Errorf("mosquitto.conf: %w", err)
		}
		argv = []string{"mosquitto", "-c", conf}
		p.addr = addr
		waitFor = regexp.MustCompile(`Opening ipv4 listen socket on port (\d+)`)
	default:
		return nil, fmt.Errorf("no peer %q", kind)
	}
	if env.cpu >= 0 {
		argv = append([]string{"taskset", "-c", strconv.Itoa(env.cpu)}, argv...)
	}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, fmt.Errorf("%s: log: %w", kind, err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = dir
	if p.proc, err = child.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(p.log)
		if m := waitFor.FindSubmatch(b); m != nil {
			if p.addr == "" {
				p.addr = string(m[1])
			}
			if m := opsListening.FindSubmatch(b); m != nil {
				p.ops = string(m[1])
			}
			break
		}
		select {
		case <-p.proc.Done():
			return nil, fmt.Errorf("%s exited at start: %s", kind, tail(b))
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s did not listen within 30 s: %s", kind, tail(b))
		}
	}
	return p, nil
}

// opsListening is where our broker says it serves /metrics.
var opsListening = regexp.MustCompile(`msg="ops listening" addr=(127\.0\.0\.1:\d+)`)

// mosquittoConf is mosquitto on addr configured as ours is: users (the
// lines `broker user export` wrote: password file, ACL, no anonymous) and
// persistence on in dir, saved every second, the most mosquitto offers
// towards a PUBACK that means "on disk" (it has no per-message fsync; the
// same as bench/durable). Its queues are as deep as mochi's, so that a slow
// subscriber is not dropped by one and queued by the other. Run as root (as
// this tool is), it stays root to read the 0600 files written here.
func mosquittoConf(addr, users, dir string) string {
	host, port, _ := net.SplitHostPort(addr)
	c := fmt.Sprintf(`%slistener %s %s
persistence true
persistence_location %s/
autosave_interval 1
max_inflight_messages 1024
max_queued_messages 8192
max_connections -1
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
`, users, port, host, dir)
	if os.Geteuid() == 0 {
		c += "user root\n"
	}
	return c
}

// pid is the broker's own process: taskset execs it, so it is the one
// started, and qemu-user runs the guest in its own process too.
func (p *peer) pid() int { return p.proc.PID() }

// stop ends the peer by its PID: SIGTERM, and SIGKILL if it has not gone
// within 10 s.
func (p *peer) stop() { p.proc.Stop(10 * time.Second) }

// alive fails when the peer exited under load.
func (p *peer) alive() error {
	select {
	case <-p.proc.Done():
		b, _ := os.ReadFile(p.log)
		return fmt.Errorf("%s exited during the benchmark: %s", p.kind, tail(b))
	default:
		return nil
	}
}

// goMemory is ours' Go runtime memory figures from its /metrics, by name;
// nil for a peer without them.
func (p *peer) goMemory(ctx context.Context) (map[string]float64, error) {
	if p.ops == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.ops+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", p.kind, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s /metrics: %w", p.kind, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(name, "go_memstats_") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[name] = f
		}
	}
	for _, need := range []string{"go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes"} {
		if _, ok := m[need]; !ok {
			return nil, fmt.Errorf("%s /metrics: no %s", p.kind, need)
		}
	}
	return m, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func tail(b []byte) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return string(bytes.Join(lines[max(len(lines)-5, 0):], []byte(" | ")))
}

// usage is a process's resources as /proc shows them.
type usage struct {
	rssKB uint64        // VmRSS
	hwmKB uint64        // VmHWM, the peak RSS
	cpu   time.Duration // utime + stime
}

// clockTick is the unit of /proc/PID/stat's times: USER_HZ, 100 on Linux
// for every architecture.
const clockTick = 10 * time.Millisecond

func readUsage(pid int) (usage, error) {
	var u usage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, fmt.Errorf("process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			u.rssKB, _ = strconv.ParseUint(f[1], 10, 64)
		case "VmHWM:":
			u.hwmKB, _ = strconv.ParseUint(f[1], 10, 64)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return u, errors.New("unreadable /proc/PID/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, errors.New("unreadable /proc/PID/stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return u, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	u.cpu = time.Duration(ut+st) * clockTick
	return u, nil
}
