package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func (s *Spool) syncActiveLocked() error {
	if err := s.opts.syncSegment(s.active.f); err != nil {
		name := filepath.Base(s.active.path)
		s.syncFailedLocked()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	s.markSyncedLocked(s.writes)
	return nil
}

// syncFailedLocked seals the active segment after a failed fsync. Linux may
// drop the pages it could not write, mark them clean and report the error
// only once: a later fsync of the same file then succeeds without them, and
// would make the seq reservations written there count as durable although
// they may be gone, so that a power cut reuses seq numbers. Nothing is
// written to that file again; the next append starts a new segment whose
// first record is a snapshot of the state, synced before it counts.
func (s *Spool) syncFailedLocked() {
	s.syncErrs++
	s.sealLocked()
}

// markSyncedLocked records that the log is on disk up to write w: every
// snapshot written so far, hence every reservation, is durable.
func (s *Spool) markSyncedLocked(w uint64) {
	s.synced = max(s.synced, w)
	for _, st := range s.streams {
		st.durable = max(st.durable, st.reserved)
	}
}

// Sync writes what is buffered (acks, seq reservations), fsyncs the log and
// applies the age cap. It runs every SyncEvery on its own; call it directly
// with SyncEvery < 0.
func (s *Spool) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	now := s.opts.Now()
	s.evictLocked(now)
	var werr error
	// Reserve the numbers the next interval will need, if it may need more
	// than are reserved, so that Append does not have to wait for an fsync.
	var extended []seqMark
	for _, st := range s.streams {
		st.perSync, st.sinceSync = st.sinceSync, 0
		if s.opts.SyncEvery != 0 && st.perSync > 0 && st.reserved-st.handed < st.perSync+2 {
			extended = append(extended, st.mark())
			st.reserveTo(st.handed + st.perSync + st.perSync/4 + 4)
		}
	}
	snap := len(extended) > 0
	if s.active == nil && (snap || len(s.acks) > 0) {
		if err := s.rotateLocked(now); err != nil {
			werr = fmt.Errorf("spool: sync: %w", err)
		}
	}
	buf := s.appendAcksLocked(s.buf[:0])
	nacks := len(buf)
	if snap {
		buf = s.appendSnapshotLocked(buf, false)
	}
	s.buf = buf
	if len(buf) > 0 {
		err := errors.New("no segment")
		if s.active != nil {
			err = s.writeLocked(buf)
		}
		switch {
		case err == nil:
			s.acks = s.acks[:0]
			if snap {
				s.writes++
			}
		case snap && s.state != nil && s.state.write(buf[nacks:], s.gen, true) == nil:
			s.markSyncedLocked(s.synced) // the state file write was synced
		default:
			for _, m := range extended {
				m.rollback()
			}
			if werr == nil {
				werr = fmt.Errorf("spool: sync: %w", err)
			}
		}
	}
	if s.active == nil || s.writes == s.synced {
		s.mu.Unlock()
		return werr
	}
	f, w := s.active.f, s.writes
	target := make(map[*stream]uint64, len(s.streams))
	for _, st := range s.streams {
		target[st] = st.reserved
	}
	s.mu.Unlock()

	err := s.opts.syncSegment(f) // without the lock: appends go on meanwhile

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrClosed) { // closed: rotation synced it
		if s.active != nil && s.active.f == f {
			s.syncFailedLocked()
		} else {
			s.syncErrs++
		}
		return fmt.Errorf("spool: sync: %w", err)
	}
	s.synced = max(s.synced, w)
	for st, r := range target {
		st.durable = max(st.durable, r)
	}
	return werr
}

func (s *Spool) run() {
	defer close(s.done)
	every := s.opts.SyncEvery
	if every == 0 { // every Append syncs itself; the timer writes acks and ages
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_ = s.Sync() // failures are counted in Stats.SyncErrors
		case <-s.stop:
			return
		}
	}
}

// Close writes the acks and a final snapshot that marks the stop as clean,
// syncs, and releases the directory. A clean stop lets the next Open go on
// with the exact next seq; an unclean one skips the reserved numbers.
func (s *Spool) Close() error {
	if s.stop != nil {
		s.stopOnce.Do(func() {
			close(s.stop)
			<-s.done
		})
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closed = true
	var errs []error
	buf := s.appendAcksLocked(s.buf[:0])
	nacks := len(buf)
	buf = s.appendSnapshotLocked(buf, true)
	done := false
	if s.active != nil {
		if err := s.writeLocked(buf); err == nil {
			done = true
			if err := s.opts.syncSegment(s.active.f); err != nil {
				errs = append(errs, err)
			}
		}
		if s.active != nil {
			s.sealLocked()
		}
	}
	if !done && s.state != nil {
		if err := s.state.write(buf[nacks:], s.gen, true); err != nil {
			errs = append(errs, err)
		}
	}
	if s.state != nil {
		errs = append(errs, s.state.close())
	}
	errs = append(errs, s.dirLock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}
