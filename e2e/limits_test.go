package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Raw MQTT over TCP, for what no client prints: the CONNACK's properties, a
// DISCONNECT's reason code, a connection closed under a client.

func varint(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// rawPacket frames body under the fixed header's first byte h.
func rawPacket(h byte, body []byte) []byte {
	return append(append([]byte{h}, varint(len(body))...), body...)
}

func mqttString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// rawConnect is a clean-start CONNECT without credentials; version is 4
// (3.1.1) or 5.
func rawConnect(clientID string, version byte, keepalive uint16) []byte {
	body := append(mqttString("MQTT"), version, 0x02)
	body = binary.BigEndian.AppendUint16(body, keepalive)
	if version == 5 {
		body = append(body, 0) // no properties
	}
	body = append(body, mqttString(clientID)...)
	return rawPacket(0x10, body)
}

// rawPublish is a QoS 0 PUBLISH (3.1.1).
func rawPublish(topic string, payload []byte) []byte {
	body := append(mqttString(topic), payload...)
	return rawPacket(0x30, body)
}

// rawClient is one TCP connection speaking raw MQTT.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetWriteDeadline(time.Now().Add(5*time.Second)))
	_, err := c.conn.Write(b)
	require.NoError(c.t, err)
}

// read returns the next packet's first byte and body, within limit.
func (c *rawClient) read(limit time.Duration) (byte, []byte, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(limit)); err != nil {
		return 0, nil, err
	}
	h, err := c.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := c.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(c.r, body)
	return h, body, err
}

// connack connects and returns the CONNACK's reason code and, for MQTT 5, its
// properties by identifier (two-byte values only, which is all we look at).
func (c *rawClient) connack(clientID string, version byte, keepalive uint16) (byte, map[byte]uint16) {
	c.t.Helper()
	c.write(rawConnect(clientID, version, keepalive))
	h, body, err := c.read(5 * time.Second)
	require.NoError(c.t, err)
	require.Equal(c.t, byte(0x20), h, "not a CONNACK")
	require.GreaterOrEqual(c.t, len(body), 2)
	props := map[byte]uint16{}
	if version == 5 && len(body) > 2 {
		p := body[2:]
		n, k := int(p[0]), 1 // property length; ours fit in one byte
		require.Less(c.t, p[0], byte(0x80))
		p = p[k : k+n]
		for len(p) > 0 {
			id := p[0]
			p = p[1:]
			switch id {
			case 0x13, 0x21, 0x22: // Server Keep Alive, Receive Maximum, Topic Alias Maximum
				props[id] = binary.BigEndian.Uint16(p)
				p = p[2:]
			case 0x11, 0x27: // Session Expiry Interval, Maximum Packet Size
				p = p[4:]
			case 0x24, 0x25, 0x28, 0x29, 0x2A: // one-byte flags
				p = p[1:]
			case 0x12, 0x1A, 0x1C, 0x1F, 0x15, 0x16: // strings and binary data
				p = p[2+int(binary.BigEndian.Uint16(p)):]
			case 0x26: // user property: two strings
				p = p[2+int(binary.BigEndian.Uint16(p)):]
				p = p[2+int(binary.BigEndian.Uint16(p)):]
			default:
				c.t.Fatalf("CONNACK property %#x not understood", id)
			}
		}
	}
	return body[1], props
}

// closed reports whether the broker closed the connection within limit.
func (c *rawClient) closed(limit time.Duration) bool {
	for {
		_, _, err := c.read(limit)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			return false
		default:
			return true
		}
	}
}

func startDemoBroker(t *testing.T, extra ...string) (*process, string) {
	t.Helper()
	args := append([]string{filepath.Join(bin, "broker"), "--listen", "127.0.0.1:0", "--demo", "--data", t.TempDir(), "--ops-listen", "127.0.0.1:0"}, extra...)
	p := start(t, "broker", args...)
	m := p.waitLog(`msg=listening .*addr=(127\.0\.0\.1:\d+)`, 15*time.Second)
	return p, m[1]
}

