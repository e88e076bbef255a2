package server

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/config"
)

// takeoverLoss runs publishers of QoS 1 readings while an archiver's
// persistent session is taken over by its own client id again and again (an
// archiver that reconnects while the farm publishes), and returns the
// acknowledged readings that no connection of the archiver received, and how
// many of its connections failed: mochi can write a PUBLISH to a resumed
// session before its CONNACK, which the client takes for a protocol error.
func takeoverLoss(t *testing.T, stock bool) (lost []string, acked, failed int) {
	const publishers, takeovers = 8, 40
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true,
		Durability: config.Durability{Stock: stock}})
	got := newPayloads()
	archiver := func() paho.Client {
		for {
			c, err := recorder(t, b.Addr(), "archiver", false, got)
			if err == nil {
				return c
			}
			t.Logf("archiver: %v", err)
			failed++
		}
	}
	// The session's subscription, which every later connection inherits;
	// its messages go to the default handler.
	tok := archiver().Subscribe("sensorfarm/s/+/env", 1, nil)
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())

	stop := publishing(t, b.Addr(), publishers, "n")
	for range takeovers {
		time.Sleep(20 * time.Millisecond)
		archiver()
	}
	ack := stop()
	archiver() // a last takeover gets whatever is left in flight
	return got.missing(ack, 5*time.Second), len(ack), failed
}

// TestTakeoverLosesNothing: an archiver that reconnects while the farm
// publishes gets every acknowledged reading, and its CONNACK before any of
// them; mochi's own delivery (--stock-delivery) loses those fanned out while
// it moves the session (takeover.go).
func TestTakeoverLosesNothing(t *testing.T) {
	t.Run("ours", func(t *testing.T) {
		lost, acked, failed := takeoverLoss(t, false)
		t.Logf("acknowledged %d, lost %d", acked, len(lost))
		require.Empty(t, lost)
		require.Zero(t, failed, "every connection of the archiver read its CONNACK first")
	})
	t.Run("control: mochi's delivery", func(t *testing.T) {
		lost, acked, failed := takeoverLoss(t, true)
		t.Logf("acknowledged %d, lost %d, connections failed %d", acked, len(lost), failed)
		require.NotEmpty(t, lost, "mochi loses what it fans out during a takeover")
	})
}
