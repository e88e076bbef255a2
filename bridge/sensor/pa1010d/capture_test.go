package pa1010d_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/wire"
)

// The three real captures of /work/shared/testdata/nmea (gpsd's regression
// corpus), with gpsd's own decoding of each (.log.chk) as the oracle.
const testdata = "../../../../shared/testdata/nmea"

const (
	capMT3339 = "mt3339.log"
	capMTK    = "mtk-3301.log"
	capGP320  = "gp-320fw-2019-04-07-coldboot.log"
)

// readTestdata fails the test, rather than skipping it, when the captures
// are not where the repository layout puts them.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, name))
	require.NoError(t, err, "the shared NMEA captures must be at %s", testdata)
	return b
}

// countingDev counts the reads that reach the simulated receiver.
type countingDev struct {
	sim.Device
	reads atomic.Int64
}

func (c *countingDev) Tx(w, r []byte) error {
	if len(r) > 0 {
		c.reads.Add(1)
	}
	return c.Device.Tx(w, r)
}

// replay is a capture fed through the simulated receiver on a simulated bus
// to the real driver, until the receiver has sent all of it.
type replay struct {
	fixes     []pa1010d.Fix
	sentences []string // with a valid checksum, as the reader passed them on
	stats     pa1010d.Stats
}

// captureSpeed replays captures 100 times faster than recorded.
const captureSpeed = 100

func runCapture(t *testing.T, name string, opts pa1010d.Opts) replay {
	t.Helper()
	src, err := sim.ReadCapture(bytes.NewReader(readTestdata(t, name)))
	require.NoError(t, err)
	rx := sim.NewPA1010D(src, sim.PA1010DOpts{Speed: captureSpeed})
	dev := &countingDev{Device: rx}
	bus := sim.NewBus("sim-i2c")
	bus.Attach(pa1010d.Addr, dev)

	var rp replay
	opts.PollInterval = 3 * time.Millisecond
	d, err := pa1010d.OpenHooked(bus, pa1010d.Addr, &opts, func(s string) { rp.sentences = append(rp.sentences, s) })
	require.NoError(t, err)

	// Stop once the receiver has sent everything and the driver has read
	// twice more, so that it has taken in the last bytes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deadline := time.After(20 * time.Second)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		seen := int64(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case <-deadline:
				t.Error("the replay did not end in 20 s")
				cancel()
				return
			case <-tick.C:
			}
			if seen < 0 && rx.Done() {
				seen = dev.reads.Load()
			}
			if seen >= 0 && dev.reads.Load() >= seen+2 {
				cancel()
				return
			}
		}
	}()
	for {
		f, err := d.Next(ctx)
		if err != nil {
			require.ErrorIs(t, err, context.Canceled)
			break
		}
		rp.fixes = append(rp.fixes, f)
	}
	rp.stats = d.Stats()
	return rp
}

// tpv is the part of gpsd's TPV report that is compared.
type tpv struct {
	Mode   int      `json:"mode"`
	Time   string   `json:"time"`
	Lat    *float64 `json:"lat"`
	Lon    *float64 `json:"lon"`
	AltMSL *float64 `json:"altMSL"`
}

// gpsdEpoch is gpsd's reports for one epoch: the TPVs that followed the
// sentences of one time of day.
type gpsdEpoch struct {
	key  int64 // time of day, ms
	tpvs []tpv
}

// bestTPV is the last TPV of the epoch with a fix: gpsd's most complete.
func (e gpsdEpoch) bestTPV() (tpv, bool) {
	for i := len(e.tpvs) - 1; i >= 0; i-- {
		if e.tpvs[i].Mode >= 2 {
			return e.tpvs[i], true
		}
	}
	return tpv{}, false
}

// oracle is gpsd's decoding of a capture.
type oracle struct {
	sentences []string // the sentences gpsd accepted, echoed in the .chk
	epochs    []gpsdEpoch
}

// timeOfDay parses hhmmss[.sss] into milliseconds.
func timeOfDay(s string) (int64, bool) {
	if len(s) < 6 {
		return 0, false
	}
	h, err1 := strconv.Atoi(s[0:2])
	m, err2 := strconv.Atoi(s[2:4])
	sec, err3 := strconv.ParseFloat(s[4:], 64)
	if err1 != nil || err2 != nil || err3 != nil || h > 23 || m > 59 || sec >= 61 {
		return 0, false
	}
	return int64(h)*3600_000 + int64(m)*60_000 + int64(math.Round(sec*1000)), true
}

