package store

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	pebblehook "github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/stretchr/testify/require"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// open runs what mochi's AddHook does: SetOpts, then Init.
func open(t *testing.T, dir string) *Hook {
	t.Helper()
	h, opts, err := New(dir, false, nil)
	require.NoError(t, err)
	h.SetOpts(quietLog(), nil)
	require.NoError(t, h.Init(opts))
	return h
}

func retained(topic, payload string, created time.Time) packets.Packet {
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		TopicName:   topic,
		Payload:     []byte(payload),
		Created:     created.Unix(),
	}
}

func TestNewOptions(t *testing.T) {
	for _, tc := range []struct {
		desc string
		sync bool
		mode string
	}{
		{"default is no fsync per write", false, pebblehook.NoSync},
		{"--store-sync", true, pebblehook.Sync},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "b")
			h, opts, err := New(dir, tc.sync, nil)
			require.NoError(t, err)
			require.Equal(t, tc.mode, opts.Mode)
			require.Equal(t, filepath.Join(dir, DirName), opts.Path)
			require.Equal(t, opts.Path, h.Path())
			require.NotNil(t, opts.Options)
			require.EqualValues(t, memTableSize, opts.Options.MemTableSize)

			for _, p := range []string{dir, opts.Path} {
				fi, err := os.Stat(p)
				require.NoError(t, err)
				require.True(t, fi.IsDir())
				require.Equal(t, os.FileMode(0o700), fi.Mode().Perm(), p)
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			require.Len(t, entries, 1, "only the database directory, no write-check file left behind")
		})
	}
}

func TestNewRefusesBadDataDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))

	_, _, err := New(filepath.Join(file, "sub"), false, nil)
	require.ErrorContains(t, err, "cannot create it")
	require.ErrorContains(t, err, file)

	_, _, err = New("", false, nil)
	require.ErrorContains(t, err, "no data directory")

	if os.Geteuid() == 0 {
		t.Log("running as root: directory permissions are not enforced, skipping the read-only case")
		return
	}
	ro := filepath.Join(t.TempDir(), "ro")
	require.NoError(t, os.Mkdir(ro, 0o500))
	_, _, err = New(ro, false, nil)
	require.ErrorContains(t, err, "is not writable")
}

func TestRetainedSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	h := open(t, dir)
	cl := &mqtt.Client{ID: "seed"}
	h.OnRetainMessage(cl, retained("sensorfarm/s/n/status", "online", time.Now()), 1)
	// What mochi's Serve does on start: read everything back. The wrapped
	// hook leaves iterators open here; Stop must still succeed.
	_, err := h.StoredClients()
	require.NoError(t, err)
	_, err = h.StoredSysInfo()
	require.NoError(t, err)
	require.NoError(t, h.Stop())

	h = open(t, dir)
	msgs, err := h.StoredRetainedMessages()
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "sensorfarm/s/n/status", msgs[0].TopicName)
	require.Equal(t, "online", string(msgs[0].Payload))
	require.NoError(t, h.Stop())
}

func TestCallsAfterStopAreDropped(t *testing.T) {
	h := open(t, t.TempDir())
	require.NoError(t, h.Stop())
	require.NoError(t, h.Stop(), "Stop is idempotent")

	// mochi's event loop or a late connection may still call in: no panic.
	cl := &mqtt.Client{ID: "late"}
	h.OnSysInfoTick(&system.Info{})
	h.OnRetainMessage(cl, retained("t", "x", time.Now()), 1)
	h.OnRetainedExpired("t")
	h.OnDisconnect(cl, nil, true)
	_, err := h.StoredRetainedMessages()
	require.Error(t, err)
}

func TestStopWithoutInit(t *testing.T) {
	h, _, err := New(t.TempDir(), false, nil)
	require.NoError(t, err)
	require.NoError(t, h.Stop())
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	h := open(t, dir)
	defer func() { require.NoError(t, h.Stop()) }()

	h2, opts, err := New(dir, false, nil)
	require.NoError(t, err)
	h2.SetOpts(quietLog(), nil)
	err = h2.Init(opts)
	require.ErrorContains(t, err, "is another broker using this data directory?")
	require.NoError(t, h2.Stop())
}

// TestInflightKeptOnlyForSessionsThatOutliveTheirConnection: a message in
// flight to a persistent session (3.1.1 clean=false, 5 with a session expiry)
// is written, so that it is sent again after a restart; one to a session
// that ends with its connection is not.
func TestInflightKeptOnlyForSessionsThatOutliveTheirConnection(t *testing.T) {
	h := open(t, t.TempDir())
	defer h.Stop()
	mk := func(id string, version byte, clean bool, expiry uint32) *mqtt.Client {
		cl := &mqtt.Client{ID: id}
		cl.Properties.ProtocolVersion = version
		cl.Properties.Clean = clean
		cl.Properties.Props.SessionExpiryInterval = expiry
		return cl
	}
	for i, cl := range []*mqtt.Client{
		mk("v3-persistent", 4, false, 0),
		mk("v3-clean", 4, true, 0),
		mk("v5-expiry", 5, true, 3600),
		mk("v5-no-expiry", 5, false, 0),
	} {
		pk := retained("sensorfarm/s/n/env", "{}", time.Now())
		pk.PacketID = uint16(i + 1)
		h.OnQosPublish(cl, pk, time.Now().Unix(), 0)
	}
	msgs, err := h.StoredInflightMessages()
	require.NoError(t, err)
	var clients []string
	for _, m := range msgs {
		clients = append(clients, m.Client)
	}
	require.ElementsMatch(t, []string{"v3-persistent", "v5-expiry"}, clients)
}
