package gaps

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// r is one reading in a test sequence.
type r struct {
	seq  uint64
	live bool
	dup  bool // MQTT DUP flag
}

func live(seqs ...uint64) []r {
	out := make([]r, len(seqs))
	for i, s := range seqs {
		out[i] = r{seq: s, live: true}
	}
	return out
}

func backlog(seqs ...uint64) []r {
	out := make([]r, len(seqs))
	for i, s := range seqs {
		out[i] = r{seq: s}
	}
	return out
}

func seqs(parts ...[]r) []r {
	var out []r
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func span1(lo, hi uint64) span { return span{lo, hi} }

func TestStreamCounting(t *testing.T) {
	tt := []struct {
		desc    string
		maxGaps int
		in      []r
		want    Counts
		low     uint64
		last    uint64
		gaps    []span
		kinds   []kind // if set, what each reading was counted as
	}{
		{
			desc: "in order",
			in:   live(1, 2, 3, 4, 5),
			want: Counts{Received: 5}, low: 1, last: 5,
			kinds: []kind{kindFirst, kindNext, kindNext, kindNext, kindNext},
		},
		{
			desc: "the first reading seen starts the window, whatever its seq",
			in:   live(1842, 1843),
			want: Counts{Received: 2}, low: 1842, last: 1843,
		},
		{
			desc: "a jump from 5 to 9 is 3 missing",
			in:   live(4, 5, 9),
			want: Counts{Received: 3, Missing: 3}, low: 4, last: 9, gaps: []span{span1(6, 8)},
			kinds: []kind{kindFirst, kindNext, kindJump},
		},
		{
			desc: "backlog replay fills the gap, oldest first",
			in:   seqs(live(5, 9), backlog(6, 7, 8)),
			want: Counts{Received: 5}, low: 5, last: 9,
			kinds: []kind{kindFirst, kindJump, kindFill, kindFill, kindFill},
		},
		{
			desc: "a fill in the middle splits the gap",
			in:   seqs(live(5, 12), backlog(8)),
			want: Counts{Received: 3, Missing: 5}, low: 5, last: 12, gaps: []span{span1(6, 7), span1(9, 11)},
		},
		{
			desc: "fills from the top end and the bottom end",
			in:   seqs(live(5, 12), backlog(11, 6)),
			want: Counts{Received: 4, Missing: 4}, low: 5, last: 12, gaps: []span{span1(7, 10)},
		},
		{
			desc: "live readings flow beside the replay",
			in:   seqs(live(1, 2, 10), backlog(3, 4), live(11), backlog(5, 6, 7, 8, 9), live(12)),
			want: Counts{Received: 12}, low: 1, last: 12,
		},
		{
			desc: "a reading seen before is a duplicate, live or backlog",
			in:   seqs(live(1, 2, 3), backlog(2), live(3)),
			want: Counts{Received: 5, Duplicates: 2}, low: 1, last: 3,
			kinds: []kind{kindFirst, kindNext, kindNext, kindDuplicate, kindDuplicate},
		},
		{
			desc: "a filled gap is not filled twice",
			in:   seqs(live(1, 4), backlog(2, 2, 3)),
			want: Counts{Received: 5, Duplicates: 1}, low: 1, last: 4,
		},
		{
			desc: "a live seq that goes back is a reset; the open gap stays missing",
			in:   seqs(live(100, 101, 105), live(1, 2, 3)),
			want: Counts{Received: 6, Missing: 3, Resets: 1}, low: 1, last: 3,
			kinds: []kind{kindFirst, kindNext, kindJump, kindReset, kindNext, kindNext},
		},
		{
			desc: "after a reset the new numbering's gaps and backlog count as usual",
			in:   seqs(live(500), live(3, 7), backlog(1, 4, 5), live(8)),
			want: Counts{Received: 7, Missing: 1, Resets: 1, Stale: 1}, low: 3, last: 8, gaps: []span{span1(6, 6)},
		},
		{
			desc: "a reset below the window is a reset too",
			in:   seqs(live(50, 51), live(10)),
			want: Counts{Received: 3, Resets: 1}, low: 10, last: 10,
		},
		{
			desc: "a live retransmission (DUP) that goes back is a duplicate, not a reset",
			in:   seqs(live(1, 2, 3), []r{{seq: 2, live: true, dup: true}}),
			want: Counts{Received: 4, Duplicates: 1}, low: 1, last: 3,
		},
		{
			desc: "a live reading that fills a gap is a fill, not a reset",
			in:   seqs(live(1, 3), live(2)),
			want: Counts{Received: 3}, low: 1, last: 3,
		},
		{
			desc: "a backlog reading that goes back is never a reset",
			in:   seqs(live(100, 101), backlog(1)),
			want: Counts{Received: 3, Stale: 1}, low: 100, last: 101,
		},
		{
			desc: "backlog older than the first reading seen is stale (after a broker restart)",
			in:   seqs(live(100), backlog(90, 91, 92), live(101)),
			want: Counts{Received: 5, Stale: 3}, low: 100, last: 101,
			kinds: []kind{kindFirst, kindStale, kindStale, kindStale, kindNext},
		},
		{
			desc:    "past MaxGaps the lowest gap is forgotten: still missing, its fill is stale",
			maxGaps: 2,
			in:      seqs(live(1, 3, 5, 7), backlog(2, 4, 6)),
			want:    Counts{Received: 7, Missing: 1, Stale: 1}, low: 3, last: 7,
		},
		{
			desc:    "a split past MaxGaps forgets the lowest gap",
			maxGaps: 2,
			in:      seqs(live(1, 3, 10), backlog(6)),
			want:    Counts{Received: 4, Missing: 6}, low: 3, last: 10, gaps: []span{span1(4, 5), span1(7, 9)},
		},
		{
			desc: "a huge jump is one gap",
			in:   live(1, 1<<40),
			want: Counts{Received: 2, Missing: 1<<40 - 2}, low: 1, last: 1 << 40, gaps: []span{span1(2, 1<<40-1)},
		},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			maxGaps := tc.maxGaps
			if maxGaps == 0 {
				maxGaps = DefaultMaxGaps
			}
			var s stream
			var kinds []kind
			for _, x := range tc.in {
				kinds = append(kinds, s.observe(x.seq, x.live, x.dup, maxGaps))
			}
			require.Equal(t, tc.want, s.Counts)
			require.Equal(t, tc.low, s.low, "low")
			require.Equal(t, tc.last, s.last, "last")
			if len(tc.gaps) == 0 {
				require.Empty(t, s.gaps)
			} else {
				require.Equal(t, tc.gaps, s.gaps)
			}
			if tc.kinds != nil {
				require.Equal(t, tc.kinds, kinds)
			}
			checkInvariants(t, &s, maxGaps)
		})
	}
}

