package jobspec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// Node is a Nomad client as a job sees it.
type Node struct {
	ID, Name, Datacenter, Region, Class string
	// Attributes are the client's fingerprints, as ${attr.<name>}: e.g.
	// "cpu.arch" is "arm" on a Pi Zero.
	Attributes map[string]string
	// Meta is the client's meta block, as ${meta.<name>}.
	Meta map[string]string
}

// values are the node's interpolation names and their values.
func (n Node) values() map[string]string {
	v := map[string]string{
		"node.unique.id":   n.ID,
		"node.unique.name": n.Name,
		"node.datacenter":  n.Datacenter,
		"node.region":      n.Region,
		"node.class":       n.Class,
	}
	for k, a := range n.Attributes {
		v["attr."+k] = a
	}
	for k, m := range n.Meta {
		v["meta."+k] = m
	}
	return v
}

// Feasible reports why the node cannot run the job, or nil if it can: the
// datacenter and every constraint, with its attribute interpolated for the
// node as the scheduler does.
func (j *Job) Feasible(n Node) error {
	inDC := false
	for _, dc := range j.Datacenters {
		inDC = inDC || dc == n.Datacenter
	}
	if !inDC {
		return fmt.Errorf("node %s is in datacenter %q, not in %v", n.Name, n.Datacenter, j.Datacenters)
	}
	vals := n.values()
	for _, c := range j.Constraints {
		eq, err := c.op()
		if err != nil {
			return err
		}
		got := ReplaceRuntime(c.Attribute, vals)
		if (got == c.Value) != eq || strings.Contains(got, "${") {
			return fmt.Errorf("node %s fails the constraint %s %s %q: it has %q", n.Name, c.Attribute, c.Operator, c.Value, got)
		}
	}
	return nil
}

// op reads the constraint's operator; the job uses equality only.
func (c Constraint) op() (equal bool, err error) {
	switch c.Operator {
	case "", "=", "==", "is":
		return true, nil
	case "!=", "not":
		return false, nil
	}
	return false, fmt.Errorf("constraint on %s: operator %q is not modelled here", c.Attribute, c.Operator)
}

// runtimeRef is what a Nomad client replaces in a task's command, args and
// environment: ${name} with name made of letters, digits and _ - . (the
// pattern of Nomad's helper/args).
var runtimeRef = regexp.MustCompile(`\$\{[a-zA-Z0-9_\-.]+\}`)

