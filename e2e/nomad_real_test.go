package e2e

import (
	"context"
	"crypto/sha256"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
	"github.com/sensorfarm/sensorfarm/wire"
)

// TestNomadReal runs nomad/bridge.hcl, unmodified, on a real Nomad: one
// server on nomad/server/server.hcl and one client on nomad/client.hcl, on
// loopback with ACLs and mutual TLS, each file with an override of its
// paths and addresses only. It does what nomad/README.md tells a user to
// do (TLS files, ACL bootstrap, the policy, the Variable, validate, plan,
// run) in both install modes, and checks what the README promises: readings
// at the broker, the password only in the task's secrets, a rotation
// re-rendered, `job stop` publishing offline within kill_timeout, and the
// bridge back and spooling after a reboot while the servers are down.
//
// It runs when a nomad binary is on PATH or at $NOMAD, as root (raw_exec,
// the secrets tmpfs); nomad/README.md says how to build Nomad 1.6.5.
func TestNomadReal(t *testing.T) {
	nomadBin := findNomad(t)
	if os.Geteuid() != 0 {
		skip(t, "a real Nomad client runs raw_exec tasks and mounts their secrets tmpfs only as root; run as root")
	}
	need(t, "mosquitto_sub", "unshare")
	began := time.Now()

	n := startNomad(t, nomadBin)
	t.Logf("%s: server and client up, ACLs bootstrapped (%s)", n.version, time.Since(began).Round(time.Second))

	// The broker, with the node's bridge user named as the README says,
	// and a reader.
	const site, node = "farm1", "pizero-01" // nomad/client.hcl's datacenter and name
	bridgeUser := account{name: site + "-" + node, password: "first-pw-" + strconv.Itoa(os.Getpid()), role: "bridge", site: site, node: node}
	reader := account{name: "grafana", password: "grafana-pw", role: "reader"}
	users := filepath.Join(t.TempDir(), "users.yaml")
	userAdd(t, users, bridgeUser)
	userAdd(t, users, reader)
	brokerData := t.TempDir()
	brokerAddr := freeAddr(t)
	broker := startBrokerAt(t, brokerAddr, users, brokerData)
	wn := wire.Node{Prefix: wire.DefaultPrefix, Site: site, Node: node}
	watch := subscribe(t, brokerAddr, append(mqttArgs(brokerAddr, reader, "nomad-real-reader"), "-t", wn.Root()+"/#")...)

	// nomad/README.md, step 2 and 3: the policy, then the Variable.
	n.mustCLI(t, "", "acl", "policy", "apply", "-namespace", "default", "-job", "bridge",
		"-description", "sensorfarm bridge: read the bridges' MQTT passwords",
		"bridge-variables", filepath.Join(repoRoot(), "nomad", "bridge-variables.policy.hcl"))
	varPath := "nomad/jobs/bridge/" + site + "/" + node
	out := n.mustCLI(t, bridgeUser.password, "var", "put", "-out", "none", varPath, "password=-")
	require.NotContains(t, out, bridgeUser.password, "var put -out none prints no password")

	spool := filepath.Join(t.TempDir(), "spool")
	jobFile := filepath.Join(repoRoot(), "nomad", "bridge.hcl")
	vars := []string{
		"-var", "broker_url=tcp://" + brokerAddr,
		"-var", `cpu_archs=["` + n.arch + `"]`,
		"-var", "spool_dir=" + spool,
		"-var", `extra_args=["--sim", "--interval", "1s"]`,
	}
	preinstalled := append(slices.Clone(vars), "-var", "bridge_path="+filepath.Join(bin, "bridge"))

	// validate, plan, run, as the README says.
	n.mustCLI(t, "", append(append([]string{"job", "validate"}, preinstalled...), jobFile)...)
	code, out := n.cli(t, "", append(append([]string{"job", "plan"}, preinstalled...), jobFile)...)
	require.Equal(t, 1, code, "plan exits 1 when it would place allocations: %s", out)
	require.Contains(t, out, `+ Job: "bridge"`)
	n.mustCLI(t, "", append(append([]string{"job", "run", "-detach"}, preinstalled...), jobFile)...)
	alloc := n.runningAlloc(t, "")
	require.Equal(t, wire.StatusOnline, watch.next(wn.Status(), 60*time.Second).Payload)
	checkEnv(t, watch.next(wn.Live(wire.StreamEnv), 30*time.Second).Payload, site, node)
	t.Logf("preinstalled: readings at the broker (%s)", time.Since(began).Round(time.Second))

	t.Run("password only in the secrets", func(t *testing.T) {
		secret := n.clientView(filepath.Join(n.clientData, "alloc", alloc, "bridge", "secrets", "mqtt-password"))
		fi, err := os.Stat(secret)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
		pid := n.bridgePID(t, spool)
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		require.NoError(t, err)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		require.NoError(t, err)
		require.NotContains(t, string(environ), bridgeUser.password)
		require.NotContains(t, string(cmdline), bridgeUser.password)
		// The password task's copy, on disk for a reboot (nomad/README.md).
		copyFile := filepath.Join(n.clientData, "alloc", alloc, "alloc", "mqtt-password")
		fi, err = os.Stat(copyFile)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
		n.logResources(t, spool)
	})

	t.Run("rotation", func(t *testing.T) {
		// Without -force, Nomad 1.6.5 refuses to overwrite the Variable.
		code, out := n.cli(t, "new", "var", "put", "-out", "none", varPath, "password=-")
		require.NotEqual(t, 0, code, "var put over an existing variable without -force: %s", out)
		t.Logf("var put without -force: exit %d: %s", code, strings.TrimSpace(out))

		bridgeUser.password = "rotated-pw-" + strconv.Itoa(os.Getpid())
		userAdd(t, users, bridgeUser)
		require.NoError(t, broker.cmd.Process.Signal(syscall.SIGHUP))
		broker.waitLog(`msg="users reloaded"`, 10*time.Second)
		rotated := time.Now()
		n.mustCLI(t, bridgeUser.password, "var", "put", "-force", "-out", "none", varPath, "password=-")
		secret := n.clientView(filepath.Join(n.clientData, "alloc", alloc, "bridge", "secrets", "mqtt-password"))
		require.Eventually(t, func() bool {
			b, err := os.ReadFile(secret)
			return err == nil && strings.TrimSpace(string(b)) == bridgeUser.password
		}, 60*time.Second, 250*time.Millisecond, "the bridge's secret is re-rendered with the new password")
		// The bridge was restarted and connects with the new password:
		// a reading taken after the rotation arrives.
		for {
			m := watch.next(wn.Live(wire.StreamEnv), 60*time.Second)
			if ts := readingTime(t, m.Payload); ts.After(rotated.Add(2 * time.Second)) {
				break
			}
		}
		t.Logf("rotation: re-rendered, bridge restarted and reconnected in %s", time.Since(rotated).Round(time.Second))
	})

	t.Run("artifact", func(t *testing.T) {
		binary, err := os.ReadFile(filepath.Join(bin, "bridge"))
		require.NoError(t, err)
		var fetched atomic.Int32
		url := serveLoopback(t, "/releases/bridge", binary, &fetched)
		sum := sha256.Sum256(binary)
		artifact := func(sha string) []string {
			return append(slices.Clone(vars), "-var", "bridge_url="+url, "-var", "bridge_sha256="+sha)
		}

		// The job's own rule: not 64 lower-case hex digits.
		code, out := n.cli(t, "", append(append([]string{"job", "validate"}, artifact(strings.ToUpper(hex.EncodeToString(sum[:])))...), jobFile)...)
		require.NotEqual(t, 0, code)
		require.Contains(t, out, "must be 64 lower-case hex digits")

		// A well-formed but wrong sha256: validated, run, and the client
		// refuses the download.
		wrong := strings.Repeat("0", 64)
		n.mustCLI(t, "", append(append([]string{"job", "validate"}, artifact(wrong)...), jobFile)...)
		n.mustCLI(t, "", append(append([]string{"job", "run", "-detach"}, artifact(wrong)...), jobFile)...)
		failed := n.waitTaskEvent(t, "bridge", "Failed Artifact Download", 90*time.Second)
		require.Contains(t, failed, "Checksums did not match")
		t.Logf("wrong sha256: %s", failed)

		right := hex.EncodeToString(sum[:])
		n.mustCLI(t, "", append(append([]string{"job", "validate"}, artifact(right)...), jobFile)...)
		since := time.Now()
		n.mustCLI(t, "", append(append([]string{"job", "run", "-detach"}, artifact(right)...), jobFile)...)
		alloc = n.runningAlloc(t, alloc)
		require.FileExists(t, filepath.Join(n.clientData, "alloc", alloc, "bridge", "local", "bridge"))
		require.GreaterOrEqual(t, fetched.Load(), int32(2), "fetched by both versions")
		for {
			m := watch.next(wn.Live(wire.StreamEnv), 60*time.Second)
			if readingTime(t, m.Payload).After(since) {
				break
			}
		}
		t.Logf("artifact: readings at the broker (%s)", time.Since(began).Round(time.Second))

		// Three versions of the job so far, and no deployment: before
		// Nomad 1.11 a system job's update block is max_parallel and
		// stagger only (nomad/README.md).
		deployments := n.mustCLI(t, "", "job", "deployments", "-json", "bridge")
		require.JSONEq(t, "[]", deployments, "a system job gets no deployment")
	})

	t.Run("stop within kill_timeout", func(t *testing.T) {
		const killTimeout = 30 * time.Second // bridge.hcl's kill_timeout
		watch.drain()
		stopped := time.Now()
		n.mustCLI(t, "", "job", "stop", "-detach", "bridge")
		for {
			m := watch.next(wn.Status(), killTimeout)
			if m.Payload == wire.StatusOffline {
				break
			}
		}
		took := time.Since(stopped)
		require.Less(t, took, killTimeout)
		t.Logf("job stop → offline at the broker in %s (kill_timeout %s)", took.Round(time.Millisecond), killTimeout)
	})

	t.Run("reboot while the servers are down", func(t *testing.T) {
		n.mustCLI(t, "", append(append([]string{"job", "run", "-detach"}, preinstalled...), jobFile)...)
		alloc = n.runningAlloc(t, alloc)
		require.Equal(t, wire.StatusOnline, watch.next(wn.Status(), 60*time.Second).Payload)

		// The outage: the servers stop, then the board loses power (every
		// process of the client dies, its tmpfs mounts with them), and the
		// broker is unreachable too, so that readings must spool.
		n.stopServer(t)
		n.powerCut(t)
		require.Equal(t, 0, broker.stop())
		outage := time.Now()
		n.startClient(t)

		// Nomad restarts the bridge from the copy of its password on disk
		// while the password task waits for the servers.
		pid := n.waitBridge(t, spool, 90*time.Second)
		t.Logf("after the reboot, with the servers down, the bridge runs again (pid %d) in %s", pid, time.Since(outage).Round(time.Second))
		time.Sleep(5 * time.Second) // readings taken while nothing answers
		require.Equal(t, pid, n.bridgePID(t, spool), "the bridge kept running")

		// The broker back: the readings of the outage arrive.
		broker = startBrokerAt(t, brokerAddr, users, brokerData)
		var during int
		deadline := time.Now().Add(60 * time.Second)
		for during < 3 && time.Now().Before(deadline) {
			m := watch.next(wn.Live(wire.StreamEnv), time.Until(deadline))
			if ts := readingTime(t, m.Payload); ts.After(outage) && ts.Before(outage.Add(20*time.Second)) {
				during++
			}
		}
		require.GreaterOrEqual(t, during, 3, "readings taken during the outage reach the broker")

		// The servers back: the password task renders, nothing restarts.
		n.startServer(t)
		n.waitTaskState(t, alloc, "password", "running", 90*time.Second)
		require.Equal(t, pid, n.bridgePID(t, spool), "the same bridge, not restarted")
		t.Logf("reboot case done (%s in all)", time.Since(began).Round(time.Second))
	})
}

