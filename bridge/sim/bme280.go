package sim

import (
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// Register map of the BME280 (datasheet section 5.3, table 18).
const (
	regCalibTPH = 0x88 // 26 bytes: dig_T1..dig_P9, one unused byte, dig_H1
	regChipID   = 0xD0
	regReset    = 0xE0
	regCalibH   = 0xE1 // 7 bytes: dig_H2..dig_H6
	regCtrlHum  = 0xF2
	regStatus   = 0xF3
	regCtrlMeas = 0xF4
	regConfig   = 0xF5
	regData     = 0xF7 // 8 bytes: press[19:0], temp[19:0], hum[15:0], MSB first

	bme280ChipID    = 0x60
	resetCommand    = 0xB6 // any other value written to regReset is ignored
	statusMeasuring = 1 << 3

	modeMask   = 0x03
	modeSleep  = 0x00
	modeNormal = 0x03 // 01 and 10 both mean forced

	// A skipped temperature or pressure reads 0x80000, a skipped humidity
	// 0x8000: the registers' reset values (datasheet 5.4.7-5.4.9).
	skipped20 = 0x80000
	skipped16 = 0x8000
)

// recordedCalibration is the trimming NVM of a real BME280, copied from
// periph's own tests (periph.io/x/devices/v3@v3.7.4/bmxx80/bmx280_test.go,
// the reads of 0x88 and 0xE1 in TestI2CSenseBME280_success; the file calls
// this calibration "real data extracted from a device"). The
// bridge/sensor/bme280 playback tests replay the same chip, so both suites
// exercise one real calibration set.
func recordedCalibration() (tph [26]byte, h [7]byte) {
	tph = [26]byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}
	h = [7]byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}
	return tph, h
}

// BME280 is a register-level model of a Bosch BME280 on I2C that measures a
// node's simulated weather. It implements Device and is safe for concurrent
// use.
//
// Modelled: chip id, soft reset, the calibration NVM, ctrl_hum taking effect
// at the next ctrl_meas write, sleep/forced/normal modes with the datasheet's
// maximum conversion time and the measuring status bit, normal-mode standby
// times, skipped measurements, the ADC's 16+(osrs-1)-bit resolution, the IIR
// filter, register auto-increment on reads and (register, value) write pairs.
// Not modelled: sensor noise, self-heating, the im_update status bit, SPI.
//
// Conversions run on the real (monotonic) clock, because drivers wait for
// them with time.Sleep and status polls; the weather they sample is read at
// now(), so tests can place a measurement anywhere in simulated time.
type BME280 struct {
	now func() time.Time
	w   weather
	tph [26]byte
	h   [7]byte
	cal calibration

	mu       sync.Mutex
	ptr      byte    // register pointer: set by a write, advanced by each byte read
	ctrlHum  byte    // as written
	osrsH    byte    // humidity oversampling in force: ctrl_hum as of the last ctrl_meas write
	ctrlMeas byte    // osrs_t[7:5] osrs_p[4:2] mode[1:0]
	config   byte    // t_sb[7:5] filter[4:2] spi3w_en[0]
	data     [8]byte // what 0xF7..0xFE read
	filtT    iir
	filtP    iir

	// A forced conversion in progress: it ends at busyUntil (zero when
	// none) and samples the weather at sampleAt.
	busyUntil time.Time
	sampleAt  time.Time

	// Normal mode: cycles of conversion plus standby since normalSince, of
	// which cyclesDone have reached the data registers.
	normalSince time.Time
	cyclesDone  int64
}

var _ Device = (*BME280)(nil)

// NewBME280 returns a BME280 in its power-on state whose weather is that of
// node (see Truth) at the times now returns; nil now means time.Now.
func NewBME280(node string, now func() time.Time) *BME280 {
	if now == nil {
		now = time.Now
	}
	s := &BME280{now: now, w: newWeather(node)}
	s.tph, s.h = recordedCalibration()
	s.cal = parseCalibration(s.tph, s.h)
	s.reset()
	return s
}

// Truth returns the modelled temperature (°C), relative humidity (%) and
// pressure (hPa) at t: what an ideal sensor would read. It is a smooth,
// deterministic function of the node name and t, within 12.5..27.5 °C,
// 28.5..76.5 % and 994.4..1025.6 hPa.
func (s *BME280) Truth(t time.Time) (tempC, humPct, pressHPa float64) {
	return s.w.at(t)
}

