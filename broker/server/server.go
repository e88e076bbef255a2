// Package server assembles the broker, mochi's MQTT server with our
// capabilities, authentication, the store and a TCP listener, and runs it until
// its context ends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	mochiauth "github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/broker/config"
	"github.com/sensorfarm/sensorfarm/broker/gaps"
	"github.com/sensorfarm/sensorfarm/broker/metrics"
	"github.com/sensorfarm/sensorfarm/broker/ops"
	"github.com/sensorfarm/sensorfarm/broker/store"
	"github.com/sensorfarm/sensorfarm/broker/tlsconf"
)

// StopTimeout bounds a graceful stop: closing the listener, disconnecting every
// client and closing the store. It stays below Kubernetes' default 30 s grace
// period so that a stuck stop is reported by us rather than ended by SIGKILL.
const StopTimeout = 20 * time.Second

// Server is one broker: a mochi server with its listener and store, the gap
// detector, and the HTTP side (health, readiness, metrics).
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	mqtt      *mqtt.Server
	tcp       *listeners.Net
	tls       *listeners.Net    // nil when --tls-listen is empty
	certs     *tlsconf.Reloader // nil when --tls-listen is empty
	store     *store.Hook
	durable   *durableHook // nil with --stock-delivery
	drain     *drainHook
	auth      *auth.Hook // nil in demo mode
	gaps      *gaps.Hook
	ops       *ops.Server // nil when --ops-listen is empty
	refusals  *metrics.RefusalCounter
	storeErrs *metrics.StoreErrorCounter
	nodeLims  *metrics.NodeLimitCounter
	pending   *pending    // connections not yet authenticated, on every listener
	serving   atomic.Bool // clients can connect: for /readyz
	ran       atomic.Bool
}

// New validates cfg and builds the broker: it binds the listener (so that Addr
// is known and a taken port is reported here) and opens the store. Call Run
// once to serve; Run releases both when it returns. log may be nil.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	cfg.Durability = cfg.Durability.WithDefaults()
	caps := capabilities(cfg.Limits)
	// An abandoned persistent session (a consumer renamed or gone) would
	// keep its queue in memory and on disk forever (mochi's default is
	// MaxUint32 s); MQTT 5 clients may ask for less.
	caps.MaximumSessionExpiryInterval = uint32(cfg.Durability.SessionExpiry / time.Second)
	s := &Server{
		cfg: cfg,
		log: log,
		mqtt: mqtt.New(&mqtt.Options{
			Capabilities: caps,
			// $SYS topics once a minute, not every second: nothing of
			// ours reads them, and each tick costs every $SYS subscriber
			// a message and the store a write.
			SysTopicResendInterval: int64(store.SysInterval / time.Second),
			Logger:                 slog.New(newMochiLog(log.Handler())).With("component", "mqtt"),
			// The gap detector publishes its summaries as the broker.
			InlineClient: true,
		}),
		refusals:  metrics.NewRefusalCounter(),
		storeErrs: metrics.NewStoreErrorCounter(),
		nodeLims:  new(metrics.NodeLimitCounter),
	}
	s.pending = &pending{max: cfg.Limits.MaxPending, log: log.With("component", "listener")}

	// The listener first: a taken port is the likelier mistake, and it is
	// reported before the store is touched.
	l, err := s.listen("--listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	s.tcp = listeners.NewNet("tcp", l)
	if err := s.mqtt.AddListener(s.tcp); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("--listen %s: %w", cfg.Listen, err)
	}
	if err := s.addTLS(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if err := s.addHooks(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if err := s.addOps(); err != nil {
		s.closeListeners()
		_ = s.store.Stop()
		return nil, err
	}
	return s, nil
}

// addTLS loads the certificate and binds the TLS listener, when there is one.
func (s *Server) addTLS() error {
	if s.cfg.TLSListen == "" {
		return nil
	}
	tc, rl, err := tlsconf.Config(tlsconf.Options{
		CertFile: s.cfg.TLSCert, KeyFile: s.cfg.TLSKey, ClientCAFile: s.cfg.TLSClientCA,
		Log: s.log.With("component", "tls"),
	})
	if err != nil {
		return err
	}
	s.certs = rl
	l, err := s.listen("--tls-listen", s.cfg.TLSListen)
	if err != nil {
		return err
	}
	s.tls = listeners.NewNet("tls", tls.NewListener(l, tc))
	if err := s.mqtt.AddListener(s.tls); err != nil {
		_ = l.Close()
		s.tls = nil
		return fmt.Errorf("--tls-listen %s: %w", s.cfg.TLSListen, err)
	}
	return nil
}

// listen binds an MQTT listener's socket, guarded (see guardedListener).
func (s *Server) listen(flag, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, listenError(flag, addr, err)
	}
	return newGuardedListener(l, s.cfg.Limits.ConnectTimeout, s.cfg.Limits.WriteTimeout, s.pending, s.log.With("component", "listener", "listener", flag)), nil
}

