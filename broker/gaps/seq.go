package gaps

import "bytes"

// keySeq is the payload key read from every reading.
var keySeq = []byte(`"seq"`)

// readSeq returns the value of the "seq" key of a flat JSON reading without
// decoding the rest of it: it finds `"seq"` where a key can stand (after '{'
// or ','), then ':' and a JSON integer, and checks that the number ends there
// (so 5.0, 5e3, -5 and "5" are refused, not truncated). A reading's seq starts
// at 1, so 0 is refused too, as is a number beyond uint64. It returns false
// when there is no such key.
//
// It looks for the key's 'q', a rare byte in a reading (no other key and no
// number has one), with IndexByte, which is vectorised, rather than for its
// opening '"', which is everywhere.
//
// It reads the payload as the contract writes it: a flat object. A "seq" key
// inside a nested object would be taken as well; the contract has none. An
// occurrence inside a string value can never match: a '"' inside a JSON
// string is escaped, so the byte before it is '\', not '{' or ','.
func readSeq(p []byte) (uint64, bool) {
	const q = 3 // index of 'q' in `"seq"`
	for off := q; off < len(p); {
		i := bytes.IndexByte(p[off:], 'q')
		if i < 0 {
			return 0, false
		}
		at := off + i
		off = at + 1
		start := at - q
		if !bytes.HasPrefix(p[start:], keySeq) || !keyPosition(p, start) {
			continue
		}
		j := skipSpace(p, start+len(keySeq))
		if j >= len(p) || p[j] != ':' {
			continue // "seq" as a value, not a key
		}
		return readUint(p, skipSpace(p, j+1))
	}
	return 0, false
}

// keyPosition reports whether the '"' at p[i] opens an object key: the
// nearest byte before it that is not white space is '{' or ','.
func keyPosition(p []byte, i int) bool {
	for i--; i >= 0; i-- {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			continue
		case '{', ',':
			return true
		default:
			return false
		}
	}
	return false
}

func skipSpace(p []byte, i int) int {
	for i < len(p) {
		switch p[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// readUint reads a positive JSON integer at p[i:], which must end at a
// delimiter of a JSON value (or the end of p).
func readUint(p []byte, i int) (uint64, bool) {
	var v uint64
	n := 0
	for ; i < len(p) && '0' <= p[i] && p[i] <= '9'; i++ {
		d := uint64(p[i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false // overflow
		}
		v = v*10 + d
		n++
	}
	if n == 0 || v == 0 || (n > 1 && p[i-n] == '0') {
		return 0, false // no digits, zero, or a leading zero (not JSON)
	}
	if i < len(p) {
		switch p[i] {
		case ',', '}', ' ', '\t', '\n', '\r':
		default:
			return 0, false // a fraction, an exponent, or garbage
		}
	}
	return v, true
}