// findNomad returns $NOMAD or the nomad on PATH, or skips the test and says so.
func findNomad(t *testing.T) string {
	t.Helper()
	nomadBin := os.Getenv("NOMAD")
	if nomadBin == "" {
		nomadBin, _ = exec.LookPath("nomad")
	}
	if nomadBin == "" {
		skip(t, "no nomad binary on PATH and $NOMAD is not set, so the Nomad files were not run on a real Nomad (nomad/README.md: building Nomad 1.6.5)")
	}
	return nomadBin
}

// TestNomadServerAdvertise runs the first half of the servers' container
// command (nomad/server/statefulset.yaml), which writes the advertise block
// from $NODE_IP, into a file here instead of /nomad/run, and has the real
// Nomad validate server.hcl with it (`nomad config validate` refuses an
// unknown key or bad syntax), and client.hcl alone.
func TestNomadServerAdvertise(t *testing.T) {
	nomadBin := findNomad(t)
	objs, err := k8scheck.Core().Build(filepath.Join(repoRoot(), "nomad", "server"), k8scheck.StandIns("secrets/nomad-agent-ca.pem", "secrets/global-server-nomad.pem", "secrets/global-server-nomad-key.pem"))
	require.NoError(t, err)
	b := k8scheck.Group(objs)
	require.Len(t, b.StatefulSets, 1)
	c := b.StatefulSets[0].Spec.Template.Spec.Containers[0]
	require.Len(t, c.Command, 3, "/bin/sh -c SCRIPT")
	require.Equal(t, []string{"/bin/sh", "-c"}, c.Command[:2])
	script, _, ok := strings.Cut(c.Command[2], "&&")
	require.True(t, ok, "the command writes the advertise file, then (&&) runs nomad")
	adv := filepath.Join(t.TempDir(), "advertise.hcl")
	require.Contains(t, script, "/nomad/run/advertise.hcl")
	script = strings.ReplaceAll(script, "/nomad/run/advertise.hcl", adv)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"NODE_IP=192.0.2.10", "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	text, err := os.ReadFile(adv)
	require.NoError(t, err)
	for _, p := range []string{"32646", "32647", "32648"} {
		require.Contains(t, string(text), `"192.0.2.10:`+p+`"`)
	}
	for _, files := range [][]string{
		{filepath.Join(repoRoot(), "nomad", "server", "server.hcl"), adv},
		{filepath.Join(repoRoot(), "nomad", "client.hcl")},
	} {
		out, err := exec.Command(nomadBin, append([]string{"config", "validate"}, files...)...).CombinedOutput()
		require.NoError(t, err, "nomad config validate %s: %s", files, out)
		require.Contains(t, string(out), "Configuration is valid")
	}
	// The control: a misspelt key in the same place is refused.
	require.NoError(t, os.WriteFile(adv, []byte(strings.Replace(string(text), "rpc ", "rcp ", 1)), 0o600))
	out, err = exec.Command(nomadBin, "config", "validate", filepath.Join(repoRoot(), "nomad", "server", "server.hcl"), adv).CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "unexpected keys")
}

