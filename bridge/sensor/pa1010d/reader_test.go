package pa1010d

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// Real sentences from the captures (mt3339 and gp-320fw).
const (
	gga = "$GPGGA,202640.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000*6C"
	gsa = "$GPGSA,A,3,20,16,09,03,07,10,23,19,27,30,,,1.64,0.98,1.31*05"
	rmc = "$GPRMC,202640.000,A,4404.1306,N,12118.8515,W,0.03,225.97,130415,,,D*73"
	// A sentence of the gp-320fw capture cut short by the next one.
	gsaNoFix = "$GPGSA,A,1,,,,,,,,,,,,,,,*1E"
	rmcNoFix = "$GPRMC,235949.00,V,0000.0000,N,00000.0000,E,,,161206,,,N*44"
)

// reads is one Playback read of 255 bytes per chunk, each padded with '\n'
// as the receiver does.
func reads(chunks ...string) []i2ctest.IO {
	var ops []i2ctest.IO
	for _, c := range chunks {
		if len(c) > readSize {
			panic("chunk longer than a read")
		}
		r := []byte(c + strings.Repeat("\n", readSize-len(c)))
		ops = append(ops, i2ctest.IO{Addr: Addr, R: r})
	}
	return ops
}

func TestReader(t *testing.T) {
	tt := []struct {
		desc   string
		chunks []string
		want   []string
		stats  framerStats // nonPad is not compared
	}{
		{
			desc:   "one sentence",
			chunks: []string{gga + "\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1},
		},
		{
			desc: "padding in the middle of a sentence",
			// The receiver had written only part of GGA when the read
			// came: the rest of that read is padding.
			chunks: []string{gga[:30], gga[30:] + "\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1},
		},
		{
			desc:   "padding inside one read",
			chunks: []string{gga[:10] + "\n\n\n" + gga[10:] + "\n\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1},
		},
		{
			desc:   "CR LF split across reads",
			chunks: []string{gga + "\r", "\n" + rmc + "\r\n"},
			want:   []string{gga, rmc},
			stats:  framerStats{sentences: 2},
		},
		{
			desc:   "a sentence over three reads",
			chunks: []string{gsa[:5], gsa[5:40], gsa[40:] + "\r\n" + rmc[:3], rmc[3:] + "\r\n"},
			want:   []string{gsa, rmc},
			stats:  framerStats{sentences: 2},
		},
		{
			desc:   "a full read without padding",
			chunks: []string{(gga + "\r\n" + gsa + "\r\n" + rmc + "\r\n" + gga)[:readSize], (gga + "\r\n" + gsa + "\r\n" + rmc + "\r\n" + gga + "\r\n")[readSize:]},
			want:   []string{gga, gsa, rmc, gga},
			stats:  framerStats{sentences: 4},
		},
		{
			desc: "NULs",
			// gp-320fw: a sentence broken off by NULs and spaces.
			chunks: []string{"$GPRMC,000346.03,A,4808\x00\x00\x00\x00      \r\n" + rmc + "\r\n"},
			want:   []string{rmc},
			stats:  framerStats{sentences: 1, garbage: 1},
		},
		{
			desc:   "NULs between sentences",
			chunks: []string{"\x00\x00\x00" + gga + "\r\n\x00" + rmc + "\r\n"},
			want:   []string{gga, rmc},
			stats:  framerStats{sentences: 2, garbage: 2},
		},
		{
			desc:   "two sentences merged on one line",
			chunks: []string{gsaNoFix + rmcNoFix + "\r\n"},
			want:   []string{rmcNoFix},
			stats:  framerStats{sentences: 1, garbage: 1},
		},
		{
			desc:   "a fragment without $",
			chunks: []string{",,,,,,,,,,,,,*1E\r\n" + gga + "\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1, garbage: 1},
		},
		{
			desc:   "overlong",
			chunks: []string{"$PMTKCHN," + strings.Repeat("21422,", 20) + "*42\r\n" + rmc + "\r\n"},
			want:   []string{rmc},
			stats:  framerStats{sentences: 1, overlong: 1},
		},
		{
			desc:   "120 bytes is not overlong",
			chunks: []string{Command("GPTXT," + strings.Repeat("x", 120-len("$GPTXT,*hh")))},
			want:   []string{strings.TrimSuffix(Command("GPTXT,"+strings.Repeat("x", 120-len("$GPTXT,*hh"))), "\r\n")},
			stats:  framerStats{sentences: 1},
		},
		{
			desc:   "missing checksum",
			chunks: []string{"$POLYN,TIME,RESTART_OCCURRED\r\n" + gga + "\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1, checksum: 1},
		},
		{
			desc:   "wrong checksum",
			chunks: []string{strings.Replace(gga, "4404.1306", "4404.1307", 1) + "\r\n" + rmc + "\r\n"},
			want:   []string{rmc},
			stats:  framerStats{sentences: 1, checksum: 1},
		},
		{
			desc:   "truncated checksum",
			chunks: []string{gga[:len(gga)-1] + "\r\n"},
			stats:  framerStats{checksum: 1},
		},
		{
			desc:   "lower-case checksum",
			chunks: []string{strings.ToLower(gsa[len(gsa)-3:]) + "\r\n" + "$GPGSA,A,1,,,,,,,,,,,,,,,*1e\r\n"},
			want:   []string{"$GPGSA,A,1,,,,,,,,,,,,,,,*1e"},
			stats:  framerStats{sentences: 1, garbage: 1},
		},
		{
			desc:   "only padding",
			chunks: []string{"", ""},
		},
		{
			desc:   "a bare CR and LF",
			chunks: []string{"\r\r\n\n" + gga + "\r\n"},
			want:   []string{gga},
			stats:  framerStats{sentences: 1},
		},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: reads(tc.chunks...)}
			c := &i2c.Dev{Bus: bus, Addr: Addr}
			var r reader
			var got []string
			for range tc.chunks {
				s, err := r.read(c)
				require.NoError(t, err)
				got = append(got, s...)
			}
			require.Equal(t, tc.want, got)
			st := r.fr.stats
			st.nonPad = 0
			require.Equal(t, tc.stats, st)
			require.NoError(t, bus.Close())
		})
	}
}

func TestReaderBusError(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true}
	var r reader
	_, err := r.read(&i2c.Dev{Bus: bus, Addr: Addr})
	require.ErrorContains(t, err, "i2ctest: unexpected Tx()")
}

// TestReaderSplitAnywhere: where reads cut the stream, and where padding
// falls, changes nothing.
func TestReaderSplitAnywhere(t *testing.T) {
	stream := gga + "\r\n" + gsaNoFix + rmcNoFix + "\r\n\x00\x00" + gsa + "\r\n,,*1E\r\n" + rmc + "\r\n"
	want := []string{gga, rmcNoFix, gsa, rmc}
	for cut := 1; cut < len(stream); cut++ {
		for _, padded := range []bool{false, true} {
			var f framer
			var got []string
			emit := func(s string) { got = append(got, s) }
			f.feed([]byte(stream[:cut]), emit)
			if padded {
				f.feed([]byte("\n\n\n"), emit)
			}
			f.feed([]byte(stream[cut:]), emit)
			require.Equal(t, want, got, "cut at %d", cut)
			require.Equal(t, uint64(3), f.stats.garbage, "cut at %d", cut)
		}
	}
}
