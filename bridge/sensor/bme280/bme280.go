// Package bme280 reads a Bosch BME280 over I2C and turns one measurement into
// the values of an env reading.
//
// periph's bmxx80 driver does the register work and Bosch's compensation; this
// package is a thin adapter over it. It chooses settings suited to a weather
// station, looks at the chip before handing it to the driver so that a missing
// or wrong part yields an error an operator can act on (errors.Is with
// ErrNotFound or ErrWrongChip), and rounds values to what the sensor resolves.
package bme280

import (
	"errors"
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/sensorfarm/sensorfarm/bridge/sensor"
	"github.com/sensorfarm/sensorfarm/wire"
)

// Registers this package touches itself; everything else is left to bmxx80.
const (
	regChipID  = 0xD0
	regCtrlHum = 0xF2
	regConfig  = 0xF5
	chipID     = 0x60 // what a BME280 answers at regChipID
)

// Opts are the measurement settings. Each Read is one forced measurement: the
// chip measures once and goes back to sleep, which is what Bosch recommends
// for weather monitoring and keeps self-heating negligible.
type Opts struct {
	// Temperature oversampling, O1x to O16x; it cannot be Off because the
	// pressure and humidity compensation need the temperature. Every sample
	// costs up to 2.3 ms of conversion time (datasheet 9.1); each doubling
	// lowers the noise and, with Filter off, adds one bit to the 16-bit ADC
	// result (datasheet 3.4.3).
	Temperature bmxx80.Oversampling
	// Pressure oversampling, Off to O16x. Off leaves PressureHPa nil. At O1x
	// the RMS noise is about 3.3 Pa (datasheet 3.5.1), already well inside
	// the sensor's ±12 Pa relative accuracy; O16x averages it down at the
	// cost of some 37 ms per reading.
	Pressure bmxx80.Oversampling
	// Humidity oversampling, Off to O16x. Off leaves HumidityPct nil. The
	// humidity ADC is always 16 bits; oversampling only averages noise, which
	// at O1x (0.07 %RH) is already far below the ±3 %RH accuracy.
	Humidity bmxx80.Oversampling
	// Filter is the chip's IIR low-pass filter on temperature and pressure
	// (humidity is never filtered), NoFilter to F16. It raises their
	// resolution to 20 bits but, in forced mode, every Read is one filter
	// step: with coefficient 16 a step change needs 22 Reads to show 75 % of
	// its size (datasheet table 6), i.e. 22 minutes at one reading a minute.
	// It suits fast sampling against door slams and gusts, not a
	// once-a-minute weather station, hence off by default.
	Filter bmxx80.Filter
}

// DefaultOpts is Bosch's "weather monitoring" setting (datasheet 3.5.1):
// forced mode, 1x oversampling of all three, filter off. A measurement takes
// under 10 ms and the chip sleeps between readings.
var DefaultOpts = Opts{
	Temperature: bmxx80.O1x,
	Pressure:    bmxx80.O1x,
	Humidity:    bmxx80.O1x,
	Filter:      bmxx80.NoFilter,
}

func (o *Opts) validate() error {
	if o.Temperature == bmxx80.Off {
		return errors.New("temperature oversampling is Off: pressure and humidity compensation need the temperature, use at least O1x")
	}
	for _, s := range []struct {
		what string
		v    bmxx80.Oversampling
	}{{"temperature", o.Temperature}, {"pressure", o.Pressure}, {"humidity", o.Humidity}} {
		if s.v > bmxx80.O16x {
			return fmt.Errorf("%s oversampling %d is out of range: use Off, O1x, O2x, O4x, O8x or O16x", s.what, s.v)
		}
	}
	if o.Filter > bmxx80.F16 {
		return fmt.Errorf("filter %d is out of range: use NoFilter, F2, F4, F8 or F16", o.Filter)
	}
	return nil
}

