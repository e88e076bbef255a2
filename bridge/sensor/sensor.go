// Package sensor holds what the bridge's I2C sensor drivers share; each
// driver lives in a folder below it.
package sensor

import (
	"errors"
	"strings"
	"syscall"
)

// StandardHz is I2C standard mode's clock, the Raspberry Pi's default
// (i2c_arm_baudrate=100000).
const StandardHz = 100_000

// Errno texts of an I2C address NACK on Linux. periph's sysfs bus formats
// the errno with %v, so only its text reaches us.
const (
	// ENXIO is the kernel's documented code for "address not acknowledged"
	// (Documentation/i2c/fault-codes.rst).
	enxioText = "no such device or address"
	// EREMOTEIO is what i2c-bcm2835, the controller of every Raspberry Pi,
	// returns for any NACK. A present device acknowledges a driver's first
	// read in full, so there it means nothing answers at the address.
	eremoteioText = "remote I/O error"
)

// IsNACK tells whether a failed first transaction means that nothing
// acknowledged the address. Other failures (a bus timeout when SDA is held
// low, EIO, a closed bus) are not NACKs: calling them "not found" would send
// the operator to check the wiring when the fault is elsewhere.
func IsNACK(err error) bool {
	if errors.Is(err, syscall.ENXIO) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, enxioText) || strings.Contains(msg, eremoteioText)
}
