package spool

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"time"
)

// Cursor walks the unacknowledged readings oldest first, which is also each
// stream's seq order. It reads the segment files one at a time and holds no
// lock between calls, so appends, acks and evictions go on meanwhile.
//
// A cursor covers the readings appended before Replay was called: a
// publisher creates one when the broker connects and publishes what it
// returns on the backlog topics, while readings appended after that go live
// (and, if they fail, wait for the next connection's cursor). A reading acked
// or evicted before the cursor reaches it is skipped. A reading whose live
// publish is still in flight when Replay is called may be returned too; the
// duplicate is harmless under at-least-once, or the caller skips the ids it
// has in flight.
type Cursor struct {
	s      *Spool
	next   uint64 // the next id to consider
	end    uint64 // ids from here on are not this cursor's
	seg    *segment
	segEnd uint64
	buf    []byte
	pos    int
}

// Replay returns a cursor over the readings not yet acknowledged.
func (s *Spool) Replay() *Cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &Cursor{s: s, end: s.nextID, next: s.nextID}
	if len(s.segs) > 0 {
		c.next = s.segs[0].first
	}
	return c
}

// Next returns the next unacknowledged reading, or io.EOF after the last.
func (c *Cursor) Next() (Record, error) {
	for {
		if c.seg == nil {
			if err := c.load(); err != nil {
				return Record{}, err
			}
		}
		for c.pos < len(c.buf) {
			typ, body, n, ok := parseRecord(c.buf[c.pos:])
			if !ok { // damage Open already skipped and counted
				if c.pos = resync(c.buf, c.pos); c.pos < 0 {
					c.pos = len(c.buf)
				}
				continue
			}
			c.pos += n
			if typ != recData {
				continue
			}
			h, p, err := parseData(body, c.seg.first)
			if err != nil || h.id < c.next || h.id >= c.segEnd {
				continue
			}
			rec, ok, err := c.decode(h, p)
			if err != nil {
				return Record{}, err
			}
			if ok {
				c.next = h.id + 1
				return rec, nil
			}
		}
		c.next = max(c.next, c.segEnd)
		c.seg, c.buf = nil, c.buf[:0]
	}
}

// decode turns a DATA record into a Record if it is still pending.
func (c *Cursor) decode(h dataHeader, p []byte) (Record, bool, error) {
	s := c.s
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Record{}, false, ErrClosed
	}
	pending := c.seg.isPending(h.id)
	var ss *segStream
	if h.idx < uint64(len(c.seg.streams)) {
		ss = c.seg.streams[h.idx]
	}
	s.mu.Unlock()
	if !pending || ss == nil {
		return Record{}, false, nil
	}
	var payload []byte
	if h.delta {
		var err error
		if payload, err = decodeDelta(nil, p, ss.ref, MaxPayload); err != nil {
			// An intact record that does not decode: not ours to replay.
			return Record{}, false, nil
		}
	} else {
		payload = append([]byte(nil), p...)
	}
	return Record{ID: h.id, Stream: ss.name, Seq: h.seq, Time: time.Unix(c.seg.base+int64(h.dt), 0), Payload: payload}, true, nil
}

// load reads the segment that holds the next pending id into c.buf.
func (c *Cursor) load() error {
	s := c.s
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if c.next >= c.end {
			s.mu.Unlock()
			return io.EOF
		}
		i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].end > c.next })
		if i == len(s.segs) {
			s.mu.Unlock()
			return io.EOF
		}
		g := s.segs[i]
		if g.first > c.next || g.npending == 0 {
			c.next = max(c.next, g.first)
			if g.npending == 0 {
				c.next = g.end
			}
			s.mu.Unlock()
			continue
		}
		size, path, segEnd := g.size, g.path, min(g.end, c.end)
		s.mu.Unlock()

		if int64(cap(c.buf)) < size {
			c.buf = make([]byte, size)
		}
		c.buf = c.buf[:size]
		err := readAt(path, c.buf)
		if errors.Is(err, fs.ErrNotExist) { // evicted or fully acked meanwhile
			c.next = segEnd
			continue
		}
		if err != nil {
			return fmt.Errorf("spool: replay: %w", err)
		}
		c.seg, c.segEnd, c.pos = g, segEnd, 0
		return nil
	}
}

func readAt(path string, b []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.ReadFull(f, b)
	return err
}
