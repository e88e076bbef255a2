package spool

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// appendSnapshotLocked appends a STATE record with the next generation.
func (s *Spool) appendSnapshotLocked(dst []byte, clean bool) []byte {
	s.gen++
	sn := snapshot{gen: s.gen, clean: clean, boot: s.boot, nextID: s.nextID,
		evictLow: s.evictLow, drops: s.drops, streams: sortedStreams(s.streams)}
	s.body = sn.appendBody(s.body[:0])
	return appendRecord(dst, recState, s.body)
}

// ensureActiveLocked makes sure there is an active segment with room.
func (s *Spool) ensureActiveLocked(now time.Time, n int) error {
	if a := s.active; a != nil {
		hasData := a.end > a.first
		full := hasData && a.size+int64(n)+128 > s.opts.SegmentBytes
		old := hasData && s.opts.MaxAge > 0 && now.Unix()-a.base > int64(s.opts.MaxAge/time.Second)/16
		if !full && !old {
			return nil
		}
	}
	return s.rotateLocked(now)
}

// rotateLocked closes the active segment (synced) and starts a new one,
// whose first record is a snapshot of the state: the newest segment always
// carries the whole state, so older ones can be deleted freely.
func (s *Spool) rotateLocked(now time.Time) error {
	if a := s.active; a != nil {
		if len(s.acks) > 0 {
			if err := s.writeLocked(s.appendAcksLocked(s.buf[:0])); err == nil {
				s.acks = s.acks[:0]
			}
		}
		// writeLocked may have sealed it, and a failed sync does: the new
		// segment's snapshot carries the state either way.
		if s.active == a && s.syncActiveLocked() == nil {
			s.sealLocked()
		}
		s.trimLocked()
	}
	base := now.Unix()
	for try := 0; ; try++ {
		g := newSegment(s.dir, s.nextID, base+int64(try))
		f, err := os.OpenFile(g.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
		if errors.Is(err, fs.ErrExist) && try < 8 {
			continue
		}
		if err != nil {
			return err
		}
		buf := s.appendSnapshotLocked(s.buf[:0], false)
		_, err = f.WriteAt(buf, 0)
		if err == nil {
			err = s.opts.syncSegment(f)
		}
		if err == nil {
			err = syncDir(s.dir)
		}
		if err != nil {
			f.Close()
			os.Remove(g.path)
			return err
		}
		g.size, g.f = int64(len(buf)), f
		s.segs = append(s.segs, g)
		s.active = g
		s.bytes += g.size
		s.writes++
		s.markSyncedLocked(s.writes)
		return nil
	}
}

// sealLocked closes the active segment's file; its compression tables go,
// its references stay for replay.
func (s *Spool) sealLocked() {
	a := s.active
	a.f.Close()
	a.f = nil
	for _, ss := range a.streams {
		ss.enc = nil
	}
	s.active = nil
}

// writeLocked appends buf to the active segment. On failure nothing of buf
// stays in the file: a partial write is cut off again; if even that fails
// the segment is sealed so that nothing is ever written after the garbage.
func (s *Spool) writeLocked(buf []byte) error {
	a := s.active
	n, err := a.f.WriteAt(buf, a.size)
	if err != nil {
		if n > 0 {
			if terr := a.f.Truncate(a.size); terr != nil {
				_ = a.f.Sync()
				s.sealLocked()
			}
		}
		return err
	}
	a.size += int64(len(buf))
	s.bytes += int64(len(buf))
	return nil
}