var (
	// ErrInvalidAddress means the address given to Open is neither of the
	// two a BME280 can have.
	ErrInvalidAddress = errors.New("not a BME280 address: it answers at 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)")
	// ErrNotFound means no device acknowledged the address: the sensor is
	// unplugged, unpowered, miswired, or strapped to the other address.
	ErrNotFound = errors.New("no device answers at this address (check wiring and power, and whether SDO selects the other address)")
	// ErrWrongChip means a device answered but is not a BME280. errors.As
	// with a *WrongChipError gives the chip id it reported.
	ErrWrongChip = errors.New("not a BME280")
)

// WrongChipError is the error of a device whose chip id is not a BME280's.
// It matches ErrWrongChip with errors.Is.
type WrongChipError struct {
	ID byte // the value of register 0xD0
}

func (e *WrongChipError) Error() string {
	return fmt.Sprintf("%v: chip id 0x%02x is %s; a BME280 reports 0x%02x", ErrWrongChip, e.ID, chipName(e.ID), chipID)
}

// Is makes errors.Is(err, ErrWrongChip) true.
func (e *WrongChipError) Is(target error) bool { return target == ErrWrongChip }

// chipName names the Bosch parts that answer at 0x76/0x77 with an id at
// 0xD0, so that the common mix-up, a BMP280 sold as a "BME280", is plain.
func chipName(id byte) string {
	switch id {
	case 0x55:
		return "a BMP180 (temperature and pressure only)"
	case 0x56, 0x57, 0x58:
		return "a BMP280 (temperature and pressure only, no humidity sensor; boards are often sold as BME280)"
	case 0x61:
		return "a BME680 (gas sensor, different register map)"
	default:
		return "not a Bosch sensor this code knows"
	}
}

// Dev is an open BME280. It is safe for concurrent use: bmxx80 serialises
// measurements.
type Dev struct {
	i2c   i2c.Dev // for the registers bmxx80 does not keep up
	dev   *bmxx80.Dev
	where string // "bme280 on <bus> at 0x76", the prefix of every error
	opts  Opts
}

// Open checks that a BME280 answers at addr on bus and configures it for
// forced measurements with opts (nil means DefaultOpts).
//
// addr must be 0x76 or 0x77, set by the sensor's SDO pin. Errors name the
// chip, bus and address and match ErrInvalidAddress, ErrNotFound or
// ErrWrongChip with errors.Is where those apply.
func Open(bus i2c.Bus, addr uint16, opts *Opts) (*Dev, error) {
	if opts == nil {
		opts = &DefaultOpts
	}
	where := fmt.Sprintf("bme280 on %s at %#x", bus, addr)
	if addr != 0x76 && addr != 0x77 {
		return nil, fmt.Errorf("%s: %w", where, ErrInvalidAddress)
	}
	o := *opts
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}

	// Read the chip id ourselves before bmxx80 does: the driver formats bus
	// errors with %v and accepts BMP180/BMP280, so from its error alone a
	// missing sensor and a wrong one cannot be told apart reliably.
	c := &i2c.Dev{Bus: bus, Addr: addr}
	var id [1]byte
	if err := c.Tx([]byte{regChipID}, id[:]); err != nil {
		if sensor.IsNACK(err) {
			return nil, fmt.Errorf("%s: %w: %w", where, ErrNotFound, err)
		}
		return nil, fmt.Errorf("%s: reading chip id: %w", where, err)
	}
	if id[0] != chipID {
		return nil, fmt.Errorf("%s: %w", where, &WrongChipError{ID: id[0]})
	}

	// Standby stays 0 so that bmxx80 keeps the chip asleep and every Sense
	// is a forced measurement; its Filter is only applied in normal mode,
	// so the filter is written below instead.
	dev, err := bmxx80.NewI2C(bus, addr, &bmxx80.Opts{
		Temperature: o.Temperature,
		Pressure:    o.Pressure,
		Humidity:    o.Humidity,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: setting up: %w", where, err)
	}
	if o.Filter != bmxx80.NoFilter {
		// bmxx80 left the chip in sleep mode, where config writes are not
		// ignored (datasheet 5.4.6), and Sense only rewrites ctrl_meas, so
		// the filter stays set. t_sb (bits 7:5) only matters in normal mode.
		if err := c.Tx([]byte{regConfig, byte(o.Filter) << 2}, nil); err != nil {
			return nil, fmt.Errorf("%s: setting filter: %w", where, err)
		}
	}
	return &Dev{i2c: *c, dev: dev, where: where, opts: o}, nil
}

