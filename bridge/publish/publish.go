// Package publish is the bridge's MQTT side: one connection to the broker with
// the contract's birth and will, reconnection with capped backoff, and QoS 1
// publishes that count as delivered only once the broker's PUBACK is in.
package publish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/wire"
)

// ErrNotConnected is returned by Publish while the broker is unreachable.
var ErrNotConnected = errors.New("not connected to the broker")

// Options configure a Publisher.
type Options struct {
	Broker string // tcp://host:port or mqtt://host:port; mqtts:// (ssl://, tls://) for TLS
	// CAFile is the PEM file of the CAs trusted to sign the broker's TLS
	// certificate; empty trusts the system's roots. The certificate must
	// name the broker's host: verification is never skipped.
	CAFile   string
	Username string
	Password string
	Node     wire.Node
	Log      *slog.Logger
	// AckTimeout bounds the wait for a PUBACK.
	AckTimeout time.Duration
	// MaxBackoff caps the wait between connection attempts: short enough that
	// a returning broker is found quickly, long enough not to hammer it.
	MaxBackoff time.Duration
	// OnConnect, if set, is called after each (re)connection's birth message.
	OnConnect func()
}

// DefaultOptions fill what an Options leaves zero.
var DefaultOptions = Options{AckTimeout: 10 * time.Second, MaxBackoff: 30 * time.Second}

// Publisher owns the bridge's MQTT connection.
type Publisher struct {
	opts   Options
	client mqtt.Client

	lost chan struct{} // the connection broke: Run reconnects

	mu        sync.Mutex
	connected bool // last state logged, so each change is logged once
	// subs are the subscriptions made again on every connection: the
	// session starts clean each time.
	subs []subscription
}

// subscription is one topic filter the bridge listens to and its handler.
type subscription struct {
	filter string
	handle func(payload []byte)
}

// New prepares a Publisher; Run connects it.
func New(opts Options) *Publisher {
	if opts.AckTimeout == 0 {
		opts.AckTimeout = DefaultOptions.AckTimeout
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultOptions.MaxBackoff
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	p := &Publisher{opts: opts, lost: make(chan struct{}, 1)}
	co := mqtt.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.Node.ClientID()).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(true).
		SetWill(opts.Node.Status(), wire.StatusOffline, wire.QoS, true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		// Run reconnects, not paho: on its own reconnection paho resends
		// the publishes that were in flight, which would put old readings
		// on the live topics after newer ones. Without it, a lost
		// connection fails them, they stay in the spool and the forwarder
		// replays them on the backlog topics.
		SetAutoReconnect(false).
		// Handlers run on their own goroutines, so the birth publish in
		// onConnect cannot stall paho's network loop.
		SetOrderMatters(false).
		SetOnConnectHandler(p.onConnect).
		SetConnectionLostHandler(p.onLost)
	if tc := tlsConfig(opts); tc != nil {
		co.SetTLSConfig(tc)
	}
	p.client = mqtt.NewClient(co)
	return p
}

// tlsConfig is the client side of a TLS broker URL: TLS 1.2 at least, the
// broker's certificate checked against CAFile (or the system's roots) and
// against the URL's host, which is set as ServerName so that the check holds
// also when paho dials through a proxy. nil for a plain URL.
func tlsConfig(opts Options) *tls.Config {
	u, err := url.Parse(opts.Broker)
	if err != nil {
		return nil
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls", "mqtt+ssl", "tcps":
	default:
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
	if opts.CAFile != "" {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(opts.CAFile)
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = fmt.Errorf("%s holds no PEM certificate", opts.CAFile)
		}
		if err != nil {
			// Checked at start; an empty pool refuses every certificate
			// rather than fall back to trusting more than was asked.
			opts.Log.Error("CA file unreadable; no broker certificate will be trusted", "ca_file", opts.CAFile, "err", err)
		}
		tc.RootCAs = pool
	}
	return tc
}

// Run connects, retrying with capped exponential backoff until the broker
// answers, reconnects the same way whenever the connection is lost, and on
// ctx's end publishes the offline status and disconnects cleanly.
func (p *Publisher) Run(ctx context.Context) error {
	// After a loss, the loss is the state change logged, not the failed
	// attempts that follow it.
	for quiet := false; p.connect(ctx, quiet); quiet = true {
		select {
		case <-p.lost:
			continue
		case <-ctx.Done():
		}
		break
	}
	// The will is only for an unexpected loss; a clean stop says offline itself.
	if p.client.IsConnectionOpen() {
		tok := p.client.Publish(p.opts.Node.Status(), wire.QoS, true, wire.StatusOffline)
		if !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
			p.opts.Log.Warn("offline status not acknowledged before stopping", "err", tok.Error())
		}
	}
	p.client.Disconnect(250)
	p.opts.Log.Info("disconnected from broker")
	return nil
}

