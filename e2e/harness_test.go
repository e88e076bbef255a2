// Package e2e runs the real binaries over real TCP on 127.0.0.1 against real
// peers (Debian's mosquitto and mosquitto_sub, qemu for the ARMv6 build).
// Every process a test starts is ended by its PID when the test ends.
package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is where `make build` puts the binaries under test.
var bin string

func TestMain(m *testing.M) {
	root, err := filepath.Abs("..")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(root, "bin")
	// One build for every test, with the Makefile's own flags, so the tests
	// check exactly the binaries a user gets.
	build := exec.Command("make", "-s", "-C", root, "build")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: make build failed: %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// need fails the test when a tool it uses is not installed: a missing peer is
// a broken test machine, not a reason to pass.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make deps installs it): %v", tool, err)
		}
	}
}

// skip skips a test that needs a real system this machine lacks (Nomad, a
// Kubernetes API server), saying why. go test prints a passing package's skips
// only with -v, so the reason also goes to the file named by
// $SENSORFARM_SKIPPED, which make test prints at its end.
func skip(t *testing.T, reason string) {
	t.Helper()
	if path := os.Getenv("SENSORFARM_SKIPPED"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatalf("record the skip: %v", err)
		}
		_, err = fmt.Fprintf(f, "%s: %s\n", t.Name(), reason)
		if err = errors.Join(err, f.Close()); err != nil {
			t.Fatalf("record the skip: %v", err)
		}
	}
	t.Skip("SKIPPED: " + reason)
}

// process is a child started by a test.
type process struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func start(t *testing.T, name string, argv ...string) *process {
	t.Helper()
	return startWith(t, name, nil, argv...)
}

// startWith starts argv with its standard output going to stdout as well as
// to the log kept for a failing test.
func startWith(t *testing.T, name string, stdout io.Writer, argv ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if stdout != nil {
		p.cmd.Stdout = io.MultiWriter(p.out, stdout)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s (pid %d):\n%s", name, p.cmd.Process.Pid, p.out)
		}
	})
	return p
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *process) stop() int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s did not stop within 10s of SIGTERM", p.name)
	}
	return p.cmd.ProcessState.ExitCode()
}

// exited waits, up to limit, for a process that was told to stop to exit,
// and returns its exit code. (A second SIGTERM would kill a broker that is
// still stopping: a second signal is its "stop now".)
func (p *process) exited(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.t.Fatalf("%s did not exit within %s", p.name, limit)
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL, as a power cut or the OOM killer would.
func (p *process) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitLog waits until the process's output matches re and returns the match.
func (p *process) waitLog(re string, limit time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(limit)
	for {
		if m := rx.FindStringSubmatch(p.out.String()); m != nil {
			return m
		}
		if !p.running() {
			p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, re)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not log %q within %s", p.name, re, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startBroker runs our broker in demo mode on a free loopback port.
func startBroker(t *testing.T, data, listen string) (*process, string) {
	t.Helper()
	p := start(t, "broker", filepath.Join(bin, "broker"), "--listen", listen, "--demo", "--data", data, "--ops-listen", "127.0.0.1:0")
	m := p.waitLog(`msg=listening .*addr=(127\.0\.0\.1:\d+)`, 15*time.Second)
	return p, m[1]
}

// freeAddr finds a loopback port nobody listens on, for a process that must be
// started on a known address (a broker that comes back after the bridge).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func bridgeArgs(t *testing.T, addr, site, node string, extra ...string) []string {
	return append([]string{
		"--broker", "tcp://" + addr, "--site", site, "--node", node,
		"--spool", filepath.Join(t.TempDir(), node), "--interval", "300ms",
	}, extra...)
}

// message is one line of `mosquitto_sub -F '%r %t %p'`.
type message struct {
	Retained bool
	Topic    string
	Payload  string
}

// subscriber is a real mosquitto_sub, its messages delivered on a channel.
type subscriber struct {
	*process
	msgs chan message

	mu  sync.Mutex
	all []message // every message received, in order
}

// history returns every message received so far on topic.
func (s *subscriber) history(topic string) []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []message
	for _, m := range s.all {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func subscribe(t *testing.T, addr string, args ...string) *subscriber {
	t.Helper()
	need(t, "mosquitto_sub")
	host, port, _ := net.SplitHostPort(addr)
	argv := append([]string{"mosquitto_sub", "-h", host, "-p", port, "-q", "1", "-F", "%r %t %p"}, args...)
	pr, pw := io.Pipe()
	s := &subscriber{msgs: make(chan message, 4096)}
	s.process = startWith(t, "mosquitto_sub", pw, argv...)
	go func() {
		<-s.done
		pw.Close()
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m, ok := parseLine(sc.Text()); ok {
				s.mu.Lock()
				s.all = append(s.all, m)
				s.mu.Unlock()
				select {
				case s.msgs <- m:
				default: // nobody is waiting for this one; history keeps it
				}
			}
		}
	}()
	return s
}

func parseLine(line string) (message, bool) {
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 3 {
		return message{}, false
	}
	return message{Retained: parts[0] == "1", Topic: parts[1], Payload: parts[2]}, true
}

// next waits for the next message whose topic matches, skipping others.
func (s *subscriber) next(topic string, limit time.Duration) message {
	s.t.Helper()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		select {
		case m := <-s.msgs:
			if m.Topic == topic {
				return m
			}
		case <-timer.C:
			s.t.Fatalf("no message on %s within %s", topic, limit)
		}
	}
}
