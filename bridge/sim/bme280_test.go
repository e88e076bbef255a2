package sim_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sim"
)

// Register-level behaviour of the BME280 model, driven with raw
// transactions as a driver would send them.

const simAddr = 0x76

// clock is the simulated wall clock a test moves by hand; the model reads it
// to know which moment of the weather a measurement samples.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newClock() *clock { return &clock{t: time.Date(2026, 11, 24, 10, 15, 4, 0, time.UTC)} }

func newChip(t *testing.T) (*sim.Bus, *sim.BME280, *clock) {
	t.Helper()
	c := newClock()
	s := sim.NewBME280("pizero-01", c.now)
	bus := sim.NewBus("sim-i2c")
	bus.Attach(simAddr, s)
	return bus, s, c
}

func read(t *testing.T, bus *sim.Bus, reg byte, n int) []byte {
	t.Helper()
	r := make([]byte, n)
	require.NoError(t, bus.Tx(simAddr, []byte{reg}, r))
	return r
}

func write(t *testing.T, bus *sim.Bus, pairs ...byte) {
	t.Helper()
	require.NoError(t, bus.Tx(simAddr, pairs, nil))
}

// waitIdle polls the status register like a driver until the conversion
// has ended.
func waitIdle(t *testing.T, bus *sim.Bus) {
	t.Helper()
	start := time.Now()
	for read(t, bus, 0xF3, 1)[0]&0x08 != 0 {
		require.Less(t, time.Since(start), time.Second, "conversion never ends")
		time.Sleep(100 * time.Microsecond)
	}
}

func raw20(b []byte) uint32 { return uint32(b[0])<<12 | uint32(b[1])<<4 | uint32(b[2])>>4 }

var resetData = []byte{0x80, 0, 0, 0x80, 0, 0, 0x80, 0}

func TestRegistersAtPowerOn(t *testing.T) {
	// The same recording the bme280 playback tests use (periph's
	// bmxx80/bmx280_test.go), as the model's NVM.
	calibTPH := []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	calibH := []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	tt := []struct {
		desc string
		reg  byte
		want []byte
	}{
		{"chip id", 0xD0, []byte{0x60}},
		{"calibration T, P, H1", 0x88, calibTPH},
		{"calibration H2..H6", 0xE1, calibH},
		{"auto-increment across the control block", 0xF2, []byte{0, 0, 0, 0}},
		{"data registers hold their reset values", 0xF7, resetData},
		{"reset register reads 0", 0xE0, []byte{0}},
	}
	bus, _, _ := newChip(t)
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			require.Equal(t, tc.want, read(t, bus, tc.reg, len(tc.want)))
		})
	}
}

func TestRegisterPointer(t *testing.T) {
	bus, _, _ := newChip(t)
	// A lone register byte sets the pointer for a later read transaction.
	write(t, bus, 0xD0)
	r := make([]byte, 1)
	require.NoError(t, bus.Tx(simAddr, nil, r))
	require.Equal(t, byte(0x60), r[0])
	// Reads continue where the last one stopped.
	write(t, bus, 0x88)
	a, b := make([]byte, 2), make([]byte, 2)
	require.NoError(t, bus.Tx(simAddr, nil, a))
	require.NoError(t, bus.Tx(simAddr, nil, b))
	require.Equal(t, read(t, bus, 0x88, 4), append(a, b...))
}

func TestWrites(t *testing.T) {
	tt := []struct {
		desc  string
		pairs []byte
		reg   byte
		want  []byte
	}{
		{"several pairs in one write", []byte{0xF2, 0x05, 0xF5, 0xB0}, 0xF2, []byte{0x05, 0, 0, 0xB0}},
		{"ctrl_hum keeps bits 2:0", []byte{0xF2, 0xFF}, 0xF2, []byte{0x07}},
		{"config bit 1 is reserved", []byte{0xF5, 0xFF}, 0xF5, []byte{0xFD}},
		{"chip id is read-only", []byte{0xD0, 0x00}, 0xD0, []byte{0x60}},
		{"calibration is read-only", []byte{0x88, 0x00}, 0x88, []byte{0x10}},
		{"data is read-only", []byte{0xF7, 0x12}, 0xF7, []byte{0x80}},
		{"sleep mode stays asleep", []byte{0xF4, 0x24}, 0xF4, []byte{0x24}},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus, _, _ := newChip(t)
			write(t, bus, tc.pairs...)
			require.Equal(t, tc.want, read(t, bus, tc.reg, len(tc.want)))
		})
	}
}

