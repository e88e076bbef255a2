package auth

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/sensorfarm/sensorfarm/wire"
)

// sysPrefix starts the broker's own statistics topics ($SYS/#).
const sysPrefix = "$SYS/"

// discoverySuffix is what follows "<prefix>_" in wire.DiscoveryID: two
// bridges with the same suffix would share a discovery node id.
func discoverySuffix(site, node string) string { return site + "_" + node }

// Grants is what one role may do, as MQTT topic filters (the ACL's rules). A
// topic may be published if a Write filter matches it; a filter may be
// subscribed to, and a message received, if a Read filter matches every topic
// it can match. All means everything, $-topics included (admin).
type Grants struct {
	Read, Write []string
	All         bool
}

// Policy is the users and the rules for one topic prefix: who may connect and
// what each may publish and subscribe to. It is built once and never changed;
// a reload builds a new one.
type Policy struct {
	prefix string
	users  map[string]User
	// grants holds each user's Grants, worked out and split into levels
	// once: OnACLCheck runs for every publish and every delivery.
	grants map[string]rules
	// dummyHash is checked against for an unknown user: a token hash, so
	// that a name that does not exist costs no more than a bridge's token
	// (see Authenticate).
	dummyHash string
}

// NewPolicy validates prefix and users and builds the policy.
func NewPolicy(prefix string, users []User) (*Policy, error) {
	if err := wire.ValidateName("prefix", prefix); err != nil {
		return nil, err
	}
	if err := ValidateUsers(users); err != nil {
		return nil, err
	}
	_, dummy, err := GenerateToken()
	if err != nil {
		return nil, err
	}
	p := &Policy{prefix: prefix, users: make(map[string]User, len(users)), grants: make(map[string]rules, len(users)), dummyHash: dummy}
	for _, u := range users {
		p.users[u.Name] = u
		g := compile(p.Grants(u))
		g.clientID = u.ClientID()
		p.grants[u.Name] = g
	}
	return p, nil
}

// Len is the number of users.
func (p *Policy) Len() int { return len(p.users) }

// User returns the user called name.
func (p *Policy) User(name string) (User, bool) {
	u, ok := p.users[name]
	return u, ok
}

// bridgeStreams are the streams a bridge publishes readings on.
var bridgeStreams = []string{wire.StreamEnv, wire.StreamGPS}

// Grants returns the rules of u's role; a bridge's are bound to its node and
// to the contract's topic shapes, no wider: every topic a bridge may publish
// is one a consumer expects, and one a retained message may occupy (mochi
// keeps every retained message in memory, so a bridge must not be able to
// invent new ones at will).
//
//	role           subscribe (and receive)                     publish
//	bridge S/N     homeassistant/status                        R/status, R/health, R/<stream>, R/<stream>/+,
//	                                                           R/backlog/<stream> (R = <prefix>/S/N; stream env, gps),
//	                                                           homeassistant/+/<prefix>_S_N/+/config, homeassistant/+/<prefix>_S_N/config
//	reader         <prefix>/#, homeassistant/#, $SYS/#         nothing
//	homeassistant  <prefix>/#, homeassistant/#, $SYS/#         homeassistant/status
//	admin          everything                                  everything
//
// $SYS/# (the broker's statistics: clients, messages, uptime, version) is
// read-only data about the broker, not about anyone's readings: the readers
// that graph the farm may graph the broker too. Bridges need none of it.
func (p *Policy) Grants(u User) Grants {
	readers := []string{p.prefix + "/#", wire.HADiscoveryPrefix + "/#", sysPrefix + "#"}
	switch u.Role {
	case RoleBridge:
		n := wire.Node{Prefix: p.prefix, Site: u.Site, Node: u.Node}
		w := []string{n.Status(), n.Health()}
		for _, s := range bridgeStreams {
			w = append(w, n.Live(s), n.Field(s, "+"), n.Backlog(s))
		}
		id := wire.DiscoveryID(p.prefix, u.Site, u.Node)
		w = append(w, wire.HADiscoveryPrefix+"/+/"+id+"/+/config", wire.HADiscoveryPrefix+"/+/"+id+"/config")
		return Grants{Read: []string{wire.HAStatusTopic}, Write: w}
	case RoleReader:
		return Grants{Read: readers}
	case RoleHomeAssistant:
		return Grants{Read: readers, Write: []string{wire.HAStatusTopic}}
	case RoleAdmin:
		return Grants{All: true}
	}
	return Grants{}
}

