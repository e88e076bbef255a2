package auth

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Options configures the Hook.
type Options struct {
	// UsersFile is the users file, read by Init and again by each Reload.
	// Required.
	UsersFile string
	// Prefix is the first topic level of the farm; wire.DefaultPrefix if empty.
	Prefix string
	// Refusals, if set, is told of every refused connection and denied
	// access, for the broker's metrics. It is a callback rather than a
	// counting hook of its own: a hook providing these events would take part
	// in mochi's "any one hook allows" decision.
	Refusals Refusals
	// Holders, if set, says who holds a client id (a connected client or a
	// persistent session), so that nobody takes over another user's session
	// (see claim): ClientHolders of the mochi server the hook is added to.
	Holders func(clientID string) Holder
	// Admission bounds the slow password checks; zero Slots: unbounded.
	Admission Admission
	// Busy, if set, answers a connection refused for want of a check slot:
	// it should send CONNACK "server busy" and close the connection, so that
	// mochi's own "bad user name or password" never reaches the client.
	Busy func(cl *mqtt.Client)
	// WatchEvery, if positive, is how often the users file is looked at for
	// a change, which is then loaded as by Reload (see watch).
	WatchEvery time.Duration
}

// Refusals counts what the hook refuses.
type Refusals interface {
	AuthFailed()
	AuthBusy()
	ACLDenied(write bool)
}

// Hook is the mochi hook that applies a Policy read from the users file. It
// authenticates connections and checks every publish, subscription and
// delivery. It must be the only hook that provides OnConnectAuthenticate and
// OnACLCheck: mochi allows as soon as any one hook allows.
type Hook struct {
	mqtt.HookBase
	opts   Options
	policy atomic.Pointer[Policy]
	denied throttle
	gate   *admission // nil: unbounded
	owners *sessions
	stop   chan struct{}
	done   chan struct{}
}

// ID names the hook in mochi's logs.
func (*Hook) ID() string { return "sensorfarm-auth" }

// Provides says the hook handles authentication and ACL checks, and learns
// when a client it admitted is in mochi's client list (see sessions).
func (*Hook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSessionEstablished
}

// Init takes *Options, fills in the default prefix and reads the users file.
// Any other config type is mqtt.ErrInvalidConfigType.
func (h *Hook) Init(config any) error {
	o, ok := config.(*Options)
	if !ok || o == nil {
		return mqtt.ErrInvalidConfigType
	}
	h.opts = *o
	if h.opts.Prefix == "" {
		h.opts.Prefix = wire.DefaultPrefix
	}
	if h.opts.UsersFile == "" {
		return errors.New("auth: no users file")
	}
	if h.Log == nil {
		h.Log = slog.New(slog.DiscardHandler)
	}
	h.owners = newSessions(h.opts.Holders)
	if h.opts.Admission.Slots > 0 {
		h.gate = newAdmission(h.opts.Admission)
	}
	// The file's state is taken before it is read, so that a change made
	// while Init runs is seen by the watch rather than taken as the start.
	loaded, _ := statUsers(h.opts.UsersFile)
	n, err := h.Reload()
	if err != nil {
		return err
	}
	if n == 0 {
		h.Log.Warn("the users file has no users: nobody can connect", "file", h.opts.UsersFile)
	}
	if h.opts.WatchEvery > 0 {
		h.stop, h.done = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(h.done)
			h.watch(loaded, h.opts.WatchEvery, h.stop)
		}()
	}
	return nil
}

// Stop ends the watch of the users file; mochi calls it on Close.
func (h *Hook) Stop() error {
	if h.stop != nil {
		close(h.stop)
		<-h.done
		h.stop = nil
	}
	return nil
}

// Reload reads the users file again and, if it is valid, puts it in force at
// once for new connections and every later check of the connected clients;
// it returns the number of users. Connections are not dropped: a client whose
// user was deleted stays connected but may no longer publish, subscribe or
// receive anything, and a changed password is asked for at the next
// connection. On an error the policy in force stays as it was.
func (h *Hook) Reload() (int, error) {
	users, err := ReadUsers(h.opts.UsersFile)
	if err != nil {
		return 0, err
	}
	p, err := NewPolicy(h.opts.Prefix, users)
	if err != nil {
		return 0, err
	}
	h.policy.Store(p)
	return p.Len(), nil
}

