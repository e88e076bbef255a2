package pa1010d

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	nmea "github.com/adrianmo/go-nmea"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Fix is one epoch's position that passed the quality gate.
type Fix struct {
	// Time is the receiver's UTC time of the fix: RMC's (or ZDA's) date
	// with the epoch's time of day, to the receiver's millisecond.
	Time time.Time
	// Latitude and Longitude are in degrees, WGS84, north and east
	// positive, from GGA.
	Latitude, Longitude float64
	// Altitude is metres above mean sea level (GGA), nil in a 2D fix,
	// whose altitude is an assumption and not a measurement.
	Altitude *float64
	// SpeedKmh is the speed over ground (RMC, else VTG), nil when the
	// receiver did not report it.
	SpeedKmh *float64
	// CourseDeg is the true course over ground (RMC, else VTG), nil when
	// the receiver did not report it.
	CourseDeg *float64
	// Mode is 2 (2D) or 3 (3D): GSA's fix type, or, in an epoch without
	// GSA, 3 when GGA has four or more satellites and an altitude.
	Mode int
	// Sats is the number of satellites used (GGA).
	Sats int
	// HDOP is the horizontal dilution of precision (GGA, else GSA).
	HDOP float64
	// Accuracy is the 1σ horizontal error in metres: HDOP × Opts.UERE,
	// or from GST when the epoch has one (see Opts.UERE).
	Accuracy float64
	// Received is the system time, with its monotonic reading, of the bus
	// read that brought the epoch's first sentence: the local instant
	// paired with Time. The rest of the epoch's sentences (and the wait
	// for them) come later; pairing Time with the moment the fix is handed
	// over would make every GPS-carried stamp late by that burst.
	Received time.Time
}

// Decimals kept in a reading. The receiver's own resolution is 0.0001
// minutes of arc (0.19 m, 1.7e-6°) and 0.1 m of altitude; six decimals of a
// degree are 0.11 m.
const (
	degDecimals      = 6
	altDecimals      = 1
	speedDecimals    = 1 // 0.1 km/h; RMC gives 0.01 knots
	courseDecimals   = 1
	hdopDecimals     = 2 // as the receiver sends it
	accuracyDecimals = 1
)

// Fill sets every value field of g from f, rounded to what the receiver
// resolves. The header (site, node, seq, ts, time_source) is left alone.
func (f Fix) Fill(g *wire.GPS) {
	g.Latitude = *wire.Round(f.Latitude, degDecimals)
	g.Longitude = *wire.Round(f.Longitude, degDecimals)
	g.AltitudeM = roundPtr(f.Altitude, altDecimals)
	g.SpeedKmh = roundPtr(f.SpeedKmh, speedDecimals)
	g.CourseDeg = roundPtr(f.CourseDeg, courseDecimals)
	g.Fix = f.Mode
	g.Sats = f.Sats
	g.HDOP = wire.Round(f.HDOP, hdopDecimals)
	g.GPSAccuracy = wire.Round(f.Accuracy, accuracyDecimals)
}

func roundPtr(v *float64, decimals int) *float64 {
	if v == nil {
		return nil
	}
	return wire.Round(*v, decimals)
}

// knotKmh is one knot in km/h, by definition.
const knotKmh = 1.852

// noTime is the key of an epoch whose sentences carry no time.
const noTime = -1

// maxBackJump is how far back in time a fix may go before it is taken for
// the receiver's clock being reset rather than a repeated or late epoch.
const maxBackJump = time.Hour

// epoch is one fix interval's sentences: all the timed sentences (GGA,
// RMC, ZDA, GLL, GNS, GST) share one time of day, key, in milliseconds.
// Of each kind the first one counts.
type epoch struct {
	key   int64
	seen  Sentences
	ids   map[string]bool // talker and type of each timed sentence
	gga   *nmea.GGA
	rmc   *nmea.RMC
	zda   *nmea.ZDA
	vtg   *nmea.VTG
	gst   *gst
	gsa   bool      // at least one GSA with a fix type
	mode  int       // the highest GSA fix type
	gsaHD float64   // GSA's HDOP, NaN if none
	first time.Time // when its first sentence was read
}

// result is what one epoch gave: a fix, or why not.
type result struct {
	fix     Fix
	refusal string
}

type combinerStats struct {
	malformed, stray uint64
}

