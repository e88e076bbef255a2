package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusals is what the auth hook reports its refusals through. It must be
// called by the hook that decides, at the moment it refuses, and must not
// change any decision.
//
// Why not count refusals from a separate hook: mochi's OnConnectAuthenticate
// and OnACLCheck allow as soon as one hook that provides them returns true, so
// a counting hook providing them would either change decisions or see none of
// the outcome; and the events mochi fires around a refusal do not tell all of
// them apart: a failed authentication fires no hook event at all (only the
// CONNACK's OnPacketSent), a denied QoS 0 publish is dropped silently, and an
// MQTT 3.1.1 client's denied subscription shows as the generic failure code
// 0x80 in OnSubscribed.
type Refusals interface {
	// AuthFailed counts a connection refused for its credentials, client
	// ID or will.
	AuthFailed()
	// AuthBusy counts a connection refused "server busy" because no
	// password check slot was free in time.
	AuthBusy()
	// ACLDenied counts a denied access: write is a publish; !write is a
	// subscription or a delivery to a subscriber.
	ACLDenied(write bool)
}

// RefusalCounter counts refusals; it is a Refusals and a Collector. The zero
// value is ready to use and safe for concurrent use.
type RefusalCounter struct {
	auth, busy, write, read atomic.Uint64
}

var _ Refusals = (*RefusalCounter)(nil)

// NewRefusalCounter returns a counter at zero.
func NewRefusalCounter() *RefusalCounter { return new(RefusalCounter) }

// AuthFailed implements Refusals.
func (c *RefusalCounter) AuthFailed() { c.auth.Add(1) }

// AuthBusy implements Refusals.
func (c *RefusalCounter) AuthBusy() { c.busy.Add(1) }

// ACLDenied implements Refusals.
func (c *RefusalCounter) ACLDenied(write bool) {
	if write {
		c.write.Add(1)
	} else {
		c.read.Add(1)
	}
}

var (
	authFailuresDesc = prometheus.NewDesc(fqName("auth_failures_total"),
		"Connections refused by authentication.", nil, nil)
	authBusyDesc = prometheus.NewDesc(fqName("auth_busy_total"),
		"Connections refused \"server busy\": no password check slot was free in time.", nil, nil)
	aclDenialsDesc = prometheus.NewDesc(fqName("acl_denials_total"),
		"Accesses denied by the ACL: write (publish) or read (subscription or delivery).", []string{"access"}, nil)
)

// Describe implements the descriptors check of NewRegistry.
func (c *RefusalCounter) Describe(ch chan<- *prometheus.Desc) {
	ch <- authFailuresDesc
	ch <- authBusyDesc
	ch <- aclDenialsDesc
}

// Update implements Collector.
func (c *RefusalCounter) Update(ch chan<- prometheus.Metric) error {
	ch <- prometheus.MustNewConstMetric(authFailuresDesc, prometheus.CounterValue, float64(c.auth.Load()))
	ch <- prometheus.MustNewConstMetric(authBusyDesc, prometheus.CounterValue, float64(c.busy.Load()))
	ch <- prometheus.MustNewConstMetric(aclDenialsDesc, prometheus.CounterValue, float64(c.write.Load()), "write")
	ch <- prometheus.MustNewConstMetric(aclDenialsDesc, prometheus.CounterValue, float64(c.read.Load()), "read")
	return nil
}
