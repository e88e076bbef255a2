package spool

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// DropCounts says why readings were dropped. Every number a consumer may
// find missing from a stream's seq is in exactly one of them.
type DropCounts struct {
	// Evicted: unacknowledged readings removed by the size or age cap.
	Evicted uint64
	// Corrupt: readings whose records were damaged on disk and skipped.
	Corrupt uint64
	// Skipped: seq numbers jumped over after an unclean stop, when the spool
	// cannot prove which of the reserved numbers were handed out (see the
	// package documentation). An upper bound on the readings lost with the
	// unsynced tail.
	Skipped uint64
	// Caller: readings the caller counted with CountDropped.
	Caller uint64
	// Quarantined: poison readings moved aside with Quarantine.
	Quarantined uint64
}

// Total is the sum of all causes.
func (d DropCounts) Total() uint64 {
	return d.Evicted + d.Corrupt + d.Skipped + d.Caller + d.Quarantined
}

// streamState is what a snapshot keeps of one stream.
type streamState struct {
	name     string
	handed   uint64 // last seq handed out
	reserved uint64 // seq numbers up to this one may have been handed out
}

// snapshot is the spool's whole durable state besides the records: it is
// written at the start of every segment, whenever seq numbers are reserved or
// readings dropped, and by Close. The one with the highest gen wins.
type snapshot struct {
	gen      uint64
	clean    bool     // written by Close: handed is exact
	boot     [16]byte // the kernel's boot id when written
	nextID   uint64
	evictLow uint64 // every id below this was evicted
	drops    DropCounts
	streams  []streamState
}

const snapshotVersion = 1