// combiner gathers sentences into epochs and epochs into fixes.
//
// Epochs are told apart by the time of day of the timed sentences: a timed
// sentence with another time, or a second one of a kind the epoch already
// has, closes the open epoch and opens the next. Sentences without a time
// (GSA, VTG) join the open epoch. So a missing sentence never merges two
// epochs, and the end of an epoch never depends on one sentence arriving.
//
// Waiting for the next epoch's first sentence would delay every fix by a
// fix interval, so an epoch also closes as soon as it holds every kind the
// receiver was configured to send and this package reads (by default RMC,
// GGA and GSA; the receiver sends RMC after GGA and GSA). Sentences of that
// epoch arriving after that (a second constellation's GSA on receivers
// that send RMC first, sentences the configuration left out) are counted
// as Stray and dropped, never carried into the next epoch, until a timed
// sentence with a new time opens it.
type combiner struct {
	o      *Opts
	parser nmea.SentenceParser
	expect Sentences

	// at is when the sentences being added were read.
	at        time.Time
	cur       *epoch
	closed    bool  // the last epoch closed early, when complete
	closedKey int64 // and its key
	lastFix   time.Time

	out   []result
	stats combinerStats
}

func newCombiner(o *Opts) combiner {
	return combiner{
		o:      o,
		expect: o.Sentences & usedSentences,
		parser: nmea.SentenceParser{
			NaNForEmptyFloat:    true, // an empty field is not 0
			MaxInt64ForEmptyInt: true,
			CustomParsers:       map[string]nmea.ParserFunc{"GST": parseGST},
		},
	}
}

// take returns the results since the last call.
func (c *combiner) take() []result {
	r := c.out
	c.out = nil
	return r
}

// parse is go-nmea's Parse, guarded: it works on bytes from a bus, and a
// panic on some odd field must not take the bridge down.
func (c *combiner) parse(s string) (sentence nmea.Sentence, err error) {
	defer func() {
		if p := recover(); p != nil {
			sentence, err = nil, fmt.Errorf("nmea: parser panic: %v", p)
		}
	}()
	return c.parser.Parse(s)
}

// add takes one sentence with a valid checksum.
func (c *combiner) add(s string) {
	sentence, err := c.parse(s)
	if err == nil {
		err = finiteFields(s)
	}
	if err != nil {
		var ns *nmea.NotSupportedError
		if !errors.As(err, &ns) {
			c.stats.malformed++
		}
		return
	}
	switch v := sentence.(type) {
	case nmea.GGA:
		c.timed(v.Time, v.Prefix(), GGA, func(e *epoch) {
			if e.gga == nil {
				e.gga = &v
			}
		})
	case nmea.RMC:
		c.timed(v.Time, v.Prefix(), RMC, func(e *epoch) {
			if e.rmc == nil {
				e.rmc = &v
			}
		})
	case nmea.ZDA:
		c.timed(v.Time, v.Prefix(), ZDA, func(e *epoch) {
			if e.zda == nil {
				e.zda = &v
			}
		})
	case gst:
		c.timed(v.Time, v.Prefix(), GST, func(e *epoch) {
			if e.gst == nil {
				e.gst = &v
			}
		})
	case nmea.GLL:
		c.timed(v.Time, v.Prefix(), GLL, func(*epoch) {})
	case nmea.GNS:
		c.timed(v.Time, v.Prefix(), 0, func(*epoch) {})
	case nmea.GSA:
		c.untimed(GSA, func(e *epoch) {
			if m, err := strconv.Atoi(v.FixType); err == nil {
				e.gsa = true
				e.mode = max(e.mode, m)
			}
			if !math.IsNaN(v.HDOP) {
				e.gsaHD = v.HDOP
			}
		})
	case nmea.VTG:
		c.untimed(VTG, func(e *epoch) {
			if e.vtg == nil {
				e.vtg = &v
			}
		})
	}
}

// finiteFields refuses a sentence with a field that reads as a number but is
// not a finite one: Go's number parsing, and so go-nmea's, takes "inf" and
// "NaN" as floats, which a bus glitch with a recomputed checksum (or a
// receiver's firmware) can put in any field. Such a value would pass the
// gate's comparisons (NaN compares false) and make the reading impossible to
// encode as JSON; the whole sentence is malformed instead.
func finiteFields(sentence string) error {
	body, _, _ := strings.Cut(strings.TrimPrefix(sentence, "$"), "*")
	for i, f := range strings.Split(body, ",")[1:] {
		if v, err := strconv.ParseFloat(f, 64); err == nil && (math.IsInf(v, 0) || math.IsNaN(v)) {
			return fmt.Errorf("nmea: field %d of %.5s is %q, not a finite number", i+1, body, f)
		}
	}
	return nil
}

// timeKey is t in milliseconds of the day, or noTime.
func timeKey(t nmea.Time) int64 {
	if !t.Valid || t.Hour > 23 || t.Minute > 59 || t.Second > 60 || t.Millisecond > 999 {
		return noTime
	}
	return int64(t.Hour)*3600_000 + int64(t.Minute)*60_000 + int64(t.Second)*1000 + int64(t.Millisecond)
}

