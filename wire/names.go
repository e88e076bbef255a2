package wire

import (
	"fmt"
)

// MaxNameLen bounds a name so that a topic stays short enough for the smallest
// consumers' buffers and for Home Assistant's unique_id.
const MaxNameLen = 64

// DefaultPrefix is the first topic level unless configured otherwise.
const DefaultPrefix = "sensorfarm"

// ValidateName checks a prefix, site or node name against the contract:
// lower-case [a-z0-9_-], 1 to 64 bytes. MQTT wildcards, separators and upper
// case are refused so that a name is always exactly one topic level and
// matches what ACLs and dashboards were written for. what names the setting
// for the error message ("site", "node", "prefix").
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty: it must be 1 to %d characters of [a-z0-9_-]", what, MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s %q is %d bytes long: at most %d are allowed", what, name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%s %q has %q at byte %d: only lower-case letters, digits, '_' and '-' are allowed", what, name, c, i)
	}
	return nil
}
