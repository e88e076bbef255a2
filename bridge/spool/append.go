package spool

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Append assigns stream's next seq, calls encode with it to build the
// payload, appends the reading to the log and returns it. encode runs with
// the spool locked and must not call the Spool.
//
// The results, for the caller that publishes live:
//   - err == nil: the reading is in the spool (rec.ID != 0). Publish it;
//     Ack(rec.ID) on PUBACK; if it is not delivered, leave it: replay will.
//   - err != nil, rec.Seq != 0, rec.ID == 0: the reading has its number but
//     is not in the spool (disk full: errors.Is(err, ErrNoSpace) and
//     errors.Is(err, syscall.ENOSPC)). Publish it straight through; if it is
//     not delivered, CountDropped(1). The next Append tries the disk again.
//   - err != nil, rec.ID != 0: the reading is in the spool but its fsync
//     failed; treat it as the first case.
//   - err != nil, rec.Seq == 0: nothing was taken (encode failed, or no seq
//     number could be reserved durably); the number is not used up.
func (s *Spool) Append(stream string, encode func(seq uint64) ([]byte, error)) (Record, error) {
	return s.append(stream, encode, false)
}

// AppendLive is Append for a reading about to be published live: a
// reading kept in the spool is returned claimed (see Claim), in the same
// step, so that a replay running meanwhile cannot claim it first and send a
// fresh reading on the backlog topic only. The caller must Ack or Release it.
func (s *Spool) AppendLive(stream string, encode func(seq uint64) ([]byte, error)) (Record, error) {
	return s.append(stream, encode, true)
}

func (s *Spool) append(stream string, encode func(seq uint64) ([]byte, error), claim bool) (Record, error) {
	if stream == "" || len(stream) > maxStreamName {
		return Record{}, fmt.Errorf("spool: stream name %q must have 1 to %d bytes", stream, maxStreamName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Record{}, ErrClosed
	}
	st := s.streamLocked(stream)
	if st.handed >= MaxSeq {
		return Record{}, fmt.Errorf("spool: %s: seq numbers exhausted", stream)
	}
	seq := st.handed + 1
	payload, err := encode(seq)
	if err != nil {
		return Record{}, fmt.Errorf("spool: encode %s seq %d: %w", stream, seq, err)
	}
	if len(payload) > MaxPayload {
		return Record{}, fmt.Errorf("spool: %s seq %d: payload of %d bytes is over the %d byte limit", stream, seq, len(payload), MaxPayload)
	}
	now := s.opts.Now()
	rec := Record{Stream: stream, Seq: seq, Time: time.Unix(now.Unix(), 0), Payload: payload}
	written, err := s.appendLocked(st, &rec, now)
	if !written {
		return s.appendFailedLocked(st, rec, err)
	}
	if claim {
		s.inflight[rec.ID] = struct{}{}
	}
	s.evictLocked(now)
	if err != nil {
		return rec, fmt.Errorf("spool: append %s seq %d: %w", stream, seq, err)
	}
	return rec, nil
}

// appendLocked writes rec; written says whether it reached the file (the
// page cache), err may then still report a failed fsync.
func (s *Spool) appendLocked(st *stream, rec *Record, now time.Time) (written bool, err error) {
	if err := s.ensureActiveLocked(now, len(rec.Payload)); err != nil {
		return false, err
	}
	a := s.active
	buf := s.buf[:0]
	mark := st.mark()
	// A number past the durable reservation needs a new reservation on
	// disk first; with SyncEvery 0 the record's own fsync is enough.
	reserve := s.opts.SyncEvery != 0 && rec.Seq > st.durable
	if reserve {
		st.reserveTo(rec.Seq - 1 + s.reserveAhead(st))
		buf = s.appendSnapshotLocked(buf, false)
	}
	// The stream's reference goes into the segment twice before its first
	// reading (a damaged byte cannot take both), again in a later 512-byte
	// sector (nor a damaged sector), and then every dictRepeat bytes.
	idx, ss := a.streamIndex(rec.Stream, rec.Payload)
	dictEnd, copies := -1, 0
	if off := a.size + int64(len(buf)); ss.copies == 0 ||
		ss.copies == 2 && off/512 > (ss.dictEnd-1)/512 || off-ss.dictEnd >= dictRepeat {
		s.body = appendDict(s.body[:0], idx, ss.name, ss.ref)
		copies = 1
		if ss.copies == 0 {
			copies = 2
		}
		for i := 0; i < copies; i++ {
			buf = appendRecord(buf, recDict, s.body)
		}
		dictEnd = len(buf)
	}
	h := dataHeader{idx: idx, id: s.nextID, seq: rec.Seq, dt: uint64(max(0, now.Unix()-a.base))}
	p := rec.Payload
	if ss.enc != nil {
		s.scratch = encodeDelta(s.scratch[:0], rec.Payload, ss.enc)
		if len(s.scratch) < len(p) {
			h.delta, p = true, s.scratch
		}
	}
	s.body = appendData(s.body[:0], h, a.first, p)
	buf = appendRecord(buf, recData, s.body)
	s.buf = buf
	if err := s.writeLocked(buf); err != nil {
		mark.rollback()
		return false, err
	}
	if dictEnd >= 0 {
		ss.copies += copies
		ss.dictEnd = a.size - int64(len(buf)) + int64(dictEnd)
	}
	rec.ID = h.id
	s.nextID++
	a.end = s.nextID
	a.pending.set(h.id - a.first)
	a.npending++
	a.newest = max(a.newest, a.base+int64(h.dt))
	s.depth++
	s.writes++
	st.handed = rec.Seq
	st.sinceSync++
	if reserve || s.opts.SyncEvery == 0 {
		return true, s.syncActiveLocked()
	}
	return true, nil
}

// appendFailedLocked handles a reading that could not be written: it keeps
// its number if the number can be accounted for without the log.
func (s *Spool) appendFailedLocked(st *stream, rec Record, err error) (Record, error) {
	werr := fmt.Errorf("spool: append %s seq %d: %w", rec.Stream, rec.Seq, err)
	if isNoSpace(err) {
		werr = fmt.Errorf("spool: append %s seq %d: %w: %w", rec.Stream, rec.Seq, ErrNoSpace, err)
	}
	if s.state == nil {
		return Record{}, werr
	}
	// The state file records the number as handed out (so a restart in
	// the same boot resumes after it) and, if needed, reserves it durably.
	mark := st.mark()
	st.handed = rec.Seq
	sync := rec.Seq > st.durable
	if sync {
		st.reserveTo(rec.Seq - 1 + s.reserveAhead(st))
	}
	buf := s.appendSnapshotLocked(s.buf[:0], false)
	if serr := s.state.write(buf, s.gen, sync); serr != nil {
		mark.rollback()
		return Record{}, werr
	}
	if sync {
		st.durable = st.reserved
	}
	st.sinceSync++
	return rec, werr
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