// closeListeners releases the bound listeners of a New that failed.
func (s *Server) closeListeners() {
	s.tcp.Close(func(string) {})
	if s.tls != nil {
		s.tls.Close(func(string) {})
	}
}

// addOps builds the metrics registry and binds the HTTP side, so that a taken
// port is reported at start like the MQTT one.
func (s *Server) addOps() error {
	if s.cfg.OpsListen == "" {
		return nil
	}
	reg, err := metrics.NewRegistry(s.log, map[string]metrics.Collector{
		"mqtt":     metrics.NewBrokerCollector(s.mqtt.Info),
		"gaps":     metrics.NewGapsCollector(s.gaps),
		"refusals": s.refusals,
		"store":    s.storeErrs,
		"durable":  metrics.NewDurabilityCollector(durability{h: s.durable, store: s.store}),
		"nodes":    s.nodeLims,
	})
	if err != nil {
		return err
	}
	s.ops = ops.New(s.cfg.OpsListen, reg,
		ops.Check{Name: "mqtt", Func: func() error {
			if !s.serving.Load() {
				return errors.New("the MQTT listener is not serving")
			}
			return nil
		}},
		ops.Check{Name: "store", Func: s.store.Ready},
	)
	s.ops.Log = s.log.With("component", "ops")
	if err := s.ops.Listen(); err != nil {
		return listenError("--ops-listen", s.cfg.OpsListen, err)
	}
	return nil
}

// capabilities are mochi's defaults with the changes the broker needs.
func capabilities(l config.Limits) *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()

	// The limits (see config.Limits and the README for the defaults).
	// mochi checks the packet size on the fixed header, before it reads
	// the payload, and drops the connection (no DISCONNECT is sent).
	c.MaximumPacketSize = l.MaxPacketSize
	c.MaximumClients = l.MaxClients
	// Each client's outbound queue is a channel of this many pointers,
	// allocated at connect: 8 bytes a slot, whatever the traffic.
	c.MaximumClientWritesPending = l.ClientPendingWrites
	c.MaximumInflight = l.MaxInflight
	// MaxKeepalive is applied by the keepalive hook (mochi has no setting
	// for it, only the per-client ServerKeepalive state that hook sets).

	// Compatibilities.PassiveClientDisconnect stays off. With it on, mochi
	// writes a DISCONNECT and leaves the connection open for the client to
	// close, in the three places where it disconnects a client that is not
	// already ending: a session taken over (the stale connection of a bridge
	// that reconnected would stay open until its keepalive ran out, and its
	// will, "offline", would then be published after the new connection's
	// "online"), a server shutdown (Close waits for every client to leave on
	// its own, past StopTimeout for one that never reads), and a publish
	// refused mid-read (there the read loop closes the connection anyway).
	// Off, mochi writes the DISCONNECT synchronously and then closes: the
	// reason is on the wire before the FIN, and an MQTT 5 client reads it
	// (TestLimitDisconnectReason).
	c.Compatibilities.PassiveClientDisconnect = false

	// No server-imposed message expiry (mochi's default is 24 h). Our status
	// and latest readings are retained so that a new subscriber sees the
	// current value at once, however old: a node that went offline a week ago
	// must still show "offline" and its last reading. mochi v2.7.9 reads this
	// value in four places, and 0 is safe in each:
	//  - clearExpiredRetainedMessages (every second) deletes a retained
	//    message older than this, from memory and from the store, only when it
	//    is > 0. With 0 only a message's own MQTT 5 Message Expiry Interval
	//    can expire it, as the spec requires.
	//  - clearExpiredInflights applies the same rule to QoS 1/2 messages
	//    waiting for a client's ack: with 0 they wait until delivered or until
	//    the session itself expires, which is what at-least-once asks for.
	//  - processPublish and publishToSubscribers set a message's expiry to
	//    minimum(this, its own expiry interval), where minimum skips zeros:
	//    with 0 a message without an expiry interval gets none.
	//  - buildAck stamps an ack's Expiry as now + this, so now. Nothing reads
	//    it to the ack's harm: the in-flight expiry check also requires
	//    ProtocolVersion 5, which buildAck never sets, and the Message Expiry
	//    property WritePacket derives from it is encoded only on PUBLISH.
	c.MaximumMessageExpiryInterval = 0

	// Eclipse Paho clients reject acks that carry user properties copied
	// from the message they acknowledge.
	c.Compatibilities.NoInheritedPropertiesOnAck = true
	return c
}

