package pa1010d_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/sensortest"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/wire"
)

// TestCommand checks the checksums against command strings published for
// MediaTek receivers (Adafruit_GPS's Adafruit_PMTK.h, and the PMTK
// protocol manual's examples), each worked out by hand as well.
func TestCommand(t *testing.T) {
	tt := []struct{ body, want string }{
		{"PMTK220,1000", "$PMTK220,1000*1F\r\n"},
		{"PMTK220,200", "$PMTK220,200*2C\r\n"},
		{"PMTK220,100", "$PMTK220,100*2F\r\n"},
		{"PMTK314,0,1,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0", "$PMTK314,0,1,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0*29\r\n"},
		{"PMTK314,0,1,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", "$PMTK314,0,1,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0*28\r\n"},
		{"PMTK314,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0", "$PMTK314,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0*28\r\n"},
		{"PMTK314,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", "$PMTK314,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0*29\r\n"},
		{"PMTK001,314,3", "$PMTK001,314,3*36\r\n"},
		{"PMTK000", "$PMTK000*32\r\n"}, // the manual's test packet
		{"", "$*00\r\n"},
	}
	for _, tc := range tt {
		t.Run(tc.body, func(t *testing.T) {
			require.Equal(t, tc.want, pa1010d.Command(tc.body))
			// By hand: the exclusive or of the body's bytes.
			var x byte
			for _, c := range []byte(tc.body) {
				x ^= c
			}
			require.Equal(t, fmt.Sprintf("*%02X\r\n", x), tc.want[len(tc.want)-5:])
		})
	}
}

// A PA1010D session recorded at the byte level: the first read, the two
// commands with their acknowledgements in the output, then one epoch that
// arrives over three reads with padding in the middle of a sentence.
const (
	epochGGA = "$GNGGA,101504.000,4404.1306,N,12118.8515,W,1,10,0.98,1127.7,M,-19.6,M,,*72"
	epochGSA = "$GPGSA,A,3,20,16,09,03,07,10,,,,,,,1.64,0.98,1.31*0A"
	epochRMC = "$GNRMC,101504.000,A,4404.1306,N,12118.8515,W,2.16,211.30,241126,,,A*67"
)

func padded(s string) []byte {
	return append([]byte(s), bytes.Repeat([]byte{'\n'}, 255-len(s))...)
}

func read(s string) i2ctest.IO { return i2ctest.IO{Addr: 0x10, R: padded(s)} }

func openOps() []i2ctest.IO {
	return []i2ctest.IO{
		read(""),
		{Addr: 0x10, W: []byte("$PMTK314,0,1,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0*29\r\n")},
		read("$PMTK001,314,3*36\r\n"),
		{Addr: 0x10, W: []byte("$PMTK220,1000*1F\r\n")},
		read(""),
		read("$PMTK001,220,3*30\r\n"),
	}
}

func TestRecordedSession(t *testing.T) {
	ops := append(openOps(),
		read(epochGGA+"\r\n"+epochGSA[:20]),
		read(epochGSA[20:]+"\r"),
		read("\n"+epochRMC+"\r\n"),
	)
	bus := &i2ctest.Playback{Ops: ops}
	d, err := pa1010d.Open(bus, 0x10, nil)
	require.NoError(t, err)
	require.Equal(t, "pa1010d on playback at 0x10", d.String())
	f, err := d.Next(context.Background())
	require.NoError(t, err)
	require.NoError(t, bus.Close(), "the fix came with the RMC, not a read later")

	var g wire.GPS
	f.Fill(&g)
	require.Equal(t, time.Date(2026, 11, 24, 10, 15, 4, 0, time.UTC), f.Time)
	alt, speed, course, hdop, acc := 1127.7, 4.0, 211.3, 0.98, 4.9
	require.Equal(t, wire.GPS{
		Latitude: 44.068843, Longitude: -121.314192, AltitudeM: &alt, SpeedKmh: &speed, CourseDeg: &course,
		Fix: 3, Sats: 10, HDOP: &hdop, GPSAccuracy: &acc,
	}, g)
	st := d.Stats()
	require.Equal(t, uint64(5), st.Sentences, "two acks and the epoch")
	require.Equal(t, uint64(1), st.Epochs)
	require.Equal(t, uint64(1), st.Fixes)
	require.Equal(t, 3, st.FixMode)
	require.Zero(t, st.ChecksumErrors+st.Garbage+st.Overlong+st.I2CErrors)
}

