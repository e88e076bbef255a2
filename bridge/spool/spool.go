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
	"errors"
	"fmt"
	"os"
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
