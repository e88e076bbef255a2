// Package fleet runs a farm of simulated bridges in one process, to load a
// broker the way N Pi Zeros do: each bridge is the real bridge code
// (bridge/agent.Run, its spool, its publisher with status and will) over a
// simulated board, with its own MQTT connection, user and spool directory.
//
// agent.Run keeps all its state in the Run call and handles no signals (the
// bridge's main does), so many can run in one process.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sensorfarm/sensorfarm/bridge/agent"
	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Cost is the bcrypt cost of the benchmark's users: bcrypt's minimum, which
// the broker accepts like any other (a hash carries its cost). At the
// default cost, 10, hashing a thousand users takes most of a minute and
// every connection costs the broker 50 ms of CPU: a storm would measure
// bcrypt, not the broker.
const Cost = bcrypt.MinCost

// Cred is one user's name and password.
type Cred struct {
	Name, Password string
}

// Users are the benchmark's accounts on our broker.
type Users struct {
	// Bridges are the bridges' users, the i-th for node Node(i).
	Bridges []Cred
	// Reader may read the whole farm: subscribers, the archiver, storms.
	Reader Cred
	Site   string
}

// Node is the i-th bridge's place in the farm.
func (u *Users) Node(i int) wire.Node {
	return wire.Node{Prefix: wire.DefaultPrefix, Site: u.Site, Node: fmt.Sprintf("n%05d", i)}
}

// NewUsers makes n bridge users of site and one reader, each with a random
// password hashed at bcrypt Cost, and writes them as our broker's users file
// at path.
func NewUsers(path, site string, n int) (*Users, error) {
	return NewUsersWith(path, site, n, func() (string, string, error) {
		pw := make([]byte, 12)
		if _, err := rand.Read(pw); err != nil {
			return "", "", err
		}
		p := hex.EncodeToString(pw)
		h, err := auth.HashPassword([]byte(p), Cost)
		return p, h, err
	})
}

// NewTokenUsers is NewUsers with generated credentials (broker user add
// --generate): what a farm of real bridges should have.
func NewTokenUsers(path, site string, n int) (*Users, error) {
	return NewUsersWith(path, site, n, auth.GenerateToken)
}

// NewUsersWith makes the users with credentials from secret: a password and
// its hash.
func NewUsersWith(path, site string, n int, secret func() (password, hash string, err error)) (*Users, error) {
	u := &Users{Site: site, Bridges: make([]Cred, n)}
	list := make([]auth.User, 0, n+1)
	add := func(name string, role auth.Role, node wire.Node) (Cred, error) {
		pw, h, err := secret()
		if err != nil {
			return Cred{}, fmt.Errorf("user %s: %w", name, err)
		}
		c := Cred{Name: name, Password: pw}
		usr := auth.User{Name: name, Role: role, PasswordHash: h}
		if role == auth.RoleBridge {
			usr.Site, usr.Node = node.Site, node.Node
		}
		list = append(list, usr)
		return c, nil
	}
	var err error
	if u.Reader, err = add("bench-reader", auth.RoleReader, wire.Node{}); err != nil {
		return nil, err
	}
	for i := range n {
		node := u.Node(i)
		if u.Bridges[i], err = add(site+"-"+node.Node, auth.RoleBridge, node); err != nil {
			return nil, err
		}
	}
	if err := auth.WriteUsers(path, list); err != nil {
		return nil, fmt.Errorf("benchmark users: %w", err)
	}
	return u, nil
}

// Options of a farm.
type Options struct {
	Addr string // the broker, host:port
	// Brokers, if set, is bridge i's --broker (one URL or a failover list)
	// instead of tcp://Addr, and CAFile its --ca-file for TLS ones.
	Brokers  func(i int) string
	CAFile   string
	Users    *Users // Bridges: one per simulated bridge
	Interval time.Duration
	// Dir holds each bridge's spool and password file.
	Dir string
	// Log receives the bridges' warnings and errors, each tagged with its
	// node.
	Log *slog.Logger
}

