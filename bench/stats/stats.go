// Package stats summarises a benchmark's repeated runs: each figure as its
// median and range, and the rule every report applies to two peers' ranges
// (where they overlap, neither is shown better, whatever the medians).
package stats

import "slices"

// Spread is a set of figures' minimum, median and maximum.
type Spread struct{ Min, Median, Max float64 }

// Of summarises vs (the median of an even count is the mean of the middle
// two); ok is false when vs is empty.
func Of(vs []float64) (s Spread, ok bool) {
	if len(vs) == 0 {
		return Spread{}, false
	}
	v := slices.Clone(vs)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return Spread{v[0], med, v[len(v)-1]}, true
}

// Overlaps says whether two ranges meet: then the two are a tie.
func (s Spread) Overlaps(o Spread) bool { return s.Min <= o.Max && o.Min <= s.Max }

// Compare is -1 when s lies wholly below o, +1 when wholly above, and 0 when
// the ranges overlap (a tie).
func (s Spread) Compare(o Spread) int {
	switch {
	case s.Overlaps(o):
		return 0
	case s.Max < o.Min:
		return -1
	}
	return 1
}

// Ratios are a[i]/b[i] run by run, leaving out runs where b[i] is 0.
func Ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}