// Tx implements Device: pairs of (register, value) are written, a lone last
// byte of w sets the register pointer, and reads start at the pointer and
// advance it, as in datasheet section 6.2.
func (s *BME280) Tx(w, r []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(time.Now())
	for ; len(w) >= 2; w = w[2:] {
		s.write(w[0], w[1])
		s.ptr = w[0]
	}
	if len(w) == 1 {
		s.ptr = w[0]
	}
	// The chip shadows the data registers during a burst read, so one
	// transaction sees one measurement: nothing advances until the next Tx.
	for i := range r {
		r[i] = s.read(s.ptr)
		s.ptr++
	}
	return nil
}

func (s *BME280) reset() {
	s.ctrlHum, s.osrsH, s.ctrlMeas, s.config = 0, 0, 0, 0
	s.data = [8]byte{skipped20 >> 12, 0, 0, skipped20 >> 12, 0, 0, skipped16 >> 8, 0}
	s.filtT, s.filtP = iir{}, iir{}
	s.busyUntil = time.Time{}
	s.cyclesDone = 0
}

func (s *BME280) read(reg byte) byte {
	switch {
	case reg >= regCalibTPH && int(reg) < regCalibTPH+len(s.tph):
		return s.tph[reg-regCalibTPH]
	case reg == regChipID:
		return bme280ChipID
	case reg >= regCalibH && int(reg) < regCalibH+len(s.h):
		return s.h[reg-regCalibH]
	case reg == regCtrlHum:
		return s.ctrlHum
	case reg == regStatus:
		return s.status(time.Now())
	case reg == regCtrlMeas:
		return s.ctrlMeas
	case reg == regConfig:
		return s.config
	case reg >= regData && int(reg) < regData+len(s.data):
		return s.data[reg-regData]
	}
	return 0 // reset register, reserved and unused addresses
}

func (s *BME280) write(reg, v byte) {
	switch reg {
	case regReset:
		if v == resetCommand {
			s.reset()
		}
	case regCtrlHum:
		s.ctrlHum = v & 0x07
	case regCtrlMeas:
		s.ctrlMeas = v
		s.osrsH = s.ctrlHum // datasheet 5.4.3: ctrl_hum applies from here
		s.busyUntil = time.Time{}
		switch v & modeMask {
		case modeSleep:
		case modeNormal:
			s.normalSince, s.cyclesDone = time.Now(), 0
		default: // forced
			s.busyUntil = time.Now().Add(s.conversionTime())
			s.sampleAt = s.now()
		}
	case regConfig:
		if s.ctrlMeas&modeMask == modeNormal {
			return // datasheet 5.4.6: "writes ... in normal mode may be ignored"
		}
		s.config = v &^ 0x02 // bit 1 is reserved
		// Datasheet 3.4.4: writing the filter resets it.
		s.filtT, s.filtP = iir{}, iir{}
	}
	// Everything else is read-only: the chip acknowledges and ignores it.
}

// advance brings the data registers up to now: a forced conversion that has
// run its time publishes its result and the chip returns to sleep; in
// normal mode every cycle completed since the last look publishes one.
func (s *BME280) advance(now time.Time) {
	if !s.busyUntil.IsZero() && !now.Before(s.busyUntil) {
		s.data = s.measure(s.sampleAt)
		s.busyUntil = time.Time{}
		s.ctrlMeas &^= modeMask
	}
	if s.ctrlMeas&modeMask != modeNormal {
		return
	}
	meas := s.conversionTime()
	elapsed := now.Sub(s.normalSince)
	if elapsed < meas {
		return
	}
	done := int64((elapsed-meas)/(meas+s.standby())) + 1
	// Cycles nobody looked at only matter through the IIR filter, whose
	// memory of them has faded to under 2 % after 64 steps even at F16;
	// they all sample the weather of now(), which moves little in the
	// seconds a driver may leave between reads.
	from := max(s.cyclesDone, done-64)
	if from < done {
		at := s.now()
		for range done - from {
			s.data = s.measure(at)
		}
	}
	s.cyclesDone = done
}

