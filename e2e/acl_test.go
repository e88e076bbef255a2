package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// account is a user of the broker under test, with its password.
type account struct {
	name, password string
	role           string
	site, node     string
}

// clientID is the client ID the account connects with: a bridge's own,
// anyone else's name.
func (a account) clientID() string {
	if a.role == "bridge" {
		return "bridge:" + a.site + ":" + a.node
	}
	return a.name + "-e2e"
}

// userAdd runs the real `broker user add`, the password on standard input.
func userAdd(t *testing.T, file string, a account) string {
	t.Helper()
	args := []string{"user", "add", "--users", file, "--role", a.role}
	if a.role == "bridge" {
		args = append(args, "--site", a.site, "--node", a.node)
	}
	code, out := runWithStdin(t, a.password+"\n", filepath.Join(bin, "broker"), append(args, a.name)...)
	require.Equal(t, 0, code, out)
	return out
}

// runWithStdin runs a binary to completion with stdin, bounded, and returns
// its exit code and combined output.
func runWithStdin(t *testing.T, stdin string, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err, "%s", out)
	return 0, string(out)
}

// startBrokerWithUsers runs our broker with --users on a free loopback port.
func startBrokerWithUsers(t *testing.T, users string) (*process, string) {
	t.Helper()
	p := start(t, "broker", filepath.Join(bin, "broker"), "--listen", "127.0.0.1:0", "--users", users, "--data", t.TempDir(), "--ops-listen", "127.0.0.1:0")
	m := p.waitLog(`msg=listening addr=(127\.0\.0\.1:\d+) users=`, 15*time.Second)
	return p, m[1]
}

// mqttArgs are mosquitto_pub/sub's connection arguments for a (an empty
// account connects anonymously).
func mqttArgs(addr string, a account, clientID string) []string {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port}
	if a.name != "" {
		args = append(args, "-u", a.name, "-P", a.password)
	}
	if clientID != "" {
		args = append(args, "-i", clientID)
	}
	return args
}

// pubAs publishes one QoS 1 message with the real mosquitto_pub over MQTT 5
// and reports whether the broker accepted it: MQTT 5 lets the broker answer a
// refused publish with PUBACK "Not authorized" (0x87), which mosquitto_pub
// prints, where MQTT 3.1.1 could only drop the connection.
func pubAs(t *testing.T, addr string, a account, topic, payload string) bool {
	t.Helper()
	args := append(mqttArgs(addr, a, a.clientID()), "-V", "mqttv5", "-q", "1", "-t", topic, "-m", payload)
	code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, args...)...)
	require.Equal(t, 0, code, "mosquitto_pub %s: %s", topic, out)
	switch {
	case strings.Contains(out, "Publish 1 failed: Not authorized"):
		return false
	case out == "":
		return true
	}
	t.Fatalf("mosquitto_pub %s: unexpected output %q", topic, out)
	return false
}

var subackRe = regexp.MustCompile(`Subscribed \(mid: \d+\): (\d+)`)

// subAs subscribes with the real mosquitto_sub over MQTT 5, exits once the
// SUBACK is in (-E), and reports whether the filter was granted: mosquitto_sub
// -d prints the SUBACK's reason code, the granted QoS or 0x87 (135), "Not
// authorized".
func subAs(t *testing.T, addr string, a account, filter string) bool {
	t.Helper()
	args := append(mqttArgs(addr, a, a.clientID()), "-V", "mqttv5", "-q", "1", "-t", filter, "-E", "-d")
	_, out := runOnce(t, nil, append([]string{"mosquitto_sub"}, args...)...)
	m := subackRe.FindStringSubmatch(out)
	require.NotNil(t, m, "mosquitto_sub %s: no SUBACK: %s", filter, out)
	code, _ := strconv.Atoi(m[1])
	switch code {
	case 0, 1:
		return true
	case 135:
		return false
	}
	t.Fatalf("mosquitto_sub %s: SUBACK code %d: %s", filter, code, out)
	return false
}

