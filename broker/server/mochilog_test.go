package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestMochiLogHoldsBackPerMessageWarnings: mochi's per-message warning comes
// once a minute per client, the next one counting what was held back; other
// records and other clients pass.
func TestMochiLogHoldsBackPerMessageWarnings(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newMochiLog(slog.NewTextHandler(&out, nil))).With("component", "mqtt")
	for range 100 {
		log.Warn("client store quota reached", "client", "archiver", "listener", "tcp")
	}
	log.Warn("client store quota reached", "client", "grafana", "listener", "tcp")
	log.Warn("something else", "client", "archiver")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3, out.String())
	require.Contains(t, lines[0], "client=archiver")
	require.Contains(t, lines[0], "component=mqtt")
	require.Contains(t, lines[1], "client=grafana")
	require.Contains(t, lines[2], `msg="something else"`)

	// A minute later the next one passes, with the count of those held back.
	h := log.Handler()
	r := slog.NewRecord(time.Now().Add(repeatEvery+time.Second), slog.LevelWarn, "client store quota reached", 0)
	r.AddAttrs(slog.String("client", "archiver"))
	require.NoError(t, h.Handle(t.Context(), r))
	require.Contains(t, out.String(), "suppressed=99")
}

// TestMochiLogWritesPacketsAsTypeAndSize: a packet attached to a record is
// logged as its type and size, never its payload.
func TestMochiLogWritesPacketsAsTypeAndSize(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newMochiLog(slog.NewTextHandler(&out, nil)))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Remaining: 1037}, TopicName: "slow/load",
		Payload: []byte(`{"secret":"reading"}`)}
	log.Warn("error processing packet", "error", "write: broken pipe", "client", "c1", "pk", pk)
	require.Contains(t, out.String(), "pk.type=Publish pk.bytes=1037")
	require.NotContains(t, out.String(), "secret")
}
