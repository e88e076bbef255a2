// Package sim provides simulated I2C devices behind periph's i2c.Bus, so that
// the real drivers (periph's bmxx80 under bridge/sensor/bme280) run unchanged
// on a laptop, in CI and in the bridge's --sim mode.
//
// The models work at register level: the driver's bytes go in, the bytes a
// real part would answer come out, and the physical values behind them are
// known (BME280.Truth), so tests can check a whole stack against them.
package sim

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/sensorfarm/sensorfarm/bridge/sensor"
)

// Device is a simulated I2C target.
type Device interface {
	// Tx is one transaction addressed to the device: w is written, then,
	// after a repeated start, len(r) bytes are read into r. Either may be
	// empty. An error is returned to the bus master as is.
	Tx(w, r []byte) error
}

// Bus is a simulated I2C bus holding devices by 7-bit address. It implements
// i2c.Bus and is safe for concurrent use; like a real bus it carries one
// transaction at a time.
type Bus struct {
	name string

	mu    sync.Mutex
	devs  map[uint16]Device
	speed physic.Frequency // 0: transactions take no time
}

// NewBus returns an empty bus; name is what String returns and what drivers
// put in their errors.
func NewBus(name string) *Bus {
	return &Bus{name: name, devs: make(map[uint16]Device)}
}

// Attach puts d at addr. Two devices on one address, an address above 0x7f
// or a nil device are wiring mistakes in the caller's code, so they panic.
func (b *Bus) Attach(addr uint16, d Device) {
	if addr > 0x7f {
		panic(fmt.Sprintf("sim: Attach(%#x): not a 7-bit I2C address", addr))
	}
	if d == nil {
		panic(fmt.Sprintf("sim: Attach(%#x): nil device", addr))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.devs[addr]; ok {
		panic(fmt.Sprintf("sim: Attach(%#x): address already taken on %s", addr, b.name))
	}
	b.devs[addr] = d
}

// Detach removes the device at addr, as if it were unplugged; later
// transactions to addr get the no-acknowledge error.
func (b *Bus) Detach(addr uint16) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.devs, addr)
}

// String implements i2c.Bus.
func (b *Bus) String() string { return b.name }

// Tx implements i2c.Bus. A transaction to an address where no device is
// attached fails as on Linux when nothing acknowledges the address: the error
// wraps syscall.ENXIO ("no such device or address"), the kernel's code for
// an address NACK.
func (b *Bus) Tx(addr uint16, w, r []byte) error {
	if addr > 0x7f {
		// periph's sysfs bus refuses these before any I/O, likewise.
		return fmt.Errorf("%s: invalid address %#x: only 7-bit addresses are simulated", b.name, addr)
	}
	if len(w) == 0 && len(r) == 0 {
		// periph's sysfs bus returns before touching the bus; keep that so
		// code behaves the same on both.
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.devs[addr]
	if !ok {
		b.occupy(1, 0)
		return fmt.Errorf("%s: address %#x not acknowledged: %w", b.name, addr, syscall.ENXIO)
	}
	err := d.Tx(w, r)
	b.occupy(len(w), len(r))
	return err
}

// occupy holds the bus, and the caller, for the time a transaction takes on
// the wire at the bus's speed: each byte is 9 clocks (8 bits and the
// acknowledge), after a start and the address byte, and for a read after a
// repeated start and the address again. On Linux an I2C transfer sleeps until
// the controller is done, so a driver that polls a status register spends
// bus time, not CPU, as it does here.
func (b *Bus) occupy(written, read int) {
	if b.speed <= 0 {
		return
	}
	bytes := 1 + written
	if read > 0 {
		bytes += 1 + read
	}
	clocks := 9*bytes + 2 // and the start and stop conditions
	time.Sleep(time.Duration(int64(clocks) * int64(physic.Hertz) * int64(time.Second) / int64(b.speed)))
}

// SetSpeed implements i2c.Bus: from now on each transaction takes the time it
// would on the wire at f. A new Bus takes no time at all, for tests that read
// whole captures; BoardOpener's runs at BoardOpts.BusHz.
func (b *Bus) SetSpeed(f physic.Frequency) error {
	if f <= 0 {
		return errors.New(b.name + ": SetSpeed: frequency must be positive")
	}
	b.mu.Lock()
	b.speed = f
	b.mu.Unlock()
	return nil
}

// StandardHz is I2C standard mode's clock, the Raspberry Pi's default.
const StandardHz = sensor.StandardHz

var _ i2c.Bus = (*Bus)(nil)
