package bme280_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/bme280"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/sensortest"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Register contents of a real BME280 at 0x76, copied from periph's own tests:
// the reads of TestI2CSenseBME280_success in
// periph.io/x/devices/v3@v3.7.4/bmxx80/bmx280_test.go, whose calibration the
// same file calls "real data extracted from a device". periph asserts that
// this sample decodes to 23.72 °C, 100942.6953125 Pa and 65.30560 %RH.
var (
	// 0x88..0xA1: dig_T1..dig_P9, one unused byte, dig_H1.
	realCalibTPH = []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	// 0xE1..0xE7: dig_H2..dig_H6.
	realCalibH = []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	// 0xF7..0xFE: pressure, temperature, humidity.
	realData = []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}
)

const addr = 0x76

// Register codes from the BME280 datasheet (Bosch BST-BME280-DS002, 5.4.3 to
// 5.4.6), written out rather than derived from bmxx80's constants, so that
// the tests check the bytes against the chip's documentation and not against
// the driver's own arithmetic.
var (
	// osrs_h, osrs_t and osrs_p (tables 20, 22, 23): 000 skipped, 001 ×1,
	// 010 ×2, 011 ×4, 100 ×8, 101 ×16.
	osrs = map[bmxx80.Oversampling]byte{bmxx80.Off: 0b000, bmxx80.O1x: 0b001, bmxx80.O2x: 0b010,
		bmxx80.O4x: 0b011, bmxx80.O8x: 0b100, bmxx80.O16x: 0b101}
	// filter coefficient (table 28): off, 2, 4, 8, 16.
	filter = map[bmxx80.Filter]byte{bmxx80.NoFilter: 0b000, bmxx80.F2: 0b001, bmxx80.F4: 0b010,
		bmxx80.F8: 0b011, bmxx80.F16: 0b100}
)

// ctrlMeas is register 0xF4: osrs_t in bits 7..5, osrs_p in 4..2, mode in
// 1..0 (00 sleep, 01 forced).
func ctrlMeas(o bme280.Opts, mode byte) byte {
	return osrs[o.Temperature]<<5 | osrs[o.Pressure]<<2 | mode
}

// openOps is the traffic of Open with opts: the reads are the recording, the
// writes are what bmxx80 sends for these settings (the recording was made
// at 4x oversampling, which changes the writes but not how data decodes).
func openOps(o bme280.Opts) []i2ctest.IO {
	meas := ctrlMeas(o, 0b00)
	ops := []i2ctest.IO{
		{Addr: addr, W: []byte{0xD0}, R: []byte{0x60}}, // our probe
		{Addr: addr, W: []byte{0xD0}, R: []byte{0x60}}, // bmxx80's
		{Addr: addr, W: []byte{0x88}, R: realCalibTPH},
		{Addr: addr, W: []byte{0xE1}, R: realCalibH},
		// ctrl_meas (sleep), ctrl_hum, config (t_sb 1 s, no filter), ctrl_meas.
		{Addr: addr, W: []byte{0xF4, meas, 0xF2, osrs[o.Humidity], 0xF5, 0b101_000_00, 0xF4, meas}},
	}
	if o.Filter != bmxx80.NoFilter {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0xF5, filter[o.Filter] << 2}})
	}
	return ops
}

// readOps is one forced measurement: ctrl_hum restored (see Read), trigger,
// the chip busy once and then idle (as in the recording), burst read of the
// data registers.
func readOps(o bme280.Opts, data []byte) []i2ctest.IO {
	var ops []i2ctest.IO
	if o.Humidity != bmxx80.Off {
		ops = append(ops, i2ctest.IO{Addr: addr, W: []byte{0xF2, osrs[o.Humidity]}})
	}
	return append(ops,
		i2ctest.IO{Addr: addr, W: []byte{0xF4, ctrlMeas(o, 0b01)}},
		i2ctest.IO{Addr: addr, W: []byte{0xF3}, R: []byte{0x08}},
		i2ctest.IO{Addr: addr, W: []byte{0xF3}, R: []byte{0x00}},
		i2ctest.IO{Addr: addr, W: []byte{0xF7}, R: data},
	)
}

func f(v float64) *float64 { return &v }

