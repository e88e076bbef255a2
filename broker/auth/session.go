package auth

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// InlineClientID is the client id of mochi's inline client, the broker's own
// publisher (the gap summaries). mochi keeps it outside its client list, so a
// network client could otherwise connect under it and be taken for the
// broker in logs and $SYS; nobody may use it.
const InlineClientID = "inline"

// Holder is who holds a client id when a new connection asks for it: the
// user name of a connected client, or of an offline persistent session (mochi
// stores the user name with the session, so this survives a restart). Held is
// false when the id is free.
type Holder struct {
	User string
	Held bool
}

// ClientHolders tells who holds a client id from mochi's client list: it has
// every connected client and every persistent session, those restored from the
// store at start included, each with the user name it connected with (mochi's
// storage keeps it: storage.Client.Username).
func ClientHolders(m *mqtt.Server) func(clientID string) Holder {
	return func(id string) Holder {
		cl, ok := m.Clients.Get(id)
		if !ok {
			return Holder{}
		}
		return Holder{User: string(cl.Properties.Username), Held: true}
	}
}

// ErrSessionOwner is why a client id held by another user is refused.
var ErrSessionOwner = errors.New("client id held by another user")

// claim reports whether user may connect on clientID, whose holder is h.
//
// MQTT lets a client that connects with an id in use take over its session:
// the holder is disconnected, and the newcomer inherits its subscriptions and
// its queue, which mochi resends without an ACL check. A persistent session
// belongs to the user who made it (the wire contract): a connection on an id
// that another user holds, connected or not, is refused, so that a leaked
// password of one reader can neither read an archiver's queued readings nor
// knock Grafana or Home Assistant off. The holder itself may take its own
// session back (a reconnect that finds its stale connection still open), and
// consumers still choose their ids freely. This applies to admins too: an
// admin who wants an id another user holds deletes that user.
func claim(user, clientID string, h Holder) error {
	if h.Held && h.User != user {
		return fmt.Errorf("%w: %w: %q is held by user %q, connected or as a persistent session; choose another id",
			ErrClientID, ErrSessionOwner, clientID, clip(h.User))
	}
	return nil
}

// sessions holds each client id for the user who was admitted on it, from the
// moment the hook admits the connection until mochi has the client in its
// list.
//
// mochi v2.7.9 runs OnConnectAuthenticate, then inheritClientSession (which
// takes over a session found on the id), and only then adds the client to its
// list. The list alone would leave a gap: two users connecting at once on a
// new id both find it free while their passwords are checked, both are
// admitted, and the later takes over the session the earlier just made. So
// the hook looks the holder up and claims the id in one step under a lock,
// after every other check has passed; the claim lasts while the admitted
// client is open, and is dropped once the client is in mochi's list
// (OnSessionEstablished), or found closed (a connection that failed between
// the two).
type sessions struct {
	holders func(clientID string) Holder // mochi's list; nil: none
	mu      sync.Mutex
	pending map[string]admitted // by client id
	sweepAt int                 // sweep the closed ones when pending reaches this
}

// admitted are the clients admitted on one id and not yet in mochi's list,
// all of one user (a user may take its own session over).
type admitted struct {
	user    string
	clients []*mqtt.Client
}

// sweepFloor bounds the claims of connections that failed after admission
// and were never swept by a later claim on their id.
const sweepFloor = 1024

func newSessions(holders func(string) Holder) *sessions {
	return &sessions{holders: holders, pending: make(map[string]admitted), sweepAt: sweepFloor}
}

// claim holds cl's id for user if nobody else holds it, connected, offline or
// admitted a moment ago; it returns why not otherwise (see claim).
func (s *sessions) claim(cl *mqtt.Client, user string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.holder(cl.ID)
	if err := claim(user, cl.ID, h); err != nil {
		return err
	}
	a, _ := s.live(cl.ID)
	s.pending[cl.ID] = admitted{user: user, clients: append(a.clients, cl)}
	if len(s.pending) >= s.sweepAt {
		for id := range s.pending {
			s.live(id)
		}
		s.sweepAt = max(sweepFloor, 2*len(s.pending))
	}
	return nil
}

// holder is who holds id: mochi's list has the say once a client is in it;
// until then, the user admitted on it.
func (s *sessions) holder(id string) Holder {
	if s.holders != nil {
		if h := s.holders(id); h.Held {
			return h
		}
	}
	if a, ok := s.live(id); ok {
		return Holder{User: a.user, Held: true}
	}
	return Holder{}
}

// live drops the closed clients admitted on id and returns those left.
func (s *sessions) live(id string) (admitted, bool) {
	a, ok := s.pending[id]
	if !ok {
		return a, false
	}
	open := a.clients[:0]
	for _, cl := range a.clients {
		if !cl.Closed() {
			open = append(open, cl)
		}
	}
	if len(open) == 0 {
		delete(s.pending, id)
		return admitted{}, false
	}
	a.clients = open
	s.pending[id] = a
	return a, true
}

// release drops cl's claim: mochi's list has it now.
func (s *sessions) release(cl *mqtt.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.pending[cl.ID]
	if !ok {
		return
	}
	a.clients = slices.DeleteFunc(a.clients, func(c *mqtt.Client) bool { return c == cl })
	if len(a.clients) == 0 {
		delete(s.pending, cl.ID)
		return
	}
	s.pending[cl.ID] = a
}

// clip bounds a client-supplied string in a log line or an error.
func clip(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
