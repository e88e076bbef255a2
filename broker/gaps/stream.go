package gaps

import (
	"sort"
	"sync"
	"time"
)

// Counts are one stream's counters since the broker began tracking it.
type Counts struct {
	// Received counts readings with a valid seq, duplicates included.
	Received uint64 `json:"received"`
	// Missing counts seq numbers never received: the open gaps, less what
	// late readings (backlog replays) filled, plus the gaps that can no
	// longer be filled (left behind by a reset or forgotten past MaxGaps).
	Missing uint64 `json:"missing"`
	// Duplicates counts readings whose seq had been received before.
	Duplicates uint64 `json:"duplicates"`
	// Resets counts restarts of the numbering: a live reading that went
	// back (a bridge whose spool was deleted starts again at 1).
	Resets uint64 `json:"resets"`
	// Stale counts readings below the tracked window, which cannot be told
	// apart as duplicates or fills: backlog older than the first reading the
	// broker saw from the stream (after a broker restart), or in a gap
	// forgotten past MaxGaps.
	Stale uint64 `json:"stale"`
	// Invalid counts messages on a reading topic without a usable seq.
	Invalid uint64 `json:"invalid"`
}

// add sums c into t.
func (t *Counts) add(c Counts) {
	t.Received += c.Received
	t.Missing += c.Missing
	t.Duplicates += c.Duplicates
	t.Resets += c.Resets
	t.Stale += c.Stale
	t.Invalid += c.Invalid
}

// loss is c without Received: what a stream's summary is republished for.
func (c Counts) loss() Counts {
	c.Received = 0
	return c
}

// span is a gap: the missing seq numbers lo..hi, both included.
type span struct{ lo, hi uint64 }

// kind is what one reading was counted as.
type kind uint8

const (
	kindFirst     kind = iota + 1 // the first reading of the stream: the window starts here
	kindNext                      // last+1, the common case
	kindJump                      // above last+1: a new gap
	kindFill                      // inside a gap: it shrinks
	kindDuplicate                 // seen before
	kindReset                     // a live reading that went back: a new numbering
	kindStale                     // below the window: unknown
)

// stream is the state of one site/node/stream. Its memory is bounded: a
// fixed part plus at most maxGaps+1 spans (16 bytes each) in a slice whose
// capacity append keeps within twice that.
type stream struct {
	mu    sync.Mutex
	since time.Time // when the broker first saw the stream

	started bool   // low and last are set
	low     uint64 // lowest seq of the tracked window
	last    uint64 // highest seq seen
	gaps    []span // open gaps: ascending, disjoint, inside (low, last)

	Counts
}

// observe counts one reading with a valid seq. live says it came on the live
// topic (not backlog), retransmit that MQTT flagged it DUP. maxGaps bounds
// the open gaps kept.
//
// The rules, in order:
//   - the first reading starts the window at its seq;
//   - last+1 advances; a higher seq opens the gap last+1..seq-1 (all of it
//     counted missing) and advances;
//   - a seq inside a gap fills it (missing - 1);
//   - a live reading below last that is not a retransmission is a reset: our
//     bridge publishes live readings in strictly increasing seq (the spool
//     owns seq and never reuses a number, even after a power cut), and
//     replays older ones on backlog, so a live seq that goes back means the
//     numbering restarted (a deleted spool, a re-imaged card, two bridges
//     with one identity). The open gaps can no longer be filled: they stay
//     counted missing and are dropped; the window restarts at this seq;
//   - a seq below the window is stale; anything else was seen: a duplicate.
func (s *stream) observe(seq uint64, live, retransmit bool, maxGaps int) kind {
	s.Received++
	if !s.started {
		s.started = true
		s.low, s.last = seq, seq
		return kindFirst
	}
	switch {
	case seq == s.last+1:
		s.last = seq
		return kindNext
	case seq > s.last:
		s.Missing += seq - s.last - 1
		s.gaps = append(s.gaps, span{s.last + 1, seq - 1})
		s.last = seq
		s.bound(maxGaps)
		return kindJump
	}
	if i, ok := s.gapAt(seq); ok {
		s.fill(i, seq)
		s.Missing--
		s.bound(maxGaps)
		return kindFill
	}
	if live && !retransmit && seq < s.last {
		s.Resets++
		s.gaps = s.gaps[:0]
		s.low, s.last = seq, seq
		return kindReset
	}
	if seq < s.low {
		s.Stale++
		return kindStale
	}
	s.Duplicates++
	return kindDuplicate
}

// gapAt returns the index of the gap holding seq.
func (s *stream) gapAt(seq uint64) (int, bool) {
	i := sort.Search(len(s.gaps), func(i int) bool { return s.gaps[i].hi >= seq })
	return i, i < len(s.gaps) && s.gaps[i].lo <= seq
}

// fill takes seq out of gap i, which holds it.
func (s *stream) fill(i int, seq uint64) {
	g := &s.gaps[i]
	switch {
	case g.lo == g.hi:
		s.gaps = append(s.gaps[:i], s.gaps[i+1:]...)
	case seq == g.lo:
		g.lo++
	case seq == g.hi:
		g.hi--
	default: // split in two
		hi := g.hi
		g.hi = seq - 1
		s.gaps = append(s.gaps, span{})
		copy(s.gaps[i+2:], s.gaps[i+1:])
		s.gaps[i+1] = span{seq + 1, hi}
	}
}

// bound forgets the lowest gaps beyond maxGaps: their numbers stay counted
// missing, and the window now starts above them, so a reading that would have
// filled one is counted stale.
func (s *stream) bound(maxGaps int) {
	if len(s.gaps) <= maxGaps {
		return
	}
	drop := len(s.gaps) - maxGaps
	s.low = s.gaps[drop-1].hi + 1
	n := copy(s.gaps, s.gaps[drop:])
	s.gaps = s.gaps[:n]
}
