package sim_test

import (
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/wire"
)

// The real driver stack, bridge/sensor/bme280 over periph's bmxx80, reading
// the model.

// How far a reading may be from Truth, from what the chain really resolves
// at DefaultOpts (1x, no filter), measured over 300 readings at 37-minute
// steps: 0.0071 °C, 0.018 hPa, 0.056 %.
//   - Temperature: the ADC gives 16 of 20 bits, steps of 16 counts x 0.00031
//     °C (t_fine = 5120·T, dig_T2 = 26220) = 0.005 °C, so ±0.0025; Bosch's
//     integer compensation that bmxx80 uses outputs 0.01 °C steps, ±0.005.
//   - Pressure: 16-bit steps of about 2.6 Pa, ±1.3 Pa, plus rounding to
//     0.01 hPa (±0.5 Pa) and a little from the temperature step.
//   - Humidity: the 16-bit ADC and the 1/1024 % output add under 0.01 %;
//     Read rounds to 0.1 %, ±0.05.
const (
	tolTempC    = 0.01
	tolPressHPa = 0.025
	tolHumPct   = 0.06
)

// Plausible readings of a weather station in a temperate climate: what the
// model promises, with margin.
const (
	minTempC, maxTempC   = 12.0, 28.0
	minHumPct, maxHumPct = 25.0, 80.0
	minHPa, maxHPa       = 990.0, 1030.0
)

func openSim(t *testing.T, node string, opts *bme280.Opts) (*bme280.Dev, *sim.BME280, *clock) {
	t.Helper()
	c := newClock()
	s := sim.NewBME280(node, c.now)
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x76, s)
	d, err := bme280.Open(bus, 0x76, opts)
	require.NoError(t, err)
	return d, s, c
}

func requireNearTruth(t *testing.T, s *sim.BME280, at time.Time, e wire.Env) {
	t.Helper()
	tc, h, p := s.Truth(at)
	require.NotNil(t, e.TemperatureC)
	require.NotNil(t, e.HumidityPct)
	require.NotNil(t, e.PressureHPa)
	require.InDelta(t, tc, *e.TemperatureC, tolTempC, "temperature at %s", at)
	require.InDelta(t, h, *e.HumidityPct, tolHumPct, "humidity at %s", at)
	require.InDelta(t, p, *e.PressureHPa, tolPressHPa, "pressure at %s", at)
}

// TestReadMatchesTruth reads through the whole stack across a simulated
// week, at odd intervals so every hour of the day is hit.
func TestReadMatchesTruth(t *testing.T) {
	tt := []struct {
		node  string
		opts  *bme280.Opts
		reads int
	}{
		{"pizero-01", nil, 64},
		{"pizero-02", nil, 64},
		{"greenhouse-7", nil, 64},
		// 16x takes ~113 ms a reading; a few show the model's timing and
		// resolution follow the settings.
		{"pizero-01", &bme280.Opts{Temperature: bmxx80.O16x, Pressure: bmxx80.O16x, Humidity: bmxx80.O16x}, 4},
	}
	for _, tc := range tt {
		t.Run(fmt.Sprintf("%s/%d", tc.node, tc.reads), func(t *testing.T) {
			t.Parallel()
			d, s, c := openSim(t, tc.node, tc.opts)
			step := 7 * 24 * time.Hour / time.Duration(tc.reads)
			for range tc.reads {
				c.t = c.t.Add(step)
				var e wire.Env
				require.NoError(t, d.Read(&e))
				requireNearTruth(t, s, c.t, e)
				require.True(t, minTempC <= *e.TemperatureC && *e.TemperatureC <= maxTempC, "temperature %v", *e.TemperatureC)
				require.True(t, minHumPct <= *e.HumidityPct && *e.HumidityPct <= maxHumPct, "humidity %v", *e.HumidityPct)
				require.True(t, minHPa <= *e.PressureHPa && *e.PressureHPa <= maxHPa, "pressure %v", *e.PressureHPa)
			}
			require.NoError(t, d.Halt())
		})
	}
}