func (c *combiner) timed(t nmea.Time, id string, kind Sentences, set func(*epoch)) {
	key := timeKey(t)
	if c.cur == nil && c.closed && key != noTime && key == c.closedKey {
		c.stats.stray++ // late for an epoch already complete
		return
	}
	if c.cur != nil && (c.cur.key != key || c.cur.ids[id]) {
		c.close()
	}
	if c.cur == nil {
		c.cur = &epoch{key: key, ids: map[string]bool{}, gsaHD: math.NaN(), first: c.at}
		c.closed = false
	}
	c.cur.ids[id] = true
	c.join(kind, set)
}

func (c *combiner) untimed(kind Sentences, set func(*epoch)) {
	if c.cur == nil {
		c.stats.stray++
		return
	}
	c.join(kind, set)
}

func (c *combiner) join(kind Sentences, set func(*epoch)) {
	set(c.cur)
	c.cur.seen |= kind
	if c.cur.seen&c.expect == c.expect {
		c.closedKey = c.cur.key
		c.close()
		c.closed = true
	}
}

// close evaluates the open epoch.
func (c *combiner) close() {
	f, refusal := c.evaluate(c.cur)
	if refusal == "" {
		c.lastFix = f.Time
	}
	c.out = append(c.out, result{fix: f, refusal: refusal})
	c.cur = nil
}

// evaluate combines an epoch into a fix and applies the quality gate; it
// returns the reason when there is no fix.
func (c *combiner) evaluate(e *epoch) (Fix, string) {
	g := e.gga
	if g == nil {
		return Fix{}, "no GGA in the epoch"
	}
	switch g.FixQuality {
	case nmea.Invalid, "":
		return Fix{}, "no fix (GGA quality 0)"
	case nmea.EST:
		return Fix{}, "dead reckoning (GGA quality 6), not a satellite fix"
	}
	if r := e.rmc; r != nil {
		if r.Validity != nmea.ValidRMC {
			return Fix{}, "no fix (RMC status V)"
		}
		if r.FFAMode == nmea.FAAModeDataNotValid || r.FFAMode == nmea.FAAModeEstimated {
			return Fix{}, fmt.Sprintf("RMC mode %s: not a valid satellite fix", r.FFAMode)
		}
	}
	if e.key == noTime {
		return Fix{}, "no time of day"
	}
	day, why := e.date()
	if why != "" {
		return Fix{}, why
	}
	f := Fix{Time: day.Add(time.Duration(e.key) * time.Millisecond), Received: e.first}

	f.Mode = e.mode
	if !e.gsa {
		// Without GSA, GGA tells: four satellites and an altitude are a
		// 3D solution, fewer can only be 2D.
		f.Mode = 2
		if g.NumSatellites >= 4 && g.NumSatellites != math.MaxInt64 && !math.IsNaN(g.Altitude) {
			f.Mode = 3
		}
	}
	if f.Mode < 2 {
		return Fix{}, fmt.Sprintf("no fix (GSA fix type %d)", f.Mode)
	}

	lat, ok1 := coordinate(g.Fields, 1, 90)
	lon, ok2 := coordinate(g.Fields, 3, 180)
	if !ok1 || !ok2 {
		return Fix{}, "no valid position in GGA"
	}
	if math.Abs(lat) >= 90 {
		return Fix{}, "placeholder position (latitude 90°, MediaTek's position without a fix)"
	}
	if lat == 0 && lon == 0 {
		return Fix{}, "placeholder position (0°, 0°)"
	}
	f.Latitude, f.Longitude = lat, lon

	if f.Time.Before(c.o.NotBefore) {
		return Fix{}, fmt.Sprintf("date %s is before %s: the receiver has no real time yet",
			f.Time.Format(time.DateOnly), c.o.NotBefore.Format(time.DateOnly))
	}
	if !c.lastFix.IsZero() && !f.Time.After(c.lastFix) && c.lastFix.Sub(f.Time) <= maxBackJump {
		return Fix{}, fmt.Sprintf("time %s is not after the last fix's", f.Time.Format(wire.TimeLayout))
	}

	if g.NumSatellites == math.MaxInt64 || g.NumSatellites < 0 {
		return Fix{}, "no satellite count in GGA"
	}
	if g.NumSatellites < int64(c.o.MinSats) {
		return Fix{}, fmt.Sprintf("%d satellites, fewer than %d", g.NumSatellites, c.o.MinSats)
	}
	f.Sats = int(min(g.NumSatellites, 99))

	f.HDOP = g.HDOP
	if math.IsNaN(f.HDOP) {
		f.HDOP = e.gsaHD
	}
	if math.IsNaN(f.HDOP) || f.HDOP <= 0 {
		return Fix{}, "no HDOP"
	}
	if f.HDOP > c.o.MaxHDOP {
		return Fix{}, fmt.Sprintf("HDOP %.2f is above %.2f", f.HDOP, c.o.MaxHDOP)
	}
	f.Accuracy = f.HDOP * c.o.UERE
	if s := e.gst; s != nil && s.LatSigma >= 0 && s.LonSigma >= 0 {
		f.Accuracy = math.Hypot(s.LatSigma, s.LonSigma)
	}

	if alt := g.Altitude; f.Mode == 3 && !math.IsNaN(alt) {
		f.Altitude = &alt
	}
	f.SpeedKmh, f.CourseDeg = e.motion()
	return f, ""
}

