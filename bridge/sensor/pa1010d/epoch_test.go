package pa1010d

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// s frames an NMEA body with its checksum, as the reader passes it on.
func s(body string) string { return strings.TrimSuffix(Command(body), "\r\n") }

// A MediaTek epoch with a 3D fix (PA1010D order: GGA, GSA per constellation,
// RMC), 2026-11-24 10:15:04 UTC.
var (
	ggaFix  = s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,0.98,1127.7,M,-19.6,M,,")
	gsaGP   = s("GPGSA,A,3,20,16,09,03,07,10,,,,,,,1.64,0.98,1.31")
	gsaGL   = s("GLGSA,A,3,65,66,67,68,,,,,,,,,1.64,0.98,1.31")
	rmcFix  = s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,2.16,211.30,241126,,,A")
	fixTime = time.Date(2026, 11, 24, 10, 15, 4, 0, time.UTC)
)

// at rewrites the time of a sentence built above to hhmmss.
func at(sentence, hhmmss string) string {
	body := strings.TrimPrefix(sentence[:len(sentence)-3], "$")
	return s(strings.Replace(body, "101504", hhmmss, 1))
}

func combine(o Opts, sentences ...string) (*combiner, []result) {
	o = o.withDefaults()
	c := newCombiner(&o)
	for _, x := range sentences {
		c.add(x)
	}
	return &c, c.take()
}

func TestCombineFix(t *testing.T) {
	_, res := combine(Opts{}, ggaFix, gsaGP, gsaGL, rmcFix)
	require.Len(t, res, 1, "the epoch closes at RMC, without waiting for the next")
	require.Empty(t, res[0].refusal)
	f := res[0].fix
	require.Equal(t, fixTime, f.Time)
	require.InDelta(t, 44.068843333, f.Latitude, 1e-9)
	require.InDelta(t, -121.314191667, f.Longitude, 1e-9)
	require.Equal(t, 3, f.Mode)
	require.Equal(t, 10, f.Sats)
	require.Equal(t, 0.98, f.HDOP)
	require.InDelta(t, 4.9, f.Accuracy, 1e-9)
	require.InDelta(t, 2.16*1.852, *f.SpeedKmh, 1e-9)
	require.InDelta(t, 211.3, *f.CourseDeg, 1e-9)
	require.InDelta(t, 1127.7, *f.Altitude, 1e-9)

	g := wire.GPS{Header: wire.Header{Site: "rpi4", Node: "pizero-01", Seq: 7}}
	f.Fill(&g)
	b, err := json.Marshal(g)
	require.NoError(t, err)
	require.JSONEq(t, `{"site":"rpi4","node":"pizero-01","seq":7,"ts":"0001-01-01T00:00:00.000Z","time_source":"",
		"latitude":44.068843,"longitude":-121.314192,"altitude_m":1127.7,"speed_kmh":4,"course_deg":211.3,
		"fix":3,"sats":10,"hdop":0.98,"gps_accuracy":4.9}`, string(b), "the header is left alone")
}

