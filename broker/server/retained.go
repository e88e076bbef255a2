package server

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/broker/auth"
	"github.com/sensorfarm/sensorfarm/broker/metrics"
	"github.com/sensorfarm/sensorfarm/wire"
)

// nodeLimits bound what one bridge may make the broker hold. mochi keeps every
// retained message in memory and loads them all at start: unbounded, a bridge
// (or a leaked bridge password) could publish retained messages until the
// broker no longer starts within its memory limit, at every restart. A bridge
// needs about 35 retained messages of a few hundred bytes (status, health,
// env, gps, the per-field topics, its Home Assistant discovery), and no
// message above a few KiB.
type nodeLimits struct {
	// count and bytes bound the retained messages under one node's topics
	// (its <prefix>/<site>/<node>/ subtree and its discovery topics).
	count, bytes int
	// packet bounds a bridge's message payload.
	packet int
}

var defaultNodeLimits = nodeLimits{count: 64, bytes: 32 << 10, packet: 8 << 10}

// verdict is what becomes of one bridge publish.
type verdict int

const (
	publishAsIs verdict = iota
	// publishNotRetained: delivered to the subscribers (and the archive),
	// but not kept as retained: the node's retained budget is spent.
	publishNotRetained
	// refuseTooLarge: acknowledged and dropped, counted: no bridge sends
	// such a message, and MQTT 3.1.1 has no negative acknowledgement that
	// would not make the bridge resend it forever.
	refuseTooLarge
)

// decide applies l to a publish of size bytes on topic, retained or not, when
// the node already holds the retained messages held (topic -> payload size).
func (l nodeLimits) decide(topic string, size int, retain bool, held map[string]int) verdict {
	switch {
	case size > l.packet:
		return refuseTooLarge
	case !retain || size == 0: // an empty retained payload deletes
		return publishAsIs
	}
	if count, bytes := after(topic, size, held); count > l.count || bytes > l.bytes {
		return publishNotRetained
	}
	return publishAsIs
}

// after is the count and bytes of a node's retained messages once a message
// of size on topic replaces the one held there, if any.
func after(topic string, size int, held map[string]int) (count, bytes int) {
	count, bytes = 1, size
	for t, n := range held {
		if t != topic {
			count++
			bytes += n
		}
	}
	return count, bytes
}

// nodeLimitHook applies nodeLimits to the bridges' publishes.
type nodeLimitHook struct {
	mqtt.HookBase
	limits nodeLimits
	prefix string
	policy func() *auth.Policy
	topics *mqtt.TopicsIndex
	counts *metrics.NodeLimitCounter

	mu       sync.Mutex
	logged   map[string]time.Time // node -> when its limit was last logged
	headroom map[string]headroom  // node -> its headroom
}

func (*nodeLimitHook) ID() string { return "sf-node-limits" }

func (*nodeLimitHook) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish runs after the ACL allowed the publish.
func (h *nodeLimitHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	u, ok := h.policy().User(string(cl.Properties.Username))
	if !ok || u.Role != auth.RoleBridge {
		return pk, nil
	}
	n := wire.Node{Prefix: h.prefix, Site: u.Site, Node: u.Node}
	size := len(pk.Payload)
	var held map[string]int
	if pk.FixedHeader.Retain && size > 0 && size <= h.limits.packet {
		if h.fits(n.Root(), pk.TopicName, size) {
			return pk, nil
		}
		held = map[string]int{}
		for _, f := range []string{n.Root() + "/#", wire.HADiscoveryPrefix + "/+/" + n.DiscoveryID() + "/#"} {
			for _, m := range h.topics.Messages(f) {
				held[m.TopicName] = len(m.Payload)
			}
		}
	}
	switch h.limits.decide(pk.TopicName, size, pk.FixedHeader.Retain, held) {
	case publishAsIs:
		if held != nil {
			h.scanned(n.Root(), pk.TopicName, size, held)
		}
	case publishNotRetained:
		h.counts.NotRetained()
		h.warn(n, "a bridge's retained messages are at their limit: this one is delivered but not retained",
			"topic", pk.TopicName, "held", len(held), "max_count", h.limits.count, "max_bytes", h.limits.bytes)
		pk.FixedHeader.Retain = false
	case refuseTooLarge:
		h.counts.TooLarge()
		h.warn(n, "dropped a bridge's message larger than a bridge may send", "topic", pk.TopicName,
			"bytes", size, "max_bytes", h.limits.packet)
		return pk, packets.CodeSuccessIgnore
	}
	return pk, nil
}

// headroomFor is how long a node's headroom is trusted: retained messages
// under its topics from other users (an operator's) are not counted in it,
// so it is recounted now and then.
const headroomFor = 10 * time.Second

// headroom is what a node's retained messages may still grow by, in bytes,
// before they are counted again: the byte limit less their total at the last
// count, less every growth since. Shrinking is not credited, so the total
// stays within the limit without a count; the count (a walk of the node's
// topics) was 7% of the broker's CPU on the farm's workload when it ran for
// every reading a few bytes longer than the last.
type headroom struct {
	bytes   int
	counted time.Time
}

// fits reports whether a retained message of size on topic, which the node
// holds already, keeps it within its limits without a count.
func (h *nodeLimitHook) fits(node, topic string, size int) bool {
	old, ok := h.topics.Retained.Get(topic)
	if !ok {
		return false // one topic more: counted
	}
	grow := size - len(old.Payload)
	if grow <= 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.headroom[node]
	if !ok || grow > r.bytes || time.Since(r.counted) > headroomFor {
		return false
	}
	r.bytes -= grow
	h.headroom[node] = r
	return true
}

// scanned records a node's headroom after a count (held) found room for a
// message of size on topic.
func (h *nodeLimitHook) scanned(node, topic string, size int, held map[string]int) {
	_, total := after(topic, size, held)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.headroom == nil {
		h.headroom = map[string]headroom{}
	}
	h.headroom[node] = headroom{bytes: h.limits.bytes - total, counted: time.Now()}
}

// warn logs at most once a minute per node.
func (h *nodeLimitHook) warn(n wire.Node, msg string, args ...any) {
	h.mu.Lock()
	now := time.Now()
	if h.logged == nil {
		h.logged = map[string]time.Time{}
	}
	first := now.Sub(h.logged[n.Root()]) >= time.Minute
	if first {
		h.logged[n.Root()] = now
	}
	h.mu.Unlock()
	if first {
		h.Log.Warn(msg, append([]any{"node", n.Root()}, args...)...)
	}
}
