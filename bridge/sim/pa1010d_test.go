package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	nmea "github.com/adrianmo/go-nmea"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
)

// manualClock is a clock the test moves; safe for concurrent use.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2026, 11, 24, 10, 15, 4, 0, time.UTC)}
}

func (c *manualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// checksum is the NMEA checksum, written out here rather than taken from
// the code under test.
func checksum(body string) string {
	var x byte
	for _, c := range []byte(body) {
		x ^= c
	}
	return fmt.Sprintf("%02X", x)
}

func framed(body string) string { return "$" + body + "*" + checksum(body) }

// rxRead is one read transaction of n bytes.
func rxRead(t *testing.T, rx sim.Device, n int) []byte {
	t.Helper()
	r := make([]byte, n)
	require.NoError(t, rx.Tx(nil, r))
	return r
}

// requireRead does a read of n bytes and requires it to be want, padded.
func requireRead(t *testing.T, rx sim.Device, n int, want string, msgs ...any) {
	t.Helper()
	require.Equal(t, want+strings.Repeat("\n", n-len(want)), string(rxRead(t, rx, n)), msgs...)
}

func capture(t *testing.T, text string) sim.NMEASource {
	t.Helper()
	src, err := sim.ReadCapture(strings.NewReader(text))
	require.NoError(t, err)
	return src
}

// instant is a byte rate at which an epoch is in the buffer 1 µs after it
// starts.
const instant = 1e12

func TestPA1010DFraming(t *testing.T) {
	ggaLine := framed("GPGGA,120000.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000")
	rmcLine := framed("GPRMC,120000.000,A,4404.1306,N,12118.8515,W,0.03,225.97,130415,,,D")
	broken := "$GPGSA,A,3,20,16\x00\x00\x00    " // as in gp-320fw
	text := "# Name: test\r\n#\n" + ggaLine + "\n\n" + rmcLine + "\r\n" + broken + "\r\r\n"
	c := newManualClock()
	rx := sim.NewPA1010D(capture(t, text), sim.PA1010DOpts{Now: c.now, ByteRate: instant})

	r := rxRead(t, rx, 255)
	require.Equal(t, bytes.Repeat([]byte{'\n'}, 255), r, "at power-on the first epoch has only just started")
	c.add(time.Millisecond)

	// Comments and blank lines left out, CR LF after every line, bytes
	// as captured, split across reads as they fall, then padding.
	want := ggaLine + "\r\n" + rmcLine + "\r\n" + broken + "\r\n"
	requireRead(t, rx, 10, want[:10])
	requireRead(t, rx, 1, want[10:11])
	requireRead(t, rx, 60, want[11:71])
	requireRead(t, rx, 255, want[71:])
	require.True(t, rx.Done())
	require.Equal(t, bytes.Repeat([]byte{'\n'}, 255), rxRead(t, rx, 255), "after the end: only padding")
}

func TestPA1010DPacing(t *testing.T) {
	var lines []string
	for i := range 3 {
		lines = append(lines, framed(fmt.Sprintf("GPGGA,12000%d.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000", i)))
		lines = append(lines, framed("GPGSA,A,3,20,16,09,03,07,10,23,19,27,30,,,1.64,0.98,1.31"))
	}
	c := newManualClock()
	rx := sim.NewPA1010D(capture(t, strings.Join(lines, "\n")), sim.PA1010DOpts{Now: c.now, Speed: 10, ByteRate: instant})
	epoch := func(i int) string { return lines[2*i] + "\r\n" + lines[2*i+1] + "\r\n" }

	rxRead(t, rx, 255)
	c.add(time.Millisecond)
	requireRead(t, rx, 255, epoch(0))

	// The epochs are 1 s apart in the capture: 100 ms at 10x.
	c.add(98 * time.Millisecond)
	requireRead(t, rx, 255, "", "99 ms")
	c.add(2 * time.Millisecond)
	requireRead(t, rx, 255, epoch(1), "101 ms")
	c.add(50 * time.Millisecond)
	requireRead(t, rx, 255, "")
	require.False(t, rx.Done())
	c.add(50 * time.Millisecond)
	requireRead(t, rx, 255, epoch(2))
	require.True(t, rx.Done())
}

// TestPA1010DTrickle: output reaches the I2C buffer at ByteRate, so a read
// can end in the middle of a sentence, the rest padded.
func TestPA1010DTrickle(t *testing.T) {
	line := framed("GPGGA,120000.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000")
	c := newManualClock()
	rx := sim.NewPA1010D(capture(t, line), sim.PA1010DOpts{Now: c.now, ByteRate: 1000})
	rxRead(t, rx, 255)

	c.add(20 * time.Millisecond)
	requireRead(t, rx, 255, line[:20], "padding in the middle of the sentence")
	c.add(30 * time.Millisecond)
	requireRead(t, rx, 255, line[20:50])
	c.add(time.Second)
	requireRead(t, rx, 255, line[50:]+"\r\n")
}

// nothing is a receiver output that has ended: only acks are sent.
type nothing struct{}

func (nothing) Next(time.Time, time.Time, sim.ReceiverConfig) (sim.Epoch, bool) {
	return sim.Epoch{}, false
}

func TestPA1010DCommands(t *testing.T) {
	outRMCGGA := [19]int{1: 1, 3: 1}
	def := [19]int{1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
	tt := []struct {
		desc     string
		writes   []string
		opts     sim.PA1010DOpts
		ack      string
		output   [19]int
		interval time.Duration
	}{
		{
			desc:   "PMTK314",
			writes: []string{"$PMTK314,0,1,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0*28\r\n"},
			ack:    "$PMTK001,314,3*36", output: outRMCGGA, interval: time.Second,
		},
		{
			desc:   "PMTK220",
			writes: []string{"$PMTK220,200*2C\r\n"},
			ack:    "$PMTK001,220,3*30", output: def, interval: 200 * time.Millisecond,
		},
		{
			desc:   "written in two transactions",
			writes: []string{"$PMTK220,2", "00*2C\r\n"},
			ack:    "$PMTK001,220,3*30", output: def, interval: 200 * time.Millisecond,
		},
		{
			desc:   "bad checksum",
			writes: []string{"$PMTK314,0,1,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0*29\r\n"},
			ack:    framed("PMTK001,314,0"), output: def, interval: time.Second,
		},
		{
			desc:   "no checksum",
			writes: []string{"$PMTK220,200\r\n"},
			ack:    framed("PMTK001,220,0"), output: def, interval: time.Second,
		},
		{
			desc:   "interval out of range",
			writes: []string{framed("PMTK220,50") + "\r\n"},
			ack:    framed("PMTK001,220,2"), output: def, interval: time.Second,
		},
		{
			desc:   "PMTK314 with too few fields",
			writes: []string{framed("PMTK314,0,1,0,1") + "\r\n"},
			ack:    framed("PMTK001,314,2"), output: def, interval: time.Second,
		},
		{
			desc:   "a command the model does not know",
			writes: []string{framed("PMTK605") + "\r\n"},
			ack:    framed("PMTK001,605,1"), output: def, interval: time.Second,
		},
		{
			desc:   "refusal injected",
			writes: []string{"$PMTK220,200*2C\r\n"},
			opts:   sim.PA1010DOpts{AckFlags: map[int]int{220: 2}},
			ack:    framed("PMTK001,220,2"), output: def, interval: time.Second,
		},
		{
			desc:   "silence injected",
			writes: []string{"$PMTK220,200*2C\r\n"},
			opts:   sim.PA1010DOpts{AckFlags: map[int]int{220: -1}},
			output: def, interval: time.Second,
		},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			c := newManualClock()
			o := tc.opts
			o.Now, o.ByteRate = c.now, instant
			rx := sim.NewPA1010D(nothing{}, o)
			for _, w := range tc.writes {
				require.NoError(t, rx.Tx([]byte(w), nil))
			}
			c.add(time.Millisecond)
			want := ""
			if tc.ack != "" {
				want = tc.ack + "\r\n"
			}
			requireRead(t, rx, 255, want)
			require.Equal(t, tc.output, rx.Config().Output)
			require.Equal(t, tc.interval, rx.Config().Interval)
		})
	}
}

