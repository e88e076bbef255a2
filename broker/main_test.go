package main

import (
	"bytes"
	"context"
	"errors"
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

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

const testVersion = "v0.0.0-test"

// buildBinary builds this command into dir, stamped with testVersion.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goBin = filepath.Join(root, "bin", "go")
		} else {
			t.Skip("no go command to build the broker with")
		}
	}
	bin := filepath.Join(dir, "broker")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, "-ldflags", "-X main.version="+testVersion, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var listeningLine = regexp.MustCompile(`msg=listening addr=(\S+)`)

// runOnce runs the binary to completion, bounded, and returns its exit code
// and combined output.
func runOnce(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err, "%s", out)
	return 0, string(out)
}

// process is a broker binary started by a test.
type process struct {
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan struct{} // closed when the process has exited
	waitErr error         // cmd.Wait's result, once exited is closed
	addr    string        // from its listening line
}

// startProcess starts the binary, waits for its listening line, and kills it
// (this process only) at the end of the test if it is still running.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), out: new(lockedBuffer), exited: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	require.NoError(t, p.cmd.Start())
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("broker output:\n%s", p.out.String())
		}
	})
	require.Eventually(t, func() bool {
		if m := listeningLine.FindStringSubmatch(p.out.String()); m != nil {
			p.addr = m[1]
			return true
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "no listening line in the log")
	return p
}

// connect connects an MQTT client; lost, if not nil, is called when the
// broker drops the connection.
func connect(t *testing.T, addr string, lost paho.ConnectionLostHandler) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(t.Name()).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if lost != nil {
		opts.SetConnectionLostHandler(lost)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second), "connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// publishRetained publishes at QoS 1 and waits for the broker's PUBACK.
func publishRetained(t *testing.T, c paho.Client, topic, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, true, payload)
	require.True(t, tok.WaitTimeout(5*time.Second), "publish timed out")
	require.NoError(t, tok.Error())
}

func TestBinary(t *testing.T) {
	bin := buildBinary(t, t.TempDir())

	t.Run("version", func(t *testing.T) {
		code, out := runOnce(t, bin, "--version")
		require.Equal(t, 0, code)
		require.Equal(t, testVersion+"\n", out)
	})

	t.Run("help", func(t *testing.T) {
		code, out := runOnce(t, bin, "-h")
		require.Equal(t, 0, code)
		require.Contains(t, out, "-store-sync")
	})

	t.Run("SIGTERM stops it gracefully", func(t *testing.T) {
		p := startProcess(t, bin, "--listen", "127.0.0.1:0", "--demo", "--data", t.TempDir())
		host, _, err := net.SplitHostPort(p.addr)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", host)

		lost := make(chan struct{})
		c := connect(t, p.addr, func(paho.Client, error) { close(lost) })
		publishRetained(t, c, "sensorfarm/farm1/node1/status", "online")

		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-p.exited:
			require.NoError(t, p.waitErr, "exit status after SIGTERM")
		case <-time.After(5 * time.Second):
			t.Fatal("the broker did not exit within 5s of SIGTERM")
		}
		require.Equal(t, 0, p.cmd.ProcessState.ExitCode())
		require.Regexp(t, `msg=stopped\b`, p.out.String())
		select {
		case <-lost:
		case <-time.After(5 * time.Second):
			t.Fatal("the client was not disconnected")
		}
	})

	t.Run("by default a SIGKILL loses nothing acknowledged", func(t *testing.T) {
		data := t.TempDir()
		p := startProcess(t, bin, "--listen", "127.0.0.1:0", "--demo", "--data", data)
		c := connect(t, p.addr, nil)
		publishRetained(t, c, "sensorfarm/farm1/node1/status", "online")
		c.Disconnect(0)
		require.NoError(t, p.cmd.Process.Kill()) // as the OOM killer would
		<-p.exited

		p = startProcess(t, bin, "--listen", "127.0.0.1:0", "--demo", "--data", data)
		c = connect(t, p.addr, nil)
		got := make(chan paho.Message, 1)
		tok := c.Subscribe("sensorfarm/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
		require.True(t, tok.WaitTimeout(5*time.Second))
		require.NoError(t, tok.Error())
		select {
		case m := <-got:
			require.Equal(t, "online", string(m.Payload()))
			require.True(t, m.Retained())
		case <-time.After(5 * time.Second):
			t.Fatal("the retained message did not survive the SIGKILL")
		}
	})

	t.Run("demo refused on every interface", func(t *testing.T) {
		code, out := runOnce(t, bin, "--listen", "0.0.0.0:1883", "--demo", "--data", t.TempDir())
		require.Equal(t, 2, code)
		require.Contains(t, out, "--demo allows anonymous clients and is accepted only on a loopback address; --listen is 0.0.0.0:1883")
	})

	t.Run("refused without demo", func(t *testing.T) {
		code, out := runOnce(t, bin, "--data", t.TempDir())
		require.Equal(t, 2, code)
		require.Contains(t, out, "without --demo nobody may connect")
	})

	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		code, out := runOnce(t, bin, "--listen", l.Addr().String(), "--demo", "--data", t.TempDir())
		require.Equal(t, 1, code)
		require.True(t, strings.Contains(out, "already in use"), out)
	})
}
