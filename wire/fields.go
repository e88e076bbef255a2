package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// FieldValue is one field of a reading as a per-field topic carries it:
// Key is the payload's JSON key (the topic's last level), Value the plain
// text of its value: a number as written in the payload, a string without
// quotes, "" for null (a value the sensor did not deliver).
type FieldValue struct {
	Key, Value string
}

// headerKeys are the JSON keys of Header: what identifies a reading rather
// than what it measured. Per-field topics leave them out (site and node are
// in the topic already; seq and ts only mean something next to the values).
func headerKeys() map[string]bool {
	t := reflect.TypeFor[Header]()
	keys := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		keys[name] = true
	}
	return keys
}

// FieldValues splits a reading's payload into its measured fields, in
// payload order. Fields are taken from the payload itself, so they are
// always exactly what the reading's JSON carries. A value that is not a
// plain number, string, boolean or null (none is, today) is left out.
func FieldValues(payload []byte) ([]FieldValue, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil {
		return nil, fmt.Errorf("reading payload: %w", err)
	}
	order, err := keyOrder(payload)
	if err != nil {
		return nil, err
	}
	skip := headerKeys()
	var out []FieldValue
	for _, k := range order {
		raw := bytes.TrimSpace(fields[k])
		if skip[k] || len(raw) == 0 {
			continue
		}
		switch raw[0] {
		case '{', '[':
			continue
		case '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("reading payload: field %s: %w", k, err)
			}
			out = append(out, FieldValue{k, s})
		case 'n':
			out = append(out, FieldValue{k, ""})
		default:
			out = append(out, FieldValue{k, string(raw)})
		}
	}
	return out, nil
}

// keyOrder returns the top-level keys of a JSON object in the order written.
func keyOrder(payload []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil, fmt.Errorf("reading payload: %w", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("reading payload: %w", err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, fmt.Errorf("reading payload: %w", err)
		}
	}
	return keys, nil
}
