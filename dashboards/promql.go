package dashboards

import (
	"fmt"
	"strings"
)

// promKeyword reports PromQL words that are not metric names: the modifiers
// whose parenthesised list holds label names, the binary operators written as
// words, and the literals.
func promKeyword(w string) bool {
	switch w {
	case "bool", "offset", "and", "or", "unless", "atan2", "Inf", "NaN", "inf", "nan":
		return true
	}
	return labelListModifier(w)
}

// labelListModifier reports the words that take a parenthesised list of
// label names.
func labelListModifier(w string) bool {
	switch w {
	case "by", "without", "on", "ignoring", "group_left", "group_right":
		return true
	}
	return false
}

// MetricNames lists, in order, the metric names a PromQL expression selects:
// the identifiers that are neither a function or aggregation (followed by a
// parenthesis), a keyword, a label (inside braces or a by/without/on list) nor
// a number or duration. It is a scanner, not a parser: it is enough for the
// dashboards' own expressions, and refuses unbalanced brackets and quotes.
func MetricNames(expr string) ([]string, error) {
	var names []string
	depth := 0
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string at byte %d", i)
			}
			i += end + 2
		case c == '{' || c == '[':
			closing := byte('}')
			if c == '[' {
				closing = ']'
			}
			end := strings.IndexByte(expr[i:], closing)
			if end < 0 {
				return nil, fmt.Errorf("unclosed %c at byte %d", c, i)
			}
			i += end + 1
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at byte %d", i)
			}
			i++
		case c >= '0' && c <= '9' || c == '.':
			// A number or a duration (5m, 1.5e3).
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentByte(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpaces(expr, i)
			followedByParen := next < len(expr) && expr[next] == '('
			// An aggregation may take its by/without clause first:
			// sum by (node) (x).
			for _, m := range []string{"by", "without"} {
				if !labelListModifier(word) && strings.HasPrefix(expr[next:], m) && !isIdentByte(byteAt(expr, next+len(m))) {
					followedByParen = true
				}
			}
			switch {
			case labelListModifier(word) && followedByParen:
				end := strings.IndexByte(expr[next:], ')')
				if end < 0 {
					return nil, fmt.Errorf("unclosed label list after %s", word)
				}
				i = next + end + 1
			case promKeyword(word), followedByParen:
			default:
				names = append(names, word)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("%d unclosed (", depth)
	}
	return names, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentByte(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func byteAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}

func skipSpaces(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
		i++
	}
	return i
}
