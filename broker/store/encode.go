package store

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
)

// storedMessage encodes a message as mochi's storage.Message.MarshalBinary
// does, byte for byte (TestEncodeAsMochi), without its reflection: every
// reading is encoded three times (journal, retained message, the archiver's
// copy in flight), and encoding/json was an eighth of the broker's CPU on the
// farm's workload. A message with user properties, which readings do not
// have, goes to encoding/json.
type storedMessage struct{ *storage.Message }

func (m storedMessage) MarshalBinary() ([]byte, error) {
	d := m.Message
	p := &d.Properties
	if len(p.User) > 0 {
		return d.MarshalBinary()
	}
	b := make([]byte, 0, 256+base64.StdEncoding.EncodedLen(len(d.Payload))+len(d.TopicName)+len(d.ID))
	b = append(b, `{"properties":{`...)
	fields := 0
	field := func(name string) {
		if fields > 0 {
			b = append(b, ',')
		}
		fields++
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
	}
	if len(p.CorrelationData) > 0 {
		field("correlationData")
		b = appendBytes(b, p.CorrelationData)
	}
	if len(p.SubscriptionIdentifier) > 0 {
		field("subscriptionIdentifier")
		sep := byte('[')
		for _, id := range p.SubscriptionIdentifier {
			b = append(b, sep)
			sep = ','
			b = strconv.AppendInt(b, int64(id), 10)
		}
		b = append(b, ']')
	}
	if p.ContentType != "" {
		field("contentType")
		b = appendString(b, p.ContentType)
	}
	if p.ResponseTopic != "" {
		field("responseTopic")
		b = appendString(b, p.ResponseTopic)
	}
	if p.MessageExpiryInterval != 0 {
		field("messageExpiry")
		b = strconv.AppendUint(b, uint64(p.MessageExpiryInterval), 10)
	}
	if p.TopicAlias != 0 {
		field("topicAlias")
		b = strconv.AppendUint(b, uint64(p.TopicAlias), 10)
	}
	if p.PayloadFormat != 0 {
		field("payloadFormat")
		b = strconv.AppendUint(b, uint64(p.PayloadFormat), 10)
	}
	if p.PayloadFormatFlag {
		field("payloadFormatFlag")
		b = append(b, "true"...)
	}
	b = append(b, `},"payload":`...)
	if d.Payload == nil {
		b = append(b, "null"...)
	} else {
		b = appendBytes(b, d.Payload)
	}
	fields = 1
	for _, s := range [...]struct{ name, v string }{{"t", d.T}, {"id", d.ID}, {"client", d.Client}, {"origin", d.Origin}, {"topic_name", d.TopicName}} {
		if s.v != "" {
			field(s.name)
			b = appendString(b, s.v)
		}
	}
	fh := d.FixedHeader
	field("fixedheader")
	b = append(b, `{"remaining":`...)
	b = strconv.AppendInt(b, int64(fh.Remaining), 10)
	b = append(b, `,"type":`...)
	b = strconv.AppendUint(b, uint64(fh.Type), 10)
	b = append(b, `,"qos":`...)
	b = strconv.AppendUint(b, uint64(fh.Qos), 10)
	b = append(b, `,"dup":`...)
	b = strconv.AppendBool(b, fh.Dup)
	b = append(b, `,"retain":`...)
	b = strconv.AppendBool(b, fh.Retain)
	b = append(b, '}')
	for _, n := range [...]struct {
		name string
		v    int64
	}{{"created", d.Created}, {"sent", d.Sent}, {"packet_id", int64(d.PacketID)}} {
		if n.v != 0 {
			field(n.name)
			b = strconv.AppendInt(b, n.v, 10)
		}
	}
	return append(b, '}'), nil
}

// appendBytes is encoding/json's []byte: standard base64, padded.
func appendBytes(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendString is encoding/json's string: the plain printable ASCII of topics
// and client ids as it is; anything it would escape (quotes, backslashes,
// control characters, <, > and &, non-ASCII) through encoding/json itself.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