// sentenceKey is the time of day of a sentence that carries one.
func sentenceKey(s string) (int64, bool) {
	f := strings.Split(strings.SplitN(s, "*", 2)[0], ",")
	if len(f[0]) != 6 {
		return 0, false
	}
	i := 1
	switch f[0][3:] {
	case "GGA", "RMC", "ZDA", "GNS", "GST":
	case "GLL":
		i = 5
	default:
		return 0, false
	}
	if i >= len(f) {
		return 0, false
	}
	return timeOfDay(f[i])
}

// readOracle reads a .log.chk: echoed input sentences, each followed by
// the JSON reports gpsd made from it. A TPV belongs to the epoch of the
// last timed sentence before it.
func readOracle(t *testing.T, name string) oracle {
	t.Helper()
	var o oracle
	key := int64(-1)
	for _, line := range strings.Split(string(readTestdata(t, name+".chk")), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "$"):
			o.sentences = append(o.sentences, line)
			if k, ok := sentenceKey(line); ok {
				key = k
				if len(o.epochs) == 0 || o.epochs[len(o.epochs)-1].key != k {
					o.epochs = append(o.epochs, gpsdEpoch{key: k})
				}
			}
		case strings.Contains(line, `"class":"TPV"`):
			require.GreaterOrEqual(t, key, int64(0), "a TPV before any timed sentence")
			var v tpv
			require.NoError(t, json.Unmarshal([]byte(line), &v))
			e := &o.epochs[len(o.epochs)-1]
			e.tpvs = append(e.tpvs, v)
		}
	}
	return o
}

// fixEpochs are the keys of gpsd's epochs with a TPV of mode 2 or 3.
func (o oracle) fixEpochs() []int64 {
	var keys []int64
	for _, e := range o.epochs {
		if _, ok := e.bestTPV(); ok {
			keys = append(keys, e.key)
		}
	}
	return keys
}

func (o oracle) epoch(key int64) gpsdEpoch {
	for _, e := range o.epochs {
		if e.key == key {
			return e
		}
	}
	return gpsdEpoch{}
}

// framing is what the reader must make of a capture, worked out here from
// the file line by line, independently of the driver's byte-by-byte state
// machine (which sees the bytes through padding and reads of 255): a line
// is cut at each '$'; what precedes the first '$' and every part followed
// by another '$' is garbage; the last part is the sentence, garbage if it
// holds a byte that is not printable ASCII, overlong beyond 120 bytes, else
// kept if "*hh" ends it and is right, a checksum failure if not.
type framing struct {
	valid                          []string
	checksum, garbage, overlong    int
	lineMismatch, mergedMismatches int // README's count and its merged lines
}

var starHex = regexp.MustCompile(`^\$(.*)\*([0-9A-Fa-f]{2})$`)

func sum(s string) byte {
	var c byte
	for i := 0; i < len(s); i++ {
		c ^= s[i]
	}
	return c
}

func checksumMatches(s string) (ok, hasSum bool) {
	m := starHex.FindStringSubmatch(s)
	if m == nil {
		return false, false
	}
	v, _ := strconv.ParseUint(m[2], 16, 8)
	return byte(v) == sum(m[1]), true
}

func frame(data []byte) framing {
	var f framing
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimRight(l, "\r")
		if strings.HasPrefix(l, "#") {
			continue
		}
		// The README's count: a "$...*hh" line whose checksum fails as a
		// whole, merged lines included.
		if ok, has := checksumMatches(l); has && !ok {
			f.lineMismatch++
			if strings.Count(l, "$") > 1 {
				f.mergedMismatches++
			}
		}
		parts := strings.Split(l, "$")
		if parts[0] != "" {
			f.garbage++
		}
		if len(parts) < 2 {
			continue
		}
		f.garbage += len(parts) - 2
		s := "$" + parts[len(parts)-1]
		printable := true
		for i := 0; i < len(s); i++ {
			printable = printable && s[i] >= 0x20 && s[i] <= 0x7e
		}
		switch ok, _ := checksumMatches(s); {
		case !printable:
			f.garbage++
		case len(s) > 120:
			f.overlong++
		case ok:
			f.valid = append(f.valid, s)
		default:
			f.checksum++
		}
	}
	return f
}

