package gaps

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/wire"
)

// noopHook is the baseline: a hook that asks for OnPublished and does nothing.
type noopHook struct{ mqtt.HookBase }

func (*noopHook) ID() string                               { return "noop" }
func (*noopHook) Provides(b byte) bool                     { return b == mqtt.OnPublished }
func (*noopHook) OnPublished(*mqtt.Client, packets.Packet) {}

// farm is a workload as the farm sends it: benchNodes nodes with an env and a
// gps stream each, one reading per stream in turn. In every ten readings of a
// stream one is lost live and replayed on backlog right after the next live
// one: 80% of the readings advance by one, 10% open a gap, 10% fill one.
// Each payload is written into one buffer just before it is dispatched, as
// mochi hands the hook a packet it has just read: both hooks pay for that
// write, and neither reads cold memory.
type farm struct {
	topics [][2]string // per stream: live, backlog
	head   [][]byte    // per stream: the payload up to seq's value
	tail   [][]byte    // per stream: the payload after it
	buf    []byte
}

const benchNodes = 1000

func newFarm() *farm {
	f := &farm{}
	for i := range benchNodes {
		n := wire.Node{Prefix: wire.DefaultPrefix, Site: "site", Node: fmt.Sprintf("pizero-%04d", i)}
		for _, s := range []string{wire.StreamEnv, wire.StreamGPS} {
			f.topics = append(f.topics, [2]string{n.Live(s), n.Backlog(s)})
			p, seq := envPayload, `"seq":1842`
			if s == wire.StreamGPS {
				p, seq = gpsPayload, `"seq":977`
			}
			p = strings.Replace(p, `"node":"pizero-01"`, fmt.Sprintf(`"node":%q`, n.Node), 1)
			head, tail, _ := strings.Cut(p, seq)
			f.head = append(f.head, []byte(head+`"seq":`))
			f.tail = append(f.tail, []byte(tail))
		}
	}
	return f
}

// packet returns message i of the workload.
func (f *farm) packet(i int) packets.Packet {
	s, k := i%len(f.topics), i/len(f.topics)
	cycle, r := uint64(k/10), k%10
	seq, topic := cycle*10+uint64(r)+1, f.topics[s][0]
	switch r {
	case 8:
		seq = cycle*10 + 10 // 9 is lost live...
	case 9:
		seq, topic = cycle*10+9, f.topics[s][1] // ...and replayed on backlog
	}
	f.buf = append(f.buf[:0], f.head[s]...)
	f.buf = strconv.AppendUint(f.buf, seq, 10)
	f.buf = append(f.buf, f.tail[s]...)
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     f.buf,
	}
}

// BenchmarkOnPublished measures what the gaps hook adds to every accepted
// publish, dispatched through mochi's Hooks as the server does, against a
// no-op hook in the same run (x-noop is the ratio of the two ns/op). The
// first reading of every stream is sent before the timer starts, so the
// figures are the steady state of a farm of 1000 nodes.
func BenchmarkOnPublished(b *testing.B) {
	cl := &mqtt.Client{}
	var ref float64
	for _, c := range []struct {
		name string
		hook func() mqtt.Hook
	}{
		{"noop", func() mqtt.Hook { return new(noopHook) }},
		{"gaps", func() mqtt.Hook { return New(Options{}) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFarm()
			hook := c.hook()
			hs := &mqtt.Hooks{Log: discard()}
			if err := hs.Add(hook, nil); err != nil {
				b.Fatal(err)
			}
			for i := range f.topics {
				hs.OnPublished(cl, f.packet(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				hs.OnPublished(cl, f.packet(len(f.topics)+i))
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if c.name == "noop" {
				ref = ns
			} else if ref > 0 {
				b.ReportMetric(ns/ref, "x-noop")
			}
			if h, ok := hook.(*Hook); ok {
				if t := h.Snapshot().Total(); t.Missing > uint64(len(f.topics)) || t.Resets != 0 || t.Duplicates != 0 {
					b.Fatalf("unexpected counts %+v", t)
				}
			}
		})
	}
}

// BenchmarkReadSeq compares the scan with decoding a one-field struct with
// encoding/json, the cheapest decode of the payload, on a gps reading as the
// bridge writes it (seq is the third key) and with its keys sorted (seq
// among the last).
func BenchmarkReadSeq(b *testing.B) {
	var m map[string]any
	if err := json.Unmarshal([]byte(gpsPayload), &m); err != nil {
		b.Fatal(err)
	}
	sorted, _ := json.Marshal(m) // encoding/json sorts map keys
	for _, p := range []struct {
		name    string
		payload []byte
	}{{"contract", []byte(gpsPayload)}, {"sorted-keys", sorted}} {
		var ref float64
		b.Run(p.name+"/json-struct", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				var h struct {
					Seq uint64 `json:"seq"`
				}
				if err := json.Unmarshal(p.payload, &h); err != nil || h.Seq != 977 {
					b.Fatal(err)
				}
			}
			ref = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		})
		b.Run(p.name+"/scan", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if v, ok := readSeq(p.payload); !ok || v != 977 {
					b.Fatal("no seq")
				}
			}
			if ref > 0 {
				b.ReportMetric(ref/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x-faster")
			}
		})
	}
}