// The farm of TestACLEndToEnd: one user of each role, and a second bridge.
var (
	root    = account{name: "root", password: "root-pw", role: "admin"}
	grafana = account{name: "grafana", password: "grafana-pw", role: "reader"}
	hass    = account{name: "hass", password: "hass-pw", role: "homeassistant"}
	node1   = account{name: "farm1-node1", password: "node1-pw", role: "bridge", site: "farm1", node: "node1"}
	node2   = account{name: "farm1-node2", password: "node2-pw", role: "bridge", site: "farm1", node: "node2"}
	node3   = account{name: "farm1-node3", password: "node3-pw", role: "bridge", site: "farm1", node: "node3"}
)

func TestACLEndToEnd(t *testing.T) {
	need(t, "mosquitto_pub", "mosquitto_sub")
	users := filepath.Join(t.TempDir(), "users.yaml")
	for _, a := range []account{root, grafana, hass, node1, node2, node3} {
		require.Contains(t, userAdd(t, users, a), "added user "+a.name)
	}
	fi, err := os.Stat(users)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	code, out := runOnce(t, nil, filepath.Join(bin, "broker"), "user", "list", "--users", users)
	require.Equal(t, 0, code, out)
	require.Regexp(t, `farm1-node1 +bridge +farm1 +node1\n`, out)
	require.Regexp(t, `hass +homeassistant +- +-\n`, out)
	require.NotContains(t, out, "$2a$", "list never shows a hash")

	broker, addr := startBrokerWithUsers(t, users)

	// An admin watching everything: what reaches it is what the broker let
	// through, whatever the publishers were told.
	watch := subscribe(t, addr, append(mqttArgs(addr, root, "watcher"), "-V", "mqttv5", "-t", "#")...)
	require.Eventually(t, func() bool {
		pubAs(t, addr, root, "acl/ready", "ready")
		return len(watch.history("acl/ready")) > 0
	}, 10*time.Second, 200*time.Millisecond, "the watcher never got a message")

	t.Run("publish", func(t *testing.T) {
		own, disc := "sensorfarm/farm1/node1", "homeassistant/sensor/sensorfarm_farm1_node1"
		for i, tc := range []struct {
			who   account
			topic string
			want  bool
		}{
			{node1, own + "/env", true},
			{node1, own + "/status", true},
			{node1, own + "/backlog/env", true},
			{node1, own + "/health", true},
			{node1, disc + "/temperature/config", true},
			{node1, "homeassistant/device/sensorfarm_farm1_node1/config", true},
			{node1, "sensorfarm/farm1/node2/env", false},
			{node1, "sensorfarm/farm2/node1/env", false},
			{node1, "sensorfarm/farm1/node10/env", false},
			{node1, "sensorfarm", false},
			{node1, "homeassistant/sensor/sensorfarm_farm1_node2/temperature/config", false},
			{node1, "homeassistant/sensor/sensorfarm_farm1_node1x/temperature/config", false},
			{node1, "homeassistant/status", false},
			{node1, "weather/today", false},
			{grafana, own + "/env", false},
			{grafana, "homeassistant/status", false},
			{grafana, disc + "/temperature/config", false},
			{grafana, "weather/today", false},
			{hass, "homeassistant/status", true},
			{hass, own + "/env", false},
			{hass, disc + "/temperature/config", false},
			{hass, "weather/today", false},
			{root, own + "/env", true},
			{root, "homeassistant/status", true},
			{root, "weather/today", true},
		} {
			payload := fmt.Sprintf("acl-case-%d", i)
			got := pubAs(t, addr, tc.who, tc.topic, payload)
			require.Equal(t, tc.want, got, "%s publishes %s", tc.who.name, tc.topic)
		}
		// What the broker let through is exactly what it acknowledged.
		pubAs(t, addr, root, "acl/done", "done")
		watch.next("acl/done", 5*time.Second)
		time.Sleep(200 * time.Millisecond) // stragglers, if the broker let any through
		var through []string
		for _, m := range watch.received() {
			if strings.HasPrefix(m.Payload, "acl-case-") {
				through = append(through, m.Topic+" "+m.Payload)
			}
		}
		require.ElementsMatch(t, []string{
			own + "/env acl-case-0", own + "/status acl-case-1", own + "/backlog/env acl-case-2", own + "/health acl-case-3",
			disc + "/temperature/config acl-case-4", "homeassistant/device/sensorfarm_farm1_node1/config acl-case-5",
			"homeassistant/status acl-case-18",
			own + "/env acl-case-22", "homeassistant/status acl-case-23", "weather/today acl-case-24",
		}, through)
		require.Regexp(t, `level=WARN msg="access denied" component=mqtt hook=sensorfarm-auth user=farm1-node1 client=bridge:farm1:node1 access=write topic=sensorfarm/farm1/node2/env`, broker.out.String())
	})

	t.Run("subscribe", func(t *testing.T) {
		for _, tc := range []struct {
			who    account
			filter string
			want   bool
		}{
			{node1, "homeassistant/status", true},
			{node1, "#", false},
			{node1, "homeassistant/+", false},
			{node1, "homeassistant/#", false},
			{node1, "sensorfarm/farm1/node1/#", false},
			{node1, "sensorfarm/farm1/node2/env", false},
			{node1, "$SYS/#", false},
			{grafana, "sensorfarm/#", true},
			{grafana, "sensorfarm/+/+/env", true},
			{grafana, "sensorfarm/farm1/node2/env", true},
			{grafana, "homeassistant/#", true},
			{grafana, "$SYS/broker/clients/connected", true},
			{grafana, "$SYS/#", true},
			{grafana, "#", false},
			{grafana, "+/farm1/node1/env", false},
			{grafana, "weather/today", false},
			{hass, "homeassistant/#", true},
			{hass, "sensorfarm/#", true},
			{hass, "#", false},
			{root, "#", true},
			{root, "weather/today", true},
		} {
			require.Equal(t, tc.want, subAs(t, addr, tc.who, tc.filter), "%s subscribes %s", tc.who.name, tc.filter)
		}
	})

	t.Run("refused connections", func(t *testing.T) {
		for _, tc := range []struct {
			desc     string
			who      account
			clientID string
			reason   string
		}{
			{"wrong password", account{name: "grafana", password: "root-pw"}, "g", `reason="wrong password"`},
			{"unknown user", account{name: "mallory", password: "root-pw"}, "m", `reason="unknown user"`},
			{"anonymous", account{}, "anon", `reason="no user name (anonymous clients are refused)"`},
			{"a bridge on another node's id", node1, "bridge:farm1:node2", `reason="client id not allowed: \"bridge:farm1:node2\" is not this bridge's`},
			{"a reader on a bridge's id", grafana, "bridge:farm1:node1", `reason="client id not allowed: \"bridge:farm1:node1\": client ids starting with \"bridge:\" are reserved`},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				// MQTT 3.1.1: CONNACK 5, "not authorised".
				args := append(mqttArgs(addr, tc.who, tc.clientID), "-q", "1", "-t", "sensorfarm/x", "-m", "x")
				code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, args...)...)
				require.Equal(t, 5, code, out)
				require.Contains(t, out, "Connection Refused: not authorised.")
				// MQTT 5: CONNACK 0x86, "bad user name or password".
				code, out = runOnce(t, nil, append([]string{"mosquitto_pub", "-V", "mqttv5"}, args...)...)
				require.Equal(t, 0x86, code, out)
				require.Contains(t, out, "Bad User Name or Password")
				// The refusal's log line may be written after the CONNACK.
				require.Eventually(t, func() bool { return strings.Contains(broker.out.String(), tc.reason) }, 5*time.Second, 20*time.Millisecond, tc.reason)
			})
		}
		// A will the user may not publish: refused too (mochi would publish
		// it without asking the ACL).
		args := append(mqttArgs(addr, grafana, "g"), "--will-topic", "sensorfarm/farm1/node1/status", "--will-payload", "offline",
			"-q", "1", "-t", "sensorfarm/x", "-m", "x")
		code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, args...)...)
		require.Equal(t, 5, code, out)
		willRefused := `reason="will topic not allowed: \"sensorfarm/farm1/node1/status\"`
		require.Eventually(t, func() bool { return strings.Contains(broker.out.String(), willRefused) }, 5*time.Second, 20*time.Millisecond, willRefused)
		for _, pw := range []string{"root-pw", "grafana-pw", "node1-pw"} {
			require.NotContains(t, broker.out.String(), pw, "no password in the log")
		}
	})

	t.Run("no session takeover of a bridge", func(t *testing.T) {
		held := subscribe(t, addr, append(mqttArgs(addr, node2, node2.clientID()), "-t", "homeassistant/status")...)
		require.Eventually(t, func() bool {
			pubAs(t, addr, hass, "homeassistant/status", "online")
			return len(held.history("homeassistant/status")) > 0
		}, 10*time.Second, 200*time.Millisecond, "the bridge's subscription never got a message")
		for _, thief := range []account{root, node1, grafana} {
			args := append(mqttArgs(addr, thief, node2.clientID()), "-q", "1", "-t", "sensorfarm/x", "-m", "x")
			code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, args...)...)
			require.Equal(t, 5, code, "%s on %s: %s", thief.name, node2.clientID(), out)
		}
		// The holder was never disconnected: it authenticated once (a
		// reconnection would show a second time), and it still receives.
		require.True(t, pubAs(t, addr, hass, "homeassistant/status", "still online"))
		require.Eventually(t, func() bool {
			h := held.history("homeassistant/status")
			return h[len(h)-1].Payload == "still online"
		}, 5*time.Second, 50*time.Millisecond)
		require.Equal(t, 1, strings.Count(broker.out.String(), "user=farm1-node2 role=bridge client=bridge:farm1:node2"))
		require.True(t, held.running())
	})

	t.Run("the real bridge stays within its ACL", func(t *testing.T) {
		pwFile := filepath.Join(t.TempDir(), "password")
		require.NoError(t, os.WriteFile(pwFile, []byte(node3.password+"\n"), 0o600))
		reader := subscribe(t, addr, append(mqttArgs(addr, grafana, "grafana-e2e"), "-t", "sensorfarm/farm1/node3/#")...)
		b := start(t, "bridge", append([]string{filepath.Join(bin, "bridge")}, bridgeArgs(t, addr, "farm1", "node3", "--sim",
			"--username", node3.name, "--password-file", pwFile)...)...)
		require.Equal(t, "online", reader.next("sensorfarm/farm1/node3/status", 10*time.Second).Payload)
		checkEnv(t, reader.next("sensorfarm/farm1/node3/env", 10*time.Second).Payload, "farm1", "node3")
		require.Equal(t, 0, b.stop())
		require.Equal(t, "offline", reader.next("sensorfarm/farm1/node3/status", 10*time.Second).Payload)
		require.NotRegexp(t, `access denied.*user=farm1-node3`, broker.out.String())
		require.Regexp(t, `msg="client authenticated" component=mqtt hook=sensorfarm-auth user=farm1-node3 role=bridge client=bridge:farm1:node3`, broker.out.String())
	})
}

