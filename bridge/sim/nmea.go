package sim

import (
	"bytes"
	"errors"
	"fmt"
	nmea "github.com/adrianmo/go-nmea"
	"hash/fnv"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// NMEASource is what a simulated GNSS receiver outputs, one epoch (fix
// interval) at a time.
type NMEASource interface {
	// Next returns the epoch that follows the one output at prev, the
	// zero Time before the first. now is the receiver's clock when the
	// simulator asks, and cfg what the driver configured with PMTK
	// commands; a source replaying a capture uses neither. ok is false
	// when the source has ended.
	Next(prev, now time.Time, cfg ReceiverConfig) (e Epoch, ok bool)
}

// Rewinder is a source that can start over; PA1010DOpts.Loop needs one.
type Rewinder interface {
	// Rewind makes the next call of Next return the first epoch again.
	Rewind()
}

// Epoch is one fix interval's output.
type Epoch struct {
	// At is the receiver time at which the receiver starts sending it.
	At time.Time
	// Sentences are sent in order, each followed by CR LF; they carry no
	// line ending themselves.
	Sentences []string
}

// ReceiverConfig is the state the PMTK commands set.
type ReceiverConfig struct {
	// Interval is the fix interval (PMTK220).
	Interval time.Duration
	// Output is PMTK314's fields: for each sentence, every how many fixes
	// it is sent, 0 for never. The indices are PMTK314's: 0 GLL, 1 RMC,
	// 2 VTG, 3 GGA, 4 GSA, 5 GSV, 7 GST, 17 ZDA.
	Output [19]int
}

// PMTK314 field indices.
const (
	outGLL = 0
	outRMC = 1
	outVTG = 2
	outGGA = 3
	outGSA = 4
	outGSV = 5
	outGST = 7
	outZDA = 17
)

// defaultReceiverConfig is the PA1010D at power-on: one fix a second with
// GGA, GSA, GSV, RMC and VTG.
func defaultReceiverConfig() ReceiverConfig {
	c := ReceiverConfig{Interval: time.Second}
	for _, i := range []int{outRMC, outVTG, outGGA, outGSA, outGSV} {
		c.Output[i] = 1
	}
	return c
}

// sentence returns body framed as "$body*hh", without line ending.
func sentence(body string) string {
	return "$" + body + "*" + nmea.Checksum(body)
}

// validSentence splits "$body*hh" into body if the checksum is right.
func validSentence(s string) (string, bool) {
	n := len(s)
	if n < 4 || s[0] != '$' || s[n-3] != '*' || strings.IndexByte(s[1:], '$') >= 0 {
		return "", false
	}
	if !strings.EqualFold(s[n-2:], nmea.Checksum(s[1:n-3])) {
		return "", false
	}
	return s[1 : n-3], true
}

// maxCapture bounds what ReadCapture reads.
const maxCapture = 64 << 20

// maxGap is the longest pause between two epochs of a replayed capture;
// a longer one (a receiver that set its clock, or a gap in the recording)
// is replayed as a nominal one-second interval.
const maxGap = 10 * time.Second

// ReadCapture reads a receiver capture in gpsd's .log format: one sentence
// a line, with any line ending; lines starting with '#' are gpsd's comments
// and are not sent. Every other line is replayed byte for byte, bad
// checksums, NUL bytes and merged sentences included.
//
// Lines are grouped into epochs by the time field of GGA, RMC, GLL, ZDA,
// GNS and GST, and the epochs are paced by the differences of those times
// (pauses over 10 s or backwards are replayed as 1 s). The source is a
// Rewinder: each lap's valid sentences have their times and dates moved on
// by the capture's length, so that a looping replay looks like a receiver
// that keeps running rather than one whose clock jumps back.
func ReadCapture(r io.Reader) (NMEASource, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCapture+1))
	if err != nil {
		return nil, fmt.Errorf("sim: reading capture: %w", err)
	}
	if len(data) > maxCapture {
		return nil, fmt.Errorf("sim: capture is larger than %d bytes", maxCapture)
	}
	c := &capture{}
	var cur []string
	curKey := int64(-1)
	var keys []int64
	flush := func() {
		if len(cur) > 0 {
			c.epochs = append(c.epochs, cur)
			keys = append(keys, curKey)
			cur = nil
		}
	}
	for _, line := range bytes.Split(data, []byte{'\n'}) {
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		s := string(line)
		if k := captureKey(s); k >= 0 {
			if curKey >= 0 && k != curKey {
				flush()
			}
			curKey = k
		}
		cur = append(cur, s)
	}
	flush()
	if len(c.epochs) == 0 {
		return nil, errors.New("sim: capture has no NMEA lines")
	}

	c.gaps = make([]time.Duration, len(keys))
	c.gaps[0] = time.Second // after the last epoch of a lap
	first, last := int64(-1), int64(-1)
	for i, k := range keys {
		if k < 0 {
			continue
		}
		if first < 0 {
			first = k
		}
		if i > 0 && keys[i-1] >= 0 {
			c.gaps[i] = gap(keys[i-1], k)
		} else if i > 0 {
			c.gaps[i] = time.Second
		}
		last = k
	}
	for i := 1; i < len(c.gaps); i++ {
		if c.gaps[i] == 0 {
			c.gaps[i] = time.Second
		}
	}
	if first >= 0 {
		span := time.Duration((last-first+msPerDay)%msPerDay) * time.Millisecond
		c.lapShift = span.Truncate(time.Second) + 2*time.Second
	}
	return c, nil
}

