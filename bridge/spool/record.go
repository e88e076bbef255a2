package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// On disk a segment is a sequence of framed records:
//
//	crc32c (4 bytes, little endian) | n (uvarint) | type (1 byte) | body (n-1 bytes)
//
// The checksum covers n, type and body. A record whose checksum, length or
// type is wrong is not a record: Open skips forward to the next byte offset
// where a valid record starts (see resync).
const (
	recState byte = 1 // a full snapshot of the spool's state (state.go)
	recDict  byte = 2 // a stream's name and compression reference in this segment
	recData  byte = 3 // one reading
	recAck   byte = 4 // ids acknowledged by the broker

	// MaxPayload is the largest payload Append accepts. Readings are a few
	// hundred bytes; the bound keeps a corrupt length from making the
	// recovery scan read far.
	MaxPayload = 16 << 10

	// maxBody bounds n for every record type; STATE and DICT records are
	// far smaller than a maximal DATA record.
	maxBody = MaxPayload + 64

	// MaxSeq is the largest seq: JSON consumers read numbers as float64,
	// exact up to 2^53.
	MaxSeq = 1<<53 - 1
	maxID  = 1 << 62
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends one framed record to dst.
func appendRecord(dst []byte, typ byte, body []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.AppendUvarint(dst, uint64(1+len(body)))
	dst = append(dst, typ)
	dst = append(dst, body...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], crcTable))
	return dst
}

// parseRecord reads the record at the start of b. ok is false when b does not
// start with a complete, intact record.
func parseRecord(b []byte) (typ byte, body []byte, size int, ok bool) {
	if len(b) < 6 {
		return 0, nil, 0, false
	}
	n, k := binary.Uvarint(b[4:])
	if k <= 0 || n == 0 || n > maxBody {
		return 0, nil, 0, false
	}
	end := 4 + k + int(n)
	if end > len(b) {
		return 0, nil, 0, false
	}
	typ = b[4+k]
	if typ < recState || typ > recAck {
		return 0, nil, 0, false
	}
	if crc32.Checksum(b[4:end], crcTable) != binary.LittleEndian.Uint32(b) {
		return 0, nil, 0, false
	}
	return typ, b[4+k+1 : end], end, true
}

// resync returns the first offset after from where a valid record starts, or
// -1 when none does.
func resync(b []byte, from int) int {
	for off := from + 1; off+6 <= len(b); off++ {
		if _, _, _, ok := parseRecord(b[off:]); ok {
			return off
		}
	}
	return -1
}

// dataHeader is what a DATA record says besides its payload.
type dataHeader struct {
	idx   uint64 // the stream's index in this segment (see recDict)
	delta bool   // payload is delta-coded against the stream's reference
	id    uint64 // the record's id, unique and +1 per record across the spool
	seq   uint64
	dt    uint64 // seconds since the segment's base time
}

var errShort = errors.New("truncated field")

// appendData appends the body of a DATA record.
func appendData(dst []byte, h dataHeader, segFirst uint64, payload []byte) []byte {
	tag := h.idx << 1
	if h.delta {
		tag |= 1
	}
	dst = binary.AppendUvarint(dst, tag)
	dst = binary.AppendUvarint(dst, h.id-segFirst)
	dst = binary.AppendUvarint(dst, h.seq)
	dst = binary.AppendUvarint(dst, h.dt)
	return append(dst, payload...)
}

// parseData splits the body of a DATA record.
func parseData(body []byte, segFirst uint64) (h dataHeader, payload []byte, err error) {
	var v [4]uint64
	for i := range v {
		x, k := binary.Uvarint(body)
		if k <= 0 {
			return h, nil, errShort
		}
		v[i], body = x, body[k:]
	}
	h = dataHeader{idx: v[0] >> 1, delta: v[0]&1 == 1, id: segFirst + v[1], seq: v[2], dt: v[3]}
	if h.id < segFirst || h.id > maxID || h.seq == 0 || h.seq > MaxSeq || h.dt > 1<<40 {
		return h, nil, errors.New("implausible data header")
	}
	return h, body, nil
}

// appendDict appends the body of a DICT record.
func appendDict(dst []byte, idx uint64, name string, ref []byte) []byte {
	dst = binary.AppendUvarint(dst, idx)
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	return append(dst, ref...)
}

// parseDict splits the body of a DICT record.
func parseDict(body []byte) (idx uint64, name string, ref []byte, err error) {
	idx, k := binary.Uvarint(body)
	if k <= 0 {
		return 0, "", nil, errShort
	}
	body = body[k:]
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > maxStreamName || uint64(len(body)-k) < n {
		return 0, "", nil, errShort
	}
	body = body[k:]
	return idx, string(body[:n]), body[n:], nil
}

// idRange is the half-open range of ids [lo, hi).
type idRange struct{ lo, hi uint64 }

// appendAck appends the body of an ACK record: the number of ranges, the
// first range's start, then each range as (gap from the previous end, length).
func appendAck(dst []byte, rs []idRange) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rs)))
	prev := uint64(0)
	for _, r := range rs {
		dst = binary.AppendUvarint(dst, r.lo-prev)
		dst = binary.AppendUvarint(dst, r.hi-r.lo)
		prev = r.hi
	}
	return dst
}

// parseAck reads the body of an ACK record.
func parseAck(body []byte, fn func(idRange)) error {
	if err := parseAckRanges(body, func(idRange) {}); err != nil {
		return err // all or nothing
	}
	return parseAckRanges(body, fn)
}

func parseAckRanges(body []byte, fn func(idRange)) error {
	n, k := binary.Uvarint(body)
	if k <= 0 || n > uint64(len(body)) {
		return errShort
	}
	body = body[k:]
	prev := uint64(0)
	for i := uint64(0); i < n; i++ {
		gap, k := binary.Uvarint(body)
		if k <= 0 {
			return errShort
		}
		body = body[k:]
		l, k := binary.Uvarint(body)
		if k <= 0 || l == 0 || gap > 1<<62 || l > 1<<62 {
			return errShort
		}
		body = body[k:]
		lo := prev + gap
		if lo < prev || lo+l < lo || lo+l > maxID {
			return errShort
		}
		fn(idRange{lo, lo + l})
		prev = lo + l
	}
	return nil
}
