package spool

import (
	"encoding/json"
	"io"
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

// reading builds a realistic payload of stream for seq at t: the wire
// package's own types, with values that drift like a real sensor's.
func reading(stream string, seq uint64, t time.Time) []byte {
	h := wire.Header{Site: "rpi4", Node: "pizero-01", Seq: seq, TS: wire.Time{Time: t}, TimeSource: wire.TimeSystem}
	x := float64(seq)
	var v any
	if stream == wire.StreamGPS {
		v = wire.GPS{Header: h,
			Latitude: *wire.Round(44.068843+2e-6*math.Sin(x/7), 6), Longitude: *wire.Round(-121.314192+2e-6*math.Cos(x/5), 6),
			AltitudeM: wire.Round(1127.7+math.Sin(x/11), 1), SpeedKmh: wire.Round(0.4+0.3*math.Sin(x/3), 1),
			CourseDeg: wire.Round(211.3+20*math.Sin(x/13), 1), Fix: 3, Sats: 9 + int(seq%3),
			HDOP: wire.Round(0.98+0.1*math.Sin(x/17), 2), GPSAccuracy: wire.Round(4.9+math.Sin(x/19), 1)}
	} else {
		v = wire.Env{Header: h,
			TemperatureC: wire.Round(21.43+2*math.Sin(x/600)+0.03*math.Sin(x), 2),
			HumidityPct:  wire.Round(45.2+5*math.Sin(x/900)+0.2*math.Cos(x), 1),
			PressureHPa:  wire.Round(1013.62+3*math.Sin(x/3000)+0.02*math.Sin(x*1.3), 2)}
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// payloadFor is an encode function for Append that records what it built.
func payloadFor(stream string, t time.Time, out *[]byte) func(uint64) ([]byte, error) {
	return func(seq uint64) ([]byte, error) {
		b := reading(stream, seq, t)
		if out != nil {
			*out = b
		}
		return b, nil
	}
}

// clock is a settable time source for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 11, 24, 10, 15, 4, 123e6, time.UTC)} }
func bootFn(b byte) func() ([16]byte, bool) {
	return func() ([16]byte, bool) { return [16]byte{b}, true }
}

// tempDir is a temporary directory on tmpfs where there is one: the tests
// that open a spool hundreds of times check logic, not the disk, and fsync
// costs nothing there.
func tempDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "spooltest"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func openT(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	s, err := Open(dir, &o)
	require.NoError(t, err)
	return s
}

// abandon leaves s as a SIGKILL would: nothing more is written, the files
// and the directory lock are released.
func abandon(s *Spool) {
	if s.stop != nil {
		s.stopOnce.Do(func() { close(s.stop); <-s.done })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, g := range s.segs {
		if g.f != nil {
			g.f.Close()
		}
	}
	if s.state != nil {
		s.state.close()
	}
	s.dirLock.Close()
}

// drain returns every record a fresh cursor yields.
func drain(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	c := s.Replay()
	for {
		r, err := c.Next()
		if err != nil {
			require.ErrorIs(t, err, io.EOF)
			return out
		}
		out = append(out, r)
	}
}

func seqs(rs []Record, stream string) []uint64 {
	var out []uint64
	for _, r := range rs {
		if r.Stream == stream {
			out = append(out, r.Seq)
		}
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}