func (s *BME280) status(now time.Time) byte {
	if !s.busyUntil.IsZero() {
		return statusMeasuring
	}
	if s.ctrlMeas&modeMask == modeNormal {
		meas := s.conversionTime()
		if now.Sub(s.normalSince)%(meas+s.standby()) < meas {
			return statusMeasuring
		}
	}
	return 0
}

// oversampling returns how many samples an osrs field averages; 0 is
// skipped and values above 5 mean 16 (datasheet tables 20 and 23).
func oversampling(osrs byte) int {
	if osrs == 0 {
		return 0
	}
	return 1 << (min(osrs, 5) - 1)
}

// conversionTime is t_measure,max of datasheet 9.1 for the settings in
// force. A real part takes between the typical and this maximum; the
// maximum makes drivers that sleep the typical time poll the status bit,
// as they must on hardware.
func (s *BME280) conversionTime() time.Duration {
	µs := 1250
	if n := oversampling(s.ctrlMeas >> 5); n > 0 {
		µs += 2300 * n
	}
	if n := oversampling(s.ctrlMeas >> 2 & 0x07); n > 0 {
		µs += 2300*n + 575
	}
	if n := oversampling(s.osrsH); n > 0 {
		µs += 2300*n + 575
	}
	return time.Duration(µs) * time.Microsecond
}

// standby is t_standby of normal mode, from config t_sb (datasheet table 27).
func (s *BME280) standby() time.Duration {
	return [8]time.Duration{
		500 * time.Microsecond, 62500 * time.Microsecond, 125 * time.Millisecond, 250 * time.Millisecond,
		500 * time.Millisecond, time.Second, 10 * time.Millisecond, 20 * time.Millisecond,
	}[s.config>>5]
}

// filterCoeff is the IIR coefficient from config filter (datasheet table
// 28); 1 means off.
func (s *BME280) filterCoeff() float64 {
	f := s.config >> 2 & 0x07
	if f == 0 {
		return 1
	}
	return float64(int(1) << min(f, 4))
}

// measure is one conversion with the settings in force, of the weather at
// t: the raw ADC values the physical quantities produce, through the
// resolution and IIR filter stages, laid out as the data registers.
//
// A raw value is found by inverting Bosch's compensation (datasheet 8.1),
// which the chip's calibration makes map raw values onto physical ones:
// bisection finds the ADC reading that compensates to the true value.
// Pressure and humidity depend on the true temperature, so they are inverted
// with its t_fine; the driver, which only knows the measured temperature,
// sees the small error that causes on a real part too.
func (s *BME280) measure(t time.Time) [8]byte {
	tempC, humPct, pressHPa := s.w.at(t)
	tFine := tempC * 5120 // T = t_fine / 5120 (datasheet 8.1)
	coeff := s.filterCoeff()

	rawT, rawP, rawH := uint32(skipped20), uint32(skipped20), uint32(skipped16)
	if osrs := s.ctrlMeas >> 5; osrs != 0 {
		adc := solve(s.cal.tFine, tFine, 0, 1<<20-1)
		rawT = s.filtT.next(adc, adcStep(osrs, coeff), coeff)
	}
	if osrs := s.ctrlMeas >> 2 & 0x07; osrs != 0 {
		pressure := func(adc float64) float64 { return s.cal.pressure(adc, tFine) }
		adc := solve(pressure, pressHPa*100, 0, 1<<20-1)
		rawP = s.filtP.next(adc, adcStep(osrs, coeff), coeff)
	}
	if s.osrsH != 0 {
		humidity := func(adc float64) float64 { return s.cal.humidity(adc, tFine) }
		rawH = quantize(solve(humidity, humPct, 0, 1<<16-1), 1, 1<<16)
	}
	return [8]byte{
		byte(rawP >> 12), byte(rawP >> 4), byte(rawP << 4),
		byte(rawT >> 12), byte(rawT >> 4), byte(rawT << 4),
		byte(rawH >> 8), byte(rawH),
	}
}

// adcStep is the spacing of possible temperature and pressure results:
// the filter's output has 20 bits, otherwise the ADC has 16+(osrs-1) bits
// of the 20 (datasheet 3.4.2, 3.4.3).
func adcStep(osrs byte, coeff float64) float64 {
	if coeff > 1 {
		return 1
	}
	return float64(int(1) << (5 - min(osrs, 5)))
}

