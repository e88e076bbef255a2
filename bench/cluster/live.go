package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/sensorfarm/sensorfarm/bench/fleet"
	"github.com/sensorfarm/sensorfarm/bench/load"
	"github.com/sensorfarm/sensorfarm/wire"
)

// liveWatch tells when each bridge publishes live again after a kill, apart
// from when the archiver gets it: one QoS 0 subscriber with a clean session
// on every server. nats-server hands a QoS 0 subscriber each message as it
// is published, while the archiver's QoS 1 deliveries come through
// JetStream consumers, which wait for a new leader when theirs died.
type liveWatch struct {
	clients []mqtt.Client

	mu        sync.Mutex
	mark      time.Time
	firstLive map[string]time.Time // node → first live reading sampled after mark
}

// watchLive connects a subscriber to each of urls as the reader; each
// subscribes again on every reconnection (a restarted server).
func watchLive(ctx context.Context, env *setup, users *fleet.Users, urls []string) (*liveWatch, error) {
	w := &liveWatch{firstLive: map[string]time.Time{}}
	filter := wire.Node{Prefix: wire.DefaultPrefix, Site: users.Site, Node: "+"}.Live(wire.StreamEnv)
	for i, u := range urls {
		o := mqtt.NewClientOptions().SetClientID(fmt.Sprintf("bench-live-%d", i)).SetUsername(users.Reader.Name).
			SetPassword(users.Reader.Password).SetProtocolVersion(4).SetCleanSession(true).SetTLSConfig(env.tlsConfig).
			SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).SetConnectTimeout(load.ConnectTimeout).
			SetOrderMatters(false).AddBroker(u).
			SetOnConnectHandler(func(c mqtt.Client) { c.Subscribe(filter, 0, w.take) })
		c := mqtt.NewClient(o)
		w.clients = append(w.clients, c)
		if err := load.WaitToken(ctx, c.Connect(), load.ConnectTimeout); err != nil {
			w.stop()
			return nil, fmt.Errorf("live subscriber on %s: %w", u, err)
		}
	}
	return w, nil
}

func (w *liveWatch) take(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	var r wire.Env
	if json.Unmarshal(m.Payload(), &r) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.firstLive[r.Node]; !ok && !w.mark.IsZero() && r.TS.After(w.mark) {
		w.firstLive[r.Node] = now
	}
}

// markFailover starts the watch for readings sampled after t.
func (w *liveWatch) markFailover(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mark, w.firstLive = t, map[string]time.Time{}
}

// firstLiveAfterMark returns, for each node that has one, when a subscriber
// first got a live reading of it sampled after the mark.
func (w *liveWatch) firstLiveAfterMark() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.firstLive)
}

func (w *liveWatch) stop() {
	for _, c := range w.clients {
		c.Disconnect(100)
	}
}
