package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/broker/config"
)

// waitFor bounds every wait in these tests.
const waitFor = 5 * time.Second

// logBuffer is a goroutine-safe log sink; the log is printed if the test fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	buf := new(logBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// broker is a broker running in-process.
type broker struct {
	*Server
	Log  *logBuffer
	stop func() error
}

// Stop cancels Run and returns its result; later calls return the same.
func (b *broker) Stop() error { return b.stop() }

// startBroker runs our broker on a free loopback port in demo mode with
// dataDir, and stops it at the end of the test if the test has not.
func startBroker(t *testing.T, dataDir string) *broker {
	t.Helper()
	return startBrokerWith(t, config.Config{Listen: "127.0.0.1:0", DataDir: dataDir, Demo: true})
}

// startBrokerWith runs our broker with cfg, which should listen on port 0.
func startBrokerWith(t *testing.T, cfg config.Config) *broker {
	t.Helper()
	log, buf := testLogger(t)
	srv, err := New(cfg, log)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()

	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-ran:
			case <-time.After(StopTimeout + time.Second):
				runErr = fmt.Errorf("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() { require.NoError(t, stop()) })

	require.Eventually(t, func() bool { return strings.Contains(buf.String(), "msg=listening addr="+srv.Addr()) },
		waitFor, 10*time.Millisecond, "no listening line in the log")
	return &broker{Server: srv, Log: buf, stop: stop}
}

// connect opens an MQTT 3.1.1 connection with a clean session and closes it
// at the end of the test.
func connect(t *testing.T, addr, id string) paho.Client {
	t.Helper()
	c, err := connectAs(t, addr, id, "", "")
	require.NoError(t, err)
	return c
}

// connectAs connects as user with password (none if user is empty) and
// returns the broker's refusal, if any.
func connectAs(t *testing.T, addr, id, user, password string) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetProtocolVersion(4). // MQTT 3.1.1 only: no second try with 3.1 after a refusal
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor)
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// subscribe subscribes at QoS 1 and returns the messages as they arrive,
// leaving out the broker's own gap summaries (<prefix>/$broker/...), which a
// wildcard also matches.
func subscribe(t *testing.T, c paho.Client, filter string) <-chan paho.Message {
	t.Helper()
	ch := make(chan paho.Message, 16)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		if !strings.Contains(m.Topic(), "/$broker/") && !strings.HasSuffix(m.Topic(), "/$broker/gaps") {
			ch <- m
		}
	})
	require.True(t, tok.WaitTimeout(waitFor), "subscribe timed out")
	require.NoError(t, tok.Error())
	return ch
}

// publish publishes at QoS 1 and waits for the broker's PUBACK.
func publish(t *testing.T, c paho.Client, topic, payload string, retained bool) {
	t.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	require.True(t, tok.WaitTimeout(waitFor), "publish timed out")
	require.NoError(t, tok.Error())
}

// receiveLive waits for one message published after the subscription,
// skipping copies of retained messages: a subscription that races a retained
// publish may get that message twice, live and as the subscription's retained
// copy (MQTT 3.1.1 3.3.1.3), which is not what the tests look at.
func receiveLive(t *testing.T, ch <-chan paho.Message) paho.Message {
	t.Helper()
	for {
		if m := receive(t, ch); !m.Retained() {
			return m
		}
	}
}

// receive waits for one message.
func receive(t *testing.T, ch <-chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message within", waitFor)
		return nil
	}
}

// payloads records the payloads a client received.
type payloads struct {
	mu sync.Mutex
	m  map[string]bool
}

func newPayloads() *payloads { return &payloads{m: map[string]bool{}} }

func (p *payloads) record(_ paho.Client, m paho.Message) {
	p.mu.Lock()
	p.m[string(m.Payload())] = true
	p.mu.Unlock()
}

// missing waits up to limit until every one of want has arrived, and returns
// those that have not.
func (p *payloads) missing(want []string, limit time.Duration) []string {
	var out []string
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		out = out[:0]
		p.mu.Lock()
		for _, w := range want {
			if !p.m[w] {
				out = append(out, w)
			}
		}
		p.mu.Unlock()
		if len(out) == 0 || time.Now().After(deadline) {
			return out
		}
	}
}

// recorder connects id over MQTT 3.1.1 with a persistent session, or a clean
// one, whose messages, but those of a subscription with a handler of its own,
// go to got; it is disconnected at the end of the test.
func recorder(t *testing.T, addr, id string, clean bool, got *payloads) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(waitFor).
		SetDefaultPublishHandler(got.record))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

// publishing starts n publishers, bridge-0 to bridge-<n-1>, each sending QoS
// 1 messages "<name><p>-<i>" to sensorfarm/s/<name><p>/env one at a time,
// waiting for each PUBACK, until stop; stop returns the payloads
// acknowledged.
func publishing(t *testing.T, addr string, n int, name string) (stop func() []string) {
	t.Helper()
	var stopping atomic.Bool
	var wg sync.WaitGroup
	acked := make([][]string, n)
	for p := range n {
		c := connect(t, addr, fmt.Sprintf("bridge-%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stopping.Load(); i++ {
				payload := fmt.Sprintf("%s%d-%d", name, p, i)
				if tok := c.Publish(fmt.Sprintf("sensorfarm/s/%s%d/env", name, p), 1, false, payload); tok.WaitTimeout(waitFor) && tok.Error() == nil {
					acked[p] = append(acked[p], payload)
				}
			}
		}()
	}
	return func() []string {
		stopping.Store(true)
		wg.Wait()
		return slices.Concat(acked...)
	}
}
