package agent

import (
	"context"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"periph.io/x/conn/v3/i2c"

	"github.com/sensorfarm/sensorfarm/bridge/config"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
	"github.com/sensorfarm/sensorfarm/bridge/sim"
	"github.com/sensorfarm/sensorfarm/bridge/spool"
	"github.com/sensorfarm/sensorfarm/wire"
)

type openBus struct{ i2c.Bus }

func (openBus) Close() error { return nil }

// testAgent is an agent wired as Run wires it, on a fresh spool, with the
// settings the bridge's own loader makes from args, and no broker: every
// live publish fails as "not connected" and leaves the reading spooled.
func testAgent(t *testing.T, bus *sim.Bus, args ...string) *agent {
	t.Helper()
	args = append([]string{"--site", "test", "--node", "n1", "--spool", t.TempDir(), "--sim"}, args...)
	cfg, err := config.Load(args, func(string) string { return "" }, func() (string, error) { return "n1", nil })
	require.NoError(t, err)
	sp, err := spool.Open(cfg.Spool, &cfg.SpoolOpts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sp.Close() })
	o := Options{Config: cfg, Log: slog.New(slog.DiscardHandler), OpenBus: func() (i2c.BusCloser, error) { return openBus{bus}, nil }}
	return newAgent(o, sp)
}

// TestReadingNotTakenIsCounted: a reading the spool cannot number (here, one
// JSON cannot encode) leaves no seq gap, so dropped must show it.
func TestReadingNotTakenIsCounted(t *testing.T) {
	a := testAgent(t, sim.NewBus("i2c-test"))
	nan := math.NaN()
	a.emit(context.Background(), wire.StreamEnv, &wire.Env{TemperatureC: &nan})
	st := a.sp.Stats()
	require.Zero(t, st.LastSeq[wire.StreamEnv], "no seq was used")
	require.Equal(t, uint64(1), st.Dropped, "the reading not taken is counted")
	select {
	case <-a.changed:
	default:
		t.Fatal("a drop is a change health reports at once")
	}
}

// TestGPSBusErrorCountedOnce: a bus error while reading the receiver is one
// sensor error in health (the driver's I2CErrors and the agent's failure
// count are the same event).
func TestGPSBusErrorCountedOnce(t *testing.T) {
	bus := sim.NewBus("i2c-test")
	bus.Attach(pa1010d.Addr, sim.NewPA1010D(sim.Track("n1"), sim.PA1010DOpts{Speed: 10}))
	// One try to open the receiver per hour: the test sees one failure.
	a := testAgent(t, bus, "--sensor-retry", "1h")
	gps := a.newSensor(wire.SensorPA1010D, pa1010d.Addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.gpsLoop(ctx, gps) }()
	defer func() { cancel(); <-done }()

	require.Eventually(t, func() bool { return a.sp.LastSeq(wire.StreamGPS) > 0 }, 20*time.Second, 10*time.Millisecond, "a fix")
	require.Zero(t, a.sensorErrors()[wire.SensorPA1010D])
	bus.Detach(pa1010d.Addr) // the receiver stops answering mid-read
	require.Eventually(t, func() bool { return gps.errors() > 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // no second count arrives late
	require.Equal(t, uint64(1), a.sensorErrors()[wire.SensorPA1010D])
}

// TestFirstStartOnAFullDiskCountsWhatItCannotNumber: on a disk already full
// at the first start the spool has no state file to reserve seq numbers in,
// so readings get no seq at all; each is counted in dropped (in memory, for
// health, until the disk has room to keep the count).
func TestFirstStartOnAFullDiskCountsWhatItCannotNumber(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "full")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput()
	require.NoError(t, err, "mount a tmpfs (the test needs root): %s", out)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	f, err := os.Create(filepath.Join(mnt, "filler"))
	require.NoError(t, err)
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			require.ErrorIs(t, err, syscall.ENOSPC)
			break
		}
	}
	require.NoError(t, f.Close())

	a := testAgent(t, sim.NewBus("i2c-test"), "--spool", filepath.Join(mnt, "spool"))
	if _, err := os.Stat(filepath.Join(mnt, "spool", "state")); err == nil {
		t.Fatal("the state file was created on a full disk; the test does not test what it says")
	}
	a.emit(context.Background(), wire.StreamEnv, &wire.Env{})
	st := a.sp.Stats()
	require.Zero(t, st.LastSeq[wire.StreamEnv])
	require.Equal(t, uint64(1), st.Dropped)
}
