package sim

import (
	"bytes"
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
)

// BME280Addr is where the simulated board wires its BME280 (SDO to GND), as
// ours are: a bridge looking at 0x77 finds nothing, as on real hardware.
const BME280Addr = 0x76

// BoardOpts describe one simulated node's board.
type BoardOpts struct {
	// Node seeds the node's own weather and GPS track.
	Node string
	// GPS attaches a PA1010D at its fixed address.
	GPS bool
	// Capture is a gpsd-style NMEA capture for the receiver to serve; nil
	// serves the node's built-in track.
	Capture []byte
	// ReplaySpeed replays the capture that many times faster.
	ReplaySpeed float64
	// BusHz is the I2C clock: each transaction takes its time on the wire
	// at it. StandardHz is a Pi's default; 0 takes no time at all, faster
	// than any real bus, for tests that want readings fast.
	BusHz int64
}

// BoardOpener returns what the bridge's --sim mode opens as its I2C bus: a
// new board each time it is called, as after a power cycle. A capture that
// does not parse is refused here, before the bridge starts.
func BoardOpener(o BoardOpts) (func() (i2c.BusCloser, error), error) {
	if o.Capture != nil {
		if _, err := ReadCapture(bytes.NewReader(o.Capture)); err != nil {
			return nil, fmt.Errorf("gps capture: %w", err)
		}
	}
	return func() (i2c.BusCloser, error) {
		bus := NewBus("sim-i2c")
		// Bus time makes a driver's status polling and a per-byte reader
		// cost what they cost on a Pi: waiting, mostly.
		if o.BusHz > 0 {
			if err := bus.SetSpeed(physic.Frequency(o.BusHz) * physic.Hertz); err != nil {
				return nil, err
			}
		}
		bus.Attach(BME280Addr, NewBME280(o.Node, time.Now))
		if o.GPS {
			src := Track(o.Node)
			if o.Capture != nil {
				var err error
				if src, err = ReadCapture(bytes.NewReader(o.Capture)); err != nil {
					return nil, fmt.Errorf("gps capture: %w", err)
				}
			}
			bus.Attach(pa1010d.Addr, NewPA1010D(src, PA1010DOpts{Speed: o.ReplaySpeed, Loop: true}))
		}
		return nopCloser{bus}, nil
	}, nil
}

// nopCloser lets a simulated bus stand where periph's registry would hand
// out a closable one; there is nothing to release.
type nopCloser struct{ i2c.Bus }

func (nopCloser) Close() error { return nil }