// TestWeekIsPlausible checks the modelled weather minute by minute over a
// week, for many nodes: in range, with a real daily cycle and real swings.
func TestWeekIsPlausible(t *testing.T) {
	start := newClock().t
	for i := range 20 {
		node := fmt.Sprintf("pizero-%02d", i)
		s := sim.NewBME280(node, nil)
		lo, hi := [3]float64{math.Inf(1), math.Inf(1), math.Inf(1)}, [3]float64{math.Inf(-1), math.Inf(-1), math.Inf(-1)}
		for m := range 7 * 24 * 60 {
			tc, h, p := s.Truth(start.Add(time.Duration(m) * time.Minute))
			for j, v := range [3]float64{tc, h, p} {
				lo[j], hi[j] = math.Min(lo[j], v), math.Max(hi[j], v)
			}
		}
		require.GreaterOrEqual(t, lo[0], minTempC, node)
		require.LessOrEqual(t, hi[0], maxTempC, node)
		require.GreaterOrEqual(t, lo[1], minHumPct, node)
		require.LessOrEqual(t, hi[1], maxHumPct, node)
		require.GreaterOrEqual(t, lo[2], minHPa, node)
		require.LessOrEqual(t, hi[2], maxHPa, node)
		// A flat line would pass the range checks; a week has a daily
		// cycle of ±2.5 °C or more, and pressure systems passing.
		require.Greater(t, hi[0]-lo[0], 5.0, node)
		require.Greater(t, hi[1]-lo[1], 10.0, node)
		require.Greater(t, hi[2]-lo[2], 5.0, node)
	}
}

// TestContinuity: the weather has no jumps, second to second, neither in
// the model nor as read through the driver.
func TestContinuity(t *testing.T) {
	s := sim.NewBME280("pizero-01", nil)
	at := newClock().t
	// The fastest terms change temperature by under 0.0003 °C/s (3.5 °C
	// daily amplitude), humidity under 0.001 %/s, pressure under
	// 0.0004 hPa/s; the bounds leave a margin.
	t0, h0, p0 := s.Truth(at)
	for range 24 * 3600 {
		at = at.Add(time.Second)
		t1, h1, p1 := s.Truth(at)
		require.InDelta(t, t0, t1, 0.001)
		require.InDelta(t, h0, h1, 0.002)
		require.InDelta(t, p0, p1, 0.001)
		t0, h0, p0 = t1, h1, p1
	}

	// Through the driver, successive seconds differ by at most the
	// quantisation on either side.
	d, s2, c := openSim(t, "pizero-01", nil)
	var prev wire.Env
	for i := range 5 {
		c.t = c.t.Add(time.Second)
		var e wire.Env
		require.NoError(t, d.Read(&e))
		requireNearTruth(t, s2, c.t, e)
		if i > 0 {
			require.InDelta(t, *prev.TemperatureC, *e.TemperatureC, 2*tolTempC)
			require.InDelta(t, *prev.HumidityPct, *e.HumidityPct, 2*tolHumPct)
			require.InDelta(t, *prev.PressureHPa, *e.PressureHPa, 2*tolPressHPa)
		}
		prev = e
	}
}

func TestNodesDiffer(t *testing.T) {
	a := sim.NewBME280("pizero-01", nil)
	b := sim.NewBME280("pizero-02", nil)
	at := newClock().t
	var dt, dh, dp float64
	for m := range 24 * 60 {
		ta, ha, pa := a.Truth(at.Add(time.Duration(m) * time.Minute))
		tb, hb, pb := b.Truth(at.Add(time.Duration(m) * time.Minute))
		dt, dh, dp = math.Max(dt, math.Abs(ta-tb)), math.Max(dh, math.Abs(ha-hb)), math.Max(dp, math.Abs(pa-pb))
	}
	// Far beyond the sensor's resolution: two nodes are told apart on a
	// dashboard, not just in the last digit.
	require.Greater(t, dt, 0.5)
	require.Greater(t, dh, 2.0)
	require.Greater(t, dp, 1.0)
}

// TestAddresses: a sensor answers where it is attached and nowhere else,
// and two sensors share a bus.
func TestAddresses(t *testing.T) {
	tt := []struct {
		desc     string
		attached []uint16
		open     uint16
		found    bool
	}{
		{"0x76 as attached", []uint16{0x76}, 0x76, true},
		{"0x77 as attached", []uint16{0x77}, 0x77, true},
		{"0x77 when only 0x76 is wired", []uint16{0x76}, 0x77, false},
		{"0x76 when only 0x77 is wired", []uint16{0x77}, 0x76, false},
		{"both on one bus, 0x76", []uint16{0x76, 0x77}, 0x76, true},
		{"both on one bus, 0x77", []uint16{0x76, 0x77}, 0x77, true},
		{"empty bus", nil, 0x76, false},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			bus := sim.NewBus("sim-i2c")
			sensors := map[uint16]*sim.BME280{}
			for _, a := range tc.attached {
				sensors[a] = sim.NewBME280(fmt.Sprintf("node-%x", a), c.now)
				bus.Attach(a, sensors[a])
			}
			d, err := bme280.Open(bus, tc.open, nil)
			if !tc.found {
				require.ErrorIs(t, err, bme280.ErrNotFound)
				require.ErrorIs(t, err, syscall.ENXIO)
				require.ErrorContains(t, err, fmt.Sprintf("bme280 on sim-i2c at %#x: no device answers at this address", tc.open))
				return
			}
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("bme280 on sim-i2c at %#x", tc.open), d.String())
			var e wire.Env
			require.NoError(t, d.Read(&e))
			requireNearTruth(t, sensors[tc.open], c.t, e) // this sensor's weather, not the other's
		})
	}
}

