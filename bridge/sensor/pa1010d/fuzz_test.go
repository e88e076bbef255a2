package pa1010d

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// captureSeeds are the three real captures as the receiver would send
// them (gpsd's comment lines left out, every line ending in CR LF), in
// pieces of lines lines: small inputs keep the fuzzer's minimisation of
// what it finds short, so that a bounded run spends its time fuzzing. A
// missing file fails the fuzz test rather than leaving it without seeds.
func captureSeeds(f *testing.F, lines int) [][]byte {
	var seeds [][]byte
	for _, name := range []string{"mt3339.log", "mtk-3301.log", "gp-320fw-2019-04-07-coldboot.log"} {
		data, err := os.ReadFile(filepath.Join("../../../../shared/testdata/nmea", name))
		require.NoError(f, err)
		var b bytes.Buffer
		n := 0
		for _, l := range bytes.Split(data, []byte("\n")) {
			l = bytes.TrimRight(l, "\r")
			if len(l) == 0 || l[0] == '#' {
				continue
			}
			b.Write(l)
			b.WriteString("\r\n")
			if n++; n%lines == 0 {
				seeds = append(seeds, bytes.Clone(b.Bytes()))
				b.Reset()
			}
		}
		if b.Len() > 0 {
			seeds = append(seeds, b.Bytes())
		}
	}
	return seeds
}

// FuzzReassembler feeds a byte stream to the reader whole, then cut into
// reads of varying size with padding inserted between and inside them, as
// the receiver does. The sentences and counts must not change, and every
// sentence passed on must be one a checksum vouches for.
func FuzzReassembler(f *testing.F) {
	for i, seed := range captureSeeds(f, 12) {
		f.Add(seed, uint64(i*7919+255))
	}
	f.Add([]byte(gsaNoFix+rmcNoFix+"\r\n\x00\x00$GP\r\n,,*1E\r\n"+gga+"\r"), uint64(3))
	f.Fuzz(func(t *testing.T, stream []byte, cuts uint64) {
		var whole framer
		var want []string
		whole.feed(stream, func(s string) { want = append(want, s) })

		var split framer
		var got []string
		emit := func(s string) { got = append(got, s) }
		rest := stream
		for r := cuts | 1; len(rest) > 0; r = r*6364136223846793005 + 1442695040888963407 {
			n := min(len(rest), int(r>>33%readSize)+1)
			if r&(1<<20) != 0 {
				split.feed([]byte("\n\n"), emit) // padding between reads
			}
			split.feed(rest[:n], emit)
			rest = rest[n:]
		}
		if !bytes.Equal(want2bytes(want), want2bytes(got)) {
			t.Fatalf("split reads changed the sentences:\nwhole %q\nsplit %q", want, got)
		}
		ws, gs := whole.stats, split.stats
		if ws != gs {
			t.Fatalf("split reads changed the counts: %+v, %+v", ws, gs)
		}
		for _, s := range want {
			if !checksumOK([]byte(s)) || s[0] != '$' || len(s) > maxSentence {
				t.Fatalf("passed on %q", s)
			}
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e || (i > 0 && s[i] == '$') {
					t.Fatalf("passed on %q", s)
				}
			}
		}
		if uint64(len(want)) != ws.sentences {
			t.Fatalf("%d sentences, counted %d", len(want), ws.sentences)
		}
	})
}

func want2bytes(s []string) []byte { return []byte(strings.Join(s, "\n")) }

// FuzzEpochCombiner feeds lines of text to the epoch combiner as
// sentences, each given a correct checksum first so that the fuzzer's
// changes reach the fields instead of dying at the checksum. Whatever the
// input, every fix that comes out must pass the gate's rules, be a valid
// payload, and come at most once per epoch.
func FuzzEpochCombiner(f *testing.F) {
	for _, seed := range captureSeeds(f, 12) {
		f.Add(seed)
	}
	f.Add([]byte(strings.Join([]string{ggaFix, gsaGP, gsaGL, rmcFix, at(ggaFix, "101505"), at(rmcFix, "101505")}, "\r\n")))
	o := Opts{NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), MinSats: 3}.withDefaults()
	f.Fuzz(func(t *testing.T, text []byte) {
		c := newCombiner(&o)
		timed := 0
		for _, line := range strings.Split(string(text), "\n") {
			line = strings.TrimRight(line, "\r")
			body := strings.TrimPrefix(line, "$")
			if i := strings.LastIndexByte(body, '*'); i >= 0 && i >= len(body)-3 {
				body = body[:i]
			}
			if kind := strings.SplitN(body, ",", 2)[0]; len(kind) >= 3 && strings.Contains("GGA RMC ZDA GLL GNS GST", kind[len(kind)-3:]) {
				timed++
			}
			c.add(s(body))
		}
		if c.cur != nil {
			c.close()
		}
		var last time.Time
		fixes := 0
		for _, r := range c.take() {
			if r.refusal != "" {
				continue
			}
			fixes++
			fx := r.fix
			switch {
			case fx.Mode != 2 && fx.Mode != 3:
				t.Fatalf("mode %d", fx.Mode)
			case !(math.Abs(fx.Latitude) < 90) || !(math.Abs(fx.Longitude) <= 180) || fx.Latitude == 0 && fx.Longitude == 0:
				t.Fatalf("position %v %v", fx.Latitude, fx.Longitude)
			case fx.Time.Before(o.NotBefore):
				t.Fatalf("time %v", fx.Time)
			case !last.IsZero() && !fx.Time.After(last) && last.Sub(fx.Time) <= maxBackJump:
				t.Fatalf("time %v after %v", fx.Time, last)
			case fx.Sats < o.MinSats || !(fx.HDOP > 0 && fx.HDOP <= o.MaxHDOP):
				t.Fatalf("sats %d, HDOP %v", fx.Sats, fx.HDOP)
			case !(fx.Accuracy >= 0) || math.IsInf(fx.Accuracy, 0):
				t.Fatalf("accuracy %v", fx.Accuracy)
			case fx.Mode == 2 && fx.Altitude != nil:
				t.Fatal("altitude in a 2D fix")
			}
			last = fx.Time
			var g wire.GPS
			fx.Fill(&g)
			if _, err := json.Marshal(g); err != nil {
				t.Fatalf("payload: %v", err) // NaN or ±Inf somewhere
			}
		}
		if fixes > timed {
			t.Fatalf("%d fixes from %d timed sentences", fixes, timed)
		}
	})
}