// TestLimitPacketSize: a publish larger than --max-packet-size costs its
// client the connection, and is not delivered; another client goes on.
func TestLimitPacketSize(t *testing.T) {
	broker, addr := startDemoBroker(t, "--max-packet-size", "1024")
	sub := subscribe(t, addr, "-t", "t/#")
	time.Sleep(300 * time.Millisecond) // let the subscription settle

	big := dialRaw(t, addr)
	code, _ := big.connack("big", 4, 30)
	require.Zero(t, code)
	big.write(rawPublish("t/big", []byte(strings.Repeat("x", 2000))))
	require.True(t, big.closed(5*time.Second), "the broker kept a client that sent a 2 KB packet past a 1 KiB limit")

	small := dialRaw(t, addr)
	code, _ = small.connack("small", 4, 30)
	require.Zero(t, code)
	small.write(rawPublish("t/small", []byte("fits")))
	m := sub.next("t/small", 5*time.Second)
	require.Equal(t, "fits", m.Payload)
	require.Empty(t, sub.history("t/big"))
	require.True(t, broker.running())
}

// TestLimitMaxClients: past --max-clients the next client is refused with
// CONNACK "Server unavailable" (3.1.1) or "Server busy" (5).
func TestLimitMaxClients(t *testing.T) {
	_, addr := startDemoBroker(t, "--max-clients", "2")
	for _, id := range []string{"a", "b"} {
		code, _ := dialRaw(t, addr).connack(id, 4, 30)
		require.Zero(t, code, id)
	}
	code, _ := dialRaw(t, addr).connack("c", 4, 30)
	require.Equal(t, byte(0x03), code, "3.1.1: server unavailable")
	code, _ = dialRaw(t, addr).connack("d", 5, 30)
	require.Equal(t, byte(0x89), code, "5: server busy")
}

// TestKeepaliveServerKeepAlive: an MQTT 5 client asking for a longer
// keepalive than --max-keepalive, or none, is told the maximum in Server Keep
// Alive; one asking for less is left alone.
func TestKeepaliveServerKeepAlive(t *testing.T) {
	_, addr := startDemoBroker(t, "--max-keepalive", "1m")
	for _, tc := range []struct {
		asked uint16
		want  uint16 // 0: no Server Keep Alive
	}{{3600, 60}, {0, 60}, {61, 60}, {60, 0}, {30, 0}} {
		code, props := dialRaw(t, addr).connack("ka", 5, tc.asked)
		require.Zero(t, code)
		got, ok := props[0x13]
		if tc.want == 0 {
			require.False(t, ok, "keepalive %d: Server Keep Alive %d sent", tc.asked, got)
			continue
		}
		require.True(t, ok, "keepalive %d: no Server Keep Alive", tc.asked)
		require.Equal(t, tc.want, got, "keepalive %d", tc.asked)
	}

	// The broker holds the client to it: silent for 1.5 times the Server
	// Keep Alive it was given, it is dropped. (MQTT 3.1.1 keeps what it
	// asked for: it cannot be told.)
	_, addr = startDemoBroker(t, "--max-keepalive", "5s")
	c := dialRaw(t, addr)
	_, props := c.connack("silent", 5, 3600)
	require.Equal(t, uint16(5), props[0x13])
	start := time.Now()
	require.True(t, c.closed(15*time.Second), "a silent client outlived its Server Keep Alive")
	require.Less(t, time.Since(start), 10*time.Second)
}

// TestLimitDisconnectReason: when the broker ends a connection (here a
// session taken over by a new connection with the same client ID), an MQTT 5
// client reads the DISCONNECT and its reason before the connection closes,
// with PassiveClientDisconnect off.
func TestLimitDisconnectReason(t *testing.T) {
	_, addr := startDemoBroker(t)
	old := dialRaw(t, addr)
	code, _ := old.connack("same-id", 5, 30)
	require.Zero(t, code)
	code, _ = dialRaw(t, addr).connack("same-id", 5, 30)
	require.Zero(t, code)
	h, body, err := old.read(5 * time.Second)
	require.NoError(t, err)
	require.Equal(t, byte(0xE0), h, "not a DISCONNECT")
	require.NotEmpty(t, body)
	require.Equal(t, byte(0x8E), body[0], "reason: session taken over")
	require.True(t, old.closed(5*time.Second), "the old connection was left open")
}