// Operating range of the BME280 (datasheet table 1 and 2). A value outside it
// is not weather but a corrupted calibration or data read (a stuck bus reads
// all 0x00 or all 0xFF), and is refused rather than published.
const (
	minTempC, maxTempC       = -40.0, 85.0
	minPressHPa, maxPressHPa = 300.0, 1100.0
	outOfRange               = "outside the sensor's operating range (-40..85 °C, 300..1100 hPa): corrupted calibration or data read?"
)

// Decimals kept in a reading: the sensor's real resolution, not float noise.
const (
	tempDecimals     = 2 // the compensation itself works in 0.01 °C
	humidityDecimals = 1 // accuracy ±3 %RH, noise 0.07 %RH at O1x
	pressureDecimals = 2 // 1 Pa; noise 3.3 Pa at O1x, relative accuracy 12 Pa
)

const hPa = 100 * physic.Pascal

// Read takes one forced measurement and sets e's TemperatureC, HumidityPct
// and PressureHPa. A quantity whose oversampling is Off is set to nil. On
// error e is left unchanged.
func (d *Dev) Read(e *wire.Env) error {
	if d.opts.Humidity != bmxx80.Off {
		// A brownout resets ctrl_hum to "skip", and bmxx80 writes it only
		// when opened: humidity would then repeat the last value, plausible
		// and wrong, with no error. One 2-byte write per reading restores
		// it; it takes effect with the ctrl_meas write of the measurement
		// that follows (datasheet 5.4.3).
		if err := d.i2c.Tx([]byte{regCtrlHum, byte(d.opts.Humidity)}, nil); err != nil {
			return fmt.Errorf("%s: restoring humidity oversampling: %w", d.where, err)
		}
	}
	var m physic.Env
	if err := d.dev.Sense(&m); err != nil {
		return fmt.Errorf("%s: measuring: %w", d.where, err)
	}
	t := m.Temperature.Celsius()
	if t < minTempC || t > maxTempC {
		return fmt.Errorf("%s: temperature %.2f °C is %s", d.where, t, outOfRange)
	}
	var p, h *float64
	if d.opts.Pressure != bmxx80.Off {
		v := float64(m.Pressure) / float64(hPa)
		if v < minPressHPa || v > maxPressHPa {
			return fmt.Errorf("%s: pressure %.2f hPa is %s", d.where, v, outOfRange)
		}
		p = wire.Round(v, pressureDecimals)
	}
	if d.opts.Humidity != bmxx80.Off {
		// bmxx80 clamps humidity to 0..100 %, so it needs no range check.
		h = wire.Round(float64(m.Humidity)/float64(physic.PercentRH), humidityDecimals)
	}
	e.TemperatureC = wire.Round(t, tempDecimals)
	e.HumidityPct = h
	e.PressureHPa = p
	return nil
}

// Halt stops the sensor. In forced mode the chip already sleeps between
// measurements, so this only matters if the driver ever sampled
// continuously; it is still the right call before closing the bus.
func (d *Dev) Halt() error {
	if err := d.dev.Halt(); err != nil {
		return fmt.Errorf("%s: halt: %w", d.where, err)
	}
	return nil
}

// String is "bme280 on <bus> at <addr>".
func (d *Dev) String() string { return d.where }