const msPerDay = 24 * 3600 * 1000

// gap is the replayed pause between epochs with time keys a and b.
func gap(a, b int64) time.Duration {
	d := time.Duration((b-a+msPerDay)%msPerDay) * time.Millisecond
	if d <= 0 || d > maxGap {
		return time.Second
	}
	return d
}

// captureKey is the time of day in milliseconds of the last sentence on a
// line, if it is of a kind that carries one, else -1.
func captureKey(line string) int64 {
	if i := strings.LastIndexByte(line, '$'); i >= 0 {
		line = line[i:]
	} else {
		return -1
	}
	fields := strings.Split(line, ",")
	idx := timeField(fields[0])
	if idx < 0 || idx >= len(fields) {
		return -1
	}
	tod, ok := parseTOD(strings.SplitN(fields[idx], "*", 2)[0])
	if !ok {
		return -1
	}
	return tod.Milliseconds()
}

// timeField is the index of the time field of a sentence whose first field
// (address) is addr, or -1.
func timeField(addr string) int {
	if len(addr) != 6 { // "$GPGGA"
		return -1
	}
	switch addr[3:] {
	case "GGA", "RMC", "ZDA", "GNS", "GST":
		return 1
	case "GLL":
		return 5
	}
	return -1
}

// parseTOD parses "hhmmss" with an optional fraction.
func parseTOD(s string) (time.Duration, bool) {
	if len(s) < 6 {
		return 0, false
	}
	for i := range 6 {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	h, _ := strconv.Atoi(s[0:2])
	m, _ := strconv.Atoi(s[2:4])
	sec, err := strconv.ParseFloat(s[4:], 64)
	if err != nil || h > 23 || m > 59 || sec >= 61 || math.IsNaN(sec) {
		return 0, false
	}
	return time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(math.Round(sec*1000))*time.Millisecond, true
}

// capture replays a recorded receiver output.
type capture struct {
	epochs   [][]string
	gaps     []time.Duration // before each epoch; gaps[0] follows a lap
	lapShift time.Duration   // how far each lap's times move on
	next     int
	lap      int
}

func (c *capture) Next(prev, now time.Time, _ ReceiverConfig) (Epoch, bool) {
	if c.next >= len(c.epochs) {
		return Epoch{}, false
	}
	at := now
	if !prev.IsZero() {
		at = prev.Add(c.gaps[c.next])
	}
	lines := c.epochs[c.next]
	if c.lap > 0 {
		shift := time.Duration(c.lap) * c.lapShift
		moved := make([]string, len(lines))
		for i, l := range lines {
			moved[i] = shiftTime(l, shift)
		}
		lines = moved
	}
	c.next++
	return Epoch{At: at, Sentences: lines}, true
}

func (c *capture) Rewind() {
	c.next = 0
	c.lap++
}

// shiftTime moves the time (and date) fields of a valid sentence on by d, a
// whole number of seconds, and gives it a new checksum. Anything else is
// returned as it is: a corrupt line stays corrupt.
func shiftTime(s string, d time.Duration) string {
	body, ok := validSentence(s)
	if !ok {
		return s
	}
	f := strings.Split(body, ",")
	ti := timeField("$" + f[0])
	if ti < 0 || ti >= len(f) {
		return s
	}
	tod, ok := parseTOD(f[ti])
	if !ok {
		return s
	}
	days := int((tod + d) / (24 * time.Hour))
	f[ti] = formatTOD(tod+d-time.Duration(days)*24*time.Hour, f[ti])
	switch f[0][2:] {
	case "RMC":
		if len(f) > 9 && len(f[9]) == 6 {
			if t, err := time.Parse("020106", f[9]); err == nil {
				f[9] = t.AddDate(0, 0, days).Format("020106")
			}
		}
	case "ZDA":
		if len(f) > 4 {
			if t, err := time.Parse("02,01,2006", f[2]+","+f[3]+","+f[4]); err == nil {
				dd := strings.Split(t.AddDate(0, 0, days).Format("02,01,2006"), ",")
				f[2], f[3], f[4] = dd[0], dd[1], dd[2]
			}
		}
	}
	return sentence(strings.Join(f, ","))
}

// formatTOD writes tod as hhmmss with as many fraction digits as like has.
func formatTOD(tod time.Duration, like string) string {
	h, m := int(tod/time.Hour), int(tod/time.Minute)%60
	sec := tod - time.Duration(h)*time.Hour - time.Duration(m)*time.Minute
	out := fmt.Sprintf("%02d%02d%02d", h, m, int(sec/time.Second))
	if i := strings.IndexByte(like, '.'); i >= 0 {
		digits := len(like) - i - 1
		frac := fmt.Sprintf("%03d", int(sec%time.Second/time.Millisecond))
		for len(frac) < digits {
			frac += "0"
		}
		out += "." + frac[:digits]
	}
	return out
}

// Track returns a built-in receiver output for node: a 3D fix that walks
// or drives slowly round a loop near a point, all derived from a hash of
// the node name (so nodes differ, and a node is the same in every run) and
// from the receiver clock (so it is a pure function of time). It sends
// what PMTK314 selects of GGA, GSA (GPS and GLONASS), GSV, RMC, VTG, GLL,
// ZDA and GST, in MediaTek's order, at the PMTK220 interval, with times
// from the simulator's clock and correct checksums.
//
// The loop has a radius of 40-250 m and is followed at 1-6 m/s; 8 to 12
// satellites are used, with an HDOP of 0.9 to 1.2.
func Track(node string) NMEASource {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	r := splitmix(h.Sum64())
	t := &track{
		lat0:   r.between(-50, 60),
		lon0:   r.between(-180, 180),
		alt0:   r.between(20, 600),
		radius: r.between(40, 250),
		speed:  r.between(1, 6),
		phase:  r.between(0, 2*math.Pi),
		satPh:  r.between(0, 2*math.Pi),
	}
	t.omega = t.speed / t.radius
	for i := range t.prns {
		t.prns[i] = [2]float64{r.between(0, 360), r.between(5, 85)}
	}
	return t
}

// track is Track's model; see there.
type track struct {
	lat0, lon0, alt0     float64 // centre, degrees and metres
	radius, speed, omega float64 // m, m/s, rad/s
	phase, satPh         float64
	prns                 [24][2]float64 // azimuth and elevation of each satellite slot
}

const earthRadius = 6371e3 // metres, mean

// TrackState is where a Track is at a time, for tests.
type TrackState struct {
	Lat, Lon, Alt float64 // degrees, metres
	SpeedMS       float64
	CourseDeg     float64
	Sats          int
	HDOP          float64
}

func (t *track) state(at time.Time) TrackState {
	s := float64(at.Unix()-epochUnix) + float64(at.Nanosecond())/1e9
	th := t.omega*s + t.phase
	east, north := t.radius*math.Cos(th), t.radius*math.Sin(th)
	course := math.Mod(math.Atan2(-math.Sin(th), math.Cos(th))*180/math.Pi+360, 360)
	sats := 10 + int(math.Round(2*math.Sin(2*math.Pi*s/600+t.satPh)))
	return TrackState{
		Lat:       t.lat0 + north/earthRadius*180/math.Pi,
		Lon:       t.lon0 + east/(earthRadius*math.Cos(t.lat0*math.Pi/180))*180/math.Pi,
		Alt:       t.alt0 + 3*math.Sin(th),
		SpeedMS:   t.speed,
		CourseDeg: course,
		Sats:      sats,
		HDOP:      math.Round((0.5+5/float64(sats))*100) / 100,
	}
}

// TrackAt returns the state of the Track of node at t; Track(node)'s
// sentences at t say the same, to their resolution.
func TrackAt(node string, t time.Time) TrackState {
	return Track(node).(*track).state(t)
}

func (t *track) Next(prev, now time.Time, cfg ReceiverConfig) (Epoch, bool) {
	iv := cfg.Interval
	if iv <= 0 {
		iv = time.Second
	}
	at := prev.Add(iv)
	if prev.IsZero() || at.Before(now.Add(-10*iv)) {
		// First epoch, or the host fell far behind: a real receiver's
		// buffer would have overflowed, so skip to the present.
		at = now.Truncate(iv)
		if at.Before(now) {
			at = at.Add(iv)
		}
	}
	n := at.UnixMilli() / iv.Milliseconds()
	on := func(i int) bool { return cfg.Output[i] > 0 && n%int64(cfg.Output[i]) == 0 }
	st := t.state(at)
	utc := at.UTC()
	hms := utc.Format("150405.000")
	lat, ns := nmeaCoord(st.Lat, 2, "N", "S")
	lon, ew := nmeaCoord(st.Lon, 3, "E", "W")
	knots := st.SpeedMS * 3.6 / 1.852

	var out []string
	add := func(format string, a ...any) { out = append(out, sentence(fmt.Sprintf(format, a...))) }
	nGP := (st.Sats + 1) / 2
	if on(outGGA) {
		add("GNGGA,%s,%s,%s,%s,%s,1,%02d,%.2f,%.1f,M,%.1f,M,,", hms, lat, ns, lon, ew, st.Sats, st.HDOP, st.Alt, 12.3)
	}
	if on(outGSA) {
		pdop, vdop := st.HDOP*1.6, st.HDOP*1.3
		add("GPGSA,A,3,%s,%.2f,%.2f,%.2f", prnList(1, nGP), pdop, st.HDOP, vdop)
		add("GLGSA,A,3,%s,%.2f,%.2f,%.2f", prnList(65, st.Sats-nGP), pdop, st.HDOP, vdop)
	}
	if on(outGSV) {
		out = append(out, t.gsv("GP", 1, nGP+2, secondsOf(at))...)
		out = append(out, t.gsv("GL", 65, st.Sats-nGP+1, secondsOf(at))...)
	}
	if on(outRMC) {
		add("GNRMC,%s,A,%s,%s,%s,%s,%.2f,%.2f,%s,,,A", hms, lat, ns, lon, ew, knots, st.CourseDeg, utc.Format("020106"))
	}
	if on(outVTG) {
		add("GNVTG,%.2f,T,,M,%.2f,N,%.2f,K,A", st.CourseDeg, knots, st.SpeedMS*3.6)
	}
	if on(outGLL) {
		add("GNGLL,%s,%s,%s,%s,%s,A,A", lat, ns, lon, ew, hms)
	}
	if on(outZDA) {
		add("GNZDA,%s,%s,,", hms, utc.Format("02,01,2006"))
	}
	if on(outGST) {
		sigma := st.HDOP * 2.5
		add("GNGST,%s,%.1f,%.1f,%.1f,0.0,%.1f,%.1f,%.1f", hms, sigma, sigma, sigma, sigma, sigma, 2*sigma)
	}
	return Epoch{At: at, Sentences: out}, true
}

func secondsOf(at time.Time) float64 { return float64(at.Unix() - epochUnix) }

// nmeaCoord formats degrees as NMEA's d(dd)mm.mmmm and a hemisphere.
func nmeaCoord(v float64, degDigits int, pos, neg string) (string, string) {
	hemi := pos
	if v < 0 {
		hemi, v = neg, -v
	}
	deg := math.Floor(v)
	minutes := math.Round((v-deg)*60*10000) / 10000
	if minutes >= 60 {
		deg, minutes = deg+1, 0
	}
	return fmt.Sprintf("%0*d%07.4f", degDigits, int(deg), minutes), hemi
}

// prnList is GSA's twelve satellite fields with n satellites from first.
func prnList(first, n int) string {
	f := make([]string, 12)
	for i := 0; i < n && i < 12; i++ {
		f[i] = fmt.Sprintf("%02d", first+i)
	}
	return strings.Join(f, ",")
}

// gsv is the GSV sentences of n satellites in view from PRN first, their
// positions drifting slowly with s (seconds).
func (t *track) gsv(talker string, first, n int, s float64) []string {
	total := (n + 3) / 4
	var out []string
	for msg := range total {
		fields := []string{fmt.Sprintf("%sGSV,%d,%d,%02d", talker, total, msg+1, n)}
		for i := msg * 4; i < n && i < msg*4+4; i++ {
			slot := t.prns[(first+i)%len(t.prns)]
			az := math.Mod(slot[0]+s/240, 360)
			el := 5 + math.Mod(slot[1]+s/3600, 80)
			fields = append(fields, fmt.Sprintf("%02d,%02d,%03d,%02d", first+i, int(el), int(az), 25+int(el)/4))
		}
		out = append(out, sentence(strings.Join(fields, ",")))
	}
	return out
}
