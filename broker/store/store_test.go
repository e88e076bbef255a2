package store

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
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
	}{
		{"no fsync", false},
		{"--store-sync", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "b")
			h, opts, err := New(dir, tc.sync, nil)
			require.NoError(t, err)
			require.Equal(t, tc.sync, opts.Sync)
			require.False(t, opts.Stock)
			require.Equal(t, filepath.Join(dir, DirName), opts.Path)
			require.Equal(t, opts.Path, h.Path())
			require.NotNil(t, opts.Pebble)
			require.EqualValues(t, memTableSize, opts.Pebble.MemTableSize)

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

// A session that ends with its connection keeps no in-flight message in the
// store (nothing could redeliver it after a restart); a persistent session's
// are kept, and removed when acknowledged.
func TestInflightKeptForPersistentSessionsOnly(t *testing.T) {
	tt := []struct {
		desc    string
		props   mqtt.ClientProperties
		persist bool
	}{
		{"3.1.1 clean session", mqtt.ClientProperties{ProtocolVersion: 4, Clean: true}, false},
		{"3.1.1 persistent session", mqtt.ClientProperties{ProtocolVersion: 4, Clean: false}, true},
		{"5 without expiry", mqtt.ClientProperties{ProtocolVersion: 5, Clean: false}, false},
		{"5 with an expiry interval", mqtt.ClientProperties{ProtocolVersion: 5, Clean: true,
			Props: packets.Properties{SessionExpiryInterval: 3600}}, true},
	}
	for _, tc := range tt {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			h := open(t, dir)
			cl := &mqtt.Client{ID: "sub", Properties: tc.props}
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
				TopicName: "sensorfarm/s/n/env", Payload: []byte(`{"seq":1}`), PacketID: 7, Created: time.Now().Unix()}
			h.OnQosPublish(cl, pk, time.Now().Unix(), 0)
			require.NoError(t, h.Stop())

			h = open(t, dir)
			msgs, err := h.StoredInflightMessages()
			require.NoError(t, err)
			if !tc.persist {
				require.Empty(t, msgs)
				require.NoError(t, h.Stop())
				return
			}
			require.Len(t, msgs, 1)
			require.Equal(t, "sensorfarm/s/n/env", msgs[0].TopicName)
			h.OnQosComplete(cl, pk)
			require.NoError(t, h.Stop())

			h = open(t, dir)
			msgs, err = h.StoredInflightMessages()
			require.NoError(t, err)
			require.Empty(t, msgs, "an acknowledged message leaves the store")
			require.NoError(t, h.Stop())
		})
	}
}
