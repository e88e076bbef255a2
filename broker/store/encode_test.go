package store

import (
	"math/rand/v2"
	"testing"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

// TestEncodeAsMochi: storedMessage writes the bytes mochi's own encoding
// (encoding/json) writes, for readings as the farm sends them and for
// messages with every field, odd strings and empty and missing values.
func TestEncodeAsMochi(t *testing.T) {
	reading := storage.Message{
		ID: "IFM_archiver:17", T: storage.InflightKey, Client: "archiver", Origin: "bridge:pi-17",
		TopicName:   "sensorfarm/pi-17/env/temperature",
		Payload:     []byte(`{"v":1,"node":"pi-17","seq":4711,"ts":"2026-12-02T17:00:00Z","value":21.4,"unit":"°C"}`),
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true, Remaining: 120},
		Created:     1796230800, Sent: 1796230801, PacketID: 17,
		Properties: storage.MessageProperties{SubscriptionIdentifier: []int{0}}, // as mochi sets it on a delivery
	}
	cases := []storage.Message{
		reading,
		{},
		{Payload: []byte{}},
		{TopicName: `a"b\c<d>&e` + "\x01\u2028é", Client: "\xff\xfe", Properties: storage.MessageProperties{
			CorrelationData: []byte{0, 1, 2}, ContentType: "application/json", ResponseTopic: "r/\x7f",
			MessageExpiryInterval: 3600, TopicAlias: 3, PayloadFormat: 1, PayloadFormatFlag: true}},
		{Properties: storage.MessageProperties{User: []packets.UserProperty{{Key: "k", Val: "v"}}}},
		{Properties: storage.MessageProperties{SubscriptionIdentifier: []int{1, 2}}},
		{FixedHeader: packets.FixedHeader{Remaining: -1, Dup: true}, Sent: -5},
	}
	r := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		const alphabet = "ab/+#:_-09\"\\<>&\x00\x1f é€\u2028"
		runes := []rune(alphabet)
		n := r.IntN(12)
		out := make([]rune, n)
		for i := range out {
			out[i] = runes[r.IntN(len(runes))]
		}
		if r.IntN(4) == 0 {
			return ""
		}
		return string(out)
	}
	blob := func() []byte {
		switch r.IntN(3) {
		case 0:
			return nil
		case 1:
			return []byte{}
		}
		b := make([]byte, r.IntN(300))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	for range 5000 {
		cases = append(cases, storage.Message{
			ID: str(), T: str(), Client: str(), Origin: str(), TopicName: str(), Payload: blob(),
			FixedHeader: packets.FixedHeader{Remaining: r.IntN(1 << 20), Type: byte(r.IntN(16)), Qos: byte(r.IntN(3)),
				Dup: r.IntN(2) == 0, Retain: r.IntN(2) == 0},
			Created: r.Int64N(1<<40) * int64(r.IntN(2)), Sent: r.Int64N(1<<40) * int64(r.IntN(2)),
			PacketID: uint16(r.IntN(3) * r.IntN(65536)),
			Properties: storage.MessageProperties{
				CorrelationData: blob(), ContentType: str(), ResponseTopic: str(),
				MessageExpiryInterval: uint32(r.IntN(2) * r.IntN(1<<31)), TopicAlias: uint16(r.IntN(2) * r.IntN(65536)),
				PayloadFormat: byte(r.IntN(2)), PayloadFormatFlag: r.IntN(2) == 0,
				SubscriptionIdentifier: [][]int{nil, {}, {0}, {1, 268435455}, {-3}}[r.IntN(5)],
			},
		})
	}
	for i, m := range cases {
		want, err := m.MarshalBinary()
		require.NoError(t, err)
		got, err := storedMessage{&m}.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "case %d", i)
	}
}

// BenchmarkEncode: a reading, as mochi encodes it and as the store does.
//
//	go test -run '^$' -bench Encode ./broker/store
func BenchmarkEncode(b *testing.B) {
	m := &storage.Message{ID: "IFM_archiver:17", T: storage.InflightKey, Client: "archiver", Origin: "bridge:pi-17",
		TopicName: "sensorfarm/pi-17/env/temperature", Payload: make([]byte, 120),
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, Created: 1796230800, PacketID: 17}
	b.Run("mochi", func(b *testing.B) {
		for b.Loop() {
			_, _ = m.MarshalBinary()
		}
	})
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			_, _ = storedMessage{m}.MarshalBinary()
		}
	})
}
