package config

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sensorfarm/sensorfarm/wire"
)

func TestLoadConsumerFlags(t *testing.T) {
	base := []string{"--site", "s", "--node", "n", "--spool", "/x"}
	c, err := Load(base, env(nil), host("h"))
	require.NoError(t, err)
	require.True(t, c.HADiscovery, "discovery is on by default")
	require.Equal(t, wire.HADiscoveryPrefix, c.HADiscoveryPrefix)
	require.False(t, c.HARemoveGone)
	require.False(t, c.FieldTopics)

	c, err = Load(append(base, "--ha-discovery=false", "--ha-discovery-prefix", "ha_test", "--ha-remove-gone", "--field-topics"), env(nil), host("h"))
	require.NoError(t, err)
	require.False(t, c.HADiscovery)
	require.Equal(t, "ha_test", c.HADiscoveryPrefix)
	require.True(t, c.HARemoveGone)
	require.True(t, c.FieldTopics)

	c, err = Load(base, env(map[string]string{"SENSORFARM_FIELD_TOPICS": "true"}), host("h"))
	require.NoError(t, err)
	require.True(t, c.FieldTopics)

	for _, bad := range []string{"home/assistant", "HomeAssistant", "", "ha+"} {
		_, err = Load(append(base, "--ha-discovery-prefix", bad), env(nil), host("h"))
		require.ErrorContains(t, err, "--ha-discovery-prefix", bad)
	}
}
