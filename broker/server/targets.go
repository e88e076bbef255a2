package server

import (
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// subscriberCache remembers, per topic, the clients subscribed to it at QoS 1
// or 2, for durableHook.targets. mochi's index walks the topic tree and
// builds its maps at every call: 7% of the broker's CPU on the farm's
// workload, for the same topics over and over. Any change of a subscription
// clears it (changed); a lookup that raced a change is not kept (gen). The
// clients' state (connected, persistent) is looked up at every use, not
// cached.
type subscriberCache struct {
	mu      sync.Mutex
	gen     uint64
	byTopic map[string][]string
}

// maxCachedTopics bounds the cache: a farm of 1,000 nodes has about 35,000
// topics.
const maxCachedTopics = 100_000

// subscribers are topic's QoS 1/2 subscribers' client ids; read only.
func (c *subscriberCache) subscribers(index *mqtt.TopicsIndex, topic string) []string {
	c.mu.Lock()
	ids, ok := c.byTopic[topic]
	gen := c.gen
	c.mu.Unlock()
	if ok {
		return ids
	}
	for id, sub := range index.Subscribers(topic).Subscriptions {
		if sub.Qos > 0 {
			ids = append(ids, id)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		if c.byTopic == nil || len(c.byTopic) >= maxCachedTopics {
			c.byTopic = map[string][]string{}
		}
		c.byTopic[topic] = ids
	}
	return ids
}

// changed: a subscription was added, changed or removed.
func (c *subscriberCache) changed() {
	c.mu.Lock()
	c.gen++
	clear(c.byTopic)
	c.mu.Unlock()
}
