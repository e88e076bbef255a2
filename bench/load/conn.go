package load

import (
	"context"
	"fmt"
	"net"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Loopback refuses any address but a loopback one: the load tool is for
// benchmarks on this machine and must never load somebody else's broker.
func Loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("broker address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("broker address %q: the load tool connects to loopback addresses (127.0.0.0/8, ::1) only", addr)
	}
	return nil
}

// Login is who a client connects as.
type Login struct {
	ClientID string
	Username string
	Password string
}

// ConnectTimeout bounds one connection attempt.
const ConnectTimeout = 20 * time.Second

// Connect opens one MQTT 3.1.1 connection to a loopback address, without
// paho's reconnects: a dropped connection is a failed run, not something to
// paper over. onLost, if not nil, is told when the connection drops.
func Connect(ctx context.Context, addr string, l Login, clean bool, onLost func(error)) (mqtt.Client, error) {
	if err := Loopback(addr); err != nil {
		return nil, err
	}
	o := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(l.ClientID).
		SetUsername(l.Username).
		SetPassword(l.Password).
		SetProtocolVersion(4).
		SetCleanSession(clean).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(ConnectTimeout).
		SetConnectRetry(false).
		SetAutoReconnect(false).
		SetMaxResumePubInFlight(0).
		SetWriteTimeout(ConnectTimeout)
	if onLost != nil {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { onLost(err) })
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if err := WaitToken(ctx, tok, ConnectTimeout); err != nil {
		return nil, fmt.Errorf("connect %s as %q: %w", addr, l.ClientID, err)
	}
	return c, nil
}

// WaitToken waits for tok, at most limit and never past ctx.
func WaitToken(ctx context.Context, tok mqtt.Token, limit time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no answer within %s", limit)
	case <-ctx.Done():
		return ctx.Err()
	}
}
