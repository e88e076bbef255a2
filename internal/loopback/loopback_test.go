package loopback

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// The addresses are distinct, on loopback, and free: each can be listened on.
func TestFreeAddrs(t *testing.T) {
	addrs, err := FreeAddrs(20)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, a := range addrs {
		require.False(t, seen[a], "%s handed out twice", a)
		seen[a] = true
		host, _, err := net.SplitHostPort(a)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", host)
		l, err := net.Listen("tcp", a)
		require.NoError(t, err, "%s is free", a)
		require.NoError(t, l.Close())
	}
	p, err := FreePort()
	require.NoError(t, err)
	require.Positive(t, p)
}
