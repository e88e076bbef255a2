package store

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
)

// journalPrefix keeps the journal's keys apart from mochi's (CL, SUB, RET,
// IFM, SYS).
const journalPrefix = "SFJ_"

// The journal closes the window mochi leaves between a PUBACK and the fan-out:
// mochi acknowledges a QoS 1 publish, then queues it for each subscriber and
// stores the copies for persistent sessions. A crash in between loses a
// message its publisher has already forgotten. Begin stores the publish
// before the PUBACK; Done deletes it after the fan-out; at start, Replay
// publishes again whatever is left.

// ErrNoSpace refuses a publish while the volume is too full to store it.
var ErrNoSpace = errors.New("the store's volume is full")

// Begin writes pk, received from cl, to the journal and returns its key for
// Done, and with --store-sync the Ticket of the fsync that makes it durable:
// the caller must not acknowledge pk before Synced or WaitSynced says so.
// The entry is written without an fsync of its own so that the broker can
// read on while it waits (SyncGroup). In stock mode it writes nothing and
// returns "".
func (h *Hook) Begin(cl *mqtt.Client, pk packets.Packet) (string, Ticket, error) {
	if h.opts.Stock {
		return "", 0, nil
	}
	if err := h.space.err(); err != nil {
		return "", 0, ErrNoSpace
	}
	key := fmt.Sprintf("%s%016x", journalPrefix, h.journalSeq.Add(1))
	if err := h.set(key, message(storage.InflightKey, key, cl.ID, pk), pebble.NoSync); err != nil {
		return "", 0, err
	}
	if !h.opts.Sync {
		return key, 0, nil
	}
	return key, h.group.Ticket(), nil
}

// Synced reports whether t's journal entries are on disk, without waiting.
func (h *Hook) Synced(t Ticket) bool { return h.group.Synced(t) }

// WaitSynced returns once t's journal entries are on disk, or the fsync's
// error: then they may not be, and must not be acknowledged.
func (h *Hook) WaitSynced(t Ticket) error { return h.group.WaitSynced(t) }

// Done deletes a journal entry once its publish has been fanned out. It is
// not fsynced: the write-ahead log keeps writes in order, so the deletion
// reaches the disk only after the copies the fan-out stored.
func (h *Hook) Done(key string) {
	if key != "" {
		_ = h.del(key, pebble.NoSync)
	}
}

// Replay publishes every journal entry again, oldest first, through publish,
// and deletes it after; an entry that cannot be decoded is logged, counted
// and deleted. It returns how many it published.
func (h *Hook) Replay(publish func(storage.Message) error) (int, error) {
	type entry struct {
		key string
		m   storage.Message
		err error
	}
	var pending []entry
	if !h.guard(func() {
		_ = h.scan(journalPrefix, func(k, v []byte) error {
			e := entry{key: string(k)}
			e.err = e.m.UnmarshalBinary(v)
			pending = append(pending, e)
			return nil
		})
	}) {
		return 0, storage.ErrDBFileNotOpen
	}
	n := 0
	for _, e := range pending {
		if e.err != nil {
			h.count("read")
			h.logger().Error("store journal entry unreadable; deleted", "key", e.key, "err", e.err)
		} else if err := publish(e.m); err != nil {
			return n, fmt.Errorf("replay journal entry %s (topic %s): %w", e.key, e.m.TopicName, err)
		} else {
			n++
		}
		h.Done(e.key)
	}
	return n, nil
}
