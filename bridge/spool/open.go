package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// Open opens the spool in dir, creating dir if needed, and recovers it:
//   - a torn record at the end of the last segment is cut (Recovery.CutBytes);
//   - a damaged region inside a segment is skipped, copied to quarantine/ and
//     the unacknowledged readings it held are counted dropped, once;
//   - after an unclean stop, each stream's seq resumes past every number that
//     may have been handed out (see README.md, "Sequence numbers").
//
// Damage never makes Open fail; only an unreadable directory or file does.
// A nil opts means DefaultOptions.
func Open(dir string, opts *Options) (*Spool, error) {
	o := DefaultOptions()
	if opts != nil {
		o = *opts
	}
	o, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, opts: o, dirLock: lock, streams: map[string]*stream{}, inflight: map[uint64]struct{}{}}
	s.boot, s.bootOK = o.bootID()
	if err := s.load(); err != nil {
		for _, g := range s.segs {
			if g.f != nil {
				g.f.Close()
			}
		}
		if s.state != nil {
			s.state.close()
		}
		lock.Close()
		return nil, err
	}
	if o.SyncEvery >= 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.run()
	}
	return s, nil
}

// lockDir takes an exclusive lock on dir, which the kernel releases when
// the process dies.
func lockDir(dir string) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: directory: %w", err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		d.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool: %s is in use by another spool", dir)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	return d, nil
}

// minData is the size of the smallest DATA record.
const minData = 10

// corruptRegion is a damaged stretch of a segment.
type corruptRegion struct {
	seg    *segment
	off, n int64
	after  uint64 // last valid id before the region (seg.first-1 if none)
	before uint64 // first valid id after it; 0 until known
	fresh  bool   // not seen (and counted) by an earlier Open
}

// scanState is what load gathers over all segments.
type scanState struct {
	latest  *snapshot
	maxSeq  map[string]uint64
	acks    []idRange
	regions []*corruptRegion
	orphans map[*segment][]uint64 // ids of readings whose stream is unknown, or out of seq order
}