func TestOpenCommandsFollowOpts(t *testing.T) {
	o := pa1010d.Opts{FixInterval: 200 * time.Millisecond, Sentences: pa1010d.RMC | pa1010d.GGA | pa1010d.GSA | pa1010d.ZDA | pa1010d.GST}
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		read(""),
		{Addr: 0x10, W: []byte(pa1010d.Command("PMTK314,0,1,0,1,1,0,0,1,0,0,0,0,0,0,0,0,0,1,0"))},
		read("$PMTK001,314,3*36\r\n"),
		{Addr: 0x10, W: []byte("$PMTK220,200*2C\r\n")},
		read("$PMTK001,220,3*30\r\n"),
	}}
	_, err := pa1010d.Open(bus, 0x10, &o)
	require.NoError(t, err)
	require.NoError(t, bus.Close())
}

// TestOpenAckOrder: NMEA and another command's ack before ours are skipped;
// the fix that completes meanwhile is kept for Next.
func TestOpenAckOrder(t *testing.T) {
	bus := &i2ctest.Playback{Ops: []i2ctest.IO{
		read(epochGGA + "\r\n"),
		{Addr: 0x10, W: []byte("$PMTK314,0,1,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0*29\r\n")},
		read(epochGSA + "\r\n$PMTK001,220,3*30\r\n" + epochRMC + "\r\n$PMTK001,314,3*36\r\n"),
		{Addr: 0x10, W: []byte("$PMTK220,1000*1F\r\n")},
		read("$PMTK001,220,3*30\r\n"),
	}}
	d, err := pa1010d.Open(bus, 0x10, nil)
	require.NoError(t, err)
	require.NoError(t, bus.Close())
	f, err := d.Next(context.Background())
	require.NoError(t, err, "no read: the fix was queued")
	require.Equal(t, 3, f.Mode)
}

// simReceiver is a simulated receiver with a built-in track on a bus.
func simReceiver(o sim.PA1010DOpts) (*sim.Bus, *sim.PA1010D) {
	rx := sim.NewPA1010D(sim.Track("pizero-01"), o)
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x10, rx)
	return bus, rx
}

func TestAcksFromSimulator(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		bus, rx := simReceiver(sim.PA1010DOpts{Speed: 20})
		_, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{FixInterval: 500 * time.Millisecond})
		require.NoError(t, err)
		cfg := rx.Config()
		require.Equal(t, 500*time.Millisecond, cfg.Interval)
		require.Equal(t, [19]int{1: 1, 3: 1, 4: 1}, cfg.Output, "RMC, GGA, GSA")
	})
	tt := []struct {
		cmd, flag int
		msg       string
	}{
		{314, 0, "PMTK001 for PMTK314 has flag 0 (invalid command)"},
		{314, 1, "PMTK001 for PMTK314 has flag 1 (unsupported command)"},
		{220, 2, "PMTK001 for PMTK220 has flag 2 (valid command, but the action failed)"},
	}
	for _, tc := range tt {
		t.Run(fmt.Sprintf("PMTK%d refused with %d", tc.cmd, tc.flag), func(t *testing.T) {
			bus, _ := simReceiver(sim.PA1010DOpts{Speed: 20, AckFlags: map[int]int{tc.cmd: tc.flag}})
			_, err := pa1010d.Open(bus, 0x10, nil)
			require.ErrorIs(t, err, pa1010d.ErrRefused)
			var ae *pa1010d.AckError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, pa1010d.AckError{Cmd: tc.cmd, Flag: tc.flag}, *ae)
			require.ErrorContains(t, err, "pa1010d on sim-i2c at 0x10: the receiver refused a command: "+tc.msg)
		})
	}
	t.Run("no ack", func(t *testing.T) {
		bus, _ := simReceiver(sim.PA1010DOpts{Speed: 20, AckFlags: map[int]int{220: -1}})
		start := time.Now()
		_, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{AckTimeout: 300 * time.Millisecond, PollInterval: 20 * time.Millisecond})
		require.ErrorIs(t, err, pa1010d.ErrNoAck)
		require.ErrorContains(t, err, "pa1010d on sim-i2c at 0x10: no acknowledgement from the receiver: no PMTK001 for PMTK220 within 300ms (")
		require.ErrorContains(t, err, "valid sentences arrived meanwhile")
		require.Less(t, time.Since(start), 10*time.Second, "bounded (generously: the test machine may be busy)")
	})
}

// silent is a device at 0x10 that answers every read with bytes from fill.
type silent struct{ fill func([]byte) }

func (s silent) Tx(_, r []byte) error {
	s.fill(r)
	return nil
}