func TestReadRecorded(t *testing.T) {
	tt := []struct {
		desc string
		opts bme280.Opts
		want wire.Env
	}{
		{
			desc: "default opts",
			opts: bme280.DefaultOpts,
			want: wire.Env{TemperatureC: f(23.72), HumidityPct: f(65.3), PressureHPa: f(1009.43)},
		},
		{
			desc: "filter and oversampling",
			opts: bme280.Opts{Temperature: bmxx80.O2x, Pressure: bmxx80.O16x, Humidity: bmxx80.O4x, Filter: bmxx80.F4},
			want: wire.Env{TemperatureC: f(23.72), HumidityPct: f(65.3), PressureHPa: f(1009.43)},
		},
		{
			desc: "humidity off",
			opts: bme280.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x},
			want: wire.Env{TemperatureC: f(23.72), PressureHPa: f(1009.43)},
		},
		{
			desc: "pressure off",
			opts: bme280.Opts{Temperature: bmxx80.O1x, Humidity: bmxx80.O1x},
			want: wire.Env{TemperatureC: f(23.72), HumidityPct: f(65.3)},
		},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: append(openOps(tc.opts), readOps(tc.opts, realData)...)}
			d, err := bme280.Open(bus, addr, &tc.opts)
			require.NoError(t, err)
			require.Equal(t, "bme280 on playback at 0x76", d.String())

			// Stale values must be replaced, including by nil.
			e := wire.Env{TemperatureC: f(-1), HumidityPct: f(-1), PressureHPa: f(-1)}
			require.NoError(t, d.Read(&e))
			require.Equal(t, tc.want, e)
			require.NoError(t, d.Halt())
			require.NoError(t, bus.Close())
		})
	}
}

// TestNilOpts checks that nil means DefaultOpts, by the bytes written.
func TestNilOpts(t *testing.T) {
	bus := &i2ctest.Playback{Ops: openOps(bme280.DefaultOpts)}
	_, err := bme280.Open(bus, addr, nil)
	require.NoError(t, err)
	require.NoError(t, bus.Close())
}

func TestOpenNotFound(t *testing.T) {
	for _, tc := range sensortest.NACKs() {
		t.Run(tc.Desc, func(t *testing.T) {
			_, err := bme280.Open(&sensortest.NACKBus{Err: tc.Err}, 0x77, nil)
			require.ErrorIs(t, err, bme280.ErrNotFound)
			require.ErrorIs(t, err, tc.Err, "the bus error stays in the chain")
			require.NotErrorIs(t, err, bme280.ErrWrongChip)
			require.ErrorContains(t, err, "bme280 on playback at 0x77: no device answers at this address")
			require.ErrorContains(t, err, tc.Err.Error())
		})
	}
}

// TestOpenBusError: a bus failure that is not a NACK (here the playback has
// nothing to answer) is reported as such, not as a missing sensor.
func TestOpenBusError(t *testing.T) {
	bus := &i2ctest.Playback{DontPanic: true}
	_, err := bme280.Open(bus, addr, nil)
	require.ErrorContains(t, err, "bme280 on playback at 0x76: reading chip id: i2ctest: unexpected Tx()")
	require.NotErrorIs(t, err, bme280.ErrNotFound)
	require.NoError(t, bus.Close())
}

func TestOpenWrongChip(t *testing.T) {
	tt := []struct {
		id   byte
		name string
	}{
		{0x58, "BMP280"},
		{0x56, "BMP280"},
		{0x55, "BMP180"},
		{0x61, "BME680"},
		{0xFF, "not a Bosch sensor"},
	}
	for _, tc := range tt {
		t.Run(fmt.Sprintf("%#x", tc.id), func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: []i2ctest.IO{{Addr: addr, W: []byte{0xD0}, R: []byte{tc.id}}}}
			_, err := bme280.Open(bus, addr, nil)
			require.ErrorIs(t, err, bme280.ErrWrongChip)
			require.NotErrorIs(t, err, bme280.ErrNotFound)
			var wc *bme280.WrongChipError
			require.ErrorAs(t, err, &wc)
			require.Equal(t, tc.id, wc.ID)
			require.ErrorContains(t, err, fmt.Sprintf("bme280 on playback at 0x76: not a BME280: chip id 0x%02x is", tc.id))
			require.ErrorContains(t, err, tc.name)
			require.NoError(t, bus.Close(), "nothing is written to a chip that is not ours")
		})
	}
}