// date returns the epoch's UTC date: ZDA's, which has four digits of year,
// else RMC's. Two digits of year are 1980..2079: GPS time began in 1980.
func (e *epoch) date() (time.Time, string) {
	var zda, rmc time.Time
	if z := e.zda; z != nil {
		zda = civil(int(z.Year), int(z.Month), int(z.Day))
	}
	if r := e.rmc; r != nil && r.Date.Valid {
		y := r.Date.YY + 2000
		if r.Date.YY >= 80 {
			y = r.Date.YY + 1900
		}
		rmc = civil(y, r.Date.MM, r.Date.DD)
	}
	switch {
	case !zda.IsZero() && !rmc.IsZero() && !zda.Equal(rmc):
		return time.Time{}, "RMC and ZDA dates disagree"
	case !zda.IsZero():
		return zda, ""
	case !rmc.IsZero():
		return rmc, ""
	}
	return time.Time{}, "no date (no RMC or ZDA with one in the epoch)"
}

// civil is midnight UTC of a calendar date, or the zero Time if it is not
// one.
func civil(y, m, d int) time.Time {
	if y < 1 || m < 1 || m > 12 || d < 1 || d > 31 {
		return time.Time{}
	}
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	if t.Day() != d {
		return time.Time{} // 31 April
	}
	return t
}

// motion returns speed and course: RMC's, else VTG's.
func (e *epoch) motion() (speed, course *float64) {
	val := func(v float64) *float64 {
		if math.IsNaN(v) || v < 0 {
			return nil
		}
		return &v
	}
	if r := e.rmc; r != nil {
		speed, course = val(r.Speed*knotKmh), val(r.Course)
	}
	if v := e.vtg; v != nil {
		if speed == nil {
			speed = val(v.GroundSpeedKPH)
		}
		if speed == nil {
			speed = val(v.GroundSpeedKnots * knotKmh)
		}
		if course == nil {
			course = val(v.TrueTrack)
		}
	}
	return speed, course
}

// coordinate reads the NMEA coordinate at fields[i] ("ddmm.mmmm" or
// "dddmm.mmmm") and its hemisphere at fields[i+1] in degrees. go-nmea
// accepts an empty field as 0 and minutes of 60 or more (MediaTek's
// placeholder is 89°60'); both are refused here.
func coordinate(fields []string, i int, limit float64) (float64, bool) {
	if len(fields) <= i+1 || fields[i] == "" {
		return 0, false
	}
	v, err := strconv.ParseFloat(fields[i], 64)
	if err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, false
	}
	deg := math.Floor(v / 100)
	minutes := v - deg*100
	if minutes >= 60 {
		if deg == limit-1 && minutes == 60 {
			return limit, true // 89°60': the placeholder, reported as such
		}
		return 0, false
	}
	d := deg + minutes/60
	if d > limit {
		return 0, false
	}
	switch fields[i+1] {
	case "N", "E":
		return d, true
	case "S", "W":
		return -d, true
	}
	return 0, false
}

// gst is the GST sentence (pseudorange error statistics), which go-nmea
// v1.11 does not know: time, RMS, error ellipse, and the 1σ errors of
// latitude, longitude and altitude in metres.
type gst struct {
	nmea.BaseSentence
	Time               nmea.Time
	LatSigma, LonSigma float64 // NaN when empty
}

func parseGST(s nmea.BaseSentence) (nmea.Sentence, error) {
	p := nmea.NewParser(s, nmea.WithNaNForEmptyFloat(true))
	return gst{
		BaseSentence: s,
		Time:         p.Time(0, "time"),
		LatSigma:     p.Float64(5, "latitude error"),
		LonSigma:     p.Float64(6, "longitude error"),
	}, p.Err()
}
