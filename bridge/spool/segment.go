package spool

import (
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A segment is one file of the log, named after the id of its first record
// and its base time (Unix seconds, which DATA records count from):
// seg-<first id, 16 hex digits>-<base time, hex>.log. Segments hold
// consecutive id ranges: a segment's ids run up to the next one's first.
type segment struct {
	first  uint64 // first id
	end    uint64 // one past the last id (the next segment's first)
	base   int64  // Unix seconds
	path   string
	size   int64 // bytes of whole records (the active segment's write offset)
	newest int64 // Unix seconds of its newest reading, 0 if none

	pending  bitset // ids (minus first) of readings not yet acknowledged
	npending int
	// evicting: a cap wants the segment gone, and it waits for its
	// readings in flight to settle.
	evicting bool

	streams []*segStream // by index in this segment
	f       *os.File     // the active segment only
}

// segStream is a stream as a segment knows it: its index there and its
// compression reference.
type segStream struct {
	name    string
	ref     []byte    // nil: payloads are stored as they are
	enc     *refIndex // ref's hash table, for the active segment only
	copies  int       // DICT copies written (active segment)
	dictEnd int64     // end offset of the last copy (active segment)
}

func segmentName(first uint64, base int64) string {
	return fmt.Sprintf("seg-%016x-%x.log", first, base)
}

// parseSegmentName reads a segment file name; ok is false for other files.
func parseSegmentName(name string) (first uint64, base int64, ok bool) {
	rest, found := strings.CutPrefix(name, "seg-")
	if !found {
		return 0, 0, false
	}
	rest, found = strings.CutSuffix(rest, ".log")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest, "-")
	if !found || len(a) != 16 {
		return 0, 0, false
	}
	first, err := strconv.ParseUint(a, 16, 64)
	if err != nil || first == 0 {
		return 0, 0, false
	}
	bu, err := strconv.ParseUint(b, 16, 63)
	if err != nil {
		return 0, 0, false
	}
	return first, int64(bu), true
}

func newSegment(dir string, first uint64, base int64) *segment {
	return &segment{first: first, end: first, base: base, path: filepath.Join(dir, segmentName(first, base))}
}

func (g *segment) isPending(id uint64) bool {
	return id >= g.first && id < g.end && g.pending.get(id-g.first)
}

// streamIndex returns the index of the stream in this segment, adding it
// with ref as its reference if it is new.
func (g *segment) streamIndex(name string, payload []byte) (uint64, *segStream) {
	for i, ss := range g.streams {
		if ss.name == name {
			return uint64(i), ss
		}
	}
	ss := &segStream{name: name}
	if len(payload) >= minMatch && len(payload) <= maxRef {
		ss.ref = append([]byte(nil), payload...)
		ss.enc = newRefIndex(ss.ref)
	}
	g.streams = append(g.streams, ss)
	return uint64(len(g.streams) - 1), ss
}

// bitset is a growable set of small integers.
type bitset struct{ w []uint64 }

func (b *bitset) set(i uint64) {
	for uint64(len(b.w)) <= i/64 {
		b.w = append(b.w, 0)
	}
	b.w[i/64] |= 1 << (i % 64)
}

func (b *bitset) clear(i uint64) {
	if i/64 < uint64(len(b.w)) {
		b.w[i/64] &^= 1 << (i % 64)
	}
}

func (b *bitset) get(i uint64) bool {
	return i/64 < uint64(len(b.w)) && b.w[i/64]&(1<<(i%64)) != 0
}

func (b *bitset) count() int {
	n := 0
	for _, w := range b.w {
		n += bits.OnesCount64(w)
	}
	return n
}
