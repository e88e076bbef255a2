// Package gaps finds lost and repeated readings at the broker. Every reading
// carries seq, per node and stream, starting at 1 and growing by exactly one
// per reading (see wire.Header), so the broker can see what no MQTT broker
// sees by itself: which readings never arrived, which a backlog replay
// delivered late, and which came twice.
//
// Hook is a mochi hook that watches every accepted publish on
// <prefix>/<site>/<node>/<stream> and <prefix>/<site>/<node>/backlog/<stream>
// for the reading streams (env, gps), reads seq from the payload and keeps,
// per site, node and stream: the highest seq, readings received, seq numbers
// missing, duplicates, resets of the numbering, stale and invalid readings.
// Snapshot returns them; RunSummaries publishes them as retained JSON under
// <prefix>/$broker/gaps.
//
// # What is counted
//
// The broker tracks a window of seq numbers per stream, from the first
// reading it sees (after it starts) to the highest:
//
//   - A reading one above the highest advances it. A jump from 5 to 9 opens
//     the gap 6..8: 3 missing.
//   - A reading inside a gap fills it: missing goes down by one. This is how a
//     backlog replay, which the bridge sends after a reconnection, oldest
//     first, makes up for what the live topic lost.
//   - A reading already seen (inside the window, not in a gap) is a duplicate:
//     delivery is at least once.
//   - A live reading (not backlog) that goes back below the highest, not
//     flagged DUP and not filling a gap, is a reset: the bridge restarted its
//     numbering (its spool was deleted, so it begins again at 1). The bridge
//     never goes back on the live topic otherwise: its spool owns seq and never
//     reuses a number, and older readings are replayed on backlog. A reset
//     counts once in resets; the gaps still open can no longer be filled (the
//     readings went with the spool) and stay counted missing; the window
//     restarts at the new seq.
//   - A reading below the window is stale: the broker cannot tell whether it
//     is a duplicate or a loss made good. This is the backlog older than the
//     first reading the broker saw, after a broker restart.
//   - A message on a reading topic without a usable seq (not a positive JSON
//     integer) is invalid. An empty payload (a retained message being
//     cleared) is not a reading and is ignored.
//
// Limits, by design: counters start at zero when the broker starts (the
// summaries say since when); a restarted bridge that was offline with its
// spool deleted, whose new backlog arrives before its first live reading, has
// those backlog readings counted against the old numbering until the live
// one shows the reset; a reset whose new seq lands above the old highest
// looks like a jump.
//
// # Bounds
//
// Each stream keeps at most MaxGaps open gaps (default 64; a healthy bridge
// has one or two while it replays). Past that, the lowest gap is forgotten:
// its numbers stay counted missing, the window starts above it, and a late
// reading that would have filled it is counted stale. A stream's state is
// then at most about 2 KiB. At most MaxStreams streams are tracked (default
// 10000: 1000 nodes × 2 streams with room to spare); readings of further
// streams are only counted as untracked, so a client publishing under many
// invented names cannot grow the broker's memory.
package gaps

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/sensorfarm/sensorfarm/wire"
)

// Defaults of Options.
const (
	DefaultMaxGaps    = 64
	DefaultMaxStreams = 10000
)

// Options configure a Hook. Zero fields take the defaults.
type Options struct {
	// Prefix is the first topic level: wire.DefaultPrefix if empty.
	Prefix string
	// MaxGaps bounds the open gaps kept per stream: DefaultMaxGaps if 0.
	MaxGaps int
	// MaxStreams bounds the streams tracked: DefaultMaxStreams if 0.
	MaxStreams int
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = wire.DefaultPrefix
	}
	if o.MaxGaps <= 0 {
		o.MaxGaps = DefaultMaxGaps
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	return o
}

// key names a stream. Lookups use substrings of the topic (no allocation);
// a new stream's key is cloned so that it does not pin the packet's memory.
type key struct{ site, node, stream string }

// Hook counts gaps, fills, duplicates and resets per stream. It provides only
// OnPublished: mochi calls it once for every publish it accepted (after the
// ACL check, after every hook's OnPublish, once the message went to the
// subscribers), from the publishing client's goroutine. OnPublish would see
// publishes that a later hook still rejects, and would sit in the chain that
// may modify or refuse a packet; OnPublished only observes.
//
// All methods are safe for concurrent use.
type Hook struct {
	mqtt.HookBase

	opts  Options
	pfx   string // Prefix + "/"
	since time.Time
	now   func() time.Time

	mu      sync.RWMutex
	streams map[key]*stream

	untracked atomic.Uint64
	gen       atomic.Uint64 // bumped by every counted message

	pub summaryState
}

var _ mqtt.Hook = (*Hook)(nil)

// New returns a hook ready to be added to the server: srv.AddHook(h, nil).
func New(opts Options) *Hook {
	h := &Hook{now: time.Now}
	h.configure(opts)
	return h
}

func (h *Hook) configure(opts Options) {
	h.opts = opts.withDefaults()
	h.pfx = h.opts.Prefix + "/"
	h.since = h.now()
	h.streams = make(map[key]*stream)
}

