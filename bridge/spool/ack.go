package spool

import "sort"

// Claim marks a reading as being published, for the caller that will Ack
// or Release it, and reports whether it got it: false when someone else has
// it in flight, it is acknowledged or gone, or its segment is waiting to be
// evicted (what is in flight there settles, and the rest is counted dropped).
func (s *Spool) Claim(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.inflight[id]; ok || s.closed {
		return false
	}
	g := s.segmentOfLocked(id)
	if g == nil || g.evicting || !g.pending.get(id-g.first) {
		return false
	}
	s.inflight[id] = struct{}{}
	return true
}

// Release gives up a claim without an acknowledgement: the reading stays in
// the spool for the next replay, or is counted dropped if its segment is
// evicted meanwhile.
func (s *Spool) Release(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, id)
}

// Ack marks a reading as delivered, and releases its claim. Acks may come in
// any order; acking an id twice, or one the spool does not hold, does
// nothing. Acks are buffered and written to the log by the next Sync (sooner
// when 512 ranges are waiting or the segment rotates), and are durable once
// that is fsynced: a crash before that replays those readings again
// (at-least-once). A sealed segment left with nothing unacknowledged is
// deleted at once.
func (s *Spool) Ack(id uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	delete(s.inflight, id)
	s.ackLocked(id)
	return nil
}

func (s *Spool) ackLocked(id uint64) bool {
	g := s.segmentOfLocked(id)
	if g == nil {
		return false // evicted, and counted, while nobody had it in flight
	}
	if !g.pending.get(id - g.first) {
		return false
	}
	g.pending.clear(id - g.first)
	g.npending--
	s.depth--
	s.acks = addID(s.acks, id)
	if len(s.acks) > 512 && s.active != nil { // many scattered acks: write them now
		if err := s.writeLocked(s.appendAcksLocked(s.buf[:0])); err == nil {
			s.acks = s.acks[:0]
		}
	}
	if g != s.active && g.npending == 0 {
		s.trimLocked()
	}
	return true
}

// addID adds id to a sorted list of disjoint ranges.
func addID(rs []idRange, id uint64) []idRange {
	if n := len(rs); n > 0 && rs[n-1].hi == id {
		rs[n-1].hi++
		return rs
	} else if n == 0 || rs[n-1].hi < id {
		return append(rs, idRange{id, id + 1})
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= id })
	switch {
	case rs[i].lo <= id && id < rs[i].hi:
		return rs
	case rs[i].hi == id:
		rs[i].hi++
		if i+1 < len(rs) && rs[i+1].lo == rs[i].hi {
			rs[i].hi = rs[i+1].hi
			rs = append(rs[:i+1], rs[i+2:]...)
		}
		return rs
	case rs[i].lo == id+1:
		rs[i].lo = id
		return rs
	}
	rs = append(rs, idRange{})
	copy(rs[i+1:], rs[i:])
	rs[i] = idRange{id, id + 1}
	return rs
}

func (s *Spool) appendAcksLocked(dst []byte) []byte {
	if len(s.acks) == 0 {
		return dst
	}
	s.body = appendAck(s.body[:0], s.acks)
	return appendRecord(dst, recAck, s.body)
}

// segmentOfLocked returns the segment holding id, or nil.
func (s *Spool) segmentOfLocked(id uint64) *segment {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].end > id })
	if i == len(s.segs) || s.segs[i].first > id {
		return nil
	}
	return s.segs[i]
}
