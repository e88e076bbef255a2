package server

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/config"
)

// TestTargetsFollowSubscriptions: the persistent sessions a publish goes to
// (held and journalled for) change with every SUBSCRIBE, UNSUBSCRIBE and
// reconnect, though the topic's subscribers are cached between them.
func TestTargetsFollowSubscriptions(t *testing.T) {
	b := startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true})
	const topic = "sensorfarm/s/n/env"
	held := func() []string {
		h, _ := b.durable.targets(topic)
		slices.Sort(h)
		return h
	}
	// mochi clears the cache just after it writes the SUBACK (or reads the
	// UNSUBSCRIBE): the client may look before.
	becomes := func(want []string, msg string) {
		t.Helper()
		require.Eventually(t, func() bool { return slices.Equal(held(), want) }, waitFor, 5*time.Millisecond, msg)
	}
	require.Empty(t, held(), "no subscriber: the cache holds none for the topic")

	a, _ := persistentSession(t, b.Addr(), "archiver")
	require.Empty(t, held(), "connected, not subscribed")
	subscribe(t, a, "sensorfarm/+/+/env")
	becomes([]string{"archiver"}, "a SUBSCRIBE after the topic was looked up")

	clean, err := connectAs(t, b.Addr(), "grafana", "", "")
	require.NoError(t, err)
	subscribe(t, clean, "sensorfarm/#")
	require.Equal(t, []string{"archiver"}, held(), "a clean session is no target")

	other, _ := persistentSession(t, b.Addr(), "archiver-2")
	require.Equal(t, []string{"archiver"}, held())
	subscribe(t, other, "sensorfarm/#")
	becomes([]string{"archiver", "archiver-2"}, "a second SUBSCRIBE")

	tok := other.Unsubscribe("sensorfarm/#")
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	becomes([]string{"archiver"}, "an UNSUBSCRIBE")
}
