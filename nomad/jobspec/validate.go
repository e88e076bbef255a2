package jobspec

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Validate applies the rules a Nomad server applies when the job is
// submitted (read from Nomad 1.6's structs.go: update and restart
// strategies, durations) and those of the drivers and blocks used here, so
// that a job which parses but which Nomad would refuse fails here too.
func (j *Job) Validate() error {
	var errs []error
	switch j.Type {
	case "service", "system", "batch", "sysbatch":
	default:
		errs = append(errs, fmt.Errorf("job type %q is none of service, system, batch, sysbatch", j.Type))
	}
	if len(j.Datacenters) == 0 {
		errs = append(errs, errors.New("the job names no datacenter"))
	}
	for _, c := range j.Constraints {
		if _, err := c.op(); err != nil {
			errs = append(errs, err)
		}
	}
	if j.Update != nil {
		errs = append(errs, j.Update.validate())
	}
	if len(j.Groups) == 0 {
		errs = append(errs, errors.New("the job has no group"))
	}
	for _, g := range j.Groups {
		if g.Restart == nil {
			errs = append(errs, fmt.Errorf("group %q: no restart block", g.Name))
		} else if err := g.Restart.validate(); err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w", g.Name, err))
		}
		for _, t := range g.Tasks {
			if err := t.validate(); err != nil {
				errs = append(errs, fmt.Errorf("group %q task %q: %w", g.Name, t.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (u *Update) validate() error {
	var errs []error
	switch u.HealthCheck {
	case "checks", "task_states", "manual":
	default:
		errs = append(errs, fmt.Errorf("update: health_check %q is none of checks, task_states, manual", u.HealthCheck))
	}
	if u.MaxParallel < 0 {
		errs = append(errs, fmt.Errorf("update: max_parallel %d is negative", u.MaxParallel))
	}
	minHealthy, err1 := duration("update min_healthy_time", u.MinHealthyTime)
	healthy, err2 := duration("update healthy_deadline", u.HealthyDeadline)
	progress, err3 := duration("update progress_deadline", u.ProgressDeadline)
	if err := errors.Join(err1, err2, err3); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if healthy <= 0 {
		errs = append(errs, errors.New("update: healthy_deadline must be more than zero"))
	}
	if minHealthy >= healthy {
		errs = append(errs, fmt.Errorf("update: min_healthy_time %s must be less than healthy_deadline %s", minHealthy, healthy))
	}
	if progress != 0 && healthy >= progress {
		errs = append(errs, fmt.Errorf("update: healthy_deadline %s must be less than progress_deadline %s", healthy, progress))
	}
	return errors.Join(errs...)
}

// minRestartInterval is Nomad's shortest restart interval.
const minRestartInterval = 5 * time.Second

func (r *Restart) validate() error {
	var errs []error
	switch r.Mode {
	case "delay", "fail":
	default:
		errs = append(errs, fmt.Errorf("restart: mode %q is neither delay nor fail", r.Mode))
	}
	if r.Attempts == 0 && r.Mode != "fail" {
		errs = append(errs, fmt.Errorf("restart: mode %q with 0 attempts is ambiguous", r.Mode))
	}
	interval, err1 := duration("restart interval", r.Interval)
	delay, err2 := duration("restart delay", r.Delay)
	if err := errors.Join(err1, err2); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if interval < minRestartInterval {
		errs = append(errs, fmt.Errorf("restart: interval %s is under %s", interval, minRestartInterval))
	}
	if time.Duration(r.Attempts)*delay > interval {
		errs = append(errs, fmt.Errorf("restart: %d attempts %s apart do not fit in an interval of %s", r.Attempts, delay, interval))
	}
	return errors.Join(errs...)
}

var (
	sha256Checksum = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	signalName     = regexp.MustCompile(`^SIG[A-Z0-9]+$`)
)

// Nomad's smallest resources for a task: 1 MHz of CPU, 10 MB of memory.
const (
	minCPU    = 1
	minMemory = 10
)

func (t *Task) validate() error {
	var errs []error
	// RawExecConfig is the only driver configuration this schema knows.
	if t.Driver != "raw_exec" {
		errs = append(errs, fmt.Errorf("driver %q: only raw_exec is modelled here", t.Driver))
	}
	if t.Config.Command == "" {
		errs = append(errs, errors.New("config: empty command"))
	}
	for _, a := range t.Artifacts {
		switch a.Mode {
		case "any", "file", "dir":
		default:
			errs = append(errs, fmt.Errorf("artifact %s: mode %q is none of any, file, dir", a.Source, a.Mode))
		}
		if !sha256Checksum.MatchString(a.Options.Checksum) {
			errs = append(errs, fmt.Errorf("artifact %s: checksum %q is not sha256: and 64 hex digits", a.Source, a.Options.Checksum))
		}
	}
	for _, tpl := range t.Templates {
		if _, err := strconv.ParseUint(tpl.Perms, 8, 32); err != nil {
			errs = append(errs, fmt.Errorf("template %s: perms %q is not octal", tpl.Destination, tpl.Perms))
		}
		switch tpl.ChangeMode {
		case "noop", "restart", "signal", "script":
		default:
			errs = append(errs, fmt.Errorf("template %s: change_mode %q is none of noop, restart, signal, script", tpl.Destination, tpl.ChangeMode))
		}
	}
	if !signalName.MatchString(t.KillSignal) {
		errs = append(errs, fmt.Errorf("kill_signal %q is not a signal name such as SIGTERM", t.KillSignal))
	}
	if _, err := duration("kill_timeout", t.KillTimeout); err != nil {
		errs = append(errs, err)
	}
	if t.Resources.CPU < minCPU {
		errs = append(errs, fmt.Errorf("resources: cpu %d is under %d MHz", t.Resources.CPU, minCPU))
	}
	if t.Resources.Memory < minMemory {
		errs = append(errs, fmt.Errorf("resources: memory %d is under %d MB", t.Resources.Memory, minMemory))
	}
	return errors.Join(errs...)
}

// KillTimeoutDuration is the task's kill_timeout as a duration.
func (t *Task) KillTimeoutDuration() (time.Duration, error) {
	return duration("kill_timeout", t.KillTimeout)
}

func duration(what, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	if d < 0 {
		return 0, fmt.Errorf("%s: %s is negative", what, s)
	}
	return d, nil
}

// Task finds a task by group and task name.
func (j *Job) Task(group, task string) (*Group, *Task, error) {
	for gi := range j.Groups {
		g := &j.Groups[gi]
		if g.Name != group {
			continue
		}
		for ti := range g.Tasks {
			if g.Tasks[ti].Name == task {
				return g, &g.Tasks[ti], nil
			}
		}
	}
	return nil, nil, fmt.Errorf("job %q has no task %q in group %q", j.Name, task, group)
}