// connect tries until the broker answers, with exponential backoff capped at
// MaxBackoff, and reports whether it did before ctx ended. It logs the first
// failure unless quiet.
func (p *Publisher) connect(ctx context.Context, quiet bool) bool {
	backoff := time.Second
	for {
		tok := p.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return false
		}
		err := tok.Error()
		if err == nil {
			return true
		}
		if !quiet {
			p.opts.Log.Warn("broker unreachable; retrying with backoff", "broker", p.opts.Broker, "max_backoff", p.opts.MaxBackoff, "err", err)
			quiet = true
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
		backoff = min(2*backoff, p.opts.MaxBackoff)
	}
}

// Publish sends one QoS 1 message and returns once the broker acknowledged it.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte, retained bool) error {
	pending, err := p.Send(topic, payload, retained)
	if err != nil {
		return err
	}
	return pending.Wait(ctx)
}

// Send hands one QoS 1 message to the connection and returns without waiting
// for the broker: messages sent one after another leave in that order, and
// their acknowledgements can be awaited concurrently. While the connection is
// down it fails at once with ErrNotConnected instead of letting paho queue
// the message, which would replay an old reading on a live topic.
func (p *Publisher) Send(topic string, payload []byte, retained bool) (Pending, error) {
	if !p.client.IsConnectionOpen() {
		return Pending{}, ErrNotConnected
	}
	return Pending{tok: p.client.Publish(topic, wire.QoS, retained, payload), topic: topic, timeout: p.opts.AckTimeout}, nil
}

// Pending is a message sent and not yet known to be acknowledged.
type Pending struct {
	tok     mqtt.Token
	topic   string
	timeout time.Duration
}

// Wait returns nil once the broker's PUBACK is in, or an error when it does
// not come within the acknowledgement timeout or ctx ends first.
func (m Pending) Wait(ctx context.Context) error {
	timer := time.NewTimer(m.timeout)
	defer timer.Stop()
	select {
	case <-m.tok.Done():
		if err := m.tok.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", m.topic, err)
		}
		return nil
	case <-timer.C:
		return fmt.Errorf("publish %s: no PUBACK within %s", m.topic, m.timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe listens to filter at QoS 1 from the next connection on, and on
// every one after it (the session starts clean each time, so the broker
// forgets subscriptions with the connection); handle runs on its own
// goroutine for each message. A subscription the broker refuses is logged.
func (p *Publisher) Subscribe(filter string, handle func(payload []byte)) {
	p.mu.Lock()
	p.subs = append(p.subs, subscription{filter, handle})
	p.mu.Unlock()
	if p.client.IsConnectionOpen() {
		p.subscribe(p.client, subscription{filter, handle})
	}
}

// subscribeFailed is the SUBACK return code of a refused subscription in
// MQTT 3.1.1 (0x80).
const subscribeFailed = 0x80

func (p *Publisher) subscribe(c mqtt.Client, s subscription) {
	tok := c.Subscribe(s.filter, wire.QoS, func(_ mqtt.Client, m mqtt.Message) { s.handle(m.Payload()) })
	if !tok.WaitTimeout(p.opts.AckTimeout) || tok.Error() != nil {
		p.opts.Log.Warn("subscription not acknowledged", "filter", s.filter, "err", tok.Error())
		return
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[s.filter] == subscribeFailed {
		p.opts.Log.Warn("subscription refused by the broker (its ACL?)", "filter", s.filter)
	}
}

func (p *Publisher) onConnect(c mqtt.Client) {
	p.setConnected(true)
	tok := c.Publish(p.opts.Node.Status(), wire.QoS, true, wire.StatusOnline)
	if !tok.WaitTimeout(p.opts.AckTimeout) || tok.Error() != nil {
		p.opts.Log.Warn("birth message not acknowledged", "topic", p.opts.Node.Status(), "err", tok.Error())
	}
	p.mu.Lock()
	subs := append([]subscription(nil), p.subs...)
	p.mu.Unlock()
	for _, s := range subs {
		p.subscribe(c, s)
	}
	if p.opts.OnConnect != nil {
		p.opts.OnConnect()
	}
}

func (p *Publisher) onLost(_ mqtt.Client, err error) {
	p.opts.Log.Warn("connection to broker lost; reconnecting with backoff", "broker", p.opts.Broker, "err", err)
	p.setConnected(false)
	select {
	case p.lost <- struct{}{}:
	default:
	}
}

func (p *Publisher) setConnected(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up && !p.connected {
		p.opts.Log.Info("connected to broker", "broker", p.opts.Broker, "client_id", p.opts.Node.ClientID())
	}
	p.connected = up
}
