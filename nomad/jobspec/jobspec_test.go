package jobspec_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/nomad/jobspec"
	"github.com/sensorfarm/sensorfarm/wire"
)

// The files under test are the ones a user applies.
const (
	jobPath    = "../bridge.hcl"
	clientPath = "../client.hcl"
	policyPath = "../bridge-variables.policy.hcl"
)

// piZero is a Nomad client as nomad/client.hcl configures it, with the
// attributes Nomad fingerprints on a Pi Zero.
func piZero(t *testing.T) jobspec.Node {
	t.Helper()
	c, err := jobspec.ParseClientFile(clientPath)
	require.NoError(t, err)
	return jobspec.Node{
		ID: "9f6c1a52-3d1e-4c7a-8a3b-5b2f0e7d1c44", Name: c.Name, Datacenter: c.Datacenter,
		Region: c.Region, Class: c.Client.NodeClass,
		Attributes: map[string]string{"kernel.name": "linux", "cpu.arch": "arm"},
		Meta:       c.Client.Meta,
	}
}

func parseJob(t *testing.T, vars map[string]string) *jobspec.Job {
	t.Helper()
	jf, err := jobspec.ParseJobFile(jobPath, vars)
	require.NoError(t, err)
	require.NoError(t, jf.Job.Validate())
	return &jf.Job
}

// TestBridgeJobOnAPiZero places the job, with its defaults, on the client
// of client.hcl, renders its secret as Nomad would and hands the resulting
// command line to the bridge's own configuration loader: site, node, user
// and password are the node's, the spool is outside the allocation.
func TestBridgeJobOnAPiZero(t *testing.T) {
	job := parseJob(t, nil)
	require.Equal(t, "system", job.Type, "one bridge per client")
	_, task, err := job.Task("bridge", "bridge")
	require.NoError(t, err)
	require.Equal(t, "raw_exec", task.Driver)
	require.Equal(t, "/usr/local/bin/bridge", task.Config.Command, "pre-installed binary by default")
	require.Empty(t, task.Artifacts, "no artifact unless bridge_url is set")

	node := piZero(t)
	alloc := t.TempDir()
	p, err := jobspec.Place(job, "bridge", "bridge", node, alloc, "0b6a3c8e-0000-4000-8000-000000000001")
	require.NoError(t, err)

	const password = "s3cret pass"
	varPath := "nomad/jobs/bridge/" + node.Datacenter + "/" + node.Name
	require.NoError(t, p.RenderTemplates(jobspec.Variables{varPath: {"password": password}}))
	secret := filepath.Join(p.TaskDir(), "secrets", "mqtt-password")
	fi, err := os.Stat(secret)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o400), fi.Mode().Perm(), "only the task's user reads it")

	// The pre-installed path does not exist here: the args alone, resolved
	// as the client resolves them.
	args, err := p.Args()
	require.NoError(t, err)
	for _, a := range args {
		require.NotContains(t, a, password, "the password is never an argument")
	}
	cfg, err := config.Load(args, func(string) string { return "" }, func() (string, error) { return "not-the-node", nil })
	require.NoError(t, err, "the bridge accepts the job's command line: %q", args)
	require.Equal(t, wire.Node{Prefix: wire.DefaultPrefix, Site: node.Datacenter, Node: node.Name}, cfg.Node)
	require.Equal(t, node.Datacenter+"-"+node.Name, cfg.Username, "the user name README's `broker user add` creates")
	require.Equal(t, password, cfg.Password)
	require.Equal(t, "/var/lib/sensorfarm", cfg.Spool)
	require.False(t, strings.HasPrefix(cfg.Spool, alloc), "the spool outlives the allocation")
}

// TestBridgeJobArtifact: with bridge_url the binary is fetched into the
// task directory, checked against bridge_sha256.
func TestBridgeJobArtifact(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	job := parseJob(t, map[string]string{"bridge_url": "https://releases.farm.lan/bridge-linux-arm6", "bridge_sha256": sum})
	_, task, err := job.Task("bridge", "bridge")
	require.NoError(t, err)
	require.Equal(t, "local/bridge", task.Config.Command)
	require.Equal(t, []jobspec.Artifact{{
		Source: "https://releases.farm.lan/bridge-linux-arm6", Destination: "local/bridge", Mode: "file",
		Options: jobspec.ArtifactOptions{Checksum: "sha256:" + sum},
	}}, task.Artifacts)
}