// Policy is the policy in force.
func (h *Hook) Policy() *Policy { return h.policy.Load() }

// OnConnectAuthenticate checks the CONNECT packet's credentials, client ID and
// will, and then claims the client ID for the user (see sessions). A refusal
// is logged with its reason, never with the password; mochi then answers
// CONNACK "not authorized" (MQTT 3.1.1) or "bad user name or password"
// (MQTT 5).
func (h *Hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	l := Login{
		Username: string(pk.Connect.Username),
		Password: pk.Connect.Password,
		ClientID: cl.ID,
		HasWill:  pk.Connect.WillFlag,
	}
	if l.HasWill {
		l.WillTopic = pk.Connect.WillTopic
	}
	p := h.policy.Load()
	if h.gate != nil && p.Costly(l.Username) {
		if !h.gate.enter() {
			h.refuseBusy(cl, l.Username)
			return false
		}
		start := time.Now()
		err := p.Authenticate(l)
		h.gate.leave(time.Since(start))
		return h.verdict(cl, p, l, err)
	}
	return h.verdict(cl, p, l, p.Authenticate(l))
}

// refuseBusy refuses a connection that found no check slot in time. It is
// logged once a minute: a storm refuses hundreds at once.
func (h *Hook) refuseBusy(cl *mqtt.Client, user string) {
	if h.opts.Busy != nil {
		h.opts.Busy(cl)
	}
	if h.opts.Refusals != nil {
		h.opts.Refusals.AuthBusy()
	}
	if h.denied.first("\x00busy", time.Now()) {
		h.Log.Warn("connection refused: server busy (every password check slot taken); the client retries later; logged once a minute",
			"user", clip(user), "client", clip(cl.ID), "remote", cl.Net.Remote, "slots", cap(h.gate.slots), "wait", h.gate.wait)
	}
}

// verdict claims the client ID if Authenticate passed, and logs and counts
// the outcome.
func (h *Hook) verdict(cl *mqtt.Client, p *Policy, l Login, err error) bool {
	if err == nil {
		err = h.owners.claim(cl, l.Username)
	}
	if err != nil {
		h.Log.Warn("connection refused", "user", clip(l.Username), "client", clip(cl.ID), "remote", cl.Net.Remote, "reason", err)
		if h.opts.Refusals != nil {
			h.opts.Refusals.AuthFailed()
		}
		return false
	}
	u, _ := p.User(l.Username)
	h.Log.Info("client authenticated", "user", u.Name, "role", u.Role, "client", cl.ID, "remote", cl.Net.Remote)
	return true
}

// OnSessionEstablished ends the claim on the client's ID made at its
// authentication: mochi's client list has the client now.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.owners.release(cl)
}

// OnACLCheck checks a publish (write), or a subscription or a delivery
// (!write), against the policy in force. A denial is logged at most once a
// minute per user, topic and direction, so that a client retrying in a loop
// cannot flood the log.
func (h *Hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	if h.policy.Load().Allowed(user, cl.ID, topic, write) {
		return true
	}
	if h.opts.Refusals != nil {
		h.opts.Refusals.ACLDenied(write)
	}
	access := "read"
	if write {
		access = "write"
	}
	if h.denied.first(user+"\x00"+access+"\x00"+topic, time.Now()) {
		h.Log.Warn("access denied", "user", clip(user), "client", clip(cl.ID), "access", access, "topic", clip(topic))
	}
	return false
}

// throttle remembers when each key was last reported, so that a repeated
// event is logged once per interval. It holds at most throttleKeys keys;
// beyond that it forgets the expired ones, or all of them.
type throttle struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const (
	throttleInterval = time.Minute
	throttleKeys     = 1024
)

// first reports whether key was not reported within the last interval, and
// records now as its last report if so.
func (t *throttle) first(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.last[key]; ok && now.Sub(last) < throttleInterval {
		return false
	}
	if t.last == nil || len(t.last) >= throttleKeys {
		old := t.last
		t.last = make(map[string]time.Time)
		for k, v := range old {
			if now.Sub(v) < throttleInterval && len(t.last) < throttleKeys/2 {
				t.last[k] = v
			}
		}
	}
	t.last[key] = now
	return true
}