func TestOpenInvalid(t *testing.T) {
	tt := []struct {
		desc string
		addr uint16
		opts bme280.Opts
		is   error
		msg  string
	}{
		{"address", 0x42, bme280.DefaultOpts, bme280.ErrInvalidAddress, "bme280 on playback at 0x42: not a BME280 address"},
		{"address zero", 0x00, bme280.DefaultOpts, bme280.ErrInvalidAddress, "0x76 (SDO to GND) or 0x77 (SDO to VDDIO)"},
		{"temperature off", addr, bme280.Opts{Pressure: bmxx80.O1x}, nil, "temperature oversampling is Off"},
		{"oversampling out of range", addr, bme280.Opts{Temperature: bmxx80.O1x, Humidity: bmxx80.O16x + 1}, nil, "humidity oversampling 6 is out of range"},
		{"filter out of range", addr, bme280.Opts{Temperature: bmxx80.O1x, Filter: bmxx80.F16 + 1}, nil, "filter 5 is out of range"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := &i2ctest.Playback{}
			_, err := bme280.Open(bus, tc.addr, &tc.opts)
			require.ErrorContains(t, err, tc.msg)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
			require.NoError(t, bus.Close(), "invalid settings are refused before any bus traffic")
		})
	}
}

// TestOpenSetupFails: the chip answers as a BME280 but the calibration read
// fails; the driver's error is passed on with our context.
func TestOpenSetupFails(t *testing.T) {
	bus := &i2ctest.Playback{
		Ops:       openOps(bme280.DefaultOpts)[:3],
		DontPanic: true,
	}
	_, err := bme280.Open(bus, addr, nil)
	require.ErrorContains(t, err, "bme280 on playback at 0x76: setting up: bme280:")
	require.NoError(t, bus.Close())
}

func TestReadFails(t *testing.T) {
	o := bme280.DefaultOpts
	tt := []struct {
		desc string
		ops  []i2ctest.IO
		msg  string
	}{
		{"ctrl_hum write fails", nil, "bme280 on playback at 0x76: restoring humidity oversampling:"},
		{"status poll fails", readOps(o, realData)[:2], "bme280 on playback at 0x76: measuring: bme280:"},
		{"data read fails", readOps(o, realData)[:4], "bme280 on playback at 0x76: measuring: bme280:"},
		// SDA stuck high reads 0xFF everywhere: 0xFFFFF decodes to a
		// temperature far outside what the chip can measure.
		{"all 0xff", readOps(o, []byte{0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}), "outside the sensor's operating range"},
		{"all 0x00", readOps(o, make([]byte, 8)), "outside the sensor's operating range"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := &i2ctest.Playback{Ops: append(openOps(o), tc.ops...), DontPanic: true}
			d, err := bme280.Open(bus, addr, &o)
			require.NoError(t, err)
			want := wire.Env{TemperatureC: f(1), HumidityPct: f(2), PressureHPa: f(3)}
			e := want
			require.ErrorContains(t, d.Read(&e), tc.msg)
			require.Equal(t, want, e, "a failed Read leaves the reading alone")
			require.NoError(t, bus.Close())
		})
	}
}

// TestPrecision documents why the decimals are what they are: they are no
// finer than what bmxx80 says the chip resolves.
func TestPrecision(t *testing.T) {
	bus := &i2ctest.Playback{Ops: openOps(bme280.DefaultOpts)[1:]} // bmxx80 alone: no probe
	dev, err := bmxx80.NewI2C(bus, addr, &bmxx80.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x, Humidity: bmxx80.O1x})
	require.NoError(t, err)
	require.NoError(t, bus.Close())
	var p physic.Env
	dev.Precision(&p)
	require.Equal(t, 10*physic.MilliKelvin, p.Temperature, "0.01 °C: 2 decimals")
	require.Less(t, p.Pressure, physic.Pascal, "finer than 0.01 hPa: 2 decimals are real")
	require.Less(t, p.Humidity, physic.PercentRH/10, "finer than 0.1 %: 1 decimal is real")
}
