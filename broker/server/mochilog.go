package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// perMessage are mochi's warnings that come once per message rather than
// once per event: a session whose in-flight store is full, or that ran out
// of packet ids, logs every message dropped for it. On a Pi's SD card a
// stalled archiver would write a line per reading of the whole farm.
var perMessage = map[string]bool{
	"client store quota reached": true,
	"packet ids exhausted":       true,
}

// repeatEvery is how often a per-message warning is let through for one
// client; the next one says how many were held back.
const repeatEvery = time.Minute

// mochiLog is the handler mochi's own logger writes through. It lets a
// per-message warning through once per repeatEvery and client, and writes a
// packet attached to a record ("pk", which mochi logs whole, payload
// included, on every failed packet) as its type and size only: a reading
// has no place in the broker's log, and a 64 KiB packet makes a 300 KiB line.
type mochiLog struct {
	slog.Handler
	state *repeatState
}

type repeatState struct {
	mu   sync.Mutex
	last map[string]repeat // by message and client
}

type repeat struct {
	at         time.Time
	suppressed int
}

func newMochiLog(h slog.Handler) *mochiLog {
	return &mochiLog{Handler: h, state: &repeatState{last: map[string]repeat{}}}
}

func (h *mochiLog) Handle(ctx context.Context, r slog.Record) error {
	if perMessage[r.Message] {
		key := r.Message + "\x00" + clientOf(r)
		h.state.mu.Lock()
		prev, seen := h.state.last[key]
		if seen && r.Time.Sub(prev.at) < repeatEvery {
			prev.suppressed++
			h.state.last[key] = prev
			h.state.mu.Unlock()
			return nil
		}
		h.state.last[key] = repeat{at: r.Time}
		h.state.mu.Unlock()
		if prev.suppressed > 0 {
			r.AddAttrs(slog.Int("suppressed", prev.suppressed))
		}
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if pk, ok := a.Value.Any().(packets.Packet); ok {
			a = slog.Group(a.Key, "type", packets.PacketNames[pk.FixedHeader.Type], "bytes", pk.FixedHeader.Remaining)
		}
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h *mochiLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &mochiLog{Handler: h.Handler.WithAttrs(as), state: h.state}
}

func (h *mochiLog) WithGroup(name string) slog.Handler {
	return &mochiLog{Handler: h.Handler.WithGroup(name), state: h.state}
}

// clientOf is the record's "client" attribute, the client ID mochi logs.
func clientOf(r slog.Record) string {
	id := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "client" {
			id = a.Value.String()
			return false
		}
		return true
	})
	return id
}
