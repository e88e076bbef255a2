package pa1010d_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/bridge/sensor/pa1010d"
)

func TestParseSentences(t *testing.T) {
	s, err := pa1010d.ParseSentences("rmc, GGA,gsa")
	require.NoError(t, err)
	require.Equal(t, pa1010d.RMC|pa1010d.GGA|pa1010d.GSA, s)
	require.Equal(t, "GGA,GSA,RMC", s.String())
	require.Equal(t, pa1010d.DefaultOpts.Sentences, s)

	_, err = pa1010d.ParseSentences("RMC,GGA,XYZ")
	require.ErrorContains(t, err, `unknown sentence "XYZ"`)

	require.ErrorContains(t, pa1010d.Opts{Sentences: pa1010d.RMC}.Validate(), "must include RMC and GGA")
	require.NoError(t, pa1010d.Opts{}.Validate(), "zero fields take the defaults")
}
