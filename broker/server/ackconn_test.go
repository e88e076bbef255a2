package server

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/store"
)

// tcpPair is a connected pair over loopback: the broker's side wrapped in an
// ackConn, and the client's.
func tcpPair(t *testing.T) (*ackConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	srv, err := l.Accept()
	require.NoError(t, err)
	c := newAckConn(srv)
	t.Cleanup(func() { c.Close() })
	return c, client
}

// gatedSync is a SyncGroup whose fsyncs say when they start and wait for
// the test to let them end.
func gatedSync(result error) (g *store.SyncGroup, started <-chan struct{}, release chan<- struct{}) {
	start, end := make(chan struct{}, 10), make(chan struct{})
	return store.NewSyncGroup(func() error { start <- struct{}{}; <-end; return result }), start, end
}

// readFor reads what arrives within d: for what must not arrive.
func readFor(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	var got []byte
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				require.ErrorIs(t, err, io.EOF)
			}
			return string(got)
		}
	}
}

// readWant reads len(want) bytes, waiting up to waitFor, and checks them.
func readWant(t *testing.T, c net.Conn, want string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(waitFor)))
	got := make([]byte, len(want))
	_, err := io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, want, string(got))
}

// TestAckConnHoldsUntilSynced: nothing written after a hold reaches the
// client before the fsync it waits for, and then all of it does, in order.
func TestAckConnHoldsUntilSynced(t *testing.T) {
	c, client := tcpPair(t)
	g, started, release := gatedSync(nil)

	_, err := c.Write([]byte("a"))
	require.NoError(t, err)
	readWant(t, client, "a") // nothing held: written at once

	c.hold(g.Ticket(), g) // a publish whose journal entry is not on disk yet
	for _, s := range []string{"PUBACK1", "+"} {
		n, err := c.Write([]byte(s))
		require.NoError(t, err)
		require.Equal(t, len(s), n)
	}
	<-started
	c.hold(g.Ticket(), g) // the next publish, while the first fsync runs
	_, err = c.Write([]byte("PUBACK2"))
	require.NoError(t, err)
	require.Empty(t, readFor(t, client, 300*time.Millisecond), "held until the fsync ends")

	release <- struct{}{} // the first fsync ends
	readWant(t, client, "PUBACK1+")
	require.Empty(t, readFor(t, client, 300*time.Millisecond), "the second fsync has not ended")
	release <- struct{}{}
	readWant(t, client, "PUBACK2")

	_, err = c.Write([]byte("b"))
	require.NoError(t, err)
	readWant(t, client, "b") // nothing held again
}

// TestAckConnCloseLetsHeldBytesOut: a close waits for what is held (the
// PUBACKs of readings on disk, a DISCONNECT) to leave first.
func TestAckConnCloseLetsHeldBytesOut(t *testing.T) {
	c, client := tcpPair(t)
	g, _, release := gatedSync(nil)
	c.hold(g.Ticket(), g)
	_, err := c.Write([]byte("DISCONNECT"))
	require.NoError(t, err)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	time.Sleep(50 * time.Millisecond)
	release <- struct{}{}
	require.NoError(t, <-closed)
	readWant(t, client, "DISCONNECT")
	_, err = c.Write([]byte("x"))
	require.Error(t, err, "closed")
}

// TestAckConnFailedFsync: what waited for an fsync that failed is never
// sent, and the connection closes: the publisher sends its reading again.
func TestAckConnFailedFsync(t *testing.T) {
	c, client := tcpPair(t)
	g, _, release := gatedSync(errors.New("EIO"))
	c.hold(g.Ticket(), g)
	_, err := c.Write([]byte("PUBACK"))
	require.NoError(t, err)
	close(release)
	require.NoError(t, client.SetReadDeadline(time.Now().Add(waitFor)))
	got, err := io.ReadAll(client)
	require.NoError(t, err, "the connection is closed (EOF), not left open")
	require.Empty(t, got, "the PUBACK is withheld")
	_, err = c.Write([]byte("x"))
	require.Error(t, err)
}