func TestReadCaptureErrors(t *testing.T) {
	for _, text := range []string{"", "# only\n# comments\n", "\r\n\n"} {
		_, err := sim.ReadCapture(strings.NewReader(text))
		require.ErrorContains(t, err, "sim: capture has no NMEA lines")
	}
}

// parse is go-nmea on a generated sentence, which must be valid. go-nmea
// does not know GST; its type is returned as a bare BaseSentence.
func parse(t *testing.T, s string) nmea.Sentence {
	t.Helper()
	require.True(t, strings.HasSuffix(s, "*"+checksum(s[1:len(s)-3])), "checksum of %s", s)
	p := nmea.SentenceParser{CustomParsers: map[string]nmea.ParserFunc{
		"GST": func(b nmea.BaseSentence) (nmea.Sentence, error) { return b, nil },
	}}
	v, err := p.Parse(s)
	require.NoError(t, err, s)
	return v
}

func TestTrackSentences(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 15, 4, 300e6, time.UTC)
	src := sim.Track("pizero-01")
	cfg := sim.ReceiverConfig{Interval: time.Second}
	for i := range cfg.Output {
		cfg.Output[i] = 1
	}
	e, ok := src.Next(time.Time{}, at, cfg)
	require.True(t, ok)
	require.Equal(t, time.Date(2026, 11, 24, 10, 15, 5, 0, time.UTC), e.At, "on the next whole interval")

	truth := sim.TrackAt("pizero-01", e.At)
	var kinds []string
	for _, s := range e.Sentences {
		v := parse(t, s)
		kinds = append(kinds, v.DataType())
		switch v := v.(type) {
		case nmea.GGA:
			require.Equal(t, "101505.000", fmt.Sprintf("%02d%02d%02d.%03d", v.Time.Hour, v.Time.Minute, v.Time.Second, v.Time.Millisecond))
			require.InDelta(t, truth.Lat, v.Latitude, 1e-6)
			require.InDelta(t, truth.Lon, v.Longitude, 1e-6)
			require.InDelta(t, truth.Alt, v.Altitude, 0.05)
			require.Equal(t, nmea.GPS, v.FixQuality)
			require.EqualValues(t, truth.Sats, v.NumSatellites)
			require.InDelta(t, truth.HDOP, v.HDOP, 0.005)
		case nmea.GSA:
			require.Equal(t, nmea.Fix3D, v.FixType)
		case nmea.RMC:
			require.Equal(t, nmea.ValidRMC, v.Validity)
			require.Equal(t, "24/11/26", v.Date.String())
			require.InDelta(t, truth.SpeedMS*3.6/1.852, v.Speed, 0.005)
			require.InDelta(t, truth.CourseDeg, v.Course, 0.005)
		case nmea.ZDA:
			require.EqualValues(t, 2026, v.Year)
		}
	}
	require.Equal(t, "GGA GSA GSA GSV GSV GSV GSV RMC VTG GLL ZDA GST", strings.Join(kinds, " ")[:len("GGA GSA GSA GSV GSV GSV GSV RMC VTG GLL ZDA GST")+(len(kinds)-12)*4], "MediaTek's order")

	// PMTK314 and PMTK220 as the driver sets them.
	cfg = sim.ReceiverConfig{Interval: 200 * time.Millisecond, Output: [19]int{1: 1, 3: 1, 4: 1}}
	e2, ok := src.Next(e.At, e.At, cfg)
	require.True(t, ok)
	require.Equal(t, e.At.Add(200*time.Millisecond), e2.At)
	kinds = kinds[:0]
	for _, s := range e2.Sentences {
		kinds = append(kinds, parse(t, s).DataType())
	}
	require.Equal(t, []string{"GGA", "GSA", "GSA", "RMC"}, kinds)

	// A divider: GSV every fifth fix only.
	cfg = sim.ReceiverConfig{Interval: time.Second, Output: [19]int{3: 1, 5: 5}}
	gsv := 0
	prev := e.At
	for range 10 {
		e, _ := src.Next(prev, prev, cfg)
		prev = e.At
		if len(e.Sentences) > 1 {
			gsv++
		}
	}
	require.Equal(t, 2, gsv)
}

