package spool

// stream is one stream's seq state. Numbers up to reserved may be handed
// out once a snapshot saying so is durable (durable); after an unclean stop
// the spool resumes past the reservation, so no number is handed out twice.
type stream struct {
	name      string
	handed    uint64 // last seq handed out
	reserved  uint64 // R in the newest snapshot written
	durable   uint64 // R in a snapshot known to be on disk
	sinceSync uint64 // appends since the last Sync
	perSync   uint64 // appends in the last Sync interval
}

// reserveTo raises the reservation to cover the numbers up to r; it never
// lowers it.
func (st *stream) reserveTo(r uint64) { st.reserved = min(MaxSeq, max(st.reserved, r)) }

// seqMark is a stream's numbers before a change that is undone when the
// write that records it fails.
type seqMark struct {
	st               *stream
	handed, reserved uint64
}

func (st *stream) mark() seqMark { return seqMark{st, st.handed, st.reserved} }

// rollback restores the numbers mark saw.
func (m seqMark) rollback() { m.st.handed, m.st.reserved = m.handed, m.reserved }

func (s *Spool) streamLocked(name string) *stream {
	st := s.streams[name]
	if st == nil {
		st = &stream{name: name}
		s.streams[name] = st
	}
	return st
}

// reserveAhead is how many seq numbers past the current one a reservation
// covers: the appends expected before the next sync, and a margin.
func (s *Spool) reserveAhead(st *stream) uint64 {
	if s.opts.SyncEvery == 0 {
		return 1
	}
	return max(8, st.perSync+st.perSync/4+4)
}