// readingTime is the ts of a reading's payload.
func readingTime(t *testing.T, payload string) time.Time {
	t.Helper()
	var r struct {
		TS string `json:"ts"`
	}
	require.NoError(t, json.Unmarshal([]byte(payload), &r), payload)
	ts, err := time.Parse(wire.TimeLayout, r.TS)
	require.NoError(t, err)
	return ts
}

func repoRoot() string { return filepath.Dir(bin) }

// startBrokerAt runs our broker on a known address and data directory, so
// that it can come back where the bridge looks for it.
func startBrokerAt(t *testing.T, addr, users, data string) *process {
	t.Helper()
	p := start(t, "broker", filepath.Join(bin, "broker"), "--listen", addr, "--users", users, "--data", data, "--ops-listen", "127.0.0.1:0")
	p.waitLog(`msg=listening addr=`+regexp.QuoteMeta(addr), 15*time.Second)
	return p
}

// serveLoopback serves body at path on 127.0.0.1, counting the downloads.
func serveLoopback(t *testing.T, path string, body []byte, fetched *atomic.Int32) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		fetched.Add(1)
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String() + path
}

// nomadAgents is one Nomad server and one Nomad client on loopback.
type nomadAgents struct {
	t                       *testing.T // the test the agents belong to
	bin, dir, version, arch string
	serverArgs, clientArgs  []string
	server, client          *process
	clientData              string
	env                     []string
}

