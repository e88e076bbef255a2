package server

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/config"
)

// persistentSession connects id with clean session off and reports whether
// the broker said it had a session for it.
func persistentSession(t *testing.T, addr, id string) (paho.Client, bool) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(waitFor))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c, tok.(*paho.ConnectToken).SessionPresent()
}

// TestSessionExpiry: a persistent session whose client stays away past
// --session-expiry ends: its subscriptions leave the topic index (mochi
// deletes only the client) and the store, and a reconnect finds no session.
func TestSessionExpiry(t *testing.T) {
	dir := t.TempDir()
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: dir, Demo: true,
		Durability: config.Durability{SessionExpiry: time.Second}})
	c, _ := persistentSession(t, b.Addr(), "archiver")
	subscribe(t, c, "sensorfarm/#")
	c.Disconnect(100)
	require.Len(t, b.mqtt.Topics.Subscribers("sensorfarm/s/n/env").Subscriptions, 1, "the session is kept while its client is away")

	require.Eventually(t, func() bool {
		_, ok := b.mqtt.Clients.Get("archiver")
		return !ok
	}, 10*time.Second, 100*time.Millisecond, "the session expires")
	require.Empty(t, b.mqtt.Topics.Subscribers("sensorfarm/s/n/env").Subscriptions, "its subscription left the topic index")
	subs, err := b.store.StoredSubscriptions()
	require.NoError(t, err)
	require.Empty(t, subs, "and the store")

	_, present := persistentSession(t, b.Addr(), "archiver")
	require.False(t, present)
}

// TestHoldWhileAway: a persistent session whose client is away takes ¾ of
// --max-inflight (its messages wait in the session, not in the write queue);
// the next publish is held for --hold-timeout and then refused without a
// PUBACK, its publisher disconnected. The archiver gets everything that was
// acknowledged when it comes back.
func TestHoldWhileAway(t *testing.T) {
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true,
		Limits:     config.Limits{MaxInflight: 64, ClientPendingWrites: 16},
		Durability: config.Durability{HoldTimeout: 300 * time.Millisecond}})
	arch, _ := persistentSession(t, b.Addr(), "archiver")
	subscribe(t, arch, "sensorfarm/s/#") // not the broker's own summaries
	arch.Disconnect(100)

	pub := connect(t, b.Addr(), "bridge")
	acked := 0
	for i := range 60 {
		tok := pub.Publish("sensorfarm/s/n/env", 1, false, []byte{byte(i)})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !pub.IsConnectionOpen() {
			break
		}
		acked++
	}
	require.Equal(t, 48, acked, "¾ of 64 acknowledged, then held and refused")
	require.EqualValues(t, 1, b.durable.refused.Load())
	require.Zero(t, b.mqtt.Info.InflightDropped, "nothing dropped")

	got := make(chan paho.Message, 100)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID("archiver").SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(waitFor).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m }))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	seen := map[byte]bool{}
	deadline := time.After(10 * time.Second)
	for len(seen) < acked {
		select {
		case m := <-got:
			if m.Topic() == "sensorfarm/s/n/env" {
				seen[m.Payload()[0]] = true
			}
		case <-deadline:
			t.Fatalf("the archiver got %d of the %d acknowledged", len(seen), acked)
		}
	}
}

// TestAcknowledgedLeavesTheStore: messages a persistent archiver acknowledged
// leave the store. They stayed (OnQosComplete skipped a PUBACK), came back in
// flight at every start and filled the session past --max-inflight.
func TestAcknowledgedLeavesTheStore(t *testing.T) {
	b := startBroker(t, t.TempDir())
	got := newPayloads()
	arch, err := recorder(t, b.Addr(), "archiver", false, got)
	require.NoError(t, err)
	tok := arch.Subscribe("sensorfarm/#", 1, nil)
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	pub := connect(t, b.Addr(), "bridge-0")
	var want []string
	for i := range 50 {
		want = append(want, fmt.Sprintf("r%02d", i))
		publish(t, pub, "sensorfarm/s/n/env", want[i], false)
	}
	require.Empty(t, got.missing(want, waitFor))
	var stored []storage.Message
	require.Eventually(t, func() bool {
		stored, err = b.store.StoredInflightMessages()
		require.NoError(t, err)
		return len(stored) == 0
	}, waitFor, 20*time.Millisecond, "acknowledged messages still stored")
}