// checkInvariants: gaps ascending, disjoint, inside (low, last), within
// bounds, and never more open missing numbers than Missing counts.
func checkInvariants(t *testing.T, s *stream, maxGaps int) {
	t.Helper()
	require.LessOrEqual(t, len(s.gaps), maxGaps)
	var open uint64
	prev := s.low
	for _, g := range s.gaps {
		require.LessOrEqual(t, g.lo, g.hi)
		require.Greater(t, g.lo, prev, "gaps must be ascending and above low")
		require.Less(t, g.hi, s.last)
		prev = g.hi
		open += g.hi - g.lo + 1
	}
	require.LessOrEqual(t, open, s.Missing)
	require.LessOrEqual(t, s.low, s.last)
}

// TestStreamReplayAgainstSet checks the counting against a plain set: live
// readings lose three in ten, the backlog replays each block's losses in a
// random order with some readings twice; once all arrived nothing is missing
// and the duplicates are exactly the repeats.
func TestStreamReplayAgainstSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var in []r
	for block := uint64(0); block < 20; block++ {
		var lost []uint64
		for i := block*100 + 1; i <= block*100+100; i++ {
			if i%10 < 7 {
				in = append(in, r{seq: i, live: true})
			} else {
				lost = append(lost, i)
			}
			if i%37 == 0 {
				lost = append(lost, i) // delivered twice
			}
		}
		rng.Shuffle(len(lost), func(a, b int) { lost[a], lost[b] = lost[b], lost[a] })
		in = append(in, backlog(lost...)...)
	}
	var s stream
	seen := map[uint64]bool{}
	var dups uint64
	for _, x := range in {
		k := s.observe(x.seq, x.live, x.dup, DefaultMaxGaps)
		require.NotEqual(t, kindReset, k, "seq %d", x.seq)
		require.NotEqual(t, kindStale, k, "seq %d", x.seq)
		if seen[x.seq] {
			dups++
		}
		seen[x.seq] = true
		checkInvariants(t, &s, DefaultMaxGaps)
	}
	require.Equal(t, uint64(0), s.Missing)
	require.Equal(t, dups, s.Duplicates)
	require.Equal(t, uint64(len(in)), s.Received)
	require.Empty(t, s.gaps)
}