// startNomad writes the TLS files as nomad/server/README.md does, starts a
// server on nomad/server/server.hcl and a client on nomad/client.hcl, each
// with an override for loopback, and bootstraps the ACLs.
func startNomad(t *testing.T, nomadBin string) *nomadAgents {
	t.Helper()
	dir := t.TempDir()
	n := &nomadAgents{t: t, bin: nomadBin, dir: dir, clientData: filepath.Join(dir, "client")}
	tls := filepath.Join(dir, "tls")
	require.NoError(t, os.Mkdir(tls, 0o700))
	for _, args := range [][]string{{"tls", "ca", "create"}, {"tls", "cert", "create", "-server", "-region", "global"}, {"tls", "cert", "create", "-client"}} {
		cmd := exec.Command(nomadBin, args...)
		cmd.Dir = tls
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "nomad %s: %s", strings.Join(args, " "), out)
	}
	version, err := exec.Command(nomadBin, "version").CombinedOutput()
	require.NoError(t, err)
	n.version = strings.TrimSpace(strings.SplitN(string(version), "\n", 2)[0])

	ports := func() [3]string {
		return [3]string{port(freeAddr(t)), port(freeAddr(t)), port(freeAddr(t))}
	}
	sp, cp := ports(), ports()
	override := func(name, dataDir string, p [3]string, role string, extra string) string {
		text := fmt.Sprintf(`data_dir = %q
bind_addr = "127.0.0.1"
ports {
  http = %s
  rpc  = %s
  serf = %s
}
advertise {
  http = "127.0.0.1:%s"
  rpc  = "127.0.0.1:%s"
  serf = "127.0.0.1:%s"
}
tls {
  ca_file   = %q
  cert_file = %q
  key_file  = %q
}
%s`, dataDir, p[0], p[1], p[2], p[0], p[1], p[2], filepath.Join(tls, "nomad-agent-ca.pem"),
			filepath.Join(tls, "global-"+role+"-nomad.pem"), filepath.Join(tls, "global-"+role+"-nomad-key.pem"), extra)
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
		return path
	}
	// One server instead of three; no -retry-join (the cluster's DNS names).
	serverOverride := override("server-override.hcl", filepath.Join(dir, "server"), sp, "server", "server {\n  bootstrap_expect = 1\n}\n")
	n.serverArgs = []string{nomadBin, "agent", "-config", filepath.Join(repoRoot(), "nomad", "server", "server.hcl"), "-config", serverOverride}

	// Nomad appends the servers of every config file rather than taking
	// the last: the client would still dial (and resolve) client.hcl's
	// nomad.farm.lan. So the test's copy of client.hcl has that one line
	// pointed at the server on loopback; everything else is as shipped.
	clientHCL, err := os.ReadFile(filepath.Join(repoRoot(), "nomad", "client.hcl"))
	require.NoError(t, err)
	serversLine := regexp.MustCompile(`(?m)^(\s*servers\s*=\s*)\["nomad\.farm\.lan:32647"\]`)
	require.Regexp(t, serversLine, string(clientHCL))
	clientCopy := filepath.Join(dir, "client.hcl")
	require.NoError(t, os.WriteFile(clientCopy, serversLine.ReplaceAll(clientHCL, []byte(`${1}["127.0.0.1:`+sp[1]+`"]`)), 0o600))
	// DEBUG: the fingerprint manager says which fingerprinters it skipped.
	clientOverride := override("client-override.hcl", n.clientData, cp, "client", "log_level = \"DEBUG\"\nclient {\n  network_interface = \"lo\"\n}\n")
	// In a mount namespace of its own, so that its tmpfs mounts (each
	// task's secrets) go when its processes go, as at a reboot.
	n.clientArgs = []string{"unshare", "--mount", "--propagation", "private", nomadBin, "agent", "-config", clientCopy, "-config", clientOverride}

	n.env = append(os.Environ(), "NOMAD_ADDR=https://127.0.0.1:"+sp[0], "NOMAD_CACERT="+filepath.Join(tls, "nomad-agent-ca.pem"))
	n.startServer(t)

	// nomad/server/README.md: bootstrap the ACLs once, keep the token.
	var token string
	require.Eventually(t, func() bool {
		code, out := n.cli(t, "", "acl", "bootstrap", "-json")
		if code != 0 {
			return false
		}
		var tok struct{ SecretID string }
		require.NoError(t, json.Unmarshal([]byte(out), &tok), out)
		token = tok.SecretID
		return true
	}, 90*time.Second, time.Second, "acl bootstrap")
	n.env = append(n.env, "NOMAD_TOKEN="+token)

	// The readiness probe of nomad/server/statefulset.yaml: HTTPS without a
	// client certificate or a token, 200 once there is a leader.
	ca, err := os.ReadFile(filepath.Join(tls, "nomad-agent-ca.pem"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &cryptotls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://127.0.0.1:" + sp[0] + "/v1/agent/health?type=server")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the readiness probe's request")

	n.startClient(t)
	var nodeID string
	require.Eventually(t, func() bool {
		code, out := n.cli(t, "", "node", "status", "-json")
		if code != 0 {
			return false
		}
		var nodes []struct{ Status, ID string }
		require.NoError(t, json.Unmarshal([]byte(out), &nodes), out)
		if len(nodes) == 1 && nodes[0].Status == "ready" {
			nodeID = nodes[0].ID
		}
		return nodeID != ""
	}, 90*time.Second, time.Second, "the client registers and is ready")
	// client.hcl's denylist: no cloud fingerprinter ran, so nothing probed
	// 169.254.169.254 or the other metadata services.
	skipped := n.client.waitLog(`fingerprint modules skipped due to allow/denylist: (.*)`, 10*time.Second)[1]
	detected := n.client.waitLog(`detected fingerprints: node_attrs=(.*)`, 10*time.Second)[1]
	for _, fp := range []string{"env_aws", "env_gce", "env_azure", "env_digitalocean"} {
		require.Contains(t, skipped, fp)
		require.NotContains(t, detected, fp)
	}
	attrs := n.mustCLI(t, "", "node", "status", "-verbose", nodeID)
	m := regexp.MustCompile(`cpu\.arch\s*=\s*(\S+)`).FindStringSubmatch(attrs)
	require.NotNil(t, m, "the client's cpu.arch: %s", attrs)
	n.arch = m[1]
	t.Cleanup(func() {
		// Whatever a client started and outlived it names this test's
		// directory: end it by its PID (cutPower should have left none).
		for _, p := range processes() {
			if strings.Contains(strings.Join(p.args, " "), dir) {
				t.Errorf("pid %d outlived its client: %s", p.pid, strings.Join(p.args, " "))
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
	})
	return n
}

// clientView is path as the client agent sees it: each task's secrets
// directory is a tmpfs in the client's own mount namespace.
func (n *nomadAgents) clientView(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.client.cmd.Process.Pid, path)
}

// drain drops the messages received so far, so that the next one waited
// for is one sent from now on.
func (s *subscriber) drain() {
	for {
		select {
		case <-s.msgs:
		default:
			return
		}
	}
}

// startServer and startClient start the agents on behalf of the whole
// test (n.t), not of the subtest that calls them: a subtest's end would kill
// the agent alone and orphan the tasks it runs.
func (n *nomadAgents) startServer(t *testing.T) {
	t.Helper()
	n.server = start(n.t, "nomad server", n.serverArgs...)
}

func (n *nomadAgents) stopServer(t *testing.T) {
	t.Helper()
	_ = n.server.cmd.Process.Signal(syscall.SIGINT)
	n.server.exited(30 * time.Second)
}

func (n *nomadAgents) startClient(t *testing.T) {
	t.Helper()
	client := start(n.t, "nomad client", n.clientArgs...)
	n.client = client
	// Registered after start's own cleanup, so run before it: the tasks
	// outlive a killed agent, so they go with it.
	n.t.Cleanup(func() { cutPower(n.t, client) })
}

// powerCut kills the client agent and every process it started (executors,
// tasks), as a power cut would, by PID.
func (n *nomadAgents) powerCut(t *testing.T) {
	t.Helper()
	cutPower(t, n.client)
}

func cutPower(t *testing.T, client *process) {
	t.Helper()
	if !client.running() {
		return
	}
	// Frozen first, all of them, then killed: no process may see another
	// die and write it down (the agent records a task's exit in its state
	// on disk, which a real power cut would never let it do).
	agent := client.cmd.Process.Pid
	pids := descendants(agent)
	for _, pid := range append([]int{agent}, pids...) {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	pids = descendants(agent)
	for _, pid := range append([]int{agent}, pids...) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	client.kill()
	require.Eventually(t, func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
					return false
				}
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond, "the client's processes are gone")
}

// proc is one process of /proc.
type proc struct {
	pid, ppid int
	args      []string
}

// processes reads every process from /proc.
func processes() []proc {
	var out []proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err1 := os.ReadFile("/proc/" + e.Name() + "/stat")
		cmdline, err2 := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err1 != nil || err2 != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces.
		fields := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		out = append(out, proc{pid: pid, ppid: ppid, args: strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")})
	}
	return out
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	children := map[int][]int{}
	for _, p := range processes() {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// cli runs the nomad CLI with the cluster's address, CA and token, stdin
// as given, bounded, and returns its exit code and combined output.
func (n *nomadAgents) cli(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin, args...)
	cmd.Env = n.env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), string(out)
	}
	require.NoError(t, err, "nomad %s: %s", strings.Join(args, " "), out)
	return 0, string(out)
}

func (n *nomadAgents) mustCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, out := n.cli(t, stdin, args...)
	require.Equal(t, 0, code, "nomad %s: %s", strings.Join(args, " "), out)
	return out
}

type allocStub struct {
	ID           string
	ClientStatus string
	CreateIndex  uint64
	TaskStates   map[string]struct {
		State  string
		Events []struct {
			Type           string
			DisplayMessage string
		}
	}
}

func (n *nomadAgents) allocs(t *testing.T) []allocStub {
	t.Helper()
	code, out := n.cli(t, "", "job", "allocs", "-json", "bridge")
	if code != 0 {
		return nil
	}
	var as []allocStub
	require.NoError(t, json.Unmarshal([]byte(out), &as), out)
	return as
}

// runningAlloc waits for an allocation other than old whose bridge runs.
func (n *nomadAgents) runningAlloc(t *testing.T, old string) string {
	t.Helper()
	var id string
	require.Eventually(t, func() bool {
		for _, a := range n.allocs(t) {
			if a.ID != old && a.ClientStatus == "running" && a.TaskStates["bridge"].State == "running" {
				id = a.ID
				return true
			}
		}
		return false
	}, 120*time.Second, time.Second, "an allocation of the job with its bridge running")
	return id
}

// waitTaskEvent waits for an event of type typ on task in any allocation
// and returns its message.
func (n *nomadAgents) waitTaskEvent(t *testing.T, task, typ string, limit time.Duration) string {
	t.Helper()
	var msg string
	require.Eventually(t, func() bool {
		for _, a := range n.allocs(t) {
			for _, e := range a.TaskStates[task].Events {
				if e.Type == typ {
					msg = e.DisplayMessage
					return true
				}
			}
		}
		return false
	}, limit, time.Second, "task event %q", typ)
	return msg
}

func (n *nomadAgents) waitTaskState(t *testing.T, alloc, task, state string, limit time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, a := range n.allocs(t) {
			if a.ID == alloc && a.TaskStates[task].State == state {
				return true
			}
		}
		return false
	}, limit, time.Second, "task %s of %s %s", task, alloc, state)
}