func (sn *snapshot) appendBody(dst []byte) []byte {
	dst = append(dst, snapshotVersion)
	dst = binary.AppendUvarint(dst, sn.gen)
	flags := byte(0)
	if sn.clean {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = append(dst, sn.boot[:]...)
	for _, v := range []uint64{sn.nextID, sn.evictLow, sn.drops.Evicted, sn.drops.Corrupt,
		sn.drops.Skipped, sn.drops.Caller, sn.drops.Quarantined, uint64(len(sn.streams))} {
		dst = binary.AppendUvarint(dst, v)
	}
	for _, st := range sn.streams {
		dst = binary.AppendUvarint(dst, uint64(len(st.name)))
		dst = append(dst, st.name...)
		dst = binary.AppendUvarint(dst, st.handed)
		dst = binary.AppendUvarint(dst, st.reserved-st.handed)
	}
	return dst
}

func parseSnapshot(body []byte) (snapshot, error) {
	var sn snapshot
	if len(body) < 1 || body[0] != snapshotVersion {
		return sn, errors.New("unknown snapshot version")
	}
	body = body[1:]
	uv := func() (uint64, error) {
		v, k := binary.Uvarint(body)
		if k <= 0 {
			return 0, errShort
		}
		body = body[k:]
		return v, nil
	}
	var err error
	if sn.gen, err = uv(); err != nil {
		return sn, err
	}
	if len(body) < 17 {
		return sn, errShort
	}
	sn.clean = body[0]&1 == 1
	copy(sn.boot[:], body[1:17])
	body = body[17:]
	var v [8]uint64
	for i := range v {
		if v[i], err = uv(); err != nil {
			return sn, err
		}
	}
	sn.nextID, sn.evictLow = v[0], v[1]
	if sn.nextID > maxID || sn.evictLow > maxID {
		return sn, errors.New("implausible snapshot")
	}
	sn.drops = DropCounts{Evicted: v[2], Corrupt: v[3], Skipped: v[4], Caller: v[5], Quarantined: v[6]}
	if v[7] > uint64(len(body)) {
		return sn, errShort
	}
	for i := uint64(0); i < v[7]; i++ {
		n, err := uv()
		if err != nil || n == 0 || n > maxStreamName || n > uint64(len(body)) {
			return sn, errShort
		}
		st := streamState{name: string(body[:n])}
		body = body[n:]
		if st.handed, err = uv(); err != nil {
			return sn, err
		}
		ahead, err := uv()
		if err != nil || st.handed+ahead < st.handed {
			return sn, errShort
		}
		st.reserved = st.handed + ahead
		if st.reserved > MaxSeq {
			return sn, errors.New("implausible snapshot")
		}
		sn.streams = append(sn.streams, st)
	}
	return sn, nil
}

// The state file holds two snapshot slots, written alternately in place.
// The spool writes it only when a snapshot cannot go to the log because the
// disk is full: overwriting blocks a file already owns needs no free space,
// so seq numbers can still be reserved and drops counted. A torn write spoils
// one slot; the other keeps the previous snapshot.
const (
	stateName = "state"
	stateSlot = 4096
)

type stateFile struct {
	f *os.File
}

// openStateFile opens (creating and allocating if needed) the state file and
// returns the best snapshot in it, if any. A state file that cannot be made
// (full disk on the very first Open) is not an error: the spool works without
// it until the disk is full.
func openStateFile(dir string) (*stateFile, *snapshot, error) {
	path := filepath.Join(dir, stateName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = createStateFile(path)
		if err != nil {
			return nil, nil, nil
		}
		return &stateFile{f: f}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("spool: state file: %w", err)
	}
	buf := make([]byte, 2*stateSlot)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n < len(buf) {
		if !errors.Is(err, io.EOF) {
			f.Close()
			return nil, nil, fmt.Errorf("spool: state file: %w", err)
		}
		// A short file (cut by a crash while it was made): allocate it.
		if werr := zeroFill(f, int64(n)); werr != nil {
			f.Close()
			return nil, nil, nil
		}
	}
	var best *snapshot
	for slot := 0; slot < 2; slot++ {
		typ, body, _, ok := parseRecord(buf[slot*stateSlot : (slot+1)*stateSlot])
		if !ok || typ != recState {
			continue
		}
		sn, err := parseSnapshot(body)
		if err != nil {
			continue
		}
		if best == nil || sn.gen > best.gen {
			best = &sn
		}
	}
	return &stateFile{f: f}, best, nil
}

func createStateFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, err
	}
	if err := zeroFill(f, 0); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// zeroFill writes zeros from off to the end of both slots, so that the file
// owns its blocks, and syncs it.
func zeroFill(f *os.File, off int64) error {
	if _, err := f.WriteAt(make([]byte, 2*stateSlot-off), off); err != nil {
		return err
	}
	return f.Sync()
}

// write puts a framed snapshot record into slot gen%2; sync makes it durable.
func (sf *stateFile) write(rec []byte, gen uint64, sync bool) error {
	if len(rec) > stateSlot {
		return errors.New("snapshot larger than a state slot")
	}
	if _, err := sf.f.WriteAt(rec, int64(gen%2)*stateSlot); err != nil {
		return err
	}
	if sync {
		return sf.f.Sync()
	}
	return nil
}

func (sf *stateFile) close() error { return sf.f.Close() }

// readBootID returns the kernel's id for the current boot. Two snapshots with
// the same boot id were written with no reboot, hence no power cut, between
// them: everything written in between is in the page cache.
func readBootID() ([16]byte, bool) {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id, false
	}
	h := bytes.ReplaceAll(bytes.TrimSpace(b), []byte("-"), nil)
	if len(h) != 32 {
		return id, false
	}
	if _, err := hex.Decode(id[:], h); err != nil {
		return id, false
	}
	return id, id != [16]byte{}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// sortedStreams returns the snapshot view of the streams, by name.
func sortedStreams(m map[string]*stream) []streamState {
	out := make([]streamState, 0, len(m))
	for _, st := range m {
		out = append(out, streamState{name: st.name, handed: st.handed, reserved: max(st.reserved, st.handed)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
