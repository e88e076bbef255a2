package ingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/archive/decode"
	"github.com/sensorfarm/sensorfarm/archive/metrics"
	"github.com/sensorfarm/sensorfarm/internal/brokerurl"
	"github.com/sensorfarm/sensorfarm/internal/pemca"
	"github.com/sensorfarm/sensorfarm/wire"
)

// MQTTOptions say where and as whom the archive subscribes.
type MQTTOptions struct {
	Broker, CAFile, Username, Password, ClientID, Prefix string
	Metrics                                              *metrics.Metrics
	Log                                                  *slog.Logger
}

// Filters are the archive's subscriptions: every node's live and backlog
// readings (the contract's archiver subscription) and its health.
func Filters(prefix string) []string {
	every := wire.Node{Prefix: prefix, Site: "+", Node: "+"}
	var fs []string
	for _, s := range decode.Streams() {
		fs = append(fs, every.Live(s))
	}
	return append(fs, every.Root()+"/backlog/#", every.Health())
}

// Subscriber is the archive's MQTT client.
type Subscriber struct {
	client    mqtt.Client
	connected atomic.Bool
}

// Subscribe connects to the broker with a persistent session (clean session
// off, a fixed client id) and subscribes at QoS 1, handing every message to
// p in the order it came, acknowledging none itself (p acknowledges after
// the commit). It reconnects by itself, and subscribes again on every
// connection (the broker may have lost the session). ctx bounds the
// handler's wait on a full queue.
func Subscribe(ctx context.Context, o MQTTOptions, p *Pipeline) (*Subscriber, error) {
	s := &Subscriber{}
	filters := map[string]byte{}
	for _, f := range Filters(o.Prefix) {
		filters[f] = wire.QoS
	}
	handle := func(_ mqtt.Client, m mqtt.Message) {
		p.Take(ctx, decode.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()}, m.Ack)
	}
	co := mqtt.NewClientOptions().AddBroker(o.Broker).SetClientID(o.ClientID).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetDefaultPublishHandler(handle).
		SetOnConnectHandler(func(c mqtt.Client) {
			s.connected.Store(true)
			o.Metrics.MQTTConnected.Set(1)
			o.Metrics.MQTTConnects.Inc()
			o.Log.Info("connected to the broker", "broker", o.Broker, "client_id", o.ClientID)
			// Not in the handler's goroutine: paho delivers the SUBACK on it.
			go func() {
				tok := c.SubscribeMultiple(filters, handle)
				if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
					o.Log.Error("subscribe failed; the next connection tries again", "err", tok.Error())
					return
				}
				for f, q := range tok.(*mqtt.SubscribeToken).Result() {
					if q > 2 {
						o.Log.Error("subscription refused: give the archive a reader user", "filter", f, "suback", q)
					}
				}
			}()
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.connected.Store(false)
			o.Metrics.MQTTConnected.Set(0)
			o.Log.Warn("connection to the broker lost; reconnecting (unacknowledged messages come again)", "err", err)
		})
	if o.Username != "" {
		co.SetUsername(o.Username).SetPassword(o.Password)
	}
	tc, err := tlsConfig(o.Broker, o.CAFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		co.SetTLSConfig(tc)
	}
	s.client = mqtt.NewClient(co)
	// With ConnectRetry the token completes once connected, or never while
	// the broker is away: the archive starts anyway and keeps trying.
	s.client.Connect()
	return s, nil
}

// Ready reports whether the archive is connected (for /readyz).
func (s *Subscriber) Ready() error {
	if !s.connected.Load() {
		return fmt.Errorf("not connected to the broker")
	}
	return nil
}

// Close disconnects, leaving the session on the broker.
func (s *Subscriber) Close() { s.client.Disconnect(500) }

// tlsConfig is the client side of a TLS broker URL, the bridge's own
// (internal/brokerurl), with the broker's certificate checked against caFile
// or the system's roots. nil for a plain URL.
func tlsConfig(broker, caFile string) (*tls.Config, error) {
	u, err := brokerurl.Parse(broker)
	if err != nil {
		return nil, err
	}
	var cas *x509.CertPool
	if caFile != "" {
		if cas, err = pemca.Load(caFile); err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
	}
	return brokerurl.TLSConfig(u, cas), nil
}
