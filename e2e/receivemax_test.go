package e2e

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rawPublishV5 is an MQTT 5 PUBLISH at QoS 1 or 2, without properties.
func rawPublishV5(topic string, qos byte, id uint16, payload []byte) []byte {
	body := binary.BigEndian.AppendUint16(mqttString(topic), id)
	body = append(body, 0) // no properties
	return rawPacket(0x30|qos<<1, append(body, payload...))
}

// TestDisconnectReasonReachesAGreedyClient: an MQTT 5 client that sends more
// publishes than the broker's Receive Maximum without waiting for their
// acknowledgements reads the DISCONNECT "receive maximum exceeded" (0x93),
// then the end of the connection; before the broker lingered on it, the
// client's unread publishes made the close a reset and the client read
// "connection reset by peer" instead.
//
// QoS 2: mochi takes a QoS 1 publish's receive quota and gives it back before
// it reads the next packet, so QoS 1 never exceeds it (3,024 QoS 1 publishes
// sent this way were all acknowledged); a QoS 2 publish keeps its quota until
// its PUBREL.
func TestDisconnectReasonReachesAGreedyClient(t *testing.T) {
	_, addr := startDemoBroker(t)
	c := dialRaw(t, addr)
	code, props := c.connack("greedy", 5, 30)
	require.Zero(t, code)
	limit := int(props[0x21])
	require.Positive(t, limit, "the CONNACK has no Receive Maximum")

	// More than the limit, and enough that the broker has not read them all
	// when it throws the client out.
	var burst []byte
	for i := 1; i <= limit+2000; i++ {
		burst = append(burst, rawPublishV5("greedy/x", 2, uint16(i), make([]byte, 300))...)
	}
	wrote := make(chan error, 1)
	go func() {
		_ = c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := c.conn.Write(burst)
		wrote <- err
	}()
	// Read nothing until the broker is done with the client, as a client
	// busy writing would.
	time.Sleep(time.Second)

	pubrecs := 0
	for {
		h, body, err := c.read(10 * time.Second)
		require.NoError(t, err, "the connection broke after %d PUBRECs, before any DISCONNECT", pubrecs)
		if h == 0x50 {
			pubrecs++
			continue
		}
		require.Equal(t, byte(0xE0), h, "neither a PUBREC nor a DISCONNECT")
		require.NotEmpty(t, body)
		require.Equal(t, byte(0x93), body[0], "reason: receive maximum exceeded")
		break
	}
	require.Equal(t, limit, pubrecs, "PUBRECs before the DISCONNECT")
	require.True(t, c.closed(10*time.Second), "the connection stayed open after the DISCONNECT")
	t.Logf("write of the burst: %v", <-wrote)
}
