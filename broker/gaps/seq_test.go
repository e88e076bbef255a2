package gaps

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

const envPayload = `{"site":"rpi4","node":"pizero-01","seq":1842,"ts":"2026-11-24T10:15:04.123Z","time_source":"system","temperature_c":21.43,"humidity_pct":45.2,"pressure_hpa":1013.62}`

const gpsPayload = `{"site":"rpi4","node":"pizero-01","seq":977,"ts":"2026-11-24T10:15:04.000Z","time_source":"gps","latitude":44.068843,"longitude":-121.314192,"altitude_m":1127.7,"speed_kmh":0.4,"course_deg":211.3,"fix":3,"sats":10,"hdop":0.98,"gps_accuracy":4.9}`

func TestReadSeq(t *testing.T) {
	tt := []struct {
		in   string
		want uint64 // 0: no seq
	}{
		{envPayload, 1842},
		{gpsPayload, 977},
		{`{"seq":1}`, 1},
		{`{"seq":5`, 5}, // truncated after the number: the number is whole
		{"{ \"seq\"\t:\n 5 , \"a\":1}", 5},
		{`{"seq":18446744073709551615}`, 1<<64 - 1},
		{`{"a":"seq","seq":7}`, 7},           // "seq" as a value is skipped
		{`{"note":"x\"seq\":3","seq":4}`, 4}, // inside a string
		{`{"x\"seq":3,"seq":4}`, 4},          // the end of an escaped key
		{`{"xseq":3,"seq":4}`, 4},
		{`{"seqs":3,"seq":4}`, 4},
		{`{}`, 0},
		{``, 0},
		{`{"site":"a"}`, 0},
		{`{"seq":0}`, 0},
		{`{"seq":-1}`, 0},
		{`{"seq":1.5}`, 0},
		{`{"seq":1.0}`, 0},
		{`{"seq":1e3}`, 0},
		{`{"seq":"5"}`, 0},
		{`{"seq":007}`, 0},
		{`{"seq":null}`, 0},
		{`{"seq":}`, 0},
		{`{"seq":18446744073709551616}`, 0},
		{`{"seq":99999999999999999999999}`, 0},
		{`{"seq":5x}`, 0},
		{`"seq":5`, 0}, // not in an object
	}
	for _, tc := range tt {
		got, ok := readSeq([]byte(tc.in))
		require.Equal(t, tc.want != 0, ok, "%s", tc.in)
		require.Equal(t, tc.want, got, "%s", tc.in)
	}
}

var jsonPositiveInt = regexp.MustCompile(`^[1-9][0-9]*$`)

// FuzzReadSeq checks the scan against encoding/json: on a valid JSON object
// whose only "seq" is a top-level key (and without escapes, which could spell
// a key differently), both agree on whether there is a usable seq and on its
// value. On anything else the scan must not panic.
func FuzzReadSeq(f *testing.F) {
	for _, s := range []string{envPayload, gpsPayload, `{"seq":1}`, `{"seq":1.5}`, `{"a":{"seq":2}}`, `{"seq":-0}`, `{ "seq" : 18446744073709551616 }`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		got, ok := readSeq(p)
		if !json.Valid(p) || bytes.IndexByte(p, '\\') >= 0 || bytes.Count(p, keySeq) != 1 {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(p, &m) != nil {
			return // not an object
		}
		raw, has := m["seq"]
		if !has {
			return // nested, which the contract does not have
		}
		var want uint64
		wantOK := false
		if jsonPositiveInt.Match(raw) {
			if v, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
				want, wantOK = v, true
			}
		}
		if ok != wantOK || got != want {
			t.Fatalf("readSeq(%q) = %d, %v; encoding/json says %s (%d, %v)", p, got, ok, raw, want, wantOK)
		}
	})
}
