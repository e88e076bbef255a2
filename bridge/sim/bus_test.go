package sim_test

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/physic"

	"github.com/sensorfarm/sensorfarm/bridge/sim"
)

// echo is a Device that answers every read with its own address byte and
// fails the test if two transactions ever overlap.
type echo struct {
	t        *testing.T
	id       byte
	inFlight atomic.Bool
	count    atomic.Int64
	last     []byte
}

func (e *echo) Tx(w, r []byte) error {
	if !e.inFlight.CompareAndSwap(false, true) {
		e.t.Error("two transactions on the bus at once")
	}
	defer e.inFlight.Store(false)
	e.count.Add(1)
	e.last = append(e.last[:0], w...)
	for i := range r {
		r[i] = e.id
	}
	return nil
}

func TestBusRoutesByAddress(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	require.Equal(t, "sim-i2c", bus.String())
	a, b := &echo{t: t, id: 0xA}, &echo{t: t, id: 0xB}
	bus.Attach(0x10, a)
	bus.Attach(0x7f, b)

	tt := []struct {
		desc string
		addr uint16
		want byte
	}{
		{"first", 0x10, 0xA},
		{"highest 7-bit address", 0x7f, 0xB},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			r := make([]byte, 2)
			require.NoError(t, bus.Tx(tc.addr, []byte{0x01}, r))
			require.Equal(t, []byte{tc.want, tc.want}, r)
		})
	}
	require.Equal(t, []byte{0x01}, a.last)
}

func TestBusNACK(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x76, &echo{t: t})

	err := bus.Tx(0x77, []byte{0xD0}, make([]byte, 1))
	require.ErrorIs(t, err, syscall.ENXIO, "what Linux reports when nothing acknowledges an address")
	require.ErrorContains(t, err, "sim-i2c: address 0x77 not acknowledged: "+syscall.ENXIO.Error())

	bus.Detach(0x76)
	require.ErrorIs(t, bus.Tx(0x76, []byte{0xD0}, nil), syscall.ENXIO, "a detached device is gone")
	bus.Detach(0x76) // detaching twice is harmless
}

func TestBusTxEdges(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	d := &echo{t: t}
	bus.Attach(0x20, d)

	// Like periph's sysfs bus: an empty transaction never reaches the wire.
	require.NoError(t, bus.Tx(0x21, nil, nil))
	require.NoError(t, bus.Tx(0x20, nil, nil))
	require.Zero(t, d.count.Load())

	require.ErrorContains(t, bus.Tx(0x80, []byte{0}, nil), "invalid address 0x80")

	require.NoError(t, bus.SetSpeed(400*physic.KiloHertz))
	require.Error(t, bus.SetSpeed(0))
}

// TestBusTime: at a set speed a transaction takes its time on the wire, 9
// clocks a byte, so that polling a register costs waiting, as on a Pi.
func TestBusTime(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	bus.Attach(0x20, &echo{t: t})
	r := make([]byte, 255)
	start := time.Now()
	require.NoError(t, bus.Tx(0x20, []byte{0}, r))
	require.Less(t, time.Since(start), 5*time.Millisecond, "a new bus takes no time")

	require.NoError(t, bus.SetSpeed(sim.StandardHz*physic.Hertz))
	start = time.Now()
	require.NoError(t, bus.Tx(0x20, []byte{0}, r))
	// start, address, register, repeated start, address, 255 bytes, stop:
	// 9 × 258 + 2 = 2324 clocks at 100 kHz.
	require.GreaterOrEqual(t, time.Since(start), 23240*time.Microsecond)
	start = time.Now()
	require.Error(t, bus.Tx(0x21, []byte{0}, nil), "a NACKed address")
	require.GreaterOrEqual(t, time.Since(start), 110*time.Microsecond, "the address byte still took its time")
}

func TestBusAttachMistakes(t *testing.T) {
	tt := []struct {
		desc string
		addr uint16
		dev  sim.Device
		msg  string
	}{
		{"address taken", 0x76, &echo{t: t}, "sim: Attach(0x76): address already taken on sim-i2c"},
		{"10-bit address", 0x80, &echo{t: t}, "sim: Attach(0x80): not a 7-bit I2C address"},
		{"nil device", 0x10, nil, "sim: Attach(0x10): nil device"},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			bus := sim.NewBus("sim-i2c")
			bus.Attach(0x76, &echo{t: t})
			require.PanicsWithValue(t, tc.msg, func() { bus.Attach(tc.addr, tc.dev) })
		})
	}
}

func TestBusConcurrent(t *testing.T) {
	bus := sim.NewBus("sim-i2c")
	devs := []*echo{{t: t, id: 1}, {t: t, id: 2}}
	for i, d := range devs {
		bus.Attach(uint16(0x40+i), d)
	}
	const workers, txs = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			addr := uint16(0x40 + w%2)
			r := make([]byte, 1)
			for range txs {
				if err := bus.Tx(addr, []byte{0}, r); err != nil {
					t.Error(err)
					return
				}
				if r[0] != byte(1+w%2) {
					t.Errorf("read %d from %#x", r[0], addr)
				}
			}
			// Attach and Detach may race with transactions, too.
			bus.Attach(uint16(0x50+w), &echo{t: t})
			bus.Detach(uint16(0x50 + w))
		})
	}
	wg.Wait()
	require.Equal(t, int64(workers*txs), devs[0].count.Load()+devs[1].count.Load())
}