// TestUnplugged: a sensor that disappears makes Read fail; once it is back,
// Open works again. This is the agent's retry path.
func TestUnplugged(t *testing.T) {
	c := newClock()
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x76, sim.NewBME280("pizero-01", c.now))
	d, err := bme280.Open(bus, 0x76, nil)
	require.NoError(t, err)

	bus.Detach(0x76)
	var e wire.Env
	err = d.Read(&e)
	require.ErrorContains(t, err, "bme280 on sim-i2c at 0x76: ")
	require.ErrorContains(t, err, syscall.ENXIO.Error())
	_, err = bme280.Open(bus, 0x76, nil)
	require.ErrorIs(t, err, bme280.ErrNotFound)

	s := sim.NewBME280("pizero-01", c.now)
	bus.Attach(0x76, s)
	d, err = bme280.Open(bus, 0x76, nil)
	require.NoError(t, err)
	require.NoError(t, d.Read(&e))
	requireNearTruth(t, s, c.t, e)
}

// TestFilterThroughDriver: Opts.Filter reaches the chip although bmxx80
// only sets the filter in normal mode. Readings then lag the weather: one
// Read moves 1/16 of the way at F16.
func TestFilterThroughDriver(t *testing.T) {
	d, s, c := openSim(t, "pizero-01", &bme280.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x, Humidity: bmxx80.O1x, Filter: bmxx80.F16})
	var e wire.Env
	require.NoError(t, d.Read(&e))
	requireNearTruth(t, s, c.t, e) // the first value passes the filter
	t0, h0, p0 := s.Truth(c.t)

	c.t = c.t.Add(6 * time.Hour) // from morning to late afternoon
	require.NoError(t, d.Read(&e))
	t1, h1, p1 := s.Truth(c.t)
	require.Greater(t, math.Abs(t1-t0), 2.0, "the weather must move for this test")
	require.InDelta(t, t0+(t1-t0)/16, *e.TemperatureC, tolTempC)
	require.InDelta(t, p0+(p1-p0)/16, *e.PressureHPa, tolPressHPa)
	// Humidity is never filtered, but its compensation uses the (lagging)
	// temperature, which skews it a little: on hardware too.
	t.Logf("humidity %.2f -> %.2f, read %.1f; temperature %.2f -> %.2f", h0, h1, *e.HumidityPct, t0, t1)
	require.Greater(t, math.Abs(h1-h0), 4.0, "the weather must move for this test")
	require.InDelta(t, h1, *e.HumidityPct, 0.5)
}

// TestNormalModeWithBmxx80: the model also serves bmxx80's continuous
// (normal-mode) path, which the adapter does not use.
func TestNormalModeWithBmxx80(t *testing.T) {
	c := newClock()
	s := sim.NewBME280("pizero-01", c.now)
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x76, s)
	dev, err := bmxx80.NewI2C(bus, 0x76, &bmxx80.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x, Humidity: bmxx80.O1x})
	require.NoError(t, err)

	ch, err := dev.SenseContinuous(30 * time.Millisecond)
	require.NoError(t, err)
	<-ch // the first may predate the first conversion, as on hardware
	for range 3 {
		e := <-ch
		tc, h, p := s.Truth(c.t)
		require.InDelta(t, tc, e.Temperature.Celsius(), tolTempC)
		require.InDelta(t, h, float64(e.Humidity)/float64(physic.PercentRH), tolHumPct)
		require.InDelta(t, p, float64(e.Pressure)/float64(100*physic.Pascal), tolPressHPa)
	}
	require.NoError(t, dev.Halt())
	r := make([]byte, 1)
	require.NoError(t, bus.Tx(0x76, []byte{0xF4}, r))
	require.Equal(t, byte(0x24), r[0], "Halt put the chip to sleep")
}

// TestBrownout: a reset of the chip between readings (a brownout, here the
// soft-reset command) puts ctrl_hum back to "skip". Read must still deliver
// the real humidity, not a stale value.
func TestBrownout(t *testing.T) {
	c := newClock()
	bus := sim.NewBus("sim-i2c")
	s := sim.NewBME280("pizero-01", c.now)
	bus.Attach(0x76, s)
	d, err := bme280.Open(bus, 0x76, nil)
	require.NoError(t, err)
	var e wire.Env
	require.NoError(t, d.Read(&e))
	requireNearTruth(t, s, c.t, e)

	require.NoError(t, bus.Tx(0x76, []byte{0xE0, 0xB6}, nil)) // soft reset
	c.t = c.t.Add(6 * time.Hour)                              // the weather has moved on
	require.NoError(t, d.Read(&e))
	requireNearTruth(t, s, c.t, e)
}
