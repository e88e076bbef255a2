package gaps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/sensorfarm/sensorfarm/wire"
)

// The summaries live under <prefix>/$broker/gaps:
//
//   - <prefix>/$broker/gaps: the farm's totals (FarmSummary), republished when
//     any counter changed, at most once per interval.
//   - <prefix>/$broker/gaps/<stream>/<site>/<node>: one stream (StreamSummary),
//     published when the broker first sees the stream and then whenever one of
//     its loss counters (missing, duplicates, resets, stale, invalid) changes,
//     at most once per interval. Received and last_seq are as of ts: they
//     change with every reading, and republishing every stream's retained
//     message every interval would cost the store one synced write each.
//
// Both are retained, QoS 1, flat JSON (Grafana's MQTT data source makes a field
// of each top-level key). A reader subscribed to <prefix>/# receives them: MQTT
// keeps '$' topics away from wildcards only when the topic name begins with
// '$' ([MQTT-4.7.2-1]); <prefix>/$broker/... begins with the prefix, and mochi
// checks exactly the first byte. Bridges cannot write there: their ACL allows
// <prefix>/<site>/<node>/#, and "$broker" is not a valid site name. The stream
// comes before site and node so that no level matched by the contract's
// filters (<prefix>/+/+/env, <prefix>/+/+/backlog/#) can be a user-chosen
// name: a site called "backlog" cannot make a summary look like a reading.
const summaryLevel = "$broker/gaps"

// SummaryTopic is the farm summary's topic.
func SummaryTopic(prefix string) string { return prefix + "/" + summaryLevel }

// StreamSummaryTopic is one stream's summary topic.
func StreamSummaryTopic(prefix, stream, site, node string) string {
	return prefix + "/" + summaryLevel + "/" + stream + "/" + site + "/" + node
}

// DefaultSummaryInterval is how often RunSummaries looks for changes.
const DefaultSummaryInterval = 30 * time.Second

// FarmSummary is the payload of SummaryTopic.
type FarmSummary struct {
	// TS is when the summary was made.
	TS wire.Time `json:"ts"`
	// Since is when the broker began counting (its start).
	Since   wire.Time `json:"since"`
	Streams int       `json:"streams"`
	Counts
	Untracked uint64 `json:"untracked"`
}

// StreamSummary is the payload of StreamSummaryTopic.
type StreamSummary struct {
	Site   string    `json:"site"`
	Node   string    `json:"node"`
	Stream string    `json:"stream"`
	TS     wire.Time `json:"ts"`
	// Since is when the broker first saw the stream.
	Since    wire.Time `json:"since"`
	LastSeq  uint64    `json:"last_seq"`
	OpenGaps int       `json:"open_gaps"`
	Counts
}

// Publisher publishes one message; *mqtt.Server is one when its
// Options.InlineClient is set. Its publishes bypass the ACL.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// summaryState is what the last summaries said, to publish only changes.
type summaryState struct {
	mu      sync.Mutex
	farmGen uint64
	farm    bool           // the farm summary was published once
	streams map[key]Counts // loss counters last published per stream
}

// PublishSummaries publishes what changed since its last call: the farm
// summary (always on the first call, so that a restarted broker replaces the
// previous run's at once) and the summaries of new streams and of streams
// whose loss counters changed. It returns how many messages it published. On
// an error it stops; what it did not publish is tried again on the next call.
func (h *Hook) PublishSummaries(pub Publisher) (int, error) {
	h.pub.mu.Lock()
	defer h.pub.mu.Unlock()
	if h.pub.streams == nil {
		h.pub.streams = make(map[key]Counts)
	}
	gen := h.gen.Load()
	snap := h.Snapshot()
	ts := wire.Time{Time: h.now()}
	n := 0
	for _, st := range snap.Streams {
		k := key{st.Site, st.Node, st.Stream}
		if last, ok := h.pub.streams[k]; ok && last == st.loss() {
			continue
		}
		b, err := json.Marshal(StreamSummary{
			Site: st.Site, Node: st.Node, Stream: st.Stream, TS: ts, Since: wire.Time{Time: st.Since},
			LastSeq: st.LastSeq, OpenGaps: st.OpenGaps, Counts: st.Counts,
		})
		if err != nil {
			return n, err
		}
		topic := StreamSummaryTopic(h.opts.Prefix, st.Stream, st.Site, st.Node)
		if err := pub.Publish(topic, b, true, wire.QoS); err != nil {
			return n, fmt.Errorf("publish %s: %w", topic, err)
		}
		h.pub.streams[k] = st.loss()
		n++
	}
	if h.pub.farm && gen == h.pub.farmGen {
		return n, nil
	}
	b, err := json.Marshal(FarmSummary{
		TS: ts, Since: wire.Time{Time: snap.Since}, Streams: len(snap.Streams),
		Counts: snap.Total(), Untracked: snap.Untracked,
	})
	if err != nil {
		return n, err
	}
	topic := SummaryTopic(h.opts.Prefix)
	if err := pub.Publish(topic, b, true, wire.QoS); err != nil {
		return n, fmt.Errorf("publish %s: %w", topic, err)
	}
	h.pub.farm, h.pub.farmGen = true, gen
	return n + 1, nil
}

// RunSummaries publishes the summaries at once and then every interval
// (DefaultSummaryInterval if 0) until ctx ends, when it returns nil. Start it
// after the server's Serve and end ctx before the server's Close, so that no
// summary is written to a closed store. A failed round is logged and tried
// again; it returns mqtt.ErrInlineClientNotEnabled at once if the server was
// built without Options.InlineClient.
func (h *Hook) RunSummaries(ctx context.Context, pub Publisher, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultSummaryInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := h.PublishSummaries(pub); err != nil {
			if errors.Is(err, mqtt.ErrInlineClientNotEnabled) {
				return err
			}
			if h.Log != nil {
				h.Log.Warn("gap summary not published; retrying", "err", err, "in", interval)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