// Tally is what one bridge's spool says after it stopped.
type Tally struct {
	Node wire.Node
	// LastSeq is the last env reading's seq: the bridge took readings
	// 1..LastSeq.
	LastSeq uint64
	// Depth is how many readings the broker never acknowledged.
	Depth   int
	Dropped uint64
}

// Start runs the fleet as Run does, in the background, while the caller
// measures; stop ends it, waits for it and returns what Run returned. stop
// may be called again (a deferred stop on an early return): it returns the
// same.
func Start(ctx context.Context, o Options) (stop func() ([]Tally, error)) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var tallies []Tally
	var err error
	go func() {
		defer close(done)
		tallies, err = Run(ctx, o)
	}()
	return func() ([]Tally, error) {
		cancel()
		<-done
		return tallies, err
	}
}

// Run starts every bridge, spread over one interval as a farm's are, runs
// them until ctx ends, stops them as SIGTERM would, and reads each spool.
func Run(ctx context.Context, o Options) ([]Tally, error) {
	n := len(o.Users.Bridges)
	if n == 0 {
		return nil, errors.New("fleet: no bridges")
	}
	cfgs := make([]config.Config, n)
	for i, cred := range o.Users.Bridges {
		c, err := bridgeConfig(o, i, cred)
		if err != nil {
			return nil, err
		}
		cfgs[i] = c
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(o.Interval * time.Duration(i) / time.Duration(n)):
			case <-ctx.Done():
				return
			}
			open, err := sim.BoardOpener(sim.BoardOpts{Node: cfg.Node.Node, BusHz: sim.StandardHz})
			if err != nil {
				errs[i] = err
				return
			}
			log := o.Log.With("node", cfg.Node.Node)
			if err := agent.Run(ctx, agent.Options{Config: cfg, Version: "bench", OpenBus: open, Log: log}); err != nil {
				errs[i] = fmt.Errorf("bridge %s: %w", cfg.Node.Node, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	tallies := make([]Tally, n)
	for i, cfg := range cfgs {
		sp, err := spool.Open(cfg.Spool, &cfg.SpoolOpts)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: reading its spool: %w", cfg.Node.Node, err)
		}
		st := sp.Stats()
		tallies[i] = Tally{Node: cfg.Node, LastSeq: sp.LastSeq(wire.StreamEnv), Depth: st.Depth, Dropped: st.Dropped}
		if err := sp.Close(); err != nil {
			return nil, fmt.Errorf("bridge %s: closing its spool: %w", cfg.Node.Node, err)
		}
	}
	return tallies, nil
}

// bridgeConfig builds bridge i's settings through the bridge's own loader,
// from the flags a Nomad job would give it, so they are validated and
// defaulted as the real bridge's are.
func bridgeConfig(o Options, i int, cred Cred) (config.Config, error) {
	node := o.Users.Node(i)
	dir := filepath.Join(o.Dir, node.Node)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return config.Config{}, fmt.Errorf("bridge %s: %w", node.Node, err)
	}
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(cred.Password+"\n"), 0o600); err != nil {
		return config.Config{}, fmt.Errorf("bridge %s: %w", node.Node, err)
	}
	broker := "tcp://" + o.Addr
	if o.Brokers != nil {
		broker = o.Brokers(i)
	}
	args := []string{
		"--broker", broker, "--site", node.Site, "--node", node.Node, "--prefix", node.Prefix,
		"--spool", filepath.Join(dir, "spool"), "--interval", o.Interval.String(),
		"--sim", "--gps=false", "--username", cred.Name, "--password-file", pw,
	}
	if o.CAFile != "" {
		args = append(args, "--ca-file", o.CAFile)
	}
	noEnv := func(string) string { return "" }
	host := func() (string, error) { return node.Node, nil }
	c, err := config.Load(args, noEnv, host)
	if err != nil {
		return config.Config{}, fmt.Errorf("bridge %s: %w", node.Node, err)
	}
	return c, nil
}