// requireFraming holds the driver's reader to frame's count of the capture
// and to the sentences gpsd accepted.
func requireFraming(t *testing.T, name string, rp replay, o oracle) {
	t.Helper()
	want := frame(readTestdata(t, name))
	var got []string
	for _, s := range rp.sentences {
		if !strings.HasPrefix(s, "$PMTK001,") { // our configuration's acks
			got = append(got, s)
		}
	}
	require.Equal(t, want.valid, got, "sentences passed on by the reader")
	require.Equal(t, uint64(want.checksum), rp.stats.ChecksumErrors, "checksum failures")
	require.Equal(t, uint64(want.garbage), rp.stats.Garbage, "garbage fragments")
	require.Equal(t, uint64(want.overlong), rp.stats.Overlong, "overlong sentences")
	require.Equal(t, uint64(len(rp.sentences)), rp.stats.Sentences)

	// gpsd accepts exactly the same sentences, except the ones over 120
	// bytes, which it takes (its limit is NMEA's 82 plus a margin for
	// proprietary sentences) and the reader drops.
	var gpsd []string
	for _, s := range o.sentences {
		if len(s) <= 120 {
			gpsd = append(gpsd, s)
		}
	}
	require.Equal(t, gpsd, got, "the reader and gpsd accept the same sentences")
}

var captureOpts = pa1010d.Opts{
	// The captures are from 2008 to 2015, older than the PA1010D and so
	// than DefaultOpts.NotBefore; what that refuses is tested apart.
	NotBefore: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
}

// TestCapturesAgainstGPSD replays each capture through the simulated
// receiver and the driver and compares every fix with gpsd's.
func TestCapturesAgainstGPSD(t *testing.T) {
	mtkOpts := captureOpts
	mtkOpts.MinSats = 3
	tt := []struct {
		name string
		opts pa1010d.Opts
		// refused are gpsd fix epochs the gate refuses by design, with
		// the reason.
		refused map[string]string
		// modeOf says which mode each fix must have, given gpsd's; nil
		// means the same.
		modeOf func(gpsd int) int
		fixes  int
	}{
		{name: capMT3339, opts: captureOpts, fixes: 30},
		{
			name: capMTK,
			opts: mtkOpts,
			refused: map[string]string{
				// gpsd reports mode 2 from this GGA alone, whose
				// quality field is 0 (no fix); the RMC that follows
				// says V, and gpsd's last TPV of the epoch is mode 1.
				"081434.590": "no fix (GGA quality 0)",
			},
			// The receiver uses 3 satellites: a 2D fix, as its own GSA
			// says (081439: "A,2,21,28,08"). gpsd reports 3D from
			// 081437 on because GGA has an altitude field, which with 3
			// satellites is the receiver's assumption, not a
			// measurement; so the fixes are 2D and carry no altitude.
			modeOf: func(int) int { return 2 },
			fixes:  4,
		},
		{
			name: capGP320,
			opts: pa1010d.Opts{}, // its fix is dated 2019-04-07
			refused: map[string]string{
				// The capture starts after this epoch's RMC: GGA, GSA
				// and GLL have no date, so there is no UTC time (gpsd's
				// TPVs of this epoch have none either).
				"000343.030": "no date",
			},
			fixes: 1,
		},
	}
	for _, tc := range tt {
		t.Run(tc.name, func(t *testing.T) {
			o := readOracle(t, tc.name)
			rp := runCapture(t, tc.name, tc.opts)
			requireFraming(t, tc.name, rp, o)

			// The epochs with a fix are gpsd's, less those refused by
			// design.
			var want []int64
			refused := map[int64]bool{}
			for k := range tc.refused {
				key, ok := timeOfDay(k)
				require.True(t, ok)
				refused[key] = true
			}
			for _, k := range o.fixEpochs() {
				if !refused[k] {
					want = append(want, k)
				}
				delete(refused, k)
			}
			require.Empty(t, refused, "every refusal is of an epoch where gpsd has a fix")
			var got []int64
			for _, f := range rp.fixes {
				got = append(got, timeKeyOf(f.Time))
			}
			require.Equal(t, want, got, "epochs with a fix")
			require.Len(t, rp.fixes, tc.fixes)
			require.Equal(t, uint64(len(rp.fixes)), rp.stats.Fixes)

			var maxDeg, maxAlt float64
			for _, f := range rp.fixes {
				e := o.epoch(timeKeyOf(f.Time))
				g, _ := e.bestTPV()
				if g.Time != "" {
					require.Equal(t, g.Time, f.Time.Format(wire.TimeLayout))
				}
				wantMode := g.Mode
				if tc.modeOf != nil {
					wantMode = tc.modeOf(g.Mode)
					require.GreaterOrEqual(t, g.Mode, wantMode)
				}
				require.Equal(t, wantMode, f.Mode, "mode at %s", f.Time)

				var w wire.GPS
				f.Fill(&w)
				for _, d := range []float64{f.Latitude - *g.Lat, f.Longitude - *g.Lon, w.Latitude - *g.Lat, w.Longitude - *g.Lon} {
					require.InDelta(t, 0, d, 1e-6, "position at %s", f.Time)
					maxDeg = math.Max(maxDeg, math.Abs(d))
				}
				if f.Mode == 3 {
					require.NotNil(t, f.Altitude)
					require.NotNil(t, w.AltitudeM)
					for _, a := range []float64{*f.Altitude, *w.AltitudeM} {
						require.InDelta(t, *g.AltMSL, a, 0.1, "altitude at %s", f.Time)
						maxAlt = math.Max(maxAlt, math.Abs(a-*g.AltMSL))
					}
				} else {
					require.Nil(t, f.Altitude, "a 2D fix has no altitude")
				}
				require.Less(t, math.Abs(f.Latitude), 90.0, "never the placeholder")
				require.False(t, f.Time.Before(tc.opts.NotBefore), "never an early date")
			}
			t.Logf("%s: %d fixes, gpsd %d fix epochs; max deviation %.2g° and %.2g m",
				tc.name, len(rp.fixes), len(o.fixEpochs()), maxDeg, maxAlt)
		})
	}
}

