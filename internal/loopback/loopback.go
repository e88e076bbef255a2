// Package loopback finds free ports on 127.0.0.1 for the servers the tests and
// the benchmarks start on a known address (a server that must come back on
// the same address, or that names its peers in its configuration).
package loopback

import (
	"fmt"
	"net"
	"strconv"
)

// FreeAddrs returns n distinct addresses "127.0.0.1:PORT" that nobody listened
// on a moment ago. Every port is held until all n are found, so none is
// handed out twice; another process may still take one before the caller
// binds it, which on a test machine is rare and shows as a start failure.
func FreeAddrs(n int) ([]string, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("a free loopback port: %w", err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// FreeAddr is one free address (see FreeAddrs).
func FreeAddr() (string, error) {
	addrs, err := FreeAddrs(1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// FreePort is the port of one free address (see FreeAddrs).
func FreePort() (int, error) {
	addr, err := FreeAddr()
	if err != nil {
		return 0, err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}
