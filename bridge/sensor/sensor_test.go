package sensor

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIsNACK(t *testing.T) {
	tt := []struct {
		err  error
		nack bool
	}{
		{fmt.Errorf("bus: %w", syscall.ENXIO), true},
		{errors.New("sysfs-i2c: no such device or address"), true}, // periph's %v
		{errors.New("sysfs-i2c: remote I/O error"), true},          // i2c-bcm2835
		{errors.New("sysfs-i2c: connection timed out"), false},
		{fmt.Errorf("bus: %w", syscall.EIO), false},
	}
	for _, tc := range tt {
		require.Equal(t, tc.nack, IsNACK(tc.err), tc.err.Error())
	}
}