func TestSoftReset(t *testing.T) {
	tt := []struct {
		desc  string
		value byte
		reset bool
	}{
		{"0xB6 resets", 0xB6, true},
		{"any other value is ignored", 0xB5, false},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus, _, _ := newChip(t)
			write(t, bus, 0xF2, 0x01, 0xF5, 0xA0, 0xF4, 0x25)
			waitIdle(t, bus)
			require.NotEqual(t, resetData, read(t, bus, 0xF7, 8))

			write(t, bus, 0xE0, tc.value)
			if tc.reset {
				require.Equal(t, []byte{0, 0, 0, 0}, read(t, bus, 0xF2, 4))
				require.Equal(t, resetData, read(t, bus, 0xF7, 8))
			} else {
				require.Equal(t, []byte{0x01, 0, 0x24, 0xA0}, read(t, bus, 0xF2, 4))
			}
		})
	}
}

// TestForcedConversion follows one forced measurement: busy for the
// datasheet's maximum conversion time, old data until it ends, then new
// data and back to sleep.
func TestForcedConversion(t *testing.T) {
	bus, _, _ := newChip(t)
	start := time.Now()
	write(t, bus, 0xF2, 0x01, 0xF4, 0x25) // 1x everything, forced
	require.Equal(t, byte(0x08), read(t, bus, 0xF3, 1)[0], "measuring")
	require.Equal(t, resetData, read(t, bus, 0xF7, 8), "data changes only at the end")
	waitIdle(t, bus)
	// t_measure,max = 1.25 + 2.3 + 2.875 + 2.875 ms (datasheet 9.1);
	// bmxx80 sleeps the typical 8 ms first and polls for the rest.
	require.GreaterOrEqual(t, time.Since(start), 9300*time.Microsecond)
	require.Equal(t, byte(0x24), read(t, bus, 0xF4, 1)[0], "back to sleep")
	data := read(t, bus, 0xF7, 8)
	require.NotEqual(t, resetData, data)
	require.Equal(t, data, read(t, bus, 0xF7, 8), "asleep: nothing changes")
}

func TestMeasurementSettings(t *testing.T) {
	tt := []struct {
		desc   string
		pairs  []byte
		check  func(t *testing.T, d []byte)
		repeat int
	}{
		{
			desc:  "pressure skipped reads 0x80000",
			pairs: []byte{0xF2, 0x01, 0xF4, 0x21},
			check: func(t *testing.T, d []byte) {
				require.Equal(t, []byte{0x80, 0, 0}, d[:3])
				require.NotEqual(t, uint32(0x80000), raw20(d[3:6]))
			},
		},
		{
			desc:  "humidity skipped reads 0x8000",
			pairs: []byte{0xF2, 0x00, 0xF4, 0x25},
			check: func(t *testing.T, d []byte) { require.Equal(t, []byte{0x80, 0}, d[6:]) },
		},
		{
			// Datasheet 5.4.3: ctrl_hum applies only from the next
			// ctrl_meas write, so this conversion still skips humidity.
			desc:  "ctrl_hum written after ctrl_meas waits",
			pairs: []byte{0xF4, 0x25, 0xF2, 0x01},
			check: func(t *testing.T, d []byte) { require.Equal(t, []byte{0x80, 0}, d[6:]) },
		},
		{
			// Datasheet 3.4.2-3.4.3: without filter the ADC gives
			// 16+(osrs-1) bits, so at 1x the low 4 of 20 bits are 0.
			desc:  "1x resolves 16 bits",
			pairs: []byte{0xF2, 0x01, 0xF4, 0x25},
			check: func(t *testing.T, d []byte) {
				require.Zero(t, raw20(d[0:3])&0xF)
				require.Zero(t, raw20(d[3:6])&0xF)
			},
		},
		{
			desc:  "4x resolves 18 bits",
			pairs: []byte{0xF2, 0x01, 0xF4, 0x6D},
			check: func(t *testing.T, d []byte) {
				require.Zero(t, raw20(d[0:3])&0x3)
				require.Zero(t, raw20(d[3:6])&0x3)
			},
		},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			bus, _, _ := newChip(t)
			write(t, bus, tc.pairs...)
			waitIdle(t, bus)
			tc.check(t, read(t, bus, 0xF7, 8))
		})
	}
}