// addHooks adds exactly one authentication hook, then the store. mochi allows a
// connection or a topic as soon as any one hook allows it, so the demo's
// AllowHook and the users' ACL must never be registered together.
func (s *Server) addHooks() error {
	switch {
	case s.cfg.Demo && s.cfg.Users == "":
		// Demo mode: mochi's AllowHook lets anyone connect and read or
		// write any topic (Validate accepts it on loopback only).
		if err := s.mqtt.AddHook(new(mochiauth.AllowHook), nil); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	case !s.cfg.Demo && s.cfg.Users != "":
		h := new(auth.Hook)
		if err := s.mqtt.AddHook(h, &auth.Options{UsersFile: s.cfg.Users, Prefix: s.cfg.Prefix, Refusals: s.refusals, Holders: auth.ClientHolders(s.mqtt),
			Admission: auth.Admission{Slots: int(s.cfg.Limits.AuthSlots), Wait: s.cfg.Limits.AuthWait}, Busy: refuseBusy(s.mqtt), WatchEvery: usersWatchEvery}); err != nil {
			return err
		}
		s.auth = h
	default:
		// Validate refuses this already; keep the rule where the hooks are.
		return errors.New("auth: exactly one of --demo and --users is needed")
	}

	h, opts, err := store.New(s.cfg.DataDir, s.cfg.StoreSync, s.storeErrs)
	if err != nil {
		return err
	}
	opts.Stock = s.cfg.Durability.Stock
	opts.MinFree = s.cfg.Durability.StoreMinFree
	if err := s.mqtt.AddHook(h, opts); err != nil {
		return err
	}
	s.store = h

	if err := s.mqtt.AddHook(&packetIDHook{store: h}, nil); err != nil {
		return fmt.Errorf("packet ids: %w", err)
	}

	s.drain = new(drainHook)
	if err := s.mqtt.AddHook(s.drain, nil); err != nil {
		return fmt.Errorf("drain: %w", err)
	}

	// The node limits may drop a publish or clear its retain flag: before
	// the journal, which must store the publish as it will be delivered.
	if s.auth != nil {
		h := &nodeLimitHook{limits: defaultNodeLimits, prefix: s.cfg.Prefix, policy: s.auth.Policy, topics: s.mqtt.Topics, counts: s.nodeLims}
		if err := s.mqtt.AddHook(h, nil); err != nil {
			return fmt.Errorf("node limits: %w", err)
		}
	}

	// After every hook that may refuse or change a publish (auth, drain,
	// node limits): a publish refused after it was journaled would be
	// published again at the next start.
	if !s.cfg.Durability.Stock {
		online, offline := sessionRoom(s.cfg.Limits.MaxInflight, s.cfg.Limits.ClientPendingWrites)
		s.durable = newDurableHook(s.mqtt, h, online, offline, s.cfg.Durability.HoldTimeout, s.cfg.Durability.HoldOffline, s.log.With("component", "durable"))
		if err := s.mqtt.AddHook(s.durable, nil); err != nil {
			return fmt.Errorf("durable: %w", err)
		}
	}

	if err := s.mqtt.AddHook(&keepaliveHook{max: s.cfg.Limits.MaxKeepalive}, nil); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	if err := s.mqtt.AddHook(new(admittedHook), nil); err != nil {
		return fmt.Errorf("admitted: %w", err)
	}

	// The linger waits, up to the write timeout, for a thrown-out client to
	// read its DISCONNECT.
	if err := s.mqtt.AddHook(&lingerHook{linger: s.cfg.Limits.WriteTimeout}, nil); err != nil {
		return fmt.Errorf("linger: %w", err)
	}

	// Last: the gap detector only observes what the others let through.
	s.gaps = gaps.New(gaps.Options{Prefix: s.cfg.Prefix})
	if err := s.mqtt.AddHook(s.gaps, nil); err != nil {
		return fmt.Errorf("gaps: %w", err)
	}
	return nil
}

// listenError says in plain words why a listener could not be opened.
func listenError(flag, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s %s: the address is already in use: another broker or program is listening on that port; stop it or choose another address (%w)", flag, addr, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE (%w)", flag, addr, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%s %s: no network interface of this machine has that address (%w)", flag, addr, err)
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}

