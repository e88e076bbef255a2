package load

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sensorfarm/sensorfarm/wire"
)

// A probe is a real env reading of the contract (the broker's gap detector
// reads its seq) with one more key first, "bench", which carries the send
// time, the publisher and the seq at fixed offsets so that a subscriber
// under load reads them without decoding JSON:
//
//	{"bench":"<send time, unix ns, 20 digits> <publisher, 5> <seq, 10>","site":...}
const (
	probeHead   = `{"bench":"`
	sentDigits  = 20
	pubDigits   = 5
	seqDigits   = 10
	probeFields = sentDigits + 1 + pubDigits + 1 + seqDigits
)

// Probe is what a subscriber reads back from a payload.
type Probe struct {
	Sent time.Time
	Pub  int
	Seq  uint64
}

// encodeProbe returns the payload of publisher pub's message seq (from 1),
// due or sent at sent, published as node.
func encodeProbe(node wire.Node, pub int, seq uint64, sent time.Time) ([]byte, error) {
	t, h, p := 18.5+float64(seq%100)/100, 50.0, 1013.25
	r := wire.Env{
		Header:       wire.Header{Site: node.Site, Node: node.Node, Seq: seq, TS: wire.Time{Time: sent}, TimeSource: wire.TimeSystem},
		TemperatureC: &t, HumidityPct: &h, PressureHPa: &p,
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("probe reading: %w", err)
	}
	b := make([]byte, 0, len(probeHead)+probeFields+2+len(body))
	b = append(b, probeHead...)
	b = appendPadded(b, uint64(sent.UnixNano()), sentDigits)
	b = append(b, ' ')
	b = appendPadded(b, uint64(pub), pubDigits)
	b = append(b, ' ')
	b = appendPadded(b, seq, seqDigits)
	b = append(b, `",`...)
	return append(b, body[1:]...), nil
}

func appendPadded(b []byte, v uint64, width int) []byte {
	s := strconv.FormatUint(v, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

var errNotProbe = errors.New("not a load-tool probe")

// DecodeProbe reads the send time, publisher and seq of a probe payload.
func DecodeProbe(p []byte) (Probe, error) {
	if len(p) < len(probeHead)+probeFields || string(p[:len(probeHead)]) != probeHead {
		return Probe{}, errNotProbe
	}
	f := p[len(probeHead):]
	sent, err1 := strconv.ParseUint(string(f[:sentDigits]), 10, 64)
	pub, err2 := strconv.ParseUint(string(f[sentDigits+1:sentDigits+1+pubDigits]), 10, 32)
	seq, err3 := strconv.ParseUint(string(f[sentDigits+pubDigits+2:probeFields]), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Probe{}, fmt.Errorf("%w: %v", errNotProbe, err)
	}
	return Probe{Sent: time.Unix(0, int64(sent)), Pub: int(pub), Seq: seq}, nil
}

// EncodeProbe is a probe for tools that drive their own clients: reading seq
// of node, from publisher pub, stamped with sent.
func EncodeProbe(node wire.Node, pub int, seq uint64, sent time.Time) ([]byte, error) {
	return encodeProbe(node, pub, seq, sent)
}