// TestUsersReloadOnSIGHUP: SIGHUP puts a changed users file in force without
// dropping a connection, and a broken file changes nothing but the log.
func TestUsersReloadOnSIGHUP(t *testing.T) {
	need(t, "mosquitto_pub")
	users := filepath.Join(t.TempDir(), "users.yaml")
	userAdd(t, users, root)
	userAdd(t, users, grafana)
	broker, addr := startBrokerWithUsers(t, users)

	// A reader connected before any reload, which must never lose its
	// connection (paho, reconnect off, so that a drop cannot hide).
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("grafana-e2e").SetProtocolVersion(4).
		SetUsername(grafana.name).SetPassword(grafana.password).SetAutoReconnect(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	reader := paho.NewClient(opts)
	tok := reader.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	defer reader.Disconnect(0)
	msgs := make(chan string, 16)
	tok = reader.Subscribe("sensorfarm/farm1/#", 1, func(_ paho.Client, m paho.Message) { msgs <- m.Topic() + " " + string(m.Payload()) })
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	receive := func(want string) {
		t.Helper()
		select {
		case got := <-msgs:
			require.Equal(t, want, got)
		case <-time.After(5 * time.Second):
			t.Fatalf("the reader did not receive %q", want)
		}
	}
	hup := func() {
		t.Helper()
		require.NoError(t, broker.cmd.Process.Signal(syscall.SIGHUP))
	}

	late := account{name: "late", password: "late-pw", role: "bridge", site: "farm1", node: "late"}
	code, out := runOnce(t, nil, append([]string{"mosquitto_pub"}, append(mqttArgs(addr, late, late.clientID()), "-q", "1", "-t", "sensorfarm/farm1/late/env", "-m", "x")...)...)
	require.Equal(t, 5, code, "not a user yet: %s", out)

	// A good change: the new user is in at once.
	userAdd(t, users, late)
	hup()
	broker.waitLog(`msg="users reloaded" file=\S+ user_count=3`, 5*time.Second)
	require.True(t, pubAs(t, addr, late, "sensorfarm/farm1/late/env", "one"))
	receive("sensorfarm/farm1/late/env one")

	// A broken file: the log says why, and everyone who could connect still can.
	require.NoError(t, os.WriteFile(users, []byte("users:\n- name: late\n  role: admin\n  password: late-pw\n"), 0o600))
	hup()
	m := broker.waitLog(`level=ERROR msg="users not reloaded; the previous users stay in force" err=(.*)`, 5*time.Second)
	require.Contains(t, m[1], `a plain-text \"password\" is refused`)
	require.True(t, pubAs(t, addr, late, "sensorfarm/farm1/late/env", "two"))
	receive("sensorfarm/farm1/late/env two")
	require.True(t, pubAs(t, addr, root, "sensorfarm/farm1/late/env", "three"), "the admin from the first file")
	receive("sensorfarm/farm1/late/env three")

	// Deleting a user: a second good reload after the broken one.
	require.NoError(t, os.WriteFile(users, nil, 0o600))
	userAdd(t, users, root)
	userAdd(t, users, grafana)
	hup()
	broker.waitLog(`msg="users reloaded" file=\S+ user_count=2`, 5*time.Second)
	code, out = runOnce(t, nil, append([]string{"mosquitto_pub"}, append(mqttArgs(addr, late, late.clientID()), "-q", "1", "-t", "sensorfarm/farm1/late/env", "-m", "x")...)...)
	require.Equal(t, 5, code, "deleted: %s", out)

	select {
	case err := <-lost:
		t.Fatalf("the reader's connection was dropped: %v", err)
	default:
	}
	require.True(t, reader.IsConnectionOpen())
	require.True(t, broker.running(), "SIGHUP does not stop the broker")
	require.Equal(t, 0, broker.stop())
}

// TestUsersPasswordPrompt runs `broker user add` on a real terminal (a
// pseudo-terminal): it asks twice, echoes nothing, and refuses two different
// passwords.
func TestUsersPasswordPrompt(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users.yaml")

	out, code := onTerminal(t, []string{"pw-typed", "pw-typed"}, filepath.Join(bin, "broker"), "user", "add", "--users", users, "--role", "reader", "typist")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "Password: ")
	require.Contains(t, out, "Password again: ")
	require.NotContains(t, out, "pw-typed", "the password is not echoed")
	require.Contains(t, out, "added user typist (reader)")

	out, code = onTerminal(t, []string{"pw-one", "pw-two"}, filepath.Join(bin, "broker"), "user", "add", "--users", users, "--role", "admin", "typist")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "the two passwords differ; nothing was changed")

	code, list := runOnce(t, nil, filepath.Join(bin, "broker"), "user", "list", "--users", users)
	require.Equal(t, 0, code)
	require.Regexp(t, `typist +reader`, list, "the failed replacement changed nothing")
}

// onTerminal runs argv with a new pseudo-terminal as its controlling terminal
// and standard streams, typing each answer after the next "Password" prompt
// appears, and returns everything the terminal showed and the exit code.
func onTerminal(t *testing.T, answers []string, argv ...string) (string, int) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	defer ptm.Close()
	require.NoError(t, unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	require.NoError(t, cmd.Start())
	pts.Close()

	// Read the terminal; type an answer once a new prompt is shown (and so
	// once the program has turned echo off).
	screen := &lockedBuffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, err := ptm.Read(buf)
			screen.Write(buf[:n])
			if err != nil {
				return // EIO once the program has exited
			}
		}
	}()
	for i, answer := range answers {
		deadline := time.Now().Add(5 * time.Second)
		for strings.Count(screen.String(), "Password") <= i {
			require.True(t, time.Now().Before(deadline), "no prompt %d: %q", i+1, screen.String())
			time.Sleep(20 * time.Millisecond)
		}
		_, err := ptm.WriteString(answer + "\r")
		require.NoError(t, err)
	}
	err = cmd.Wait()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else {
		require.NoError(t, err)
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	return screen.String(), code
}

// received returns every message received so far.
func (s *subscriber) received() []message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]message(nil), s.all...)
}
