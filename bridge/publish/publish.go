// Package publish is the bridge's MQTT side: one connection to one of a
// failover list of brokers with the contract's birth and will, reconnection
// with jittered backoff, and QoS 1 publishes that count as delivered only once
// the broker's PUBACK is in.
package publish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/internal/brokerurl"
	"github.com/sensorfarm/sensorfarm/wire"
)

// ErrNotConnected is returned by Publish while the broker is unreachable.
var ErrNotConnected = errors.New("not connected to the broker")

// Options configure a Publisher.
type Options struct {
	// Brokers are tried in order on every (re)connection until one accepts:
	// one that is down or refuses the connection passes the turn to the
	// next. brokerurl.ParseList makes and checks the list.
	Brokers []*url.URL
	// CAs are the CAs trusted to sign a TLS broker's certificate; nil
	// trusts the system's roots. The certificate must name the broker's
	// host: verification is never skipped.
	CAs      *x509.CertPool
	Username string
	Password string
	Node     wire.Node
	Log      *slog.Logger
	// AckTimeout bounds the wait for a PUBACK or a SUBACK.
	AckTimeout time.Duration
	// BaseBackoff and MaxBackoff bound the waits between connection (and
	// subscription) attempts: the n-th wait is drawn from [0,
	// min(MaxBackoff, BaseBackoff·2^n)). MaxBackoff is short enough that a
	// returning broker is found quickly, long enough not to hammer it.
	BaseBackoff, MaxBackoff time.Duration
	// Rand draws the waits: a uniform int64 in [0, n), safe for concurrent
	// use. nil uses math/rand/v2's randomly seeded source; tests seed their own.
	Rand func(n int64) int64
	// OnConnect, if set, is called after each (re)connection's birth message.
	OnConnect func()
}

// DefaultOptions fill what an Options leaves zero.
var DefaultOptions = Options{AckTimeout: 10 * time.Second, BaseBackoff: time.Second, MaxBackoff: 30 * time.Second}

