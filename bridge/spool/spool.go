// Package spool is the bridge's crash-safe, bounded disk queue of readings,
// and the keeper of each stream's sequence numbers.
//
// Every reading is appended (Append, which also assigns the stream's next
// seq) before it is published, and stays until the broker's PUBACK (Ack).
// Readings that could not be delivered are replayed oldest first with a
// Cursor. The spool is a log of segment files; README.md in this directory
// describes the format, the fsync policy, what a power cut can lose, how seq
// numbers are reserved so that none is ever handed out twice, and the
// measurements behind these choices.
//
// A Spool is safe for concurrent use: typically a sensor goroutine appends
// while a publisher goroutine acknowledges and replays.
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Options tune a Spool. Start from DefaultOptions.
type Options struct {
	// SyncEvery is how often appended records are made durable (fsync).
	// A power cut loses at most the records appended in the last SyncEvery
	// (a crash of the process alone loses nothing). 0 syncs on every
	// Append, which writes a flash page per reading (acks and the age cap
	// then run on a 1 s timer); a negative value runs no timer at all and
	// leaves it to Sync and Close.
	SyncEvery time.Duration
	// MaxBytes caps the segment files' total size; past it the oldest
	// segment is evicted and its unacknowledged readings counted dropped.
	MaxBytes int64
	// MaxAge evicts a segment once its newest reading is older than this
	// (negative: no age cap). A segment spans at most MaxAge/16, so a
	// reading is kept at least MaxAge and at most about 1.07 MaxAge. Age is
	// judged by the wall clock; a segment written while the clock said a
	// year before 2020 (a Pi without RTC before NTP) is left to the size cap.
	MaxAge time.Duration
	// SegmentBytes is the size at which a segment is closed and a new one
	// started: the unit of eviction and of deletion.
	SegmentBytes int64
	// Now is the clock (time.Now if nil).
	Now func() time.Time

	bootID func() ([16]byte, bool) // tests simulate a reboot with it
	// syncSegment fsyncs a segment file ((*os.File).Sync if nil); tests
	// make it fail as a failing SD card does.
	syncSegment func(*os.File) error
}

// DefaultOptions suit a Pi Zero W with an SD card publishing two streams at
// 1 Hz; README.md shows the arithmetic.
func DefaultOptions() Options {
	return Options{
		SyncEvery:    30 * time.Second,
		MaxBytes:     128 << 20,
		MaxAge:       7 * 24 * time.Hour,
		SegmentBytes: 1 << 20,
	}
}