// Allowed reports whether the user called username, connected as clientID,
// may publish to topic (write) or subscribe to the filter topic, or receive a
// message published on it (!write). Anything not granted is denied: unknown
// users, a bridge not on its own client ID, empty topics, publishing to a
// wildcard, and every topic no rule of the user's role matches.
//
// A subscription's filter is checked as a filter: it is allowed only if every
// topic it can match is readable, so a reader may subscribe to
// sensorfarm/+/+/env but a bridge may not subscribe to # or homeassistant/+.
// A shared subscription ($share/<group>/<filter>) is checked by its filter.
//
// An empty topic is what mochi checks when an MQTT 5 client publishes by topic
// alias alone (it checks before resolving the alias), so such publishes are
// refused for all but admins; a publish that sets the alias along with the
// topic is checked on its topic as usual.
func (p *Policy) Allowed(username, clientID, topic string, write bool) bool {
	g, ok := p.grants[username]
	if !ok {
		return false
	}
	if g.clientID != "" && clientID != g.clientID {
		return false // a bridge off its own id: see Authenticate; only a reload can get here
	}
	return allowed(g, topic, write)
}

func allowed(g rules, topic string, write bool) bool {
	if write && strings.ContainsAny(topic, "+#") {
		return false // a topic name, never a filter
	}
	if g.all {
		return true
	}
	filter, rs := topic, g.read
	if write {
		rs = g.write
	} else {
		filter = unshare(topic)
	}
	if filter == "" {
		return false
	}
	for _, r := range rs {
		if r.covers(filter) {
			return true
		}
	}
	return false
}

// unshare returns the filter of a shared subscription $share/<group>/<filter>,
// "" if it is malformed, and any other filter unchanged.
func unshare(filter string) string {
	rest, ok := strings.CutPrefix(filter, "$share/")
	if !ok {
		return filter
	}
	group, f, ok := strings.Cut(rest, "/")
	if !ok || group == "" {
		return ""
	}
	return f
}

// rules are Grants with each filter split into its levels, once, when the
// policy is built: the check then walks the topic without allocating.
type rules struct {
	all         bool
	read, write []rule
	// clientID is the only client id a bridge may use; "" for other roles.
	clientID string
}

func compile(g Grants) rules {
	split := func(fs []string) []rule {
		out := make([]rule, len(fs))
		for i, f := range fs {
			out[i] = strings.Split(f, "/")
		}
		return out
	}
	return rules{all: g.All, read: split(g.Read), write: split(g.Write)}
}

// rule is an MQTT topic filter split into its levels.
type rule []string

// covers reports whether every topic that filter matches is also matched by
// r, both MQTT topic filters (a topic name is a filter without wildcards).
// A '#' in r covers the rest of filter, including its parent level, as in
// MQTT (a/# matches a); a '+' in r covers one level of anything, '+' too;
// a wildcard in filter is covered only by the same or a wider wildcard in r.
// A rule starting with a wildcard does not cover $-topics, as in MQTT.
func (r rule) covers(filter string) bool {
	if (r[0] == "+" || r[0] == "#") && strings.HasPrefix(filter, "$") {
		return false
	}
	rest, more := filter, true
	for _, rl := range r {
		if rl == "#" {
			return true
		}
		if !more {
			return false
		}
		var fl string
		fl, rest, more = strings.Cut(rest, "/")
		switch {
		case fl == "#":
			return false
		case rl == "+":
			continue
		case fl == "+":
			return false
		case rl != fl:
			return false
		}
	}
	return !more
}