func TestBridgeJobVariables(t *testing.T) {
	job := parseJob(t, map[string]string{
		"datacenters": `["north", "south"]`, "node_class": "", "broker_url": "mqtts://broker.farm.lan:8883",
		"ca_file": "/etc/sensorfarm/ca.pem", "extra_args": `["--gps=false"]`, "spool_dir": "/srv/spool",
	})
	require.Equal(t, []string{"north", "south"}, job.Datacenters)
	for _, c := range job.Constraints {
		require.NotEqual(t, "${node.class}", c.Attribute, "an empty node_class drops its constraint")
	}
	_, task, err := job.Task("bridge", "bridge")
	require.NoError(t, err)
	joined := strings.Join(task.Config.Args, " ")
	require.Contains(t, joined, "--broker mqtts://broker.farm.lan:8883")
	require.Contains(t, joined, "--ca-file /etc/sensorfarm/ca.pem")
	require.Contains(t, joined, "--spool /srv/spool")
	require.True(t, strings.HasSuffix(joined, " --gps=false"), joined)
}

func TestBridgeJobRefusesBadVariables(t *testing.T) {
	for _, tc := range []struct {
		desc string
		vars map[string]string
		want string
	}{
		{"checksum not hex", map[string]string{"bridge_sha256": "sha256:abc"}, "64 lower-case hex digits"},
		{"undeclared variable", map[string]string{"brokerurl": "tcp://x:1883"}, "declares no such variable"},
		{"list given a bare string", map[string]string{"datacenters": "farm1"}, "datacenters"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := jobspec.ParseJobFile(jobPath, tc.vars)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestSchemaIsStrict edits the real job file: whatever the schema does not
// name, and any runtime name that is not Nomad's, is an error.
func TestSchemaIsStrict(t *testing.T) {
	src, err := os.ReadFile(jobPath)
	require.NoError(t, err)
	for _, tc := range []struct {
		desc, old, new, want string
	}{
		{"unknown task attribute", `driver = "raw_exec"`, `driver = "raw_exec"` + "\n      user = \"pi\"", `An argument named "user" is not expected here`},
		{"unknown task block", `driver = "raw_exec"`, `driver = "raw_exec"` + "\n      service {\n        name = \"x\"\n      }", `Blocks of type "service" are not expected here`},
		{"misspelt attribute", `kill_timeout = "30s"`, `kill_timout = "30s"`, `kill_timout`},
		{"unknown top-level block", `job "bridge" {`, "locals {\n  x = 1\n}\n\njob \"bridge\" {", `Blocks of type "locals" are not expected here`},
		{"misspelt runtime name", `"${node.unique.name}",`, `"${nod.unique.name}",`, `nod`},
		{"unknown function", `concat([`, `flatten([`, `flatten`},
		{"indexed runtime name", `"${node.datacenter}",`, `"${node["datacenter"]}",`, `dotted name`},
		{"restart that cannot fit", `attempts = 5`, `attempts = 50`, `do not fit in an interval`},
		{"update deadlines out of order", `healthy_deadline  = "5m"`, `healthy_deadline  = "20m"`, `must be less than progress_deadline`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, 1, strings.Count(string(src), tc.old), "the edit applies once")
			edited := strings.Replace(string(src), tc.old, tc.new, 1)
			jf, err := jobspec.ParseJob([]byte(edited), "edited.hcl", nil)
			if err == nil {
				err = jf.Job.Validate()
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestFeasibility: the job lands on the Pi Zeros of its datacenters and
// class, nowhere else.
func TestFeasibility(t *testing.T) {
	job := parseJob(t, nil)
	require.NoError(t, job.Feasible(piZero(t)))
	for _, tc := range []struct {
		desc string
		edit func(*jobspec.Node)
		want string
	}{
		{"a Pi 4 of the cluster", func(n *jobspec.Node) { n.Attributes["cpu.arch"] = "arm64" }, "cpu.arch"},
		{"another class", func(n *jobspec.Node) { n.Class = "" }, "node.class"},
		{"another datacenter", func(n *jobspec.Node) { n.Datacenter = "k8s" }, "datacenter"},
		{"not fingerprinted", func(n *jobspec.Node) { delete(n.Attributes, "kernel.name") }, "kernel.name"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			n := piZero(t)
			tc.edit(&n)
			require.ErrorContains(t, job.Feasible(n), tc.want)
		})
	}
}

func TestTemplateWaitsForItsVariable(t *testing.T) {
	job := parseJob(t, nil)
	node := piZero(t)
	p, err := jobspec.Place(job, "bridge", "bridge", node, t.TempDir(), "a1")
	require.NoError(t, err)
	err = p.RenderTemplates(jobspec.Variables{"nomad/jobs/bridge/other/" + node.Name: {"password": "x"}})
	require.ErrorIs(t, err, jobspec.ErrVariableMissing)
	err = p.RenderTemplates(jobspec.Variables{"nomad/jobs/bridge/" + node.Datacenter + "/" + node.Name: {"passwd": "x"}})
	require.ErrorContains(t, err, `map has no entry for key "password"`, "error_on_missing_key: no empty password file")
}

func TestReplaceRuntimeKeepsUnknownNames(t *testing.T) {
	got := jobspec.ReplaceRuntime("${node.datacenter}-${meta.rack}/${NOMAD_TASK_DIR}", map[string]string{"node.datacenter": "farm1"})
	require.Equal(t, "farm1-${meta.rack}/${NOMAD_TASK_DIR}", got)
}

// TestClientMatchesJob: the sample client is one the job runs on, and it
// lets the job stop the bridge gracefully.
func TestClientMatchesJob(t *testing.T) {
	c, err := jobspec.ParseClientFile(clientPath)
	require.NoError(t, err)
	require.True(t, c.Client.Enabled)
	require.Len(t, c.Plugins, 1)
	require.Equal(t, "raw_exec", c.Plugins[0].Name)
	require.True(t, c.Plugins[0].Config.Enabled)
	require.Equal(t, "raw_exec", c.Client.Options["driver.allowlist"])
	require.True(t, c.TLS.HTTP && c.TLS.RPC && c.TLS.VerifyServerHostname)
	require.True(t, c.ACL.Enabled)
	require.NoError(t, wire.ValidateName("node", c.Name), "the node name is the bridge's --node")
	require.NoError(t, wire.ValidateName("site", c.Datacenter), "the datacenter is the bridge's --site")

	jf, err := jobspec.ParseJobFile(jobPath, nil)
	require.NoError(t, err)
	require.Equal(t, jf.Variables["node_class"].AsString(), c.Client.NodeClass)
	_, task, err := jf.Job.Task("bridge", "bridge")
	require.NoError(t, err)
	kill, err := task.KillTimeoutDuration()
	require.NoError(t, err)
	maxKill, err := time.ParseDuration(c.Client.MaxKillTimeout)
	require.NoError(t, err)
	require.LessOrEqual(t, kill, maxKill, "a client caps kill_timeout at max_kill_timeout")
}

func TestClientSchemaIsStrict(t *testing.T) {
	edited := strings.Replace(mustRead(t, clientPath), "gc_max_allocs = 10", "gc_max_allocs = 10\n  network_speed = 100", 1)
	path := filepath.Join(t.TempDir(), "client.hcl")
	require.NoError(t, os.WriteFile(path, []byte(edited), 0o600))
	_, err := jobspec.ParseClientFile(path)
	require.ErrorContains(t, err, `An argument named "network_speed" is not expected here`)
}

// TestPolicyGrantsTheTemplatesPath: the policy lets the task read the path
// its template reads, and nothing outside the job's own paths.
func TestPolicyGrantsTheTemplatesPath(t *testing.T) {
	pol, err := jobspec.ParsePolicyFile(policyPath)
	require.NoError(t, err)
	require.Len(t, pol.Namespaces, 1)
	require.Equal(t, "default", pol.Namespaces[0].Name)
	paths := pol.Namespaces[0].Variables.Paths
	require.Len(t, paths, 1)
	require.Equal(t, []string{"read"}, paths[0].Capabilities)

	job := parseJob(t, nil)
	_, task, err := job.Task("bridge", "bridge")
	require.NoError(t, err)
	require.Len(t, task.Templates, 1)
	m := regexp.MustCompile(`printf "([^"]+)"`).FindStringSubmatch(task.Templates[0].Data)
	require.NotNil(t, m, "the template builds its variable path with printf")
	readPath := strings.NewReplacer("%s", "x").Replace(m[1])
	require.True(t, globMatch(paths[0].Glob, readPath), "%s covers %s", paths[0].Glob, readPath)
	require.False(t, globMatch(paths[0].Glob, "nomad/jobs/other/x"))
}

// globMatch is Nomad's variable path glob: * matches any run of characters,
// slashes included.
func globMatch(glob, path string) bool {
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(glob), `\*`, ".*") + "$"
	return regexp.MustCompile(re).MatchString(path)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
