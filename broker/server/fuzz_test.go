// mochi v2.7.9 has a data race of its own between a connection being
// accepted (EstablishConnection reads Listeners.ClientsWg) and Close (which
// writes it). Driving a connection at the listener just as the server stops is
// what this fuzz test does, so under -race it reports mochi's race, not ours.
// It runs without -race: `make fuzz` for 10 s, on every `make test`.

//go:build !race

package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/sensorfarm/sensorfarm/broker/config"
)

func fuzzString(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// fuzzPacket frames body under first byte h with its remaining length.
func fuzzPacket(h byte, body []byte) []byte {
	out := []byte{h}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// fuzzConnect is a clean-session CONNECT; version 4 (3.1.1) or 5.
func fuzzConnect(id string, version byte) []byte {
	body := append(fuzzString("MQTT"), version, 0x02, 0, 30)
	if version == 5 {
		body = append(body, 0)
	}
	return fuzzPacket(0x10, append(body, fuzzString(id)...))
}

// probe connects as a well-behaved client and waits for a successful
// CONNACK.
func probe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(fuzzConnect("fuzz-probe", 4)); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(bufio.NewReader(c), ack); err != nil {
		return fmt.Errorf("no CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x", ack)
	}
	return nil
}

// FuzzListener writes arbitrary bytes to a real listener, each input on a
// fresh TCP connection that is then closed, and checks after each that the
// broker still answers a proper CONNECT. One broker serves every input of a
// fuzz worker.
func FuzzListener(f *testing.F) {
	connect4 := fuzzConnect("fuzz", 4)
	connect5 := fuzzConnect("fuzz5", 5)
	publish := fuzzPacket(0x32, append(append(fuzzString("sensorfarm/s/n/env"), 0, 1), `{"seq":1}`...))
	subscribe := fuzzPacket(0x82, append([]byte{0, 1}, append(fuzzString("#"), 1)...))
	f.Add(connect4)
	f.Add(connect5)
	f.Add(append(append([]byte{}, connect4...), publish...))
	f.Add(append(append(append([]byte{}, connect4...), subscribe...), 0xC0, 0, 0xE0, 0))
	f.Add(connect4[:len(connect4)-3])                            // truncated CONNECT
	f.Add(append(append([]byte{}, connect4...), publish[:5]...)) // truncated PUBLISH
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0x7f})                  // the largest remaining length
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01})            // a malformed one
	f.Add(append(append([]byte{}, connect4...), 0x30, 0xff, 0xff, 0xff, 0x7f))
	f.Add([]byte{0x30, 0x02, 0, 0}) // PUBLISH before CONNECT
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	srv, err := New(config.Config{Listen: "127.0.0.1:0", DataDir: f.TempDir(), Demo: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			f.Errorf("Run: %v", err)
		}
	})
	addr := srv.Addr()
	deadline := time.Now().Add(5 * time.Second)
	for probe(addr) != nil {
		if time.Now().After(deadline) {
			f.Fatal("the broker does not answer")
		}
		time.Sleep(10 * time.Millisecond)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(data) // the broker may close first
		_ = c.Close()
		if err := probe(addr); err != nil {
			t.Fatalf("after % x: %v", data, err)
		}
	})
}