// Publisher owns the bridge's MQTT connection.
type Publisher struct {
	opts   Options
	client mqtt.Client

	lost chan struct{} // the connection broke: Run reconnects

	mu        sync.Mutex
	connected bool   // last state logged, so each change is logged once
	broker    string // the broker last tried, or connected to
	// endConn ends the goroutines of the current connection (its
	// subscription retries).
	connContext context.Context
	endConn     context.CancelFunc
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
	opts.AckTimeout = cmpOr(opts.AckTimeout, DefaultOptions.AckTimeout)
	opts.BaseBackoff = cmpOr(opts.BaseBackoff, DefaultOptions.BaseBackoff)
	opts.MaxBackoff = cmpOr(opts.MaxBackoff, DefaultOptions.MaxBackoff)
	if opts.Rand == nil {
		opts.Rand = defaultRand
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	p := &Publisher{opts: opts, lost: make(chan struct{}, 1), connContext: context.Background(), endConn: func() {}}
	co := mqtt.NewClientOptions().
		SetClientID(opts.Node.ClientID()).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(true).
		SetWill(opts.Node.Status(), wire.StatusOffline, wire.QoS, true).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		// MQTT 3.1.1 only: otherwise paho asks a broker that refused the
		// connection again in MQTT 3.1, a second password check for
		// nothing, before it moves on to the next broker.
		SetProtocolVersion(4).
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
		SetConnectionLostHandler(p.onLost).
		// paho tries the brokers in order; each gets TLS settings naming
		// its own host.
		SetConnectionAttemptHandler(func(broker *url.URL, _ *tls.Config) *tls.Config {
			p.mu.Lock()
			p.broker = broker.Redacted()
			p.mu.Unlock()
			return brokerurl.TLSConfig(broker, opts.CAs)
		})
	for _, b := range opts.Brokers {
		co.AddBroker(b.String())
	}
	p.client = mqtt.NewClient(co)
	return p
}

func cmpOr(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Run connects, retrying with jittered exponential backoff until a broker
// answers, reconnects the same way whenever the connection is lost, and on
// ctx's end publishes the offline status and disconnects cleanly.
func (p *Publisher) Run(ctx context.Context) error {
	retry := newBackoff(p.opts)
	// After a loss, the loss is the state change logged, not the failed
	// attempts that follow it. The first attempt after a loss waits too:
	// a broker restart cuts every bridge at once, and without a drawn wait
	// they would all be back in the same instant.
	for lost := false; !lost || sleep(ctx, retry.next()); lost = true {
		if !p.connect(ctx, retry, lost) {
			break
		}
		retry.reset()
		select {
		case <-p.lost:
			continue
		case <-ctx.Done():
		}
		break
	}
	p.endConnection()
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

// connect tries every broker in turn until one answers, waiting as retry
// says between rounds, and reports whether one did before ctx ended. It logs
// the first failure unless quiet.
func (p *Publisher) connect(ctx context.Context, retry *backoff, quiet bool) bool {
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
			p.opts.Log.Warn("broker unreachable; retrying with backoff", "brokers", len(p.opts.Brokers), "last_tried", p.currentBroker(),
				"max_backoff", p.opts.MaxBackoff, "err", err)
			quiet = true
		}
		if !sleep(ctx, retry.next()) {
			return false
		}
	}
}

func (p *Publisher) currentBroker() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.broker
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

// Subscribe listens to filter at SubscribeQoS from the next connection on,
// and on every one after it (the session starts clean each time, so the
// broker forgets subscriptions with the connection); handle runs on its own
// goroutine for each message. A subscription the broker refuses or does not
// acknowledge is logged and tried again with backoff while the connection
// lasts.
func (p *Publisher) Subscribe(filter string, handle func(payload []byte)) {
	s := subscription{filter, handle}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.subs = append(p.subs, s)
	if p.connected {
		go p.keepSubscribed(p.connContext, s)
	}
}

// RefusedError is a subscription the broker refused in its SUBACK.
type RefusedError struct {
	Filter string
	Code   byte // the SUBACK return code: 0x80 is MQTT 3.1.1's only failure code
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("subscription to %s refused by the broker: SUBACK return code %#02x", e.Filter, e.Code)
}

// SubscribeQoS is the QoS of the bridge's subscriptions: 0. Its session is
// clean, so a QoS 1 subscription would keep nothing across a reconnection
// that a QoS 0 one loses, and what the bridge listens to needs no more:
// Home Assistant's birth only makes it announce again, which it does on
// every connection anyway. On a clustered broker QoS 1 costs a great deal:
// nats-server makes each QoS 1 subscription a replicated JetStream consumer,
// deleted and created again on every clean-session connection, and while
// its leader is being replaced after a node's death each of those requests
// waits out the server's timeout and holds the bridge's readings back
// behind it (nats/README.md).
const SubscribeQoS = 0

// subscribeFailed is the SUBACK return code of a refused subscription in
// MQTT 3.1.1; the reason (an ACL, a timeout inside a clustered broker) is
// only in the broker's own log.
const subscribeFailed = 0x80

// subscribe makes one subscription and waits for its SUBACK.
func (p *Publisher) subscribe(s subscription) error {
	tok := p.client.Subscribe(s.filter, SubscribeQoS, func(_ mqtt.Client, m mqtt.Message) { s.handle(m.Payload()) })
	if !tok.WaitTimeout(p.opts.AckTimeout) {
		return fmt.Errorf("subscription to %s: no SUBACK within %s", s.filter, p.opts.AckTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscription to %s: %w", s.filter, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		if code := st.Result()[s.filter]; code >= subscribeFailed {
			return &RefusedError{Filter: s.filter, Code: code}
		}
	}
	return nil
}

// keepSubscribed subscribes, and after a refusal or a missing SUBACK tries
// again with backoff until it succeeds or the connection ends.
func (p *Publisher) keepSubscribed(ctx context.Context, s subscription) {
	retry := newBackoff(p.opts)
	for attempt := 1; ; attempt++ {
		err := p.subscribe(s)
		if err == nil {
			if attempt > 1 {
				p.opts.Log.Info("subscribed after retrying", "filter", s.filter, "attempts", attempt)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		attrs := []any{"filter", s.filter, "attempt", attempt, "broker", p.currentBroker(), "err", err}
		var refused *RefusedError
		if errors.As(err, &refused) {
			attrs = append(attrs, "suback_code", fmt.Sprintf("%#02x", refused.Code))
		}
		p.opts.Log.Warn("subscription failed; retrying with backoff", attrs...)
		if !sleep(ctx, retry.next()) {
			return
		}
	}
}

func (p *Publisher) onConnect(c mqtt.Client) {
	ctx := p.setConnected(true)
	tok := c.Publish(p.opts.Node.Status(), wire.QoS, true, wire.StatusOnline)
	if !tok.WaitTimeout(p.opts.AckTimeout) || tok.Error() != nil {
		p.opts.Log.Warn("birth message not acknowledged", "topic", p.opts.Node.Status(), "err", tok.Error())
	}
	p.mu.Lock()
	subs := append([]subscription(nil), p.subs...)
	p.mu.Unlock()
	for _, s := range subs {
		go p.keepSubscribed(ctx, s)
	}
	if p.opts.OnConnect != nil {
		p.opts.OnConnect()
	}
}

func (p *Publisher) onLost(_ mqtt.Client, err error) {
	p.opts.Log.Warn("connection to broker lost; reconnecting with backoff", "broker", p.currentBroker(), "err", err)
	p.setConnected(false)
	select {
	case p.lost <- struct{}{}:
	default:
	}
}

// setConnected records a change of connection and returns the new
// connection's context, which ends with it.
func (p *Publisher) setConnected(up bool) context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up && !p.connected {
		p.opts.Log.Info("connected to broker", "broker", p.broker, "client_id", p.opts.Node.ClientID())
	}
	p.connected = up
	p.endConn()
	p.connContext, p.endConn = context.WithCancel(context.Background())
	if !up {
		p.endConn()
	}
	return p.connContext
}

// endConnection ends the goroutines of the current connection.
func (p *Publisher) endConnection() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endConn()
}