// bridgePID finds the one bridge process using spool.
func (n *nomadAgents) bridgePID(t *testing.T, spool string) int {
	t.Helper()
	pids := bridgePIDs(spool)
	require.Len(t, pids, 1, "one bridge on %s", spool)
	return pids[0]
}

func (n *nomadAgents) waitBridge(t *testing.T, spool string, limit time.Duration) int {
	t.Helper()
	var pid int
	require.Eventually(t, func() bool {
		pids := bridgePIDs(spool)
		if len(pids) == 1 {
			pid = pids[0]
		}
		return len(pids) == 1
	}, limit, 250*time.Millisecond, "a bridge on %s", spool)
	return pid
}

func bridgePIDs(spool string) []int {
	var pids []int
	for _, p := range processes() {
		if filepath.Base(p.args[0]) == "bridge" && slices.Contains(p.args, spool) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// logResources logs the memory of what the job costs on the node: the
// bridge, the password task's sleep, each task's `nomad executor`, and the
// client agent itself (nomad/README.md, "Resources").
func (n *nomadAgents) logResources(t *testing.T, spool string) {
	t.Helper()
	bridge := n.bridgePID(t, spool)
	for _, pid := range append([]int{n.client.cmd.Process.Pid, n.server.cmd.Process.Pid}, descendants(n.client.cmd.Process.Pid)...) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		what := filepath.Base(args[0])
		switch {
		case pid == bridge:
			what = "bridge"
		case len(args) > 1 && args[1] == "executor":
			what = "nomad executor"
		case len(args) > 1 && args[1] == "agent" && pid == n.server.cmd.Process.Pid:
			what = "nomad agent (server)"
		case len(args) > 1 && args[1] == "agent":
			what = "nomad agent (client)"
		case len(args) > 1 && strings.Contains(args[1], "logmon"):
			what = "nomad logmon"
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		rollup, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		field := func(text []byte, name string) string {
			m := regexp.MustCompile(`(?m)^` + name + `:\s+(\d+) kB`).FindSubmatch(text)
			if m == nil {
				return "?"
			}
			kb, _ := strconv.Atoi(string(m[1]))
			return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
		}
		t.Logf("memory: pid %d %-22s RSS %s, PSS %s, peak %s  (%s)", pid, what, field(status, "VmRSS"), field(rollup, "Pss"), field(status, "VmHWM"), strings.Join(args, " "))
	}
	t.Logf("memory: the bridge's limit: %s", memoryLimit(bridge))
}

// memoryLimit reads the memory limit of pid's cgroup (v2, or v1's memory
// controller): whether the client enforces the task's memory.
func memoryLimit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = filepath.Join("/sys/fs/cgroup", parts[2], "memory.max")
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			file = filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
		default:
			continue
		}
		v, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		return fmt.Sprintf("%s = %s (cgroup %s)", file, strings.TrimSpace(string(v)), parts[2])
	}
	return "no memory cgroup found in /proc/" + strconv.Itoa(pid) + "/cgroup: " + strings.TrimSpace(string(b))
}