func TestTrackNodesDiffer(t *testing.T) {
	at := time.Date(2026, 11, 24, 10, 15, 4, 0, time.UTC)
	a, b := sim.TrackAt("pizero-01", at), sim.TrackAt("pizero-02", at)
	require.Greater(t, math.Abs(a.Lat-b.Lat)+math.Abs(a.Lon-b.Lon), 0.1)
	require.Equal(t, a, sim.TrackAt("pizero-01", at), "the same in every run")
}

// distance is the great-circle distance in metres.
func distance(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Pow(math.Sin(dlat/2), 2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Pow(math.Sin(dlon/2), 2)
	return 2 * 6371e3 * math.Asin(math.Sqrt(a))
}

// TestTrackThroughDriver: the real driver turns a Track into fixes that
// move as the track does.
func TestTrackThroughDriver(t *testing.T) {
	for _, node := range []string{"pizero-01", "greenhouse-7"} {
		t.Run(node, func(t *testing.T) {
			rx := sim.NewPA1010D(sim.Track(node), sim.PA1010DOpts{Speed: 25})
			bus := sim.NewBus("sim-i2c")
			bus.Attach(sim.PA1010DAddr, rx)
			d, err := pa1010d.Open(bus, pa1010d.Addr, &pa1010d.Opts{PollInterval: 5 * time.Millisecond})
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var prev pa1010d.Fix
			seconds := 0
			for i := range 6 {
				f, err := d.Next(ctx)
				require.NoError(t, err)
				truth := sim.TrackAt(node, f.Time)
				require.Zero(t, f.Time.Nanosecond(), "whole seconds")
				require.InDelta(t, truth.Lat, f.Latitude, 1e-6)
				require.InDelta(t, truth.Lon, f.Longitude, 1e-6)
				require.InDelta(t, truth.Alt, *f.Altitude, 0.05)
				require.Equal(t, 3, f.Mode)
				require.Equal(t, truth.Sats, f.Sats)
				require.True(t, f.Sats >= 8 && f.Sats <= 12, "%d satellites", f.Sats)
				require.True(t, f.HDOP >= 0.9 && f.HDOP <= 1.2, "HDOP %v", f.HDOP)
				require.InDelta(t, f.HDOP*5, f.Accuracy, 1e-9)
				require.InDelta(t, truth.SpeedMS*3.6, *f.SpeedKmh, 0.02)
				require.InDelta(t, 0, math.Remainder(truth.CourseDeg-*f.CourseDeg, 360), 0.01)
				if i > 0 {
					// One fix a second; a test machine too busy to read
					// for 10 fixes makes the receiver skip some.
					dt := f.Time.Sub(prev.Time)
					require.Zero(t, dt%time.Second)
					require.Positive(t, dt)
					moved := distance(prev.Latitude, prev.Longitude, f.Latitude, f.Longitude)
					require.LessOrEqual(t, moved, truth.SpeedMS*dt.Seconds()+0.3, "no faster than the track")
					if dt == time.Second {
						seconds++
						require.InDelta(t, truth.SpeedMS, moved, 0.05*truth.SpeedMS+0.3, "moved %.2f m in 1 s", moved)
					}
				}
				prev = f
			}
			require.Positive(t, seconds, "consecutive fixes")
			st := d.Stats()
			require.Zero(t, st.ChecksumErrors+st.Garbage+st.Overlong+st.Malformed)
			require.Equal(t, 3, st.FixMode)
		})
	}
}

func TestTrackGSTThroughDriver(t *testing.T) {
	rx := sim.NewPA1010D(sim.Track("pizero-01"), sim.PA1010DOpts{Speed: 25})
	bus := sim.NewBus("sim-i2c")
	bus.Attach(sim.PA1010DAddr, rx)
	d, err := pa1010d.Open(bus, pa1010d.Addr, &pa1010d.Opts{
		Sentences:    pa1010d.RMC | pa1010d.GGA | pa1010d.GSA | pa1010d.GST,
		PollInterval: 5 * time.Millisecond,
	})
	require.NoError(t, err)
	// The fixes of epochs before PMTK314 took effect have no GST.
	var f pa1010d.Fix
	for range 4 {
		f, err = d.Next(context.Background())
		require.NoError(t, err)
	}
	sigma := math.Round(f.HDOP*2.5*10) / 10 // what the track's GST says for each axis
	require.InDelta(t, math.Sqrt2*sigma, f.Accuracy, 1e-9)
}

// TestCaptureLoop: a looping replay keeps time moving, so the driver keeps
// giving fixes after the end of the capture.
func TestCaptureLoop(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("../../../shared/testdata/nmea", "mt3339.log"))
	require.NoError(t, err, "the shared NMEA captures must be there")
	src, err := sim.ReadCapture(bytes.NewReader(data))
	require.NoError(t, err)
	rx := sim.NewPA1010D(src, sim.PA1010DOpts{Speed: 20, Loop: true})
	bus := sim.NewBus("sim-i2c")
	bus.Attach(sim.PA1010DAddr, rx)
	d, err := pa1010d.Open(bus, pa1010d.Addr, &pa1010d.Opts{
		NotBefore:    time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC),
		PollInterval: 3 * time.Millisecond,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var fixes []pa1010d.Fix
	for range 65 {
		f, err := d.Next(ctx)
		require.NoError(t, err)
		fixes = append(fixes, f)
	}
	first := time.Date(2015, 4, 13, 20, 26, 40, 0, time.UTC)
	require.Equal(t, first, fixes[0].Time)
	require.Equal(t, first.Add(29*time.Second), fixes[29].Time, "the capture's last fix")
	lap := fixes[30].Time.Sub(first)
	require.Equal(t, 31*time.Second, lap, "lap two starts after lap one")
	for i := 30; i < 65; i++ {
		require.True(t, fixes[i].Time.After(fixes[i-1].Time))
		j := i % 30
		require.Equal(t, fixes[j].Time.Add(time.Duration(i/30)*lap), fixes[i].Time)
		require.Equal(t, fixes[j].Latitude, fixes[i].Latitude)
		require.Equal(t, fixes[j].Longitude, fixes[i].Longitude)
	}
	require.False(t, rx.Done(), "a loop never ends")
	require.Zero(t, d.Stats().ChecksumErrors, "moved sentences get new checksums")
}

// TestPA1010DOverrun: a host that stops reading loses whole epochs, and
// reading resumes cleanly.
func TestPA1010DOverrun(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("../../../shared/testdata/nmea", "mt3339.log"))
	require.NoError(t, err)
	src, err := sim.ReadCapture(bytes.NewReader(data))
	require.NoError(t, err)
	c := newManualClock()
	rx := sim.NewPA1010D(src, sim.PA1010DOpts{Now: c.now, Loop: true})
	rxRead(t, rx, 255)
	c.add(time.Hour)
	r := rxRead(t, rx, 255)
	require.Positive(t, rx.Overruns())
	require.True(t, bytes.HasPrefix(r, []byte("$GPGGA,202640.000,")), "the oldest output comes first")
}

