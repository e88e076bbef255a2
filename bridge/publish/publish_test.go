package publish_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/publish"
	"github.com/sensorfarm/sensorfarm/wire"
)

// serve runs mochi on a free loopback port with the given hooks (AllowHook
// when none) and returns its address, the server, and a function that stops
// it (also called when the test ends).
func serve(t *testing.T, hooks ...mqtt.Hook) (string, *mqtt.Server, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if len(hooks) == 0 {
		hooks = append(hooks, new(auth.AllowHook))
	}
	for _, h := range hooks {
		require.NoError(t, s.AddHook(h, nil))
	}
	require.NoError(t, s.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})))
	require.NoError(t, s.Serve())
	stop := sync.OnceFunc(func() { _ = s.Close() })
	t.Cleanup(stop)
	return addr, s, stop
}

// refuseSubscriptions is an ACL as data: it lets everyone connect and
// publish, and refuses the first `times` subscriptions to filter, as a
// clustered broker does whose stream leader is being elected.
type refuseSubscriptions struct {
	auth.AllowHook
	filter string
	times  atomic.Int32
}

func (h *refuseSubscriptions) ID() string { return "refuse-subscriptions" }

func (h *refuseSubscriptions) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return write || topic != h.filter || h.times.Add(-1) < 0
}

// refuseConnections refuses every CONNECT (a wrong password, a full broker).
type refuseConnections struct{ auth.AllowHook }

func (h *refuseConnections) ID() string { return "refuse-connections" }

func (h *refuseConnections) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return false }

// logBuffer collects a Publisher's log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(l.String(), -1))
}

func run(t *testing.T, o publish.Options) (*publish.Publisher, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	o.Log = slog.New(slog.NewTextHandler(logs, nil))
	o.Node = node
	p := publish.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("publisher's log:\n%s", logs)
		}
	})
	return p, logs
}

// TestSubscriptionRefusedIsRetried: a subscription the broker refuses is
// logged with the SUBACK's return code, not a guess at its cause, and made
// again with backoff until the broker takes it; messages then arrive.
func TestSubscriptionRefusedIsRetried(t *testing.T) {
	acl := &refuseSubscriptions{filter: wire.HAStatusTopic}
	acl.times.Store(2)
	addr, srv, _ := serve(t, acl)
	got := make(chan string, 1)
	p, logs := run(t, publish.Options{Brokers: brokers(t, "tcp://"+addr), BaseBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	p.Subscribe(wire.HAStatusTopic, func(b []byte) {
		select {
		case got <- string(b):
		default:
		}
	})
	require.Eventually(t, func() bool { return logs.count(`subscribed after retrying`) == 1 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 2, logs.count(`msg="subscription failed; retrying with backoff" filter=homeassistant/status attempt=\d .*suback_code=0x80`), "each refusal logged with its code")
	require.Zero(t, logs.count(`ACL`), "no guess at the cause")
	require.NoError(t, srv.Publish(wire.HAStatusTopic, []byte("online"), false, 1))
	select {
	case m := <-got:
		require.Equal(t, "online", m)
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription made on retry delivers nothing")
	}
}

// TestSubscribesAtQoS0: the broker holds the bridge's subscription at QoS 0
// (publish.SubscribeQoS says why), and a message published at QoS 1 still
// arrives.
func TestSubscribesAtQoS0(t *testing.T) {
	addr, srv, _ := serve(t)
	got := make(chan string, 1)
	p, _ := run(t, publish.Options{Brokers: brokers(t, "tcp://"+addr)})
	p.Subscribe(wire.HAStatusTopic, func(b []byte) {
		select {
		case got <- string(b):
		default:
		}
	})
	var sub packets.Subscription
	require.Eventually(t, func() bool {
		cl, ok := srv.Clients.Get(node.ClientID())
		if !ok {
			return false
		}
		sub, ok = cl.State.Subscriptions.Get(wire.HAStatusTopic)
		return ok
	}, 10*time.Second, 20*time.Millisecond, "the bridge subscribes")
	require.Equal(t, byte(0), sub.Qos)
	require.NoError(t, srv.Publish(wire.HAStatusTopic, []byte("online"), false, 1))
	select {
	case m := <-got:
		require.Equal(t, "online", m)
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription delivers nothing")
	}
}

// TestConnectFailsOverInOrder: the brokers are tried in order; one that is
// down and one that refuses the connection pass the turn to the next; when
// the broker in use goes away, the next one that answers takes over.
func TestConnectFailsOverInOrder(t *testing.T) {
	down := freeAddr(t)
	refusing, _, _ := serve(t, new(refuseConnections))
	first, _, stopFirst := serve(t)
	second, _, _ := serve(t)
	list := "tcp://" + down + ",tcp://" + refusing + ",tcp://" + first + ",tcp://" + second
	_, logs := run(t, publish.Options{Brokers: brokers(t, list), BaseBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	require.Eventually(t, func() bool { return logs.count(`msg="connected to broker" broker=tcp://`+regexp.QuoteMeta(first)) == 1 }, 20*time.Second, 20*time.Millisecond)

	stopFirst()
	require.Eventually(t, func() bool {
		return logs.count(`msg="connected to broker" broker=tcp://`+regexp.QuoteMeta(second)) == 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, logs.count(`connection to broker lost; reconnecting with backoff" broker=tcp://`+regexp.QuoteMeta(first)))
}

// TestReconnectWaitsAreDrawnFromTheSchedule: while no broker answers, each
// wait between rounds is drawn from Rand with the doubling, capped ceiling
// (full jitter), not slept as a fixed step.
func TestReconnectWaitsAreDrawnFromTheSchedule(t *testing.T) {
	var mu sync.Mutex
	var ceilings []time.Duration
	draw := func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		ceilings = append(ceilings, time.Duration(n))
		return n / 2
	}
	run(t, publish.Options{Brokers: brokers(t, "tcp://"+freeAddr(t)), BaseBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Rand: draw})
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(ceilings) >= 5 }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	ms := time.Millisecond
	require.Equal(t, []time.Duration{10 * ms, 20 * ms, 40 * ms, 40 * ms, 40 * ms}, ceilings[:5])
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// stallPublishes holds every PUBLISH in the broker until released, as a
// broker does whose store is slow: no PUBACK comes meanwhile.
type stallPublishes struct {
	auth.AllowHook
	release chan struct{}
}

func (h *stallPublishes) ID() string { return "stall-publishes" }

func (h *stallPublishes) Provides(b byte) bool {
	return b == mqtt.OnPublish || h.AllowHook.Provides(b)
}

func (h *stallPublishes) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if strings.HasPrefix(pk.TopicName, node.Root()+"/") && pk.TopicName != node.Status() {
		<-h.release
	}
	return pk, nil
}
