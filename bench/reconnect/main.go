// Command reconnect is the reconnect storm of `make bench` (bench/README.md):
// a farm of real bridges (bench/fleet) with generated credentials publishes to
// a broker, the broker is SIGKILLed and restarted on the same address and data,
// and the run measures the seconds from the kill until every bridge is back
// and publishing, the readings lost, and the broker's RSS per connected
// bridge. It runs against our broker and against Debian's mosquitto with the
// same users (`broker user export --format mosquitto`), in one invocation.
//
// Everything runs on 127.0.0.1 and ends only the processes it started, by
// their PIDs.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/broker/usercmd"
	"github.com/sensorfarm/sensorfarm/internal/child"
	"github.com/sensorfarm/sensorfarm/internal/loopback"
)

type options struct {
	bin, out string
	bridges  int
	runs     int // rounds, each running ours then mosquitto
	limit    time.Duration
	// bcrypt, when positive, gives every user a bcrypt password of that
	// cost instead of a generated token: the storm of chosen passwords.
	bcrypt int
}

func main() {
	var o options
	quick := flag.Bool("quick", false, "50 bridges: checks the tool works, not the figures")
	flag.StringVar(&o.bin, "bin", "bin", "directory of the broker binary, as make build leaves it")
	flag.StringVar(&o.out, "out", "bench/results", "directory for reconnect.md")
	flag.IntVar(&o.bridges, "bridges", 1000, "bridges in the farm")
	flag.IntVar(&o.runs, "runs", 3, "rounds of the storm, each against ours then mosquitto: the report gives each figure's median and range")
	flag.DurationVar(&o.limit, "limit", 15*time.Minute, "bound on the whole run")
	flag.IntVar(&o.bcrypt, "bcrypt", 0, "bcrypt `cost` of the users' passwords instead of generated tokens (0: tokens)")
	flag.Parse()
	if *quick {
		o.bridges, o.runs, o.limit = 50, 1, 3*time.Minute
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.limit)
	defer cancel()
	if err := run(ctx, o, log); err != nil {
		log.Error("bench reconnect failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		return fmt.Errorf("mosquitto is not installed (make deps installs it): %w", err)
	}
	bin, err := filepath.Abs(filepath.Join(o.bin, "broker"))
	if err != nil {
		return err
	}
	if err := raiseOpenFiles(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-reconnect-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	newUsers := fleet.NewTokenUsers
	if o.bcrypt > 0 {
		newUsers = func(path, site string, n int) (*fleet.Users, error) {
			return fleet.NewUsersWith(path, site, n, func() (string, string, error) {
				pw := rand.Text()
				h, err := auth.HashPassword([]byte(pw), o.bcrypt)
				return pw, h, err
			})
		}
	}
	users, err := newUsers(filepath.Join(dir, "users.yaml"), "storm", o.bridges)
	if err != nil {
		return err
	}
	if _, err := users.ExportMosquitto(ctx, bin, filepath.Join(dir, "users.yaml"), dir, 0); err != nil {
		return err
	}
	// Rounds alternate the peers, so that a change in the machine's load
	// falls on both.
	results := map[kind][]result{}
	for run := 1; run <= o.runs; run++ {
		for _, k := range []kind{ours, mosquitto} {
			log.Info("reconnect storm", "peer", k, "bridges", o.bridges, "run", run, "of", o.runs)
			ops, err := loopback.FreeAddr()
			if err != nil {
				return err
			}
			env := peerEnv{bin: bin, dir: dir, ops: ops, run: filepath.Join(dir, fmt.Sprintf("%s-%d", k, run))}
			r, err := storm(ctx, k, env, users, log)
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", k, run, err)
			}
			// The farm's spools and the peer's data: 1,000 directories a run.
			if err := os.RemoveAll(env.run); err != nil {
				return err
			}
			log.Info("reconnect storm done", "peer", k, "run", run, "readmitted_s", r.readmitted.Seconds(), "lost", r.audit.Lost, "missing", r.audit.Missing)
			results[k] = append(results[k], r)
		}
	}
	md := markdown(o.bridges, results)
	if o.bcrypt > 0 {
		md = append([]byte(fmt.Sprintf("Users with bcrypt passwords at cost %d (mosquitto: PBKDF2, %d rounds, as `broker user export` writes them), not generated tokens.\n\n", o.bcrypt, usercmd.DefaultIterations)), md...)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "reconnect.md"), md, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s\n(written to %s)\n", md, filepath.Join(o.out, "reconnect.md"))
	for i, r := range results[ours] {
		if r.audit.Lost > 0 {
			return fmt.Errorf("our broker lost %d readings across the SIGKILL in run %d", r.audit.Lost, i+1)
		}
	}
	return nil
}

type kind string

const (
	ours      kind = "ours"
	mosquitto kind = "mosquitto"
)

type peerEnv struct {
	bin, dir string // the broker binary; the users, shared by every run
	run      string // this run's directory: the peer's data and the farm's spools
	ops      string // our broker's --ops-listen, for its drop counters
}

// start runs the peer on addr with its state in data, and waits until it
// listens.
func (e peerEnv) start(ctx context.Context, k kind, addr, data string) (*child.Process, error) {
	host, port, _ := net.SplitHostPort(addr)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	var argv []string
	switch k {
	case ours:
		argv = []string{e.bin, "--listen", addr, "--users", filepath.Join(e.dir, "users.yaml"), "--data", data,
			"--ops-listen", e.ops, "--log-level", "warn"}
	case mosquitto:
		// The exported users and ACL, and persistence on: mosquitto keeps
		// sessions across a restart only from its last save (on a clean
		// stop, or every autosave_interval, 1800 s by default), so a
		// SIGKILL loses what came since. That is mosquitto's design, and
		// part of what is measured.
		conf := filepath.Join(data, "mosquitto.conf")
		c := fmt.Sprintf("include_dir %s\nlistener %s %s\npersistence true\npersistence_location %s/\nmax_connections -1\nmax_inflight_messages 1024\nmax_queued_messages 8192\nlog_dest stderr\nlog_type error\nlog_type warning\n",
			filepath.Join(e.dir, "mosquitto-include"), port, host, data)
		if err := os.MkdirAll(filepath.Join(e.dir, "mosquitto-include"), 0o700); err != nil {
			return nil, err
		}
		exported, err := os.ReadFile(filepath.Join(e.dir, "mosquitto", "mosquitto.conf"))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(e.dir, "mosquitto-include", "users.conf"), exported, 0o600); err != nil {
			return nil, err
		}
		if os.Geteuid() == 0 {
			// mosquitto started as root drops to the user "mosquitto",
			// which could not read the 0600 files we wrote.
			c += "user root\n"
		}
		if err := os.WriteFile(conf, []byte(c), 0o600); err != nil {
			return nil, err
		}
		argv = []string{"mosquitto", "-c", conf}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = data
	p, err := child.StartLogged(cmd, filepath.Join(data, "log"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.Done():
			b, _ := os.ReadFile(filepath.Join(data, "log"))
			return nil, fmt.Errorf("exited at start: %s", b)
		case <-ctx.Done():
			p.Stop(10 * time.Second)
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop(10 * time.Second)
			return nil, errors.New("did not listen within 60 s")
		}
	}
}

// raiseOpenFiles sets the soft limit on open files to the hard one, for this
// process and the brokers it starts.
func raiseOpenFiles() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("open files limit: %w", err)
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// rssKB is a process's VmRSS.
func rssKB(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// dropped is our broker's count of messages it dropped for subscribers (a
// full client queue, or a session past --max-inflight), from /metrics; -1
// when it cannot be read.
func dropped(ops string) float64 {
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range []string{"sensorfarm_broker_messages_dropped_total ", "sensorfarm_broker_inflight_dropped_total "} {
			if v, ok := strings.CutPrefix(line, name); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				sum += f
			}
		}
	}
	return sum
}
