package e2e

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// The broker's promise (README, "What the broker promises"): a QoS 1 message
// it acknowledged reaches every persistent session subscribed to it, however
// full the session and across a SIGKILL. Each test runs the same load against
// the broker with --stock-delivery (mochi's own delivery) as its control, to
// show the loss it guards against.

// seen is the set of payloads a client received or had acknowledged.
type seen struct {
	mu sync.Mutex
	m  map[string]int
}

func newSeen() *seen { return &seen{m: map[string]int{}} }

func (s *seen) add(p string) {
	s.mu.Lock()
	s.m[p]++
	s.mu.Unlock()
}

func (s *seen) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// missing lists what acked holds that got does not.
func missing(acked, got *seen) []string {
	acked.mu.Lock()
	defer acked.mu.Unlock()
	got.mu.Lock()
	defer got.mu.Unlock()
	var out []string
	for p := range acked.m {
		if got.m[p] == 0 {
			out = append(out, p)
		}
	}
	return out
}

// persistentArchiver connects an archiver with a persistent session (as the
// farm's archiver) that records every payload under farm/#, taking delay per
// message: slower than the publishers together.
func persistentArchiver(t *testing.T, addr string, got *seen, delay time.Duration) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("archiver").SetCleanSession(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			got.add(string(m.Payload()))
			time.Sleep(delay)
		})
	// A resumed session's backlog is resent before the broker reads
	// anything, each message with a synced write in mochi's delivery: give
	// the connect time.
	o.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(60 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) { t.Logf("archiver: connection lost: %v", err) })
	c := paho.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(90*time.Second), "archiver connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	tok = c.Subscribe("farm/#", 1, nil)
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	return c
}

// settle waits until got stops growing for quiet, at most limit.
func settle(got *seen, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) {
		if n := got.len(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// burst: 50 publishers of retained QoS 1 readings (bridges replaying a backlog
// after an outage) to one persistent session that reads slower than they
// publish, with each session's room cut to 256 messages so that the burst
// overflows it in seconds. Returns what was acknowledged and what arrived.
func burst(t *testing.T, extra ...string) (acked, got *seen) {
	const publishers, each = 50, 60
	args := append([]string{"--max-inflight", "256", "--client-pending-writes", "256"}, extra...)
	_, addr := startDemoBroker(t, args...)
	got, acked = newSeen(), newSeen()
	persistentArchiver(t, addr, got, time.Millisecond)

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := pahoClient(t, paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID(fmt.Sprintf("bridge-%02d", p)))
			toks := make([]paho.Token, each)
			for i := range toks {
				toks[i] = c.Publish(fmt.Sprintf("farm/n%02d/env", p), 1, true, fmt.Sprintf("n%02d-%d", p, i))
			}
			for i, tok := range toks {
				if tok.WaitTimeout(60*time.Second) && tok.Error() == nil {
					acked.add(fmt.Sprintf("n%02d-%d", p, i))
				}
			}
		}()
	}
	wg.Wait()
	settle(got, 2*time.Second, 60*time.Second)
	t.Logf("acknowledged %d, delivered %d of %d", acked.len(), got.len(), publishers*each)
	return acked, got
}

func TestBurstToPersistentSession(t *testing.T) {
	t.Run("held, not dropped", func(t *testing.T) {
		acked, got := burst(t)
		require.Empty(t, missing(acked, got), "every acknowledged reading reached the persistent session")
		require.Equal(t, 50*60, acked.len(), "publishers were held, not refused")
	})
	t.Run("control: mochi's delivery drops", func(t *testing.T) {
		acked, got := burst(t, "--stock-delivery")
		lost := missing(acked, got)
		require.NotEmpty(t, lost, "mochi drops acknowledged readings for a full session")
		t.Logf("mochi lost %d acknowledged readings", len(lost))
	})
}

// killDuringReplay: 20 publishers (bridges replaying their spools) publish
// QoS 1 readings one at a time to a persistent archiver; the broker is
// SIGKILLed mid-stream, restarted on the same data, and the archiver resumes
// its session. Returns the acknowledged readings the archiver never got.
func killDuringReplay(t *testing.T, extra ...string) []string {
	const publishers = 20
	data := filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	args := append([]string{filepath.Join(bin, "broker"), "--listen", addr, "--demo", "--data", data, "--ops-listen", "127.0.0.1:0"}, extra...)
	broker := start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	got, acked := newSeen(), newSeen()
	arch := persistentArchiver(t, addr, got, 0)

	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := pahoClient(t, paho.NewClientOptions().AddBroker("tcp://"+addr).SetClientID(fmt.Sprintf("bridge-%02d", p)))
			for i := 0; ; i++ {
				payload := fmt.Sprintf("n%02d-%d", p, i)
				tok := c.Publish(fmt.Sprintf("farm/n%02d/env", p), 1, false, payload)
				if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !c.IsConnectionOpen() {
					return
				}
				acked.add(payload)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	broker.kill()
	wg.Wait()
	arch.Disconnect(0)

	broker = start(t, "broker", args...)
	broker.waitLog(`msg=listening `, 15*time.Second)
	persistentArchiver(t, addr, got, 0)
	settle(got, 2*time.Second, 30*time.Second)
	lost := missing(acked, got)
	t.Logf("acknowledged %d, received %d distinct, lost %d", acked.len(), got.len(), len(lost))
	broker.kill()
	return lost
}

// TestSIGKILLDuringReplay kills the broker during a replay burst to a
// persistent archiver, three times with the journal: it loses nothing
// acknowledged in any run. The control, mochi's delivery (--stock-delivery),
// is killed the same way until it loses some, at most six times: a kill
// loses only if it falls between a PUBACK and the store's copy, which most
// kills do (7 of 8 here) but not every one (a CI run saw three in a row
// lose nothing).
func TestSIGKILLDuringReplay(t *testing.T) {
	const runs, controlRuns = 3, 6
	for i := range runs {
		lost := killDuringReplay(t)
		require.Empty(t, lost, "run %d: acknowledged readings lost with the journal", i)
	}
	stock, kills := 0, 0
	for kills < controlRuns && stock == 0 {
		stock += len(killDuringReplay(t, "--stock-delivery"))
		kills++
	}
	t.Logf("lost over %d kills with mochi's delivery: %d", kills, stock)
	require.Positive(t, stock, "the control: mochi acknowledges before it stores the archiver's copy")
}
