// Package sensortest has what the sensor drivers' tests share.
package sensortest

import (
	"errors"
	"fmt"
	"syscall"

	"periph.io/x/conn/v3/i2c/i2ctest"
)

// NACKBus fails every transaction with Err, the way a Linux I2C adapter
// reports that nobody acknowledged the address.
type NACKBus struct {
	i2ctest.Playback
	Err error
}

// Tx fails.
func (b *NACKBus) Tx(uint16, []byte, []byte) error { return b.Err }

// NACK is one way a NACK reaches a driver.
type NACK struct {
	Desc string
	Err  error
}

// NACKs lists the ways a NACK reaches a driver. periph's sysfs bus formats
// the errno with %v, so on real hardware only its text survives.
func NACKs() []NACK {
	return []NACK{
		{"raspberry pi i2c-bcm2835 (EREMOTEIO)", errors.New("sysfs-i2c: remote I/O error")},
		{"other linux adapters (ENXIO)", errors.New("sysfs-i2c: no such device or address")},
		{"errno kept in the chain", fmt.Errorf("sim: %w", syscall.ENXIO)},
	}
}
