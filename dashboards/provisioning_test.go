package dashboards

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/wire"
)

// The provisioning files as Grafana's documentation describes them
// (administration/provisioning: "Data sources", "Dashboards"); decoding is
// strict, so a misspelt key fails here rather than being ignored by Grafana.

type datasourcesFile struct {
	APIVersion  int          `json:"apiVersion"`
	Datasources []datasource `json:"datasources"`
}

type datasource struct {
	Name           string            `json:"name"`
	Type           string            `json:"type"`
	UID            string            `json:"uid"`
	Access         string            `json:"access"`
	URL            string            `json:"url,omitempty"`
	OrgID          int               `json:"orgId,omitempty"`
	IsDefault      bool              `json:"isDefault,omitempty"`
	Editable       bool              `json:"editable"`
	JSONData       map[string]any    `json:"jsonData,omitempty"`
	SecureJSONData map[string]string `json:"secureJsonData,omitempty"`
}

type dashboardsFile struct {
	APIVersion int        `json:"apiVersion"`
	Providers  []provider `json:"providers"`
}

type provider struct {
	Name                  string `json:"name"`
	OrgID                 int    `json:"orgId"`
	Folder                string `json:"folder"`
	Type                  string `json:"type"`
	DisableDeletion       bool   `json:"disableDeletion"`
	AllowUIUpdates        bool   `json:"allowUiUpdates"`
	UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
	Options               struct {
		Path                      string `json:"path"`
		FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
	} `json:"options"`
}

func firstMQTT(targets []variants.Dataquery) (MQTTQuery, bool) {
	for _, q := range targets {
		if m, ok := q.(MQTTQuery); ok && m.Datasource != nil {
			return m, true
		}
	}
	return MQTTQuery{}, false
}

// mountPoint is where README.md mounts this directory in the Grafana
// container.
const mountPoint = "/etc/sensorfarm/dashboards"

func readStrict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(b, into), path)
}

func TestProvisionedDatasourcesAreTheOnesTheDashboardsUse(t *testing.T) {
	var f datasourcesFile
	readStrict(t, "provisioning/datasources/sensorfarm.yaml", &f)
	require.Equal(t, 1, f.APIVersion)
	byUID := map[string]datasource{}
	for _, ds := range f.Datasources {
		require.NotEmpty(t, ds.Name)
		require.Equal(t, "proxy", ds.Access, ds.Name)
		byUID[ds.UID] = ds
	}
	mqtt := byUID[MQTTDatasourceUID]
	require.Equal(t, MQTTDatasourceType, mqtt.Type)
	// The plugin reads its settings from jsonData (pkg/plugin/datasource.go
	// into pkg/mqtt/client.go's Options; the editor's flags in src/types.ts)
	// and its secrets from secureJsonData: a key it does not know is a
	// setting silently lost.
	var settings struct {
		URI               string `json:"uri"`
		Username          string `json:"username"`
		ClientID          string `json:"clientID"`
		TLSAuth           bool   `json:"tlsAuth"`
		TLSAuthWithCACert bool   `json:"tlsAuthWithCACert"`
		TLSSkipVerify     bool   `json:"tlsSkipVerify"`
	}
	require.NoError(t, recode(mqtt.JSONData, &settings))
	require.True(t, strings.HasPrefix(settings.URI, "tcp://"), "MQTT uri %q", settings.URI)
	require.NotEmpty(t, settings.ClientID, "without a client ID the plugin leaves a new persistent session at each start")
	// The broker refuses the bridges' client ID prefix to everyone else.
	n := wire.Node{Site: "s", Node: "n"}
	bridgeIDs := strings.TrimSuffix(n.ClientID(), n.Site+":"+n.Node)
	require.False(t, strings.HasPrefix(settings.ClientID, bridgeIDs), "client ID %q is a bridge's", settings.ClientID)
	for k := range mqtt.SecureJSONData {
		require.Contains(t, []string{"password", "tlsCACert", "tlsClientCert", "tlsClientKey"}, k)
	}
	prom := byUID[PrometheusDatasourceUID]
	require.Equal(t, PrometheusDatasourceType, prom.Type)
	require.NotEmpty(t, prom.URL)

	// Every data source a dashboard refers to is provisioned, with its type.
	for name := range generated(t) {
		d := committed(t, name)
		for _, p := range panels(d) {
			if q, ok := firstMQTT(p.Targets); ok {
				require.Equal(t, *p.Datasource, *q.Datasource, "%s: panel %q: its query's data source differs", name, deref(p.Title))
			}
			require.NotNil(t, p.Datasource, "%s: panel %q has no data source", name, deref(p.Title))
			ds, ok := byUID[deref(p.Datasource.Uid)]
			require.True(t, ok, "%s: panel %q uses data source %q, which is not provisioned", name, deref(p.Title), deref(p.Datasource.Uid))
			require.Equal(t, ds.Type, deref(p.Datasource.Type), "%s: panel %q", name, deref(p.Title))
		}
	}
}

func TestProvisionedDashboardsAreTheGeneratedFiles(t *testing.T) {
	var f dashboardsFile
	readStrict(t, "provisioning/dashboards/sensorfarm.yaml", &f)
	require.Equal(t, 1, f.APIVersion)
	require.Len(t, f.Providers, 1)
	p := f.Providers[0]
	require.Equal(t, "file", p.Type)
	require.Equal(t, mountPoint, p.Options.Path)

	// The provider loads every .json under its path: exactly the generated
	// dashboards must be there, each decoding.
	var found []string
	require.NoError(t, filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			found = append(found, path)
		}
		return err
	}))
	sort.Strings(found)
	want := []string{BrokerFile, FleetFile, HistoryFile}
	sort.Strings(want)
	require.Equal(t, want, found, "the files %s would provision", mountPoint)
	for _, name := range found {
		committed(t, name)
	}
}
