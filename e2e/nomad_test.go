package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/sensorfarm/sensorfarm/nomad/jobspec"
	"github.com/sensorfarm/sensorfarm/wire"
)

// No Nomad binary can run here (Nomad's licence changed after 1.6), so
// these tests do what a Nomad client does with nomad/bridge.hcl: parse it
// with the user's -var values, place its task on a node (directories,
// NOMAD_* environment, ${node.*} interpolation), fetch its artifact, render
// its secret from a Nomad Variable, and run the real bin/bridge with exactly
// that command line, environment and working directory against the real
// broker with a users file. The readings must arrive in mosquitto_sub.

// placedNode is a Pi Zero as nomad/client.hcl describes it.
func placedNode(name string) jobspec.Node {
	return jobspec.Node{
		ID: "2f1e4c7a-9d3b-4c55-8e0f-" + name, Name: name,
		Datacenter: "farm1", Region: "global", Class: "sensorfarm-pizero",
		Attributes: map[string]string{"kernel.name": "linux", "cpu.arch": "arm"},
	}
}

// nomadFarm is a broker with a users file holding the node's bridge user,
// named as nomad/README.md tells the user to name it, and a reader.
type nomadFarm struct {
	broker *process
	addr   string
	bridge account
	reader account
}

func startNomadFarm(t *testing.T, node jobspec.Node) *nomadFarm {
	t.Helper()
	f := &nomadFarm{
		bridge: account{name: node.Datacenter + "-" + node.Name, password: "pw of " + node.Name, role: "bridge", site: node.Datacenter, node: node.Name},
		reader: account{name: "grafana", password: "grafana-pw", role: "reader"},
	}
	users := filepath.Join(t.TempDir(), "users.yaml")
	userAdd(t, users, f.bridge)
	userAdd(t, users, f.reader)
	f.broker, f.addr = startBrokerWithUsers(t, users)
	return f
}

// place parses the job with vars, places its task on node and renders its
// secret from the Nomad Variable README's `nomad var put` writes.
func (f *nomadFarm) place(t *testing.T, node jobspec.Node, vars map[string]string) *jobspec.Placement {
	t.Helper()
	vars["broker_url"] = "tcp://" + f.addr
	vars["spool_dir"] = filepath.Join(t.TempDir(), "sensorfarm") // a host path, outside the allocation
	vars["extra_args"] = `["--sim"]`
	jf, err := jobspec.ParseJobFile(filepath.Join(filepath.Dir(bin), "nomad", "bridge.hcl"), vars)
	require.NoError(t, err)
	require.NoError(t, jf.Job.Validate())
	p, err := jobspec.Place(&jf.Job, "bridge", "bridge", node, t.TempDir(), "7d0c1b9e-5a4f-4e1c-9b7a-63e2d8f0a1b4")
	require.NoError(t, err)
	varPath := "nomad/jobs/bridge/" + node.Datacenter + "/" + node.Name
	require.NoError(t, p.RenderTemplates(jobspec.Variables{varPath: {"password": f.bridge.password}}))
	return p
}

// run starts the placed task as the raw_exec driver does: its command and
// args, the NOMAD_* environment and nothing else but PATH, in the task
// directory. GNU env sets all three and execs the bridge in its own PID.
func runPlaced(t *testing.T, p *jobspec.Placement) *process {
	t.Helper()
	need(t, "env")
	path, args, err := p.Command()
	require.NoError(t, err)
	argv := []string{"env", "-i", "--chdir=" + p.TaskDir(), "PATH=" + os.Getenv("PATH")}
	for k, v := range p.Env() {
		argv = append(argv, k+"="+v)
	}
	return start(t, "bridge (placed as Nomad would)", append(append(argv, path), args...)...)
}

// readingsArrive waits for the node's online status and an env reading,
// read by a reader through the broker's ACL.
func (f *nomadFarm) readingsArrive(t *testing.T, node jobspec.Node) {
	t.Helper()
	wn := wire.Node{Prefix: wire.DefaultPrefix, Site: node.Datacenter, Node: node.Name}
	watch := subscribe(t, f.addr, append(mqttArgs(f.addr, f.reader, "nomad-e2e-reader"), "-t", wn.Root()+"/#")...)
	require.Equal(t, wire.StatusOnline, watch.next(wn.Status(), 30*time.Second).Payload)
	checkEnv(t, watch.next(wn.Live(wire.StreamEnv), 30*time.Second).Payload, node.Datacenter, node.Name)
}

// TestNomadJobPreinstalled: the job's default, a pre-installed binary
// (bridge_path pointed at bin/bridge). Then the stop: with the broker
// frozen, readings in flight are never acknowledged, the bridge's slowest
// way out; it must still exit 0 within the job's kill_timeout, or Nomad
// would SIGKILL it before it closes its spool.
func TestNomadJobPreinstalled(t *testing.T) {
	need(t, "mosquitto_sub")
	node := placedNode("pizero-07")
	f := startNomadFarm(t, node)
	p := f.place(t, node, map[string]string{"bridge_path": filepath.Join(bin, "bridge")})
	bridge := runPlaced(t, p)
	f.readingsArrive(t, node)

	require.NoError(t, f.broker.cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = f.broker.cmd.Process.Signal(syscall.SIGCONT) })
	time.Sleep(2500 * time.Millisecond) // GPS readings go out every second, unacknowledged
	sig := unix.SignalNum(p.Task.KillSignal)
	require.NotZero(t, sig, "kill_signal %q", p.Task.KillSignal)
	limit, err := p.Task.KillTimeoutDuration()
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, bridge.cmd.Process.Signal(sig))
	select {
	case <-bridge.done:
	case <-time.After(limit):
		t.Fatalf("the bridge did not stop within kill_timeout %s of %s: Nomad would SIGKILL it", limit, p.Task.KillSignal)
	}
	took := time.Since(began)
	t.Logf("stop with the broker frozen took %s (kill_timeout %s)", took.Round(time.Millisecond), limit)
	require.Equal(t, 0, bridge.cmd.ProcessState.ExitCode(), "a clean stop")
	require.Contains(t, bridge.out.String(), "bridge stopped")
}

// TestNomadJobArtifact: bridge_url and bridge_sha256 instead, the binary
// served over HTTP on loopback and fetched into the task directory as the
// artifact block says; a wrong checksum leaves nothing to run.
func TestNomadJobArtifact(t *testing.T) {
	need(t, "mosquitto_sub")
	binary, err := os.ReadFile(filepath.Join(bin, "bridge"))
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/releases/bridge" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(binary)
	}))
	t.Cleanup(srv.Close)
	sum := sha256.Sum256(binary)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	node := placedNode("pizero-08")
	f := startNomadFarm(t, node)

	wrong := f.place(t, node, map[string]string{"bridge_url": srv.URL + "/releases/bridge", "bridge_sha256": hex.EncodeToString(make([]byte, 32))})
	require.ErrorContains(t, wrong.FetchArtifacts(ctx, srv.Client()), "checksum mismatch")
	_, _, err = wrong.Command()
	require.Error(t, err, "nothing to run after a failed download")

	p := f.place(t, node, map[string]string{"bridge_url": srv.URL + "/releases/bridge", "bridge_sha256": hex.EncodeToString(sum[:])})
	require.NoError(t, p.FetchArtifacts(ctx, srv.Client()))
	path, _, err := p.Command()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(p.TaskDir(), "local", "bridge"), path)
	bridge := runPlaced(t, p)
	f.readingsArrive(t, node)
	require.Equal(t, 0, bridge.stop())
}