// Login is what a client presents in its CONNECT packet.
type Login struct {
	Username string
	Password []byte
	ClientID string
	// WillTopic is the topic of the client's will, if it set one (HasWill).
	WillTopic string
	HasWill   bool
}

// Reasons a connection is refused. The error Authenticate returns wraps one of
// them; none includes the password.
var (
	ErrAnonymous     = errors.New("no user name (anonymous clients are refused)")
	ErrUnknownUser   = errors.New("unknown user")
	ErrWrongPassword = errors.New("wrong password")
	ErrClientID      = errors.New("client id not allowed")
	ErrWill          = errors.New("will topic not allowed")
)

// Authenticate checks a connection: a known user with the right password, on a
// client ID the user may take, with a will (if any) on a topic the user may
// publish. It returns nil or the reason for refusal.
//
// Client IDs: MQTT lets a client that connects with an ID already in use take
// over that session and disconnect its holder. Bridges hold persistent
// sessions on stable IDs, bridge:<site>:<node>, so a bridge user must connect
// with exactly its own node's ID, and no other user, admin included, may use
// an ID starting with "bridge:". Then a leaked credential of one bridge, or
// any reader, cannot knock another node off the broker or inherit its
// session's queued messages. Nobody may use mochi's "inline"
// (InlineClientID). Whether another user holds the id is the hook's to check,
// with the state of the broker's sessions (see claim).
//
// Cost: an unknown user name costs a token check (about a microsecond), as a
// bridge with a generated token does, never a bcrypt check: anyone may send a
// CONNECT, and a name that does not exist must not buy a slow hash. The price
// is that timing tells a name with a bcrypt password (a person's: Grafana,
// Home Assistant, an admin) from one that does not exist; user names are not
// secrets (a reader sees every bridge's node in the topics), passwords are.
//
// Wills: mochi publishes a will without an ACL check, so a will on a topic the
// user may not publish would be a way around the ACL; such a connection is
// refused.
func (p *Policy) Authenticate(l Login) error {
	if l.Username == "" {
		return ErrAnonymous
	}
	u, ok := p.users[l.Username]
	if !ok {
		_ = verify(p.dummyHash, l.Password)
		return ErrUnknownUser
	}
	if !verify(u.PasswordHash, l.Password) {
		return ErrWrongPassword
	}
	switch want := u.ClientID(); {
	case u.Role == RoleBridge && l.ClientID != want:
		return fmt.Errorf("%w: %q is not this bridge's; a bridge connects as %q", ErrClientID, l.ClientID, want)
	case u.Role != RoleBridge && strings.HasPrefix(l.ClientID, bridgeIDPrefix):
		return fmt.Errorf("%w: %q: client ids starting with %q are reserved for the bridge users of those nodes", ErrClientID, l.ClientID, bridgeIDPrefix)
	case l.ClientID == InlineClientID:
		return fmt.Errorf("%w: %q is the broker's own client id", ErrClientID, l.ClientID)
	}
	if l.HasWill && !allowed(p.grants[u.Name], l.WillTopic, true) {
		return fmt.Errorf("%w: %q: the user may not publish there", ErrWill, l.WillTopic)
	}
	return nil
}

// verify reports whether password matches hash, a token hash or bcrypt's.
func verify(hash string, password []byte) bool {
	if strings.HasPrefix(hash, tokenScheme) {
		return checkToken(hash, password)
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), password) == nil
}

// Costly reports whether checking the password of the user called username
// is slow: a bcrypt hash. Only those checks wait for the hook's admission
// gate; token checks and unknown names take microseconds.
func (p *Policy) Costly(username string) bool {
	u, ok := p.users[username]
	return ok && !u.Generated()
}

// bridgeIDPrefix starts every bridge's client ID, "bridge:" (the ID of a node
// with empty names is "bridge::").
var bridgeIDPrefix = strings.TrimSuffix(wire.Node{}.ClientID(), ":")