// TestFilter: with the IIR filter on, the first conversion after writing
// config passes unchanged and later ones move 1/c of the way (datasheet
// 3.4.4). Half a day later the weather has moved a lot, the output little.
func TestFilter(t *testing.T) {
	bus, _, c := newChip(t)
	forced := func() uint32 {
		write(t, bus, 0xF4, 0x25)
		waitIdle(t, bus)
		return raw20(read(t, bus, 0xFA, 3))
	}
	unfiltered := func() uint32 {
		write(t, bus, 0xF5, 0x00)
		return forced()
	}

	start := unfiltered()
	c.t = c.t.Add(12 * time.Hour)
	target := unfiltered()
	require.Greater(t, max(start, target)-min(start, target), uint32(1000), "the weather must move for this test")

	c.t = c.t.Add(-12 * time.Hour)
	write(t, bus, 0xF5, 0x10) // filter 16
	// Filtered output has 20 bits, so it differs from the 16-bit one by
	// less than half a 16-bit step.
	require.InDelta(t, float64(start), float64(forced()), 8, "first value passes and primes the filter")
	c.t = c.t.Add(12 * time.Hour)
	got := forced()
	want := (float64(start)*15 + float64(target)) / 16
	require.InDelta(t, want, float64(got), 16, "one step of 1/16, ±one 16-bit ADC step")
}

// TestNormalModeRegisters: in normal mode conversions repeat by themselves
// every t_measure + t_standby, and config writes are ignored.
func TestNormalModeRegisters(t *testing.T) {
	bus, _, c := newChip(t)
	write(t, bus, 0xF2, 0x01, 0xF5, 0xC0, 0xF4, 0x27) // t_sb 10 ms, 1x, normal
	write(t, bus, 0xF5, 0x00)
	require.Equal(t, byte(0xC0), read(t, bus, 0xF5, 1)[0], "config writes are ignored in normal mode")

	time.Sleep(30 * time.Millisecond)
	first := read(t, bus, 0xF7, 8)
	require.NotEqual(t, resetData, first)
	c.t = c.t.Add(6 * time.Hour)
	time.Sleep(30 * time.Millisecond)
	require.NotEqual(t, first, read(t, bus, 0xF7, 8), "later cycles sample the weather anew")
	require.Equal(t, byte(0x27), read(t, bus, 0xF4, 1)[0], "normal mode stays on")
}

func TestSameNodeSameChip(t *testing.T) {
	at := newClock().t
	a := sim.NewBME280("pizero-01", func() time.Time { return at })
	b := sim.NewBME280("pizero-01", func() time.Time { return at })
	ta, ha, pa := a.Truth(at)
	tb, hb, pb := b.Truth(at)
	require.Equal(t, []float64{ta, ha, pa}, []float64{tb, hb, pb})

	var got [2][]byte
	for i, s := range []*sim.BME280{a, b} {
		require.NoError(t, s.Tx([]byte{0xF2, 0x01, 0xF4, 0x25}, nil))
		time.Sleep(12 * time.Millisecond)
		got[i] = make([]byte, 8)
		require.NoError(t, s.Tx([]byte{0xF7}, got[i]))
	}
	require.Equal(t, got[0], got[1], "deterministic from node name and time")
}
