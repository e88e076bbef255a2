package spool

import (
	"encoding/binary"
	"errors"
)

// Readings of one stream are JSON objects with the same keys in the same
// order; only a few digits change from one to the next. Each segment keeps,
// per stream, a reference: the stream's first payload in that segment, written
// in a DICT record (and again every dictRepeat bytes, so that one damaged
// page cannot orphan the rest of the segment). Every later payload of the
// stream is stored as a delta against that reference: a sequence of ops,
//
//	0x00-0x7f  literal: the next op+1 bytes are copied to the output
//	0x80-0xff  copy: (op&0x7f)+minMatch bytes from the reference, starting at
//	           pos+d where d is a zigzag varint that follows the op byte
//
// pos is where the decoder expects the reference to continue: the end of the
// last copy, advanced by the length of every literal since. A changed digit
// is a literal and the copy after it has d = 0, so a typical reading costs
// about two bytes per unchanged stretch and one plus its length per change.
const (
	minMatch   = 4
	maxLiteral = 128
	maxCopy    = 127 + minMatch
	maxRef     = 4096 // payloads larger than this are stored as they are
	tableBits  = 10
	dictRepeat = 64 << 10 // a DICT record is repeated this often in a segment
)

// refIndex is a stream's reference and a hash table of its 4-byte prefixes.
type refIndex struct {
	ref   []byte
	table [1 << tableBits]uint16 // position+1 of the first occurrence, 0 = none
}

func newRefIndex(ref []byte) *refIndex {
	x := &refIndex{ref: ref}
	for p := 0; p+minMatch <= len(ref); p++ {
		h := hash4(ref[p:])
		if x.table[h] == 0 {
			x.table[h] = uint16(p + 1)
		}
	}
	return x
}

func hash4(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) * 2654435761) >> (32 - tableBits)
}

func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// encodeDelta appends src, coded against x's reference, to dst.
func encodeDelta(dst, src []byte, x *refIndex) []byte {
	ref := x.ref
	pos, lit := 0, 0 // decoder's position in ref; start of pending literals
	for i := 0; i+minMatch <= len(src); {
		guess := pos + (i - lit)
		best, bestLen := 0, 0
		if guess < len(ref) {
			if l := matchLen(ref[guess:], src[i:]); l >= minMatch {
				best, bestLen = guess, l
			}
		}
		if bestLen < 16 {
			if p := int(x.table[hash4(src[i:])]) - 1; p >= 0 && p != guess {
				if l := matchLen(ref[p:], src[i:]); l > bestLen {
					best, bestLen = p, l
				}
			}
		}
		if bestLen < minMatch {
			i++
			continue
		}
		dst = appendLiterals(dst, src[lit:i])
		pos += i - lit
		d := int64(best - pos)
		for n := bestLen; n > 0; {
			c := min(n, maxCopy)
			if n-c > 0 && n-c < minMatch {
				c = n - minMatch // leave a tail that is itself a valid copy
			}
			dst = append(dst, 0x80|byte(c-minMatch))
			dst = binary.AppendUvarint(dst, uint64(d<<1)^uint64(d>>63))
			d, n = 0, n-c
		}
		pos = best + bestLen
		i += bestLen
		lit = i
	}
	return appendLiterals(dst, src[lit:])
}

func appendLiterals(dst, lit []byte) []byte {
	for len(lit) > 0 {
		n := min(len(lit), maxLiteral)
		dst = append(dst, byte(n-1))
		dst = append(dst, lit[:n]...)
		lit = lit[n:]
	}
	return dst
}

var errDelta = errors.New("invalid delta")

// decodeDelta appends the payload that src codes against ref to dst; the
// result may not grow dst by more than limit bytes.
func decodeDelta(dst, src, ref []byte, limit int) ([]byte, error) {
	pos, start := 0, len(dst)
	for i := 0; i < len(src); {
		op := src[i]
		i++
		if op < 0x80 {
			n := int(op) + 1
			if n > len(src)-i || len(dst)-start+n > limit {
				return dst, errDelta
			}
			dst = append(dst, src[i:i+n]...)
			i += n
			pos += n
			continue
		}
		n := int(op&0x7f) + minMatch
		u, k := binary.Uvarint(src[i:])
		if k <= 0 {
			return dst, errDelta
		}
		i += k
		d := int64(u>>1) ^ -int64(u&1)
		if d < -int64(pos) || d > int64(len(ref)) {
			return dst, errDelta
		}
		from := pos + int(d)
		if from+n > len(ref) || len(dst)-start+n > limit {
			return dst, errDelta
		}
		dst = append(dst, ref[from:from+n]...)
		pos = from + n
	}
	return dst, nil
}
