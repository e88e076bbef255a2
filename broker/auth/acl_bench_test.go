package auth

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkAllowed is the ACL check mochi runs for every publish and every
// delivery: a bridge publishing its reading, and the reading delivered to a
// reader subscribed to the farm.
func BenchmarkAllowed(b *testing.B) {
	p := farmPolicy(b)
	for _, bc := range []struct {
		name, user, id, topic string
		write                 bool
	}{
		{"bridge-publish", "b1", "bridge:farm1:node1", "sensorfarm/farm1/node1/env", true},
		{"reader-delivery", "grafana", "g", "sensorfarm/farm1/node1/env", false},
		{"bridge-denied", "b1", "bridge:farm1:node1", "sensorfarm/farm1/node2/env", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Allowed(bc.user, bc.id, bc.topic, bc.write)
			}
		})
	}
}

// The check allocates nothing: the rules are split once, when the policy is
// built (it split both rule and topic on every check: 2 allocations).
func TestAllowedDoesNotAllocate(t *testing.T) {
	p := farmPolicy(t)
	n := testing.AllocsPerRun(100, func() {
		p.Allowed("b1", "bridge:farm1:node1", "sensorfarm/farm1/node1/env", true)
		p.Allowed("grafana", "g", "$share/g/sensorfarm/+/+/env", false)
	})
	require.Zero(t, n)
}