func (o Options) resolve() (Options, error) {
	d := DefaultOptions()
	if o.MaxBytes == 0 {
		o.MaxBytes = d.MaxBytes
	}
	if o.MaxAge == 0 {
		o.MaxAge = d.MaxAge
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = min(d.SegmentBytes, o.MaxBytes/8)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.bootID == nil {
		o.bootID = readBootID
	}
	if o.syncSegment == nil {
		o.syncSegment = (*os.File).Sync
	}
	switch {
	case o.SegmentBytes < 1024:
		return o, fmt.Errorf("spool: SegmentBytes %d is below 1 KiB", o.SegmentBytes)
	case o.MaxBytes < 4*o.SegmentBytes:
		return o, fmt.Errorf("spool: MaxBytes %d must be at least 4 segments of %d bytes", o.MaxBytes, o.SegmentBytes)
	}
	return o, nil
}

var (
	// ErrClosed is returned by every method once Close was called.
	ErrClosed = errors.New("spool: closed")
	// ErrNoSpace is wrapped by the error of an Append that failed because
	// the disk is full; errors.Is(err, syscall.ENOSPC) holds as well.
	ErrNoSpace = fmt.Errorf("spool: disk full: %w", syscall.ENOSPC)
)

const maxStreamName = 64

// Record is one reading.
type Record struct {
	// ID identifies the record in the spool, for Ack; 0 means the reading
	// is not in the spool (see Append).
	ID     uint64
	Stream string
	Seq    uint64
	// Time is when it was appended, to the second.
	Time    time.Time
	Payload []byte
}

// Stats describe a spool at one instant.
type Stats struct {
	Depth    int   // readings not yet acknowledged
	Bytes    int64 // segment files plus the state file
	Segments int
	// Dropped is the number of readings lost, cumulative and persistent:
	// Drops.Total().
	Dropped uint64
	Drops   DropCounts
	// LastSeq is each stream's last seq handed out.
	LastSeq map[string]uint64
	// SyncErrors counts failed fsyncs since Open.
	SyncErrors uint64
}

// Recovery says what Open found and repaired.
type Recovery struct {
	// Fresh: there was no spool state yet; nothing was recovered.
	Fresh bool
	// Clean: the previous user called Close.
	Clean bool
	// SameBoot: no reboot since the previous user last wrote, so whatever
	// it wrote is on disk or in the page cache, synced or not.
	SameBoot bool
	// CutBytes were cut from the end of the last segment: a torn record.
	CutBytes int64
	// CorruptRegions were skipped in the middle of segments (a copy of each
	// goes to quarantine/); CorruptReadings are the unacknowledged readings
	// they held, counted in Drops.Corrupt.
	CorruptRegions  int
	CorruptReadings uint64
	// Skipped is, per stream, how many seq numbers were skipped because the
	// stop was unclean (counted in Drops.Skipped).
	Skipped map[string]uint64
}

// Spool is an open spool directory. Only one Spool (in any process) can
// have a directory open at a time.
type Spool struct {
	dir     string
	opts    Options
	boot    [16]byte
	bootOK  bool
	dirLock *os.File

	syncMu sync.Mutex // serialises Sync and Close

	mu       sync.Mutex
	closed   bool
	segs     []*segment // oldest first; the active one, if any, is last
	active   *segment
	nextID   uint64
	gen      uint64
	evictLow uint64
	// inflight are the readings claimed by a publisher (AppendLive, Claim)
	// whose outcome is not known yet. A segment holding one is evicted
	// only once it is settled: a reading whose PUBACK comes in was
	// delivered, and counting it dropped first would make dropped, a
	// counter, go down again.
	inflight map[uint64]struct{}
	drops    DropCounts
	streams  map[string]*stream
	acks     []idRange // acknowledged ids not yet written to the log
	state    *stateFile
	depth    int
	bytes    int64  // segment files
	writes   uint64 // DATA and STATE writes to the log
	synced   uint64 // writes at the last successful fsync
	syncErrs uint64
	recovery Recovery
	buf      []byte
	body     []byte
	scratch  []byte

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

type stream struct {
	name      string
	handed    uint64 // last seq handed out
	reserved  uint64 // R in the newest snapshot written
	durable   uint64 // R in a snapshot known to be on disk
	sinceSync uint64 // appends since the last Sync
	perSync   uint64 // appends in the last Sync interval
}

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

// appendLocked writes rec; written says whether it reached the file (the
// page cache), err may then still report a failed fsync.
func (s *Spool) appendLocked(st *stream, rec *Record, now time.Time) (written bool, err error) {
	if err := s.ensureActiveLocked(now, len(rec.Payload)); err != nil {
		return false, err
	}
	a := s.active
	buf := s.buf[:0]
	prevR := st.reserved
	// A number past the durable reservation needs a new reservation on
	// disk first; with SyncEvery 0 the record's own fsync is enough.
	reserve := s.opts.SyncEvery != 0 && rec.Seq > st.durable
	if reserve {
		st.reserved = min(MaxSeq, max(st.reserved, rec.Seq-1+s.reserveAhead(st)))
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
		st.reserved = prevR
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
	prevH, prevR := st.handed, st.reserved
	st.handed = rec.Seq
	sync := rec.Seq > st.durable
	if sync {
		st.reserved = min(MaxSeq, max(st.reserved, rec.Seq-1+s.reserveAhead(st)))
	}
	buf := s.appendSnapshotLocked(s.buf[:0], false)
	if serr := s.state.write(buf, s.gen, sync); serr != nil {
		st.handed, st.reserved = prevH, prevR
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

// Quarantine moves a poison reading, one the broker will never accept, out
// of the spool: it is appended to quarantine/poison.jsonl with the reason,
// counted dropped and acknowledged. When it cannot be written the reading
// stays in the spool and the error says why.
func (s *Spool) Quarantine(rec Record, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	g := s.segmentOfLocked(rec.ID)
	if g == nil || !g.pending.get(rec.ID-g.first) {
		return nil
	}
	line, err := json.Marshal(struct {
		ID      uint64    `json:"id"`
		Stream  string    `json:"stream"`
		Seq     uint64    `json:"seq"`
		Time    time.Time `json:"time"`
		Reason  string    `json:"reason"`
		Payload string    `json:"payload"`
	}{rec.ID, rec.Stream, rec.Seq, rec.Time, reason, string(rec.Payload)})
	if err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	if err := appendFile(filepath.Join(s.dir, quarantineDir, "poison.jsonl"), append(line, '\n')); err != nil {
		return fmt.Errorf("spool: quarantine %s seq %d: %w", rec.Stream, rec.Seq, err)
	}
	s.drops.Quarantined++
	s.ackLocked(rec.ID)
	if err := s.persistLocked(false); err != nil {
		return fmt.Errorf("spool: quarantine: %w", err)
	}
	return nil
}

const quarantineDir = "quarantine"

func appendFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
	extend := false
	prev := make(map[*stream]uint64, len(s.streams))
	for _, st := range s.streams {
		st.perSync, st.sinceSync = st.sinceSync, 0
		if s.opts.SyncEvery != 0 && st.perSync > 0 && st.reserved-st.handed < st.perSync+2 {
			prev[st] = st.reserved
			st.reserved = min(MaxSeq, st.handed+st.perSync+st.perSync/4+4)
			extend = true
		}
	}
	snap := extend
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
			for st, r := range prev {
				st.reserved = r
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

// Stats returns the spool's current figures.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Depth: s.depth, Bytes: s.bytes, Segments: len(s.segs), Dropped: s.drops.Total(),
		Drops: s.drops, LastSeq: make(map[string]uint64, len(s.streams)), SyncErrors: s.syncErrs}
	if s.state != nil {
		st.Bytes += 2 * stateSlot
	}
	for name, x := range s.streams {
		st.LastSeq[name] = x.handed
	}
	return st
}

// LastSeq returns the stream's last seq handed out (0 if none yet).
func (s *Spool) LastSeq(stream string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[stream]; st != nil {
		return st.handed
	}
	return 0
}

// Recovery returns what Open found.
func (s *Spool) Recovery() Recovery {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.recovery
	r.Skipped = make(map[string]uint64, len(s.recovery.Skipped))
	for k, v := range s.recovery.Skipped {
		r.Skipped[k] = v
	}
	return r
}