// Addr is the address the listener is bound to, with the real port when
// --listen asked for port 0.
func (s *Server) Addr() string { return s.tcp.Address() }

// TLSAddr is the TLS listener's address, "" when it is off.
func (s *Server) TLSAddr() string {
	if s.tls == nil {
		return ""
	}
	return s.tls.Address()
}

// OpsAddr is the HTTP side's address, "" when it is off.
func (s *Server) OpsAddr() string {
	if s.ops == nil {
		return ""
	}
	return s.ops.Addr()
}

// Reload rereads the users file (on SIGHUP) and logs the outcome. Connected
// clients stay connected; every later check uses the new file. A file that
// cannot be read or is invalid changes nothing: the users in force stay, and
// the log says why. In demo mode there is nothing to reload.
func (s *Server) Reload() error {
	if s.auth == nil {
		err := errors.New("nothing to reload: demo mode has no users file")
		s.log.Warn("reload ignored", "err", err)
		return err
	}
	n, err := s.auth.Reload()
	if err != nil {
		s.log.Error("users not reloaded; the previous users stay in force", "err", err)
		return err
	}
	s.log.Info("users reloaded", "file", s.cfg.Users, "user_count", n)
	return nil
}

// Run serves until ctx is done, then stops gracefully: the listener is closed,
// every client is disconnected, and the store is flushed and closed. It
// returns nil after a clean stop. It logs msg=listening addr=HOST:PORT once
// clients can connect, and msg=stopped at the end of a clean stop.
func (s *Server) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("server: Run called more than once")
	}
	if err := s.mqtt.Serve(); err != nil {
		_ = s.mqtt.Close()
		return fmt.Errorf("start: %w", err)
	}
	if s.durable != nil {
		n, err := s.durable.replay()
		if err != nil {
			s.log.Error("journal replay failed; the entries left are published at the next start", "err", err)
		} else if n > 0 {
			s.log.Info("journal replayed: publishes acknowledged before a crash were fanned out again", "count", n)
		}
	}
	s.serving.Store(true)
	background := context.WithoutCancel(ctx)
	summaries, stopSummaries := context.WithCancel(background)
	summariesDone := make(chan struct{})
	go func() {
		defer close(summariesDone)
		var pub gaps.Publisher = s.mqtt
		if s.durable != nil {
			pub = s.durable
		}
		if err := s.gaps.RunSummaries(summaries, pub, 0); err != nil {
			s.log.Error("gap summaries stopped", "err", err)
		}
	}()
	opsCtx, stopOps := context.WithCancel(background)
	opsDone := make(chan struct{})
	go func() {
		defer close(opsDone)
		if s.ops == nil {
			return
		}
		if err := s.ops.Run(opsCtx); err != nil {
			s.log.Error("ops HTTP server stopped", "err", err)
		}
	}()
	defer func() {
		stopOps()
		<-opsDone
	}()
	if s.ops != nil {
		s.log.Info("ops listening", "addr", s.ops.Addr())
	}
	if s.tls != nil {
		attrs := []any{"addr", s.TLSAddr(), "cert", s.cfg.TLSCert, "client_ca", s.cfg.TLSClientCA}
		s.log.Info("tls listening", attrs...)
	}
	if s.auth != nil {
		s.log.Info("listening", "addr", s.Addr(), "users", s.cfg.Users, "user_count", s.auth.Policy().Len(), "prefix", s.cfg.Prefix,
			"store", s.store.Path(), "store_sync", s.cfg.StoreSync)
	} else {
		s.log.Info("listening", "addr", s.Addr(), "demo", s.cfg.Demo, "store", s.store.Path(), "store_sync", s.cfg.StoreSync)
	}

	<-ctx.Done()
	s.log.Info("stopping", "cause", context.Cause(ctx))
	start := time.Now()
	s.serving.Store(false)
	// No summary may be written once mochi closes the store.
	stopSummaries()
	<-summariesDone

	s.drainClients()

	// mochi's Close closes the listeners (drainClients did), disconnects
	// every client and waits for their goroutines, then stops the hooks,
	// which closes the store.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.mqtt.Close()
	}()
	select {
	case <-done:
	case <-time.After(StopTimeout):
		return fmt.Errorf("stop did not finish within %s", StopTimeout)
	}
	// Stop again only to learn how the first one went.
	if err := s.store.Stop(); err != nil {
		return fmt.Errorf("close store %s: %w", s.store.Path(), err)
	}
	s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	return nil
}