// ID names the hook in mochi's logs.
func (*Hook) ID() string { return "sensorfarm-gaps" }

// Provides says the hook handles OnPublished only.
func (*Hook) Provides(b byte) bool { return b == mqtt.OnPublished }

// Init is called by mochi's AddHook. config is nil (keep New's options) or
// *Options (replace them; only before any message). Any other type is
// mqtt.ErrInvalidConfigType.
func (h *Hook) Init(config any) error {
	switch o := config.(type) {
	case nil:
	case *Options:
		if o == nil {
			return mqtt.ErrInvalidConfigType
		}
		h.mu.Lock()
		h.configure(*o)
		h.mu.Unlock()
	default:
		return mqtt.ErrInvalidConfigType
	}
	return nil
}

// OnPublished counts one accepted publish. The broker's own inline publishes
// (the summaries) and packets a hook told mochi to ignore are skipped.
func (h *Hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	if pk.Ignore || (cl != nil && cl.Net.Inline) {
		return
	}
	h.observe(pk.TopicName, pk.Payload, pk.FixedHeader.Dup)
}

// observe counts one message; retransmit is MQTT's DUP flag.
func (h *Hook) observe(topic string, payload []byte, retransmit bool) {
	site, node, name, live, ok := h.parse(topic)
	if !ok || len(payload) == 0 {
		return
	}
	s := h.lookup(site, node, name)
	if s == nil {
		h.untracked.Add(1)
		return
	}
	seq, ok := readSeq(payload)
	s.mu.Lock()
	if ok {
		s.observe(seq, live, retransmit, h.opts.MaxGaps)
	} else {
		s.Invalid++
	}
	s.mu.Unlock()
	h.gen.Add(1)
}

// parse splits <prefix>/<site>/<node>/<stream> (live) and
// <prefix>/<site>/<node>/backlog/<stream> for the reading streams.
func (h *Hook) parse(topic string) (site, node, stream string, live, ok bool) {
	rest, found := strings.CutPrefix(topic, h.pfx)
	if !found {
		return "", "", "", false, false
	}
	site, rest, found = strings.Cut(rest, "/")
	if !found || site == "" {
		return "", "", "", false, false
	}
	node, rest, found = strings.Cut(rest, "/")
	if !found || node == "" {
		return "", "", "", false, false
	}
	live = true
	if b, isBacklog := strings.CutPrefix(rest, "backlog/"); isBacklog {
		rest, live = b, false
	}
	switch rest {
	case wire.StreamEnv:
		return site, node, wire.StreamEnv, live, true
	case wire.StreamGPS:
		return site, node, wire.StreamGPS, live, true
	}
	return "", "", "", false, false
}

// lookup returns the stream's state, creating it if the names are valid and
// there is room; nil otherwise.
func (h *Hook) lookup(site, node, name string) *stream {
	k := key{site, node, name}
	h.mu.RLock()
	s := h.streams[k]
	h.mu.RUnlock()
	if s != nil {
		return s
	}
	if wire.ValidateName("site", site) != nil || wire.ValidateName("node", node) != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s = h.streams[k]; s != nil {
		return s
	}
	if len(h.streams) >= h.opts.MaxStreams {
		return nil
	}
	s = &stream{since: h.now()}
	h.streams[key{strings.Clone(site), strings.Clone(node), name}] = s
	return s
}

// Stats are one stream's counters.
type Stats struct {
	Site   string
	Node   string
	Stream string
	// Since is when the broker first saw the stream.
	Since time.Time
	// LastSeq is the highest seq of the current numbering.
	LastSeq uint64
	// OpenGaps is the number of gaps still open (at most MaxGaps).
	OpenGaps int
	Counts
}

// Snapshot is the state of every tracked stream at one moment.
type Snapshot struct {
	// Since is when the broker began counting.
	Since time.Time
	// Streams are sorted by site, node and stream.
	Streams []Stats
	// Untracked counts readings of streams beyond MaxStreams, or whose site
	// or node is not a valid name.
	Untracked uint64
}

// Total sums the counters of every stream.
func (s Snapshot) Total() Counts {
	var t Counts
	for _, st := range s.Streams {
		t.add(st.Counts)
	}
	return t
}

// Snapshot returns the counters of every stream, sorted.
func (h *Hook) Snapshot() Snapshot {
	h.mu.RLock()
	snap := Snapshot{Since: h.since, Streams: make([]Stats, 0, len(h.streams))}
	for k, s := range h.streams {
		s.mu.Lock()
		snap.Streams = append(snap.Streams, Stats{
			Site: k.site, Node: k.node, Stream: k.stream,
			Since: s.since, LastSeq: s.last, OpenGaps: len(s.gaps), Counts: s.Counts,
		})
		s.mu.Unlock()
	}
	h.mu.RUnlock()
	snap.Untracked = h.untracked.Load()
	sort.Slice(snap.Streams, func(i, j int) bool {
		a, b := &snap.Streams[i], &snap.Streams[j]
		if a.Site != b.Site {
			return a.Site < b.Site
		}
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		return a.Stream < b.Stream
	})
	return snap
}