func (s *Spool) load() error {
	sf, fromState, err := openStateFile(s.dir)
	if err != nil {
		return err
	}
	s.state = sf
	sc := &scanState{latest: fromState, maxSeq: map[string]uint64{}, orphans: map[*segment][]uint64{}}

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		if first, base, ok := parseSegmentName(e.Name()); ok && e.Type().IsRegular() {
			s.segs = append(s.segs, newSegment(s.dir, first, base))
		}
	}
	sort.Slice(s.segs, func(i, j int) bool {
		a, b := s.segs[i], s.segs[j]
		return a.first < b.first || a.first == b.first && a.base < b.base
	})
	var buf []byte
	for i, g := range s.segs {
		g.end = 0 // the last segment's end is found by the scan
		if i+1 < len(s.segs) {
			g.end = s.segs[i+1].first
		}
		if buf, err = readInto(buf, g.path); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		if err := s.scanSegment(sc, g, buf, i == len(s.segs)-1); err != nil {
			return err
		}
	}

	// The state everything else hangs on: the newest snapshot.
	latest := sc.latest
	if latest == nil {
		latest = &snapshot{}
		legacy, err := readLegacySeq(s.dir)
		if err != nil {
			return err
		}
		for name, v := range legacy {
			sc.maxSeq[name] = max(sc.maxSeq[name], v)
		}
	}
	s.gen, s.drops, s.evictLow = latest.gen, latest.drops, latest.evictLow
	s.nextID = max(1, latest.nextID)
	// No id is used twice, not even one only an ack mentions (its reading
	// lost to damage): that ack must not apply to a new reading.
	for _, r := range sc.acks {
		s.nextID = max(s.nextID, r.hi)
	}
	if n := len(s.segs); n > 0 {
		s.nextID = max(s.nextID, s.segs[n-1].end)
		s.segs[n-1].end = s.nextID
	}

	// Acks, then what the damage cost.
	acks := mergeRanges(sc.acks)
	for _, g := range s.segs {
		if g.end <= s.evictLow {
			g.pending = bitset{}
		}
		top := min(g.end, g.first+64*uint64(len(g.pending.w))) // nothing pending above
		for _, r := range overlapping(acks, g.first, top) {
			for id := max(r.lo, g.first); id < min(r.hi, top); id++ {
				g.pending.clear(id - g.first)
			}
		}
		g.npending = g.pending.count()
		s.depth += g.npending
	}
	freshSeg := map[*segment]bool{}
	for _, r := range sc.regions {
		if r.before == 0 {
			r.before = s.nextID
		}
		r.fresh = !exists(regionPath(s.dir, r))
		if !r.fresh {
			continue
		}
		freshSeg[r.seg] = true
		s.recovery.CorruptRegions++
		if r.before > r.after+1 {
			// A reading takes at least minData bytes, which bounds what
			// damage that happens to pass the checksum can claim.
			lost := r.before - r.after - 1 - covered(acks, r.after+1, r.before)
			s.recovery.CorruptReadings += min(lost, uint64(r.n)/minData+1)
		}
	}
	for g, ids := range sc.orphans {
		if !freshSeg[g] {
			continue // counted by the Open that found the damage
		}
		for _, id := range ids {
			if covered(acks, id, id+1) == 0 {
				s.recovery.CorruptReadings++
			}
		}
	}
	s.drops.Corrupt += s.recovery.CorruptReadings

	// Sequence numbers. After a clean stop, or with no reboot since the last
	// write (so nothing written was lost), each stream goes on after the last
	// number handed out. Otherwise some numbers up to the durable reservation
	// may have been handed out with records that the power cut took: skip
	// them all and count them dropped.
	s.recovery.Clean = latest.clean
	s.recovery.Fresh = sc.latest == nil
	s.recovery.SameBoot = s.bootOK && sc.latest != nil && latest.boot == s.boot
	s.recovery.Skipped = map[string]uint64{}
	reserved := map[string]uint64{}
	for _, st := range latest.streams {
		sc.maxSeq[st.name] = max(sc.maxSeq[st.name], st.handed)
		reserved[st.name] = st.reserved
	}
	// Damage (a torn tail cut off, a corrupt region skipped) may have taken
	// records whose numbers were handed out, so what is left cannot say
	// where each stream stopped: as after a power cut, resume past the
	// reservation.
	damaged := s.recovery.CutBytes > 0 || s.recovery.CorruptRegions > 0
	for name, h := range sc.maxSeq {
		if !s.recovery.Clean && (!s.recovery.SameBoot || damaged) && reserved[name] > h {
			s.recovery.Skipped[name] = reserved[name] - h
			s.drops.Skipped += reserved[name] - h
			h = reserved[name]
		}
		// No reservation carries over: the first Append of each stream
		// reserves anew (durably) before it hands out a number.
		s.streams[name] = &stream{name: name, handed: h, reserved: h, durable: h}
	}

	// Finish an eviction cut short by a crash, drop what is fully
	// acknowledged, and start a new segment whose first record is the
	// recovered state (clean = false, this boot).
	for _, g := range s.segs {
		if g.end <= s.evictLow && g.npending == 0 {
			g.first = g.end // holds nothing: trimLocked removes it
		}
	}
	for _, g := range s.segs {
		s.bytes += g.size
	}
	s.trimLocked()
	now := s.opts.Now()
	durable := true
	if err := s.rotateLocked(now); err != nil {
		buf := s.appendSnapshotLocked(nil, false)
		durable = s.state != nil && s.state.write(buf, s.gen, true) == nil
	}
	if durable {
		// Only now that the counts are on disk: mark the damage as counted.
		for _, r := range sc.regions {
			if r.fresh {
				quarantineRegion(s.dir, r)
			}
		}
	}
	s.evictLocked(now)
	return nil
}