func timeKeyOf(t time.Time) int64 {
	return int64(t.Hour())*3600_000 + int64(t.Minute())*60_000 + int64(t.Second())*1000 + int64(t.Nanosecond()/1e6)
}

// TestCapturesDefaultGate: with the default gate, what the captures cannot
// honestly give a PA1010D node is refused.
func TestCapturesDefaultGate(t *testing.T) {
	tt := []struct {
		name    string
		opts    pa1010d.Opts
		epochs  uint64
		refusal string
	}{
		// Dated 2015: before DefaultOpts.NotBefore, every epoch refused.
		{capMT3339, pa1010d.DefaultOpts, 30, "2015-04-13 is before 2019-04-07"},
		// 3 satellites, fewer than DefaultOpts.MinSats, in every epoch
		// with a fix; the epochs before have placeholder time and
		// position and no fix.
		{capMTK, captureOpts, 11, "3 satellites, fewer than 4"},
	}
	for _, tc := range tt {
		t.Run(tc.name, func(t *testing.T) {
			rp := runCapture(t, tc.name, tc.opts)
			require.Empty(t, rp.fixes)
			require.Equal(t, tc.epochs, rp.stats.Epochs)
			require.Equal(t, tc.epochs, rp.stats.EpochsNoFix)
			require.Zero(t, rp.stats.FixMode)
			require.Contains(t, rp.stats.LastRefusal, tc.refusal)
		})
	}
}

// TestBadCapture is the gp-320fw cold boot: broken checksums, truncated
// and merged sentences, NULs, fragments without '$', garbage dates.
func TestBadCapture(t *testing.T) {
	data := readTestdata(t, capGP320)
	f := frame(data)
	// The README's 41 counts whole lines: 36 sentences with a wrong
	// checksum and 5 lines where two sentences are merged, the first cut
	// short. The reader resynchronises at the second '$' of those, drops
	// the first part as garbage and keeps the second when it is valid; it
	// also counts the 4 sentences that end without a checksum.
	require.Equal(t, 41, f.lineMismatch)
	require.Equal(t, 5, f.mergedMismatches)
	require.Equal(t, 36+4, f.checksum)
	require.Equal(t, 8, f.garbage)

	rp := runCapture(t, capGP320, pa1010d.Opts{})
	require.Equal(t, uint64(f.checksum), rp.stats.ChecksumErrors)
	require.Equal(t, uint64(f.garbage), rp.stats.Garbage)
	require.Len(t, rp.fixes, 1)
	fix := rp.fixes[0]
	require.Equal(t, "2019-04-07T00:03:45.030Z", fix.Time.Format(wire.TimeLayout))
	require.Equal(t, 3, fix.Mode)
	require.Equal(t, 4, fix.Sats)
	require.InDelta(t, 1.4*pa1010d.DefaultOpts.UERE, fix.Accuracy, 1e-9)
	// Everything after the reboot (1999, 2006 and 2010 dates, 0°,0°) is
	// without a fix; the last epoch's refusal says so.
	require.Zero(t, rp.stats.FixMode)
	require.Contains(t, rp.stats.LastRefusal, "no fix")
}
