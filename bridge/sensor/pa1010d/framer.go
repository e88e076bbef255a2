package pa1010d

import (
	"strings"

	nmea "github.com/adrianmo/go-nmea"
	"periph.io/x/conn/v3/i2c"
)

// maxSentence is the longest sentence kept, from '$' to the checksum's last
// digit. NMEA 0183 allows 82 bytes with CR LF; some receivers exceed that
// a little (long GSA of multi-GNSS firmware), so 120 leaves room while
// still dropping proprietary dumps like MediaTek's 200-byte PMTKCHN.
const maxSentence = 120

// framerStats are the reader's counters; see Stats for their meaning.
type framerStats struct {
	sentences, checksum, overlong, garbage uint64
	nonPad                                 uint64 // bytes other than padding
}

// framer turns the receiver's byte stream into sentences; the receiver
// sends '\n' when it has nothing to send. It is a state
// machine over single bytes, so where the reads cut the stream does not
// change its output:
//
//   - a '\n' that does not follow '\r' is padding and is dropped wherever
//     it falls, in the middle of a sentence too;
//   - '$' starts a sentence; a sentence still open is dropped (two
//     sentences merged on one line: resynchronise at the next '$');
//   - '\r' ends a sentence, which is kept only if it ends in "*hh" with
//     the right checksum;
//   - a byte that is not printable ASCII drops the open sentence, and so
//     does passing maxSentence; bytes outside any sentence are dropped
//     until the next '$'.
type framer struct {
	buf     []byte // the open sentence, from its '$'
	in      bool   // a sentence is open
	junk    bool   // inside a dropped stretch already counted
	cr      bool   // the last byte was '\r'
	lastPad bool   // the last byte was padding
	stats   framerStats
}

// feed runs p through the framer and calls emit with each complete
// sentence that has a valid checksum, without its line ending.
func (f *framer) feed(p []byte, emit func(string)) {
	for _, c := range p {
		f.lastPad = false
		switch c {
		case '\n':
			if f.cr {
				f.cr = false // the LF of CR LF
			} else {
				f.lastPad = true
			}
			continue
		case '\r':
			f.cr = true
			f.end(emit)
			continue
		}
		f.cr = false
		f.stats.nonPad++
		switch {
		case c == '$':
			if f.in {
				f.stats.garbage++ // cut short by the next sentence
			}
			f.in, f.junk = true, false
			f.buf = append(f.buf[:0], c)
		case !f.in:
			if !f.junk {
				f.junk = true
				f.stats.garbage++
			}
		case c < 0x20 || c > 0x7e:
			f.in, f.junk = false, true
			f.stats.garbage++
		case len(f.buf) >= maxSentence:
			f.in, f.junk = false, true
			f.stats.overlong++
		default:
			f.buf = append(f.buf, c)
		}
	}
}

// end closes the open sentence at a '\r'.
func (f *framer) end(emit func(string)) {
	f.junk = false
	if !f.in {
		return
	}
	f.in = false
	if !checksumOK(f.buf) {
		f.stats.checksum++
		return
	}
	f.stats.sentences++
	emit(string(f.buf))
}

// checksumOK tells whether s, "$...*hh", ends in the checksum of the bytes
// between '$' and '*'. A sentence without one fails.
func checksumOK(s []byte) bool {
	n := len(s)
	if n < 4 || s[0] != '$' || s[n-3] != '*' {
		return false
	}
	return strings.EqualFold(string(s[n-2:]), nmea.Checksum(string(s[1:n-3])))
}

// reader is the framer behind the bus: one read transaction at a time.
type reader struct {
	buf [readSize]byte
	fr  framer
}

// read does one read of readSize bytes and returns the sentences it
// completed.
func (r *reader) read(c *i2c.Dev) ([]string, error) {
	if err := c.Tx(nil, r.buf[:]); err != nil {
		return nil, err
	}
	var out []string
	r.fr.feed(r.buf[:], func(s string) { out = append(out, s) })
	return out, nil
}