// scanSegment reads one segment's records into g and sc. The torn tail of
// the last segment is cut off the file.
func (s *Spool) scanSegment(sc *scanState, g *segment, data []byte, last bool) error {
	type dataRef struct{ id, idx, seq uint64 }
	var datas []dataRef
	lastID := g.first - 1
	var open []*corruptRegion // regions waiting for the next valid id
	off := 0
	for off < len(data) {
		typ, body, n, ok := parseRecord(data[off:])
		if !ok {
			next := resync(data, off)
			if next < 0 && last {
				if err := cutTail(g.path, int64(off)); err != nil {
					return fmt.Errorf("spool: cut torn tail of %s: %w", filepath.Base(g.path), err)
				}
				s.recovery.CutBytes += int64(len(data) - off)
				data = data[:off]
				break
			}
			if next < 0 {
				next = len(data)
			}
			r := &corruptRegion{seg: g, off: int64(off), n: int64(next - off), after: lastID}
			sc.regions = append(sc.regions, r)
			open = append(open, r)
			off = next
			continue
		}
		off += n
		switch typ {
		case recState:
			if sn, err := parseSnapshot(body); err == nil && (sc.latest == nil || sn.gen > sc.latest.gen) {
				sc.latest = &sn
			}
		case recDict:
			idx, name, ref, err := parseDict(body)
			if err != nil || idx > 1<<10 {
				continue
			}
			for uint64(len(g.streams)) <= idx {
				g.streams = append(g.streams, nil)
			}
			if g.streams[idx] == nil {
				ss := &segStream{name: name}
				if len(ref) > 0 {
					ss.ref = append([]byte(nil), ref...)
				}
				g.streams[idx] = ss
			}
		case recData:
			// ids grow by one per record: an id beyond what the file could
			// hold is damage that happens to pass the checksum.
			h, _, err := parseData(body, g.first)
			if err != nil || h.id <= lastID || (g.end != 0 && h.id >= g.end) || h.id-g.first > uint64(len(data))/minData {
				continue
			}
			datas = append(datas, dataRef{h.id, h.idx, h.seq})
			lastID = h.id
			g.newest = max(g.newest, g.base+int64(h.dt))
			for _, r := range open {
				r.before = h.id
			}
			open = open[:0]
		case recAck:
			_ = parseAck(body, func(r idRange) { sc.acks = append(sc.acks, r) })
		}
	}
	g.size = int64(len(data))
	if g.end == 0 { // the last segment: its regions wait for nextID
		g.end = max(lastID+1, g.first)
	} else {
		for _, r := range open { // damage with no reading after it in the file
			r.before = g.end
		}
	}
	for _, d := range datas {
		if d.idx < uint64(len(g.streams)) && g.streams[d.idx] != nil {
			name := g.streams[d.idx].name
			if d.seq <= sc.maxSeq[name] {
				// Segments are scanned oldest first, so a reading whose
				// seq does not follow its stream's last one is damage that
				// passed the checksum (or a segment written over): it
				// cannot be told from its twin, and is handled as an
				// orphan, never replayed.
				sc.orphans[g] = append(sc.orphans[g], d.id)
				continue
			}
			sc.maxSeq[name] = d.seq
			g.pending.set(d.id - g.first)
		} else {
			sc.orphans[g] = append(sc.orphans[g], d.id)
		}
	}
	return nil
}

func readInto(buf []byte, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return buf, err
	}
	if int64(cap(buf)) < fi.Size() {
		buf = make([]byte, fi.Size())
	}
	buf = buf[:fi.Size()]
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return buf, err
	}
	return buf[:n], nil
}

func cutTail(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func regionPath(dir string, r *corruptRegion) string {
	return filepath.Join(dir, quarantineDir, fmt.Sprintf("seg-%016x-%x.bad", r.seg.first, r.off))
}

// quarantineRegion copies a damaged region (up to 64 KiB of it) aside for a
// post-mortem. The file also marks the region as counted. Best effort: on a
// full disk the region is counted again by the next Open.
func quarantineRegion(dir string, r *corruptRegion) {
	f, err := os.Open(r.seg.path)
	if err != nil {
		return
	}
	defer f.Close()
	b := make([]byte, min(r.n, 64<<10))
	n, _ := f.ReadAt(b, r.off)
	if err := os.MkdirAll(filepath.Join(dir, quarantineDir), 0o750); err != nil {
		return
	}
	_ = os.WriteFile(regionPath(dir, r), b[:n], 0o640)
}

// mergeRanges sorts ranges and merges those that overlap or touch.
func mergeRanges(rs []idRange) []idRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo < rs[j].lo })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// overlapping returns the merged ranges that overlap [lo, hi).
func overlapping(rs []idRange, lo, hi uint64) []idRange {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi > lo })
	j := i
	for j < len(rs) && rs[j].lo < hi {
		j++
	}
	return rs[i:j]
}

// covered counts the ids in [lo, hi) that the merged ranges hold.
func covered(rs []idRange, lo, hi uint64) uint64 {
	n := uint64(0)
	for _, r := range overlapping(rs, lo, hi) {
		n += min(r.hi, hi) - max(r.lo, lo)
	}
	return n
}

const legacySeqFile = "seq.json"

// readLegacySeq reads the counters of the spool's predecessor (seq.json),
// so that a bridge upgraded in place goes on with its numbers. It is read
// only while the spool has no state of its own, and left in place.
func readLegacySeq(dir string) (map[string]uint64, error) {
	path := filepath.Join(dir, legacySeqFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("spool: sequence state: %w", err)
	}
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("spool: sequence state %s is corrupt (%v): move it aside to start again from 1", path, err)
	}
	return m, nil
}
