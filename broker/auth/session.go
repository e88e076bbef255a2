package auth

import (
	"errors"
	"fmt"

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
	switch {
	case clientID == InlineClientID:
		return fmt.Errorf("%w: %q is the broker's own client id", ErrClientID, clientID)
	case h.Held && h.User != user:
		return fmt.Errorf("%w: %w: %q is held by user %q, connected or as a persistent session; choose another id",
			ErrClientID, ErrSessionOwner, clientID, clip(h.User))
	}
	return nil
}

// clip bounds a client-supplied string in a log line or an error.
func clip(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