// TestCombineRefusals: each rule of the quality gate, on an otherwise good
// epoch.
func TestCombineRefusals(t *testing.T) {
	early := Opts{NotBefore: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)}
	tt := []struct {
		desc      string
		opts      Opts
		sentences []string
		refusal   string
	}{
		{"GGA quality 0", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,0,10,0.98,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "no fix (GGA quality 0)"},
		{"GGA quality empty", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,,10,0.98,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "no fix (GGA quality 0)"},
		{"dead reckoning", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,6,10,0.98,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "dead reckoning"},
		{"RMC status V", Opts{}, []string{ggaFix, gsaGP, s("GNRMC,101504.000,V,4404.1306,N,12118.8515,W,2.16,211.30,241126,,,A")}, "RMC status V"},
		{"RMC mode N", Opts{}, []string{ggaFix, gsaGP, s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,2.16,211.30,241126,,,N")}, "RMC mode N"},
		{"GSA no fix", Opts{}, []string{ggaFix, s("GPGSA,A,1,,,,,,,,,,,,,1.64,0.98,1.31"), rmcFix}, "GSA fix type 1"},
		{
			"MediaTek placeholder, even with a valid status",
			early,
			[]string{s("GPGGA,235946.005,8960.000000,N,00000.000000,E,1,5,1.0,137.000,M,13.000,M,,"), gsaGP, s("GPRMC,235946.005,A,8960.000000,N,00000.000000,E,0.000,0.00,050180,,,A")},
			"placeholder position (latitude 90°",
		},
		{"null island", Opts{}, []string{s("GNGGA,101504.000,0000.0000,N,00000.0000,E,1,10,0.98,12.0,M,,M,,"), gsaGP, rmcFix}, "placeholder position (0°, 0°)"},
		{"empty position", Opts{}, []string{s("GNGGA,101504.000,,,,,1,10,0.98,12.0,M,,M,,"), gsaGP, rmcFix}, "no valid position"},
		{"minutes of 60", Opts{}, []string{s("GNGGA,101504.000,4460.0000,N,12118.8515,W,1,10,0.98,12.0,M,,M,,"), gsaGP, rmcFix}, "no valid position"},
		{
			"MediaTek's date without time (1980-01-05)",
			Opts{},
			[]string{at(ggaFix, "235946"), gsaGP, s("GNRMC,235946.000,A,4404.1306,N,12118.8515,W,0.0,0.0,050180,,,A")},
			"date 1980-01-05 is before 2019-04-07",
		},
		{
			"first week rollover date (1999-08-22)",
			Opts{},
			[]string{at(ggaFix, "000425"), gsaGP, s("GNRMC,000425.000,A,4404.1306,N,12118.8515,W,0.0,0.0,220899,,,A")},
			"date 1999-08-22 is before",
		},
		{"no date", Opts{}, []string{ggaFix, gsaGP, s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,2.16,211.30,,,,A")}, "no date"},
		{"impossible date", Opts{}, []string{ggaFix, gsaGP, s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,2.16,211.30,310426,,,A")}, "no date"},
		{"RMC and ZDA disagree", Opts{Sentences: RMC | GGA | GSA | ZDA}, []string{ggaFix, gsaGP, rmcFix, s("GNZDA,101504.000,25,11,2026,,")}, "RMC and ZDA dates disagree"},
		{"too few satellites", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,03,0.98,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "3 satellites, fewer than 4"},
		{"no satellite count", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,,0.98,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "no satellite count"},
		{"HDOP above the ceiling", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,20.10,1127.7,M,-19.6,M,,"), gsaGP, rmcFix}, "HDOP 20.10 is above 20.00"},
		{"HDOP above a stricter ceiling", Opts{MaxHDOP: 0.9}, []string{ggaFix, gsaGP, rmcFix}, "HDOP 0.98 is above 0.90"},
		{"no HDOP anywhere", Opts{}, []string{s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,,1127.7,M,-19.6,M,,"), s("GPGSA,A,3,20,16,09,03,07,10,,,,,,,,,"), rmcFix}, "no HDOP"},
		{"no time of day", Opts{}, []string{s("GNGGA,,4404.1306,N,12118.8515,W,1,10,0.98,1127.7,M,-19.6,M,,"), gsaGP, s("GNRMC,,A,4404.1306,N,12118.8515,W,2.16,211.30,241126,,,A")}, "no time of day"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			c, res := combine(tc.opts, tc.sentences...)
			if c.cur != nil {
				c.close() // an epoch that was not complete
				res = append(res, c.take()...)
			}
			require.Len(t, res, 1)
			require.Contains(t, res[0].refusal, tc.refusal)
		})
	}
}

// TestCombineMissingSentences: a sentence missing from an epoch never
// merges two epochs and never carries one epoch's data into another.
func TestCombineMissingSentences(t *testing.T) {
	t.Run("no GSA: the mode comes from GGA, the epoch closes at the next time", func(t *testing.T) {
		_, res := combine(Opts{}, ggaFix, rmcFix, at(ggaFix, "101505"), at(rmcFix, "101505"))
		require.Len(t, res, 1, "the second epoch is still open")
		require.Equal(t, 3, res[0].fix.Mode, "10 satellites and an altitude")
		require.Equal(t, fixTime, res[0].fix.Time)
	})
	t.Run("no GSA, 3 satellites: 2D, no altitude", func(t *testing.T) {
		_, res := combine(Opts{MinSats: 3},
			s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,03,2.88,1127.7,M,-19.6,M,,"), rmcFix, at(ggaFix, "101505"))
		require.Len(t, res, 1)
		require.Equal(t, 2, res[0].fix.Mode)
		require.Nil(t, res[0].fix.Altitude)
		var g wire.GPS
		res[0].fix.Fill(&g)
		require.Nil(t, g.AltitudeM)
	})
	t.Run("no RMC: no date", func(t *testing.T) {
		_, res := combine(Opts{}, ggaFix, gsaGP, at(ggaFix, "101505"))
		require.Len(t, res, 1)
		require.Contains(t, res[0].refusal, "no date")
	})
	t.Run("no RMC, ZDA: date from ZDA, speed and course from VTG", func(t *testing.T) {
		_, res := combine(Opts{Sentences: RMC | GGA | GSA | ZDA | VTG},
			ggaFix, gsaGP, s("GNVTG,211.30,T,,M,2.16,N,4.00,K,A"), s("GNZDA,101504.000,24,11,2026,,"), at(ggaFix, "101505"))
		require.Len(t, res, 1)
		require.Empty(t, res[0].refusal)
		require.Equal(t, fixTime, res[0].fix.Time)
		require.InDelta(t, 4.0, *res[0].fix.SpeedKmh, 1e-9)
		require.InDelta(t, 211.3, *res[0].fix.CourseDeg, 1e-9)
	})
	t.Run("no GGA: no fix, even with a valid RMC", func(t *testing.T) {
		_, res := combine(Opts{}, gsaGP, rmcFix, at(rmcFix, "101505"))
		require.Len(t, res, 1)
		require.Contains(t, res[0].refusal, "no GGA")
	})
	t.Run("an epoch with nothing but RMC does not lend its date to the next", func(t *testing.T) {
		_, res := combine(Opts{}, rmcFix, at(ggaFix, "101505"), gsaGP, at(ggaFix, "101506"))
		require.Len(t, res, 2)
		require.Contains(t, res[0].refusal, "no GGA")
		require.Contains(t, res[1].refusal, "no date")
	})
	t.Run("empty speed and course are nil, not 0", func(t *testing.T) {
		_, res := combine(Opts{}, ggaFix, gsaGP, s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,,,241126,,,A"))
		require.Len(t, res, 1)
		require.Nil(t, res[0].fix.SpeedKmh)
		require.Nil(t, res[0].fix.CourseDeg)
	})
}

// TestCombineOneFixPerEpoch: a repeated, late or out-of-order epoch gives
// no second fix.
func TestCombineOneFixPerEpoch(t *testing.T) {
	t.Run("sentences after the epoch completed are stray", func(t *testing.T) {
		c, res := combine(Opts{}, ggaFix, gsaGP, rmcFix, gsaGL, s("GNVTG,211.30,T,,M,2.16,N,4.00,K,A"), s("GNZDA,101504.000,24,11,2026,,"))
		require.Len(t, res, 1)
		require.Equal(t, uint64(3), c.stats.stray)
		require.Nil(t, c.cur)
	})
	t.Run("the same epoch again", func(t *testing.T) {
		c, res := combine(Opts{}, ggaFix, gsaGP, rmcFix, ggaFix, gsaGP, rmcFix)
		require.Len(t, res, 1)
		require.Equal(t, uint64(3), c.stats.stray)
	})
	t.Run("a second GGA of one time opens a new epoch, which is refused", func(t *testing.T) {
		_, res := combine(Opts{}, ggaFix, rmcFix, ggaFix, rmcFix, at(ggaFix, "101505"))
		require.Len(t, res, 2)
		require.Empty(t, res[0].refusal)
		require.Contains(t, res[1].refusal, "is not after the last fix")
	})
	t.Run("time going back a little is refused, a receiver reset is not", func(t *testing.T) {
		_, res := combine(Opts{},
			ggaFix, gsaGP, rmcFix,
			at(ggaFix, "101503"), gsaGP, at(rmcFix, "101503"),
			at(ggaFix, "080000"), gsaGP, at(rmcFix, "080000"))
		require.Len(t, res, 3)
		require.Empty(t, res[0].refusal)
		require.Contains(t, res[1].refusal, "is not after the last fix")
		require.Empty(t, res[2].refusal)
	})
	t.Run("u-blox order: RMC first, the second GSA after completion", func(t *testing.T) {
		c, res := combine(Opts{}, rmcFix, ggaFix, gsaGP, gsaGL, at(rmcFix, "101505"), at(ggaFix, "101505"), gsaGP, gsaGL)
		require.Len(t, res, 2)
		require.Empty(t, res[0].refusal)
		require.Empty(t, res[1].refusal)
		require.Equal(t, uint64(2), c.stats.stray)
	})
	t.Run("untimed sentences before the first epoch are stray", func(t *testing.T) {
		c, res := combine(Opts{}, gsaGP, s("GNVTG,211.30,T,,M,2.16,N,4.00,K,A"), ggaFix, gsaGP, rmcFix)
		require.Len(t, res, 1)
		require.Equal(t, uint64(2), c.stats.stray)
	})
}

func TestCombineGST(t *testing.T) {
	_, res := combine(Opts{Sentences: RMC | GGA | GSA | GST},
		ggaFix, gsaGP, rmcFix, s("GNGST,101504.000,3.1,2.0,1.5,30.0,1.8,2.4,4.0"))
	require.Len(t, res, 1)
	require.InDelta(t, 3.0, res[0].fix.Accuracy, 1e-9, "√(1.8² + 2.4²)")

	_, res = combine(Opts{Sentences: RMC | GGA | GSA | GST},
		ggaFix, gsaGP, rmcFix, s("GNGST,101504.000,,,,,,,"))
	require.Len(t, res, 1)
	require.InDelta(t, 4.9, res[0].fix.Accuracy, 1e-9, "empty GST: HDOP × UERE")
}

func TestCombineMalformed(t *testing.T) {
	c, res := combine(Opts{},
		s("GNGGA,101504.000,4404.1306,N,12118.8515,W,9,10,0.98,1127.7,M,-19.6,M,,"), // quality 9 does not exist
		s("GNGGA,1015x4.000,4404.1306,N,12118.8515,W,1,10,0.98,1127.7,M,-19.6,M,,"),
		s("PMTK010,001"), // proprietary: not for the combiner, not malformed
		gsaGP, rmcFix)
	require.Equal(t, uint64(2), c.stats.malformed)
	require.Len(t, res, 0, "RMC and GSA alone do not complete the epoch")
	c.close()
	require.Contains(t, c.take()[0].refusal, "no GGA")
}

// TestCombineBadChecksumNeverUsed: a position whose sentence fails the
// checksum is never used, even though the rest of the epoch is good.
func TestCombineBadChecksumNeverUsed(t *testing.T) {
	o := DefaultOpts
	c := newCombiner(&o)
	var f framer
	bad := strings.Replace(ggaFix, "4404.1306", "4504.1306", 1) // a bit flip on the wire
	f.feed([]byte(bad+"\r\n"+gsaGP+"\r\n"+rmcFix+"\r\n"+at(ggaFix, "101505")+"\r\n"), c.add)
	res := c.take()
	require.Equal(t, uint64(1), f.stats.checksum)
	require.Len(t, res, 1)
	require.Contains(t, res[0].refusal, "no GGA")
}

// TestNonFiniteFieldsAreMalformed: Go (and so go-nmea) parses "inf" and
// "nan" as floats. A checksum-valid sentence carrying one, in the altitude,
// the HDOP, a speed or a GST sigma, must not become a fix: +Inf and NaN pass
// comparisons and cannot be encoded as JSON, so the reading would be lost
// after it took its seq. The sentence counts as malformed.
func TestNonFiniteFieldsAreMalformed(t *testing.T) {
	for _, tc := range []struct{ desc, bad string }{
		{"GGA altitude", s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,0.98,inf,M,-19.6,M,,")},
		{"GGA HDOP", s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,+Inf,1127.7,M,-19.6,M,,")},
		{"RMC speed", s("GNRMC,101504.000,A,4404.1306,N,12118.8515,W,NaN,211.30,241126,,,A")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			sentences := []string{ggaFix, gsaGP, gsaGL, rmcFix}
			for i, x := range sentences {
				if x[:6] == tc.bad[:6] {
					sentences[i] = tc.bad
				}
			}
			c, res := combine(Opts{}, sentences...)
			require.Equal(t, uint64(1), c.stats.malformed)
			for _, r := range res {
				if r.refusal != "" {
					continue
				}
				g := wire.GPS{}
				r.fix.Fill(&g)
				_, err := json.Marshal(g)
				require.NoError(t, err, "a fix that passes encodes")
			}
		})
	}
	gstInf := s("GNGST,101504.000,2.3,4.1,3.2,87.5,inf,3.3,5.6")
	c, res := combine(Opts{Sentences: DefaultOpts.Sentences | GST}, ggaFix, gsaGP, gsaGL, gstInf, rmcFix, at(ggaFix, "101505"))
	require.Equal(t, uint64(1), c.stats.malformed)
	require.NotEmpty(t, res, "the next epoch closes this one")
	require.Empty(t, res[0].refusal, "the fix stands without the GST")
	require.InDelta(t, 4.9, res[0].fix.Accuracy, 1e-9, "accuracy from HDOP, not an infinite sigma")
}

// TestDefaultGatePublishesAColdStartFix: a receiver in a cold start or under
// a poor sky gives honest 3D fixes with 4 satellites and an HDOP just above
// 5 for minutes (gpsd reports them as fixes). The default gate is validity:
// it publishes them, with their accuracy (26 m here) for the consumer to
// judge, and still refuses the same epoch without a fix.
func TestDefaultGatePublishesAColdStartFix(t *testing.T) {
	gga := s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,04,5.21,1127.7,M,-19.6,M,,")
	gsa := s("GPGSA,A,3,20,16,09,03,,,,,,,,,9.87,5.21,8.38")
	_, res := combine(Opts{}, gga, gsa, rmcFix)
	require.Len(t, res, 1)
	require.Empty(t, res[0].refusal)
	require.Equal(t, 3, res[0].fix.Mode)
	require.Equal(t, 4, res[0].fix.Sats)
	require.InDelta(t, 5.21*DefaultOpts.UERE, res[0].fix.Accuracy, 1e-9)

	noFix := s("GNGGA,101504.000,4404.1306,N,12118.8515,W,0,04,5.21,1127.7,M,-19.6,M,,")
	_, res = combine(Opts{}, noFix, gsa, rmcFix)
	require.Len(t, res, 1)
	require.Equal(t, "no fix (GGA quality 0)", res[0].refusal)
	_, res = combine(Opts{}, s("GNGGA,101504.000,4404.1306,N,12118.8515,W,1,04,99.99,1127.7,M,-19.6,M,,"), gsa, rmcFix)
	require.Contains(t, res[0].refusal, "HDOP 99.99 is above 20.00", "the no-solution placeholder")
}

// TestFixIsPairedWithItsFirstSentence: a fix's Received is when the read
// that brought its epoch's first sentence began, not when the epoch closed
// after the rest of the burst (a few hundred ms later on the bus).
func TestFixIsPairedWithItsFirstSentence(t *testing.T) {
	o := Opts{}.withDefaults()
	c := newCombiner(&o)
	t0 := time.Now()
	c.at = t0
	c.add(ggaFix)
	c.at = t0.Add(300 * time.Millisecond)
	for _, x := range []string{gsaGP, gsaGL, rmcFix} {
		c.add(x)
	}
	res := c.take()
	require.Len(t, res, 1)
	require.Empty(t, res[0].refusal)
	require.Equal(t, t0, res[0].fix.Received)
}
