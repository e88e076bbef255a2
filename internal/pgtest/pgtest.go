// Package pgtest runs Debian's PostgreSQL server for the tests and the
// benchmarks: a fresh cluster in a temporary directory, listening on
// 127.0.0.1 on a free port, started and stopped by its PID. PostgreSQL
// refuses to run as root, so as root it runs as the postgres user (which
// Debian's package creates) and the directory is handed to that user.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sensorfarm/sensorfarm/internal/loopback"
)

// Server is a running PostgreSQL cluster.
type Server struct {
	// DSN connects to its database "archive" as user "sensorfarm",
	// trusted (no password) over 127.0.0.1.
	DSN  string
	Port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// Bin finds the newest installed PostgreSQL's bin directory.
func Bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i], nil
		}
	}
	return "", errors.New("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres): make deps installs Debian's postgresql")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises a cluster and starts it; Stop ends it and removes it.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Bin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sensorfarm-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, done: make(chan struct{})}
	cred, err := runAs(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "sensorfarm", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	port, err := loopback.FreePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.Port = port
	s.log, err = os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Only 127.0.0.1; the socket in our own directory; fsync stays on (the
	// archive's promise is what a commit survives); no statistics
	// collection for the tests' short lives.
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+dir,
		"-c", "max_connections=50", "-c", "shared_buffers=32MB", "-c", "logging_collector=off")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Dir = dir
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("postgres: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(ctx, bin, cred); err != nil {
		s.Stop()
		return nil, err
	}
	s.DSN = fmt.Sprintf("postgres://sensorfarm@127.0.0.1:%d/archive?sslmode=disable", port)
	return s, nil
}

// waitReady waits for the server to accept connections, then creates the
// database "archive".
func (s *Server) waitReady(ctx context.Context, bin string, cred *syscall.Credential) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		create := exec.CommandContext(ctx, filepath.Join(bin, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "sensorfarm", "archive")
		create.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := create.CombinedOutput()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("postgres exited: %s", s.Log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections within 60s: %v: %s\n%s", err, out, s.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Log is the server's output so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// Stop ends the server by its PID (SIGINT: PostgreSQL's fast shutdown,
// then SIGKILL after 30 s) and removes its directory.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if s.log != nil {
		s.log.Close()
	}
	os.RemoveAll(s.dir)
}

// runAs is the credential PostgreSQL runs under: the postgres user when we
// are root (it refuses root), else ours. dir is handed to that user.
func runAs(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user (Debian's postgresql package creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	// The temporary directory's parents must be searchable by that user.
	if strings.HasPrefix(dir, os.TempDir()) {
		if fi, err := os.Stat(os.TempDir()); err == nil && fi.Mode().Perm()&0o001 == 0 {
			return nil, fmt.Errorf("%s is not searchable by the postgres user", os.TempDir())
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