// TestCaptureLoopMidnight: a lap that crosses midnight moves the dates
// too; corrupt lines are replayed as they are.
func TestCaptureLoopMidnight(t *testing.T) {
	rmc1 := framed("GPRMC,235958.00,A,4404.1306,N,12118.8515,W,0.03,225.97,300415,,,D")
	zda1 := framed("GPZDA,235958.00,30,04,2015,,")
	rmc2 := framed("GPRMC,235959.00,A,4404.1306,N,12118.8515,W,0.03,225.97,300415,,,D")
	bad := "$GPGGA,235959.00,4404.1306,N*00"
	c := newManualClock()
	rx := sim.NewPA1010D(capture(t, strings.Join([]string{rmc1, zda1, rmc2, bad}, "\n")), sim.PA1010DOpts{Now: c.now, ByteRate: instant, Loop: true})
	rxRead(t, rx, 255)
	c.add(time.Millisecond)
	requireRead(t, rx, 255, rmc1+"\r\n"+zda1+"\r\n")
	c.add(time.Second)
	requireRead(t, rx, 255, rmc2+"\r\n"+bad+"\r\n")
	c.add(time.Second)
	// The capture spans 1 s; laps are 3 s apart.
	requireRead(t, rx, 255,
		framed("GPRMC,000001.00,A,4404.1306,N,12118.8515,W,0.03,225.97,010515,,,D")+"\r\n"+
			framed("GPZDA,000001.00,01,05,2015,,")+"\r\n")
	c.add(time.Second)
	requireRead(t, rx, 255, framed("GPRMC,000002.00,A,4404.1306,N,12118.8515,W,0.03,225.97,010515,,,D")+"\r\n"+bad+"\r\n")
	require.False(t, rx.Done())
}
