package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// trimLocked deletes sealed segments that hold nothing unacknowledged: from
// the head only, so that the segments on disk always hold consecutive ids,
// and segments that hold no ids at all.
func (s *Spool) trimLocked() {
	keep := s.segs[:0]
	head := true
	for _, g := range s.segs {
		if g != s.active && g.npending == 0 && (head || g.first == g.end) {
			if err := os.Remove(g.path); err == nil || errors.Is(err, fs.ErrNotExist) {
				s.bytes -= g.size
				continue
			}
		}
		head = false
		keep = append(keep, g)
	}
	clear(s.segs[len(keep):])
	s.segs = keep
}

// evictLocked applies the caps: it evicts the oldest sealed segments while
// the spool is over MaxBytes or their newest reading is older than MaxAge.
// A segment with readings in flight is marked and waits until they settle
// (at most a publisher's ack timeout; no new claims are granted in it), so
// that each reading is counted once, by its outcome. The count of evicted
// readings is on disk before the file goes; when it cannot be written (full
// disk) nothing is evicted.
func (s *Spool) evictLocked(now time.Time) {
	for len(s.segs) > 0 && s.segs[0] != s.active {
		g := s.segs[0]
		over := s.bytes > s.opts.MaxBytes
		old := s.opts.MaxAge > 0 && g.base >= clockSet && g.newest > 0 && g.newest < now.Add(-s.opts.MaxAge).Unix()
		if !over && !old {
			return
		}
		if s.inflightInLocked(g) {
			g.evicting = true
			return
		}
		n := uint64(g.npending)
		prevLow := s.evictLow
		s.drops.Evicted += n
		s.evictLow = g.end
		if err := s.persistLocked(true); err != nil {
			s.drops.Evicted -= n
			s.evictLow = prevLow
			return
		}
		_ = os.Remove(g.path) // if this fails, Open removes it: its ids are below evictLow
		s.depth -= g.npending
		g.pending, g.npending = bitset{}, 0
		s.bytes -= g.size
		s.segs[0] = nil
		s.segs = s.segs[1:]
	}
}

// inflightInLocked reports whether a reading of g is claimed.
func (s *Spool) inflightInLocked(g *segment) bool {
	for id := range s.inflight {
		if g.first <= id && id < g.end {
			return true
		}
	}
	return false
}

// clockSet is 2020-01-01 in Unix seconds: a clock before it was never set.
const clockSet = 1577836800

// persistLocked writes a snapshot: to the log, or to the state file when the
// log cannot take it. sync makes it durable now.
func (s *Spool) persistLocked(sync bool) error {
	buf := s.appendSnapshotLocked(s.buf[:0], false)
	s.buf = buf
	var err error
	if s.active != nil {
		if err = s.writeLocked(buf); err == nil {
			s.writes++
			if sync {
				return s.syncActiveLocked()
			}
			return nil
		}
	}
	if s.state == nil {
		if err == nil {
			err = errors.New("no segment to write to and no state file")
		}
		return err
	}
	return s.state.write(buf, s.gen, true)
}

// CountDropped adds n readings to the dropped count: readings that got a
// seq from Append but are neither in the spool nor delivered. The count is
// kept with the rest of the state (durable with the next sync).
func (s *Spool) CountDropped(n uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.drops.Caller += n
	if err := s.persistLocked(false); err != nil {
		return fmt.Errorf("spool: count dropped: %w", err)
	}
	return nil
}