func TestOpenNoAckOnlyPadding(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x10, silent{func(r []byte) {
		for i := range r {
			r[i] = '\n'
		}
	}})
	_, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{AckTimeout: 50 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	require.ErrorIs(t, err, pa1010d.ErrNoAck)
	require.ErrorContains(t, err, "no PMTK001 for PMTK314 within 50ms (it sent nothing but padding)")
}

func TestOpenGarbage(t *testing.T) {
	tt := []struct {
		desc string
		fill func([]byte)
	}{
		{"0xFF (a bus with nothing driving SDA)", func(r []byte) {
			for i := range r {
				r[i] = 0xFF
			}
		}},
		{"random bytes", func(r []byte) {
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range r {
				r[i] = byte(rng.Uint32())
			}
		}},
		{"text that is not NMEA", func(r []byte) { copy(r, bytes.Repeat([]byte("$HELLO,world\r\n"), 20)) }},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := sim.NewBus("sim-i2c")
			bus.Attach(0x10, silent{tc.fill})
			_, err := pa1010d.Open(bus, 0x10, nil)
			require.ErrorIs(t, err, pa1010d.ErrGarbage)
			require.ErrorContains(t, err, "pa1010d on sim-i2c at 0x10: the device answers but sends no valid NMEA")
			require.NotErrorIs(t, err, pa1010d.ErrNoAck)
			require.Regexp(t, `: \d+ bytes without one$`, err.Error(), "found by the byte count, not the timeout")
		})
	}
}

func TestOpenNotFound(t *testing.T) {
	for _, tc := range sensortest.NACKs() {
		t.Run(tc.Desc, func(t *testing.T) {
			_, err := pa1010d.Open(&sensortest.NACKBus{Err: tc.Err}, 0x10, nil)
			require.ErrorIs(t, err, pa1010d.ErrNotFound)
			require.ErrorIs(t, err, tc.Err)
			require.ErrorContains(t, err, "pa1010d on playback at 0x10: no device answers at this address")
		})
	}
	t.Run("empty simulated bus", func(t *testing.T) {
		_, err := pa1010d.Open(sim.NewBus("sim-i2c"), 0x10, nil)
		require.ErrorIs(t, err, pa1010d.ErrNotFound)
		require.ErrorContains(t, err, "pa1010d on sim-i2c at 0x10: no device answers")
	})
}

func TestOpenBusErrors(t *testing.T) {
	t.Run("first read", func(t *testing.T) {
		bus := &i2ctest.Playback{DontPanic: true}
		_, err := pa1010d.Open(bus, 0x10, nil)
		require.ErrorContains(t, err, "pa1010d on playback at 0x10: first read: i2ctest: unexpected Tx()")
		require.NotErrorIs(t, err, pa1010d.ErrNotFound)
	})
	t.Run("command write", func(t *testing.T) {
		bus := &i2ctest.Playback{Ops: openOps()[:1], DontPanic: true}
		_, err := pa1010d.Open(bus, 0x10, nil)
		require.ErrorContains(t, err, "pa1010d on playback at 0x10: sending PMTK314: i2ctest: unexpected Tx()")
	})
	t.Run("waiting for the ack", func(t *testing.T) {
		bus := &i2ctest.Playback{Ops: openOps()[:2], DontPanic: true}
		_, err := pa1010d.Open(bus, 0x10, nil)
		require.ErrorContains(t, err, "pa1010d on playback at 0x10: waiting for the acknowledgement of PMTK314: i2ctest: unexpected Tx()")
	})
}

func TestOpenInvalid(t *testing.T) {
	tt := []struct {
		desc string
		addr uint16
		opts pa1010d.Opts
		msg  string
	}{
		{"address", 0x42, pa1010d.DefaultOpts, "pa1010d on playback at 0x42: not a PA1010D address: it always answers at 0x10"},
		{"interval too short", 0x10, pa1010d.Opts{FixInterval: 50 * time.Millisecond}, "fix interval 50ms is out of range"},
		{"interval too long", 0x10, pa1010d.Opts{FixInterval: time.Minute}, "fix interval 1m0s is out of range"},
		{"interval not in ms", 0x10, pa1010d.Opts{FixInterval: 1500*time.Millisecond + 500*time.Microsecond}, "whole milliseconds"},
		{"no RMC", 0x10, pa1010d.Opts{Sentences: pa1010d.GGA | pa1010d.GSA}, "sentences must include RMC and GGA"},
		{"unknown sentence", 0x10, pa1010d.Opts{Sentences: pa1010d.RMC | pa1010d.GGA | 1<<12}, "include unknown bits"},
		{"HDOP", 0x10, pa1010d.Opts{MaxHDOP: -1}, "maximum HDOP -1 is not a positive number"},
		{"sats", 0x10, pa1010d.Opts{MinSats: -1}, "minimum satellites -1"},
		{"UERE", 0x10, pa1010d.Opts{UERE: -5}, "UERE -5 m"},
		{"poll interval", 0x10, pa1010d.Opts{PollInterval: time.Millisecond}, "poll interval 1ms is out of range"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := &i2ctest.Playback{}
			_, err := pa1010d.Open(bus, tc.addr, &tc.opts)
			require.ErrorContains(t, err, tc.msg)
			if tc.addr != 0x10 {
				require.ErrorIs(t, err, pa1010d.ErrInvalidAddress)
			}
			require.NoError(t, bus.Close(), "refused before any bus traffic")
		})
	}
}

