package stats

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOf(t *testing.T) {
	_, ok := Of(nil)
	require.False(t, ok)
	s, ok := Of([]float64{3, 1, 2})
	require.True(t, ok)
	require.Equal(t, Spread{1, 2, 3}, s)
	s, _ = Of([]float64{4, 1, 2, 3})
	require.Equal(t, Spread{1, 2.5, 4}, s, "even count: the mean of the middle two")
}

func TestOverlaps(t *testing.T) {
	a := Spread{Min: 1, Median: 2, Max: 3}
	require.True(t, a.Overlaps(Spread{Min: 3, Median: 4, Max: 5}), "touching ends are a tie")
	require.True(t, a.Overlaps(Spread{Min: 0, Median: 5, Max: 9}))
	require.False(t, a.Overlaps(Spread{Min: 3.1, Median: 4, Max: 5}))
	require.False(t, Spread{Min: 4, Median: 5, Max: 6}.Overlaps(a))
}

func TestCompare(t *testing.T) {
	a := Spread{Min: 1, Median: 2, Max: 3}
	require.Equal(t, 0, a.Compare(Spread{Min: 3, Median: 4, Max: 5}), "overlapping ranges are a tie")
	require.Equal(t, -1, a.Compare(Spread{Min: 3.1, Median: 4, Max: 5}))
	require.Equal(t, 1, Spread{Min: 4, Median: 5, Max: 6}.Compare(a))
}

func TestRatios(t *testing.T) {
	require.Equal(t, []float64{2, 0.5}, Ratios([]float64{2, 1, 5}, []float64{1, 2}))
	require.Empty(t, Ratios([]float64{1}, []float64{0}), "a zero divisor is left out")
}
