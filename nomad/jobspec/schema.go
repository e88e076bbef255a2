// Package jobspec reads the Nomad files in nomad/ — the bridge's job, the
// sample client configuration and the ACL policy — into schemas of exactly
// the Nomad blocks and attributes they use, so that a block or attribute
// this project does not know is an error, not a silent no-op. It resolves a
// job the way Nomad does, in two stages: its HCL2 variables when the job is
// submitted, then a client's runtime interpolation (${node.*}, ${attr.*},
// ${meta.*}, ${NOMAD_*}) and its template when a task is placed on a node.
//
// No Nomad binary can be run to check these files (Nomad's licence changed
// after 1.6), so this package is that check: the e2e test runs the real
// bridge exactly as a Nomad client would from the resolved job.
package jobspec

// Job is the subset of Nomad's job block the bridge's job uses.
type Job struct {
	Name        string       `hcl:"name,label"`
	Type        string       `hcl:"type"`
	Datacenters []string     `hcl:"datacenters"`
	Constraints []Constraint `hcl:"constraint,block"`
	Update      *Update      `hcl:"update,block"`
	Groups      []Group      `hcl:"group,block"`
}

// Constraint restricts the nodes a job may run on.
type Constraint struct {
	Attribute string `hcl:"attribute"`
	Operator  string `hcl:"operator,optional"`
	Value     string `hcl:"value"`
}

// Update is the rolling update strategy. Durations stay strings, as written;
// Validate parses them.
type Update struct {
	MaxParallel      int    `hcl:"max_parallel"`
	HealthCheck      string `hcl:"health_check"`
	MinHealthyTime   string `hcl:"min_healthy_time"`
	HealthyDeadline  string `hcl:"healthy_deadline"`
	ProgressDeadline string `hcl:"progress_deadline"`
	AutoRevert       bool   `hcl:"auto_revert"`
}

// Group is a task group.
type Group struct {
	Name    string   `hcl:"name,label"`
	Restart *Restart `hcl:"restart,block"`
	Tasks   []Task   `hcl:"task,block"`
}

// Restart is what the client does when a task exits.
type Restart struct {
	Attempts int    `hcl:"attempts"`
	Interval string `hcl:"interval"`
	Delay    string `hcl:"delay"`
	Mode     string `hcl:"mode"`
}

// Task is one raw_exec task.
type Task struct {
	Name        string        `hcl:"name,label"`
	Driver      string        `hcl:"driver"`
	Config      RawExecConfig `hcl:"config,block"`
	Artifacts   []Artifact    `hcl:"artifact,block"`
	Templates   []Template    `hcl:"template,block"`
	KillSignal  string        `hcl:"kill_signal"`
	KillTimeout string        `hcl:"kill_timeout"`
	Resources   Resources     `hcl:"resources,block"`
}

// RawExecConfig is the raw_exec driver's task configuration.
type RawExecConfig struct {
	Command string   `hcl:"command"`
	Args    []string `hcl:"args,optional"`
}

// Artifact is a file the client downloads into the task directory.
type Artifact struct {
	Source      string          `hcl:"source"`
	Destination string          `hcl:"destination"`
	Mode        string          `hcl:"mode"`
	Options     ArtifactOptions `hcl:"options,block"`
}

// ArtifactOptions are go-getter's options; only the checksum is used.
type ArtifactOptions struct {
	Checksum string `hcl:"checksum"`
}

// Template is a file the client renders into the task directory.
type Template struct {
	Data              string `hcl:"data"`
	Destination       string `hcl:"destination"`
	Perms             string `hcl:"perms"`
	ChangeMode        string `hcl:"change_mode"`
	ErrorOnMissingKey bool   `hcl:"error_on_missing_key"`
}

// Resources are what the scheduler reserves for the task: CPU in MHz,
// memory in MB (the limit the client enforces, with cgroups).
type Resources struct {
	CPU    int `hcl:"cpu"`
	Memory int `hcl:"memory"`
}

// Client is the subset of a Nomad agent configuration that nomad/client.hcl
// uses.
type Client struct {
	Region     string         `hcl:"region"`
	Datacenter string         `hcl:"datacenter"`
	Name       string         `hcl:"name"`
	DataDir    string         `hcl:"data_dir"`
	BindAddr   string         `hcl:"bind_addr"`
	Client     ClientBlock    `hcl:"client,block"`
	Plugins    []ClientPlugin `hcl:"plugin,block"`
	TLS        ClientTLS      `hcl:"tls,block"`
	ACL        ClientACL      `hcl:"acl,block"`
}

// ClientBlock is the agent's client block.
type ClientBlock struct {
	Enabled        bool              `hcl:"enabled"`
	Servers        []string          `hcl:"servers"`
	NodeClass      string            `hcl:"node_class"`
	Meta           map[string]string `hcl:"meta"`
	MaxKillTimeout string            `hcl:"max_kill_timeout"`
	GCMaxAllocs    int               `hcl:"gc_max_allocs"`
	Reserved       ClientReserved    `hcl:"reserved,block"`
	Options        map[string]string `hcl:"options"`
}

// ClientReserved is what the client keeps for the OS and itself.
type ClientReserved struct {
	CPU    int `hcl:"cpu"`
	Memory int `hcl:"memory"`
}

// ClientPlugin configures one task driver.
type ClientPlugin struct {
	Name   string        `hcl:"name,label"`
	Config RawExecPlugin `hcl:"config,block"`
}

// RawExecPlugin is the raw_exec driver's plugin configuration.
type RawExecPlugin struct {
	Enabled bool `hcl:"enabled"`
}

// ClientTLS is the agent's mutual TLS with the servers.
type ClientTLS struct {
	HTTP                 bool   `hcl:"http"`
	RPC                  bool   `hcl:"rpc"`
	CAFile               string `hcl:"ca_file"`
	CertFile             string `hcl:"cert_file"`
	KeyFile              string `hcl:"key_file"`
	VerifyServerHostname bool   `hcl:"verify_server_hostname"`
	VerifyHTTPSClient    bool   `hcl:"verify_https_client"`
}

// ClientACL turns ACL enforcement on for the client's own endpoints.
type ClientACL struct {
	Enabled bool `hcl:"enabled"`
}

// Policy is a Nomad ACL policy granting access to variables.
type Policy struct {
	Namespaces []PolicyNamespace `hcl:"namespace,block"`
}

// PolicyNamespace is a policy's rules for one namespace.
type PolicyNamespace struct {
	Name      string          `hcl:"name,label"`
	Variables PolicyVariables `hcl:"variables,block"`
}

// PolicyVariables are the namespace's variable path rules.
type PolicyVariables struct {
	Paths []PolicyPath `hcl:"path,block"`
}

// PolicyPath grants capabilities on the variables under a path glob.
type PolicyPath struct {
	Glob         string   `hcl:"glob,label"`
	Capabilities []string `hcl:"capabilities"`
}