func TestNextBusError(t *testing.T) {
	bus := &i2ctest.Playback{Ops: append(openOps(), read(epochGGA+"\r\n")), DontPanic: true}
	d, err := pa1010d.Open(bus, 0x10, nil)
	require.NoError(t, err)
	_, err = d.Next(context.Background())
	require.ErrorContains(t, err, "pa1010d on playback at 0x10: reading: i2ctest: unexpected Tx()")
	require.Equal(t, uint64(1), d.Stats().I2CErrors)
}

func TestNextCancel(t *testing.T) {
	bus, _ := simReceiver(sim.PA1010DOpts{})
	d, err := pa1010d.Open(bus, 0x10, nil)
	require.NoError(t, err)

	// Fixes of the epochs that came during Open are returned first, even
	// with ctx done; then ctx's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 10 {
		if _, err = d.Next(ctx); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, context.Canceled)

	// A deadline ends the wait for the next fix. Right after a fix, the
	// next is 1 s away at Speed 1, so a 100 ms deadline always comes first.
	_, err = d.Next(context.Background())
	require.NoError(t, err)
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = d.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second, "generous: the test machine may be busy")
}

// TestStatsConcurrent reads Stats while Next runs (go test -race).
func TestStatsConcurrent(t *testing.T) {
	bus, _ := simReceiver(sim.PA1010DOpts{Speed: 50})
	d, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{PollInterval: 2 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			st := d.Stats()
			if st.FixMode != 0 && st.FixMode != 3 {
				t.Errorf("fix mode %d", st.FixMode)
			}
		}
	})
	for range 5 {
		_, err := d.Next(context.Background())
		require.NoError(t, err)
	}
	cancel()
	wg.Wait()
	require.Equal(t, 3, d.Stats().FixMode)
	require.GreaterOrEqual(t, d.Stats().Fixes, uint64(5))
}

func TestOptsZeroMeansDefault(t *testing.T) {
	// Open with a zero Opts sends exactly what DefaultOpts sends.
	bus := &i2ctest.Playback{Ops: openOps()}
	_, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{})
	require.NoError(t, err)
	require.NoError(t, bus.Close())
	require.True(t, strings.HasPrefix(pa1010d.DefaultOpts.NotBefore.Format(time.DateOnly), "2019-04-07"))
}

// timedDev records when each transaction reached the receiver.
type timedDev struct {
	sim.Device
	mu     sync.Mutex
	reads  []time.Time
	writes []time.Time
}

func (d *timedDev) Tx(w, r []byte) error {
	d.mu.Lock()
	if len(w) > 0 {
		d.writes = append(d.writes, time.Now())
	}
	if len(r) > 0 {
		d.reads = append(d.reads, time.Now())
	}
	d.mu.Unlock()
	return d.Device.Tx(w, r)
}

// TestBusPacing: at least 2 ms between reads and 10 ms between command
// writes, even while data flows as fast as it can (Speed 200).
func TestBusPacing(t *testing.T) {
	rx := sim.NewPA1010D(sim.Track("pizero-01"), sim.PA1010DOpts{Speed: 200})
	dev := &timedDev{Device: rx}
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x10, dev)
	d, err := pa1010d.Open(bus, 0x10, &pa1010d.Opts{PollInterval: 2 * time.Millisecond})
	require.NoError(t, err)
	for range 10 {
		_, err := d.Next(context.Background())
		require.NoError(t, err)
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	require.Len(t, dev.writes, 2)
	require.GreaterOrEqual(t, dev.writes[1].Sub(dev.writes[0]), 10*time.Millisecond)
	require.Greater(t, len(dev.reads), 10)
	for i := 1; i < len(dev.reads); i++ {
		require.GreaterOrEqual(t, dev.reads[i].Sub(dev.reads[i-1]), 2*time.Millisecond, "read %d", i)
	}
}
