package sensor_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor"
	"github.com/sensorfarm/sensorfarm/bridge/sensor/sensortest"
)

func TestIsNACK(t *testing.T) {
	for _, tc := range sensortest.NACKs() {
		require.True(t, sensor.IsNACK(tc.Err), tc.Desc)
	}
	for _, err := range []error{errors.New("sysfs-i2c: connection timed out"), fmt.Errorf("bus: %w", syscall.EIO)} {
		require.False(t, sensor.IsNACK(err), err.Error())
	}
}