// ReplaceRuntime resolves ${name} in s from vals, as a Nomad client does:
// a name it does not know is left as it is.
func ReplaceRuntime(s string, vals map[string]string) string {
	return runtimeRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := vals[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// Placement is a task placed on a node: the directories a Nomad client
// makes for it and the environment it gives it.
type Placement struct {
	Job   *Job
	Group *Group
	Task  *Task
	Node  Node
	// AllocID names the allocation; AllocDir is its directory.
	AllocID, AllocDir string
}

// Place places the job's task on the node, making the task's directories
// as a client does: <alloc>/alloc shared by the group, and
// <alloc>/<task>/{local,secrets,tmp}.
func Place(j *Job, group, task string, n Node, allocDir, allocID string) (*Placement, error) {
	if err := j.Feasible(n); err != nil {
		return nil, err
	}
	g, t, err := j.Task(group, task)
	if err != nil {
		return nil, err
	}
	p := &Placement{Job: j, Group: g, Task: t, Node: n, AllocID: allocID, AllocDir: allocDir}
	for _, d := range []string{filepath.Join(allocDir, "alloc"), p.dir("local"), p.dir("secrets"), p.dir("tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("making the task's directories: %w", err)
		}
	}
	return p, nil
}

// TaskDir is the task's working directory.
func (p *Placement) TaskDir() string { return filepath.Join(p.AllocDir, p.Task.Name) }

func (p *Placement) dir(name string) string { return filepath.Join(p.TaskDir(), name) }

// Env is the NOMAD_* environment the client gives the task.
func (p *Placement) Env() map[string]string {
	return map[string]string{
		"NOMAD_ALLOC_DIR":    filepath.Join(p.AllocDir, "alloc"),
		"NOMAD_TASK_DIR":     p.dir("local"),
		"NOMAD_SECRETS_DIR":  p.dir("secrets"),
		"NOMAD_ALLOC_ID":     p.AllocID,
		"NOMAD_ALLOC_NAME":   fmt.Sprintf("%s.%s[0]", p.Job.Name, p.Group.Name),
		"NOMAD_ALLOC_INDEX":  "0",
		"NOMAD_JOB_ID":       p.Job.Name,
		"NOMAD_JOB_NAME":     p.Job.Name,
		"NOMAD_GROUP_NAME":   p.Group.Name,
		"NOMAD_TASK_NAME":    p.Task.Name,
		"NOMAD_NAMESPACE":    "default",
		"NOMAD_DC":           p.Node.Datacenter,
		"NOMAD_REGION":       p.Node.Region,
		"NOMAD_CPU_LIMIT":    strconv.Itoa(p.Task.Resources.CPU),
		"NOMAD_MEMORY_LIMIT": strconv.Itoa(p.Task.Resources.Memory),
	}
}

// values are every name the client resolves for this task.
func (p *Placement) values() map[string]string {
	v := p.Node.values()
	maps.Copy(v, p.Env())
	return v
}

// Command is the command line the client runs: the command found as the
// raw_exec driver finds it, and the args with the runtime names resolved.
// A name left unresolved is an error here; Nomad would pass it to the task
// as it is.
func (p *Placement) Command() (string, []string, error) {
	args, err := p.Args()
	if err != nil {
		return "", nil, err
	}
	path, err := p.lookup(ReplaceRuntime(p.Task.Config.Command, p.values()))
	if err != nil {
		return "", nil, err
	}
	return path, args, nil
}

// Args are the task's args with the runtime names resolved; a name left
// unresolved is an error.
func (p *Placement) Args() ([]string, error) {
	vals := p.values()
	args := make([]string, len(p.Task.Config.Args))
	for i, a := range p.Task.Config.Args {
		args[i] = ReplaceRuntime(a, vals)
		if m := runtimeRef.FindString(args[i]); m != "" {
			return nil, fmt.Errorf("arg %q: %s is not a name a Nomad client knows", a, m)
		}
	}
	return args, nil
}

// lookup finds the command as Nomad's executor does: in the task's local/
// directory, then at the root of the task directory, then as an absolute
// path, then in $PATH.
func (p *Placement) lookup(cmd string) (string, error) {
	for _, c := range []string{filepath.Join(p.dir("local"), cmd), filepath.Join(p.TaskDir(), cmd)} {
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	if filepath.IsAbs(cmd) {
		if _, err := os.Stat(cmd); err == nil {
			return cmd, nil
		}
	}
	if path, err := exec.LookPath(cmd); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("command %q: not in the task directory, not an existing absolute path, not in $PATH", cmd)
}

// Variables are Nomad Variables: path -> items.
type Variables map[string]map[string]string

// ErrVariableMissing is a template's read of a variable that does not
// exist: Nomad's template runner waits for it, and the task does not start.
var ErrVariableMissing = errors.New("no such Nomad variable: the template waits for it and the task does not start")

// RenderTemplates renders the task's templates into its directory as the
// client's template runner would, with the functions the job uses: env
// (the task's environment and the node's names) and nomadVar (vars).
// Anything else a template calls is an error.
func (p *Placement) RenderTemplates(vars Variables) error {
	vals := p.values()
	funcs := template.FuncMap{
		"env": func(name string) string { return vals[name] },
		"nomadVar": func(path string) (map[string]string, error) {
			items, ok := vars[path]
			if !ok {
				return nil, fmt.Errorf("%s: %w", path, ErrVariableMissing)
			}
			return items, nil
		},
	}
	for _, tpl := range p.Task.Templates {
		t := template.New(tpl.Destination).Funcs(funcs)
		if tpl.ErrorOnMissingKey {
			t = t.Option("missingkey=error")
		}
		if _, err := t.Parse(tpl.Data); err != nil {
			return fmt.Errorf("template %s: %w", tpl.Destination, err)
		}
		var out strings.Builder
		if err := t.Execute(&out, nil); err != nil {
			return fmt.Errorf("template %s: %w", tpl.Destination, err)
		}
		perms, err := strconv.ParseUint(tpl.Perms, 8, 32)
		if err != nil {
			return fmt.Errorf("template %s: perms %q: %w", tpl.Destination, tpl.Perms, err)
		}
		dst, err := p.inTaskDir(tpl.Destination)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(out.String()), os.FileMode(perms)); err != nil {
			return fmt.Errorf("template %s: %w", tpl.Destination, err)
		}
		// WriteFile's mode is cut by the umask; the client sets it exactly.
		if err := os.Chmod(dst, os.FileMode(perms)); err != nil {
			return fmt.Errorf("template %s: %w", tpl.Destination, err)
		}
	}
	return nil
}

// inTaskDir resolves a destination relative to the task directory; like
// the client's sandbox, it refuses one outside it.
func (p *Placement) inTaskDir(rel string) (string, error) {
	dst := filepath.Join(p.TaskDir(), rel)
	if r, err := filepath.Rel(p.TaskDir(), dst); err != nil || strings.HasPrefix(r, "..") {
		return "", fmt.Errorf("destination %q is outside the task directory", rel)
	}
	return dst, nil
}

// FetchArtifacts downloads the task's artifacts as the client does for
// what the job uses: one file over http(s), its sha256 checked before it is
// put in place.
func (p *Placement) FetchArtifacts(ctx context.Context, client *http.Client) error {
	for _, a := range p.Task.Artifacts {
		if err := p.fetch(ctx, client, a); err != nil {
			return fmt.Errorf("artifact %s: %w", a.Source, err)
		}
	}
	return nil
}

func (p *Placement) fetch(ctx context.Context, client *http.Client, a Artifact) error {
	if a.Mode != "file" {
		return fmt.Errorf("mode %q: only file is modelled here", a.Mode)
	}
	want, ok := strings.CutPrefix(a.Options.Checksum, "sha256:")
	if !ok {
		return fmt.Errorf("checksum %q is not sha256", a.Options.Checksum)
	}
	dst, err := p.inTaskDir(a.Destination)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Source, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET: %s", resp.Status)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".artifact-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		tmp.Close()
		return fmt.Errorf("download: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("checksum mismatch: the file's sha256 is %s, the job wants %s", got, want)
	}
	// The executor makes the command executable before it runs it.
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