// quantize rounds x to a multiple of step within [0, limit).
func quantize(x, step, limit float64) uint32 {
	q := math.Round(x/step) * step
	return uint32(math.Max(0, math.Min(q, limit-step)))
}

// iir is the chip's filter memory for one channel (datasheet 3.4.4). A
// skipped measurement leaves it untouched.
type iir struct {
	mem    float64
	primed bool
}

// next feeds one ADC reading and returns the 20-bit output register value.
// The first reading after a reset passes unchanged and primes the memory.
func (f *iir) next(adc, step, coeff float64) uint32 {
	x := math.Round(adc/step) * step // the ADC's own resolution
	if coeff <= 1 {
		return quantize(x, step, 1<<20)
	}
	if f.primed {
		f.mem = (f.mem*(coeff-1) + x) / coeff
	} else {
		f.mem, f.primed = x, true
	}
	return quantize(f.mem, 1, 1<<20)
}

// solve returns the x in [lo, hi] where the monotonic f reaches y; when y is
// out of f's range it returns the nearer end, as a saturated ADC would.
func solve(f func(float64) float64, y, lo, hi float64) float64 {
	rising := f(hi) > f(lo)
	for range 64 {
		mid := (lo + hi) / 2
		if (f(mid) < y) == rising {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// calibration holds the trimming parameters dig_T1..dig_H6 (datasheet
// table 16) as float64 for the floating-point compensation.
type calibration struct {
	t1, t2, t3                         float64
	p1, p2, p3, p4, p5, p6, p7, p8, p9 float64
	h1, h2, h3, h4, h5, h6             float64
}

func parseCalibration(tph [26]byte, h [7]byte) calibration {
	u16 := func(b []byte) float64 { return float64(binary.LittleEndian.Uint16(b)) }
	s16 := func(b []byte) float64 { return float64(int16(binary.LittleEndian.Uint16(b))) }
	return calibration{
		t1: u16(tph[0:]), t2: s16(tph[2:]), t3: s16(tph[4:]),
		p1: u16(tph[6:]), p2: s16(tph[8:]), p3: s16(tph[10:]), p4: s16(tph[12:]), p5: s16(tph[14:]),
		p6: s16(tph[16:]), p7: s16(tph[18:]), p8: s16(tph[20:]), p9: s16(tph[22:]),
		h1: float64(tph[25]),
		h2: s16(h[0:]),
		h3: float64(h[2]),
		// dig_H4 and dig_H5 are signed 12-bit values sharing 0xE5.
		h4: float64(int16(int8(h[3]))<<4 | int16(h[4]&0x0F)),
		h5: float64(int16(int8(h[5]))<<4 | int16(h[4]>>4)),
		h6: float64(int8(h[6])),
	}
}

// tFine is the datasheet's t_fine for a temperature ADC value (section 8.1,
// bme280_compensate_T_double; °C = t_fine / 5120).
func (c *calibration) tFine(adc float64) float64 {
	a := (adc/16384 - c.t1/1024) * c.t2
	b := adc/131072 - c.t1/8192
	return a + b*b*c.t3
}

// pressure is the compensated pressure in Pa for a pressure ADC value
// (section 8.1, bme280_compensate_P_double).
func (c *calibration) pressure(adc, tFine float64) float64 {
	v1 := tFine/2 - 64000
	v2 := v1 * v1 * c.p6 / 32768
	v2 += v1 * c.p5 * 2
	v2 = v2/4 + c.p4*65536
	v1 = (c.p3*v1*v1/524288 + c.p2*v1) / 524288
	v1 = (1 + v1/32768) * c.p1
	if v1 == 0 {
		return 0
	}
	p := (1048576 - adc - v2/4096) * 6250 / v1
	return p + (c.p9*p*p/2147483648+p*c.p8/32768+c.p7)/16
}

// humidity is the compensated relative humidity in % for a humidity ADC
// value (section 8.1, bme280_compensate_H_double), without the final clamp
// to 0..100 so that it stays monotonic for solve.
func (c *calibration) humidity(adc, tFine float64) float64 {
	x := tFine - 76800
	h := (adc - (c.h4*64 + c.h5/16384*x)) *
		(c.h2 / 65536 * (1 + c.h6/67108864*x*(1+c.h3/67108864*x)))
	return h * (1 - c.h1*h/524288)
}
