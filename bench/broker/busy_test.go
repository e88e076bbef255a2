package main

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/stretchr/testify/require"
)

// The report's account of benchmark 3b names mochi's default queue length.
func TestMochiQueueSlotsIsMochisDefault(t *testing.T) {
	require.EqualValues(t, mochiQueueSlots, mqtt.NewDefaultServerCapabilities().MaximumClientWritesPending)
}
