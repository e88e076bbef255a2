// Package k8s_test checks the archive's Kubernetes manifests without a
// cluster, as broker/k8s's test does the broker's: kustomize builds both
// variants, every object decodes strictly into its API type, and what is
// built holds together: the pod meets the restricted Pod Security Standard,
// probes and Service reach --ops-listen, the settings the pod gets pass the
// archive's own validation, and the database is where a volume or a Secret
// puts it.
package k8s_test

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/archive/config"
	"github.com/sensorfarm/sensorfarm/archive/store"
)

// userFiles are what the user writes before the first apply.
var userFiles = []string{"base/secrets/mqtt-password", "postgres/secrets/postgres-dsn"}

var kinds = map[string]func() any{
	"v1/Service":          func() any { return new(corev1.Service) },
	"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
	"v1/Secret":           func() any { return new(corev1.Secret) },
	"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
}

// unmarshalStrict decodes YAML as the API server decodes JSON: exact field
// names, unknown and duplicate keys refused.
func unmarshalStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

type built struct {
	sts      *appsv1.StatefulSet
	services []*corev1.Service
	config   map[string]*corev1.ConfigMap
	secrets  map[string]*corev1.Secret
}

// build runs kustomize on dir (".", "postgres") with stand-ins for the
// user's files and decodes every object strictly.
func build(t *testing.T, dir string) built {
	t.Helper()
	fs := filesys.MakeFsInMemory()
	const root = "/k8s"
	require.NoError(t, filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fs.WriteFile(path.Join(root, p), b)
	}))
	for _, f := range userFiles {
		require.NoError(t, fs.WriteFile(path.Join(root, f), []byte("stand-in\n")))
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, path.Join(root, dir))
	require.NoError(t, err, "kustomize build %s", dir)
	out := built{config: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, r := range res.Resources() {
		doc, err := r.AsYAML()
		require.NoError(t, err)
		var tm metav1.TypeMeta
		require.NoError(t, yaml.Unmarshal(doc, &tm))
		newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		require.True(t, ok, "kind %s/%s is not one this test checks", tm.APIVersion, tm.Kind)
		obj := newObj()
		require.NoError(t, unmarshalStrict(doc, obj), "%s", r.CurId())
		require.Equal(t, "sensorfarm", obj.(metav1.Object).GetNamespace(), "%s is in the broker's namespace", r.CurId())
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			require.Nil(t, out.sts, "one StatefulSet")
			out.sts = o
		case *corev1.Service:
			out.services = append(out.services, o)
		case *corev1.ConfigMap:
			out.config[o.Name] = o
		case *corev1.Secret:
			out.secrets[o.Name] = o
		}
	}
	require.NotNil(t, out.sts)
	return out
}

func TestManifests(t *testing.T) {
	for _, variant := range []string{".", "postgres"} {
		t.Run(variant, func(t *testing.T) {
			b := build(t, variant)
			sts := b.sts
			pod := sts.Spec.Template.Spec
			require.NotNil(t, sts.Spec.Replicas)
			require.Equal(t, int32(1), *sts.Spec.Replicas, "one archive: one persistent session")
			require.Len(t, pod.Containers, 1)
			c := pod.Containers[0]

			// The restricted Pod Security Standard.
			psc := pod.SecurityContext
			require.NotNil(t, psc)
			require.True(t, *psc.RunAsNonRoot)
			require.NotZero(t, *psc.RunAsUser)
			require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
			sc := c.SecurityContext
			require.NotNil(t, sc)
			require.False(t, *sc.AllowPrivilegeEscalation)
			require.True(t, *sc.ReadOnlyRootFilesystem)
			require.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
			require.Empty(t, sc.Capabilities.Add)
			require.False(t, *pod.AutomountServiceAccountToken)
			require.False(t, *pod.EnableServiceLinks, "Service links would set SENSORFARM_* variables")
			for _, v := range pod.Volumes {
				require.Nil(t, v.HostPath, "no hostPath under restricted")
			}

			// Resources: requests and limits, the Go memory limit below it.
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				require.Contains(t, c.Resources.Requests, r)
				require.Contains(t, c.Resources.Limits, r)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}

			// The settings the pod gets, through the archive's own loader.
			var cm *corev1.ConfigMap
			for name, m := range b.config {
				if strings.HasPrefix(name, "archive-config") {
					cm = m
				}
			}
			require.NotNil(t, cm)
			require.Equal(t, []string{"--config", "/etc/sensorfarm/config/archive.yaml"}, c.Args)
			require.Equal(t, "config", mounts["/etc/sensorfarm/config"])
			var file map[string]string
			require.NoError(t, yaml.UnmarshalStrict([]byte(cm.Data["archive.yaml"]), &file))
			dir := t.TempDir()
			pw := file["password-file"]
			require.Equal(t, "mqtt", mounts[filepath.Dir(pw)], "the password file is on the Secret's volume")
			var mqttSecret string
			for _, v := range pod.Volumes {
				if v.Name == "mqtt" {
					mqttSecret = v.Secret.SecretName
				}
			}
			require.Contains(t, b.secrets[mqttSecret].Data, filepath.Base(pw))
			// Load with the files where the test has them.
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600))
			cfgFile := filepath.Join(dir, "archive.yaml")
			require.NoError(t, os.WriteFile(cfgFile, []byte(strings.ReplaceAll(cm.Data["archive.yaml"], pw, filepath.Join(dir, "pw"))), 0o600))
			env := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					ref := e.ValueFrom.SecretKeyRef
					require.NotNil(t, ref, e.Name)
					require.Contains(t, b.secrets[ref.Name].Data, ref.Key, e.Name)
					env[e.Name] = "postgres://archive@db:5432/sensorfarm" // the Secret's value, a stand-in here
					continue
				}
				env[e.Name] = e.Value
			}
			cfg, err := config.Load([]string{"--config", cfgFile}, func(k string) string { return env[k] })
			require.NoError(t, err, "the pod's settings pass the archive's validation")
			if variant == "postgres" {
				require.True(t, store.IsPostgres(cfg.DB), "the overlay takes --db from the Secret")
			} else {
				require.Equal(t, "data", mounts[filepath.Dir(cfg.DB)], "the SQLite file is on the volume")
				require.Equal(t, "data", sts.Spec.VolumeClaimTemplates[0].Name)
			}
			require.Contains(t, mounts, "/tmp", "SQLite's temporary files with a read-only root")

			// Probes, the Service and Prometheus reach --ops-listen.
			_, opsPort, _ := strings.Cut(cfg.OpsListen, ":")
			var port int32
			for _, p := range c.Ports {
				if p.Name == "ops" {
					port = p.ContainerPort
				}
			}
			require.Equal(t, opsPort, fmt.Sprint(port))
			for _, p := range []struct {
				probe *corev1.Probe
				path  string
			}{{c.StartupProbe, "/healthz"}, {c.LivenessProbe, "/healthz"}, {c.ReadinessProbe, "/readyz"}} {
				require.NotNil(t, p.probe)
				require.Equal(t, p.path, p.probe.HTTPGet.Path)
				require.Equal(t, "ops", p.probe.HTTPGet.Port.String())
			}
			require.Equal(t, fmt.Sprint(port), sts.Spec.Template.Annotations["prometheus.io/port"])
			require.Len(t, b.services, 1)
			require.Equal(t, "ops", b.services[0].Spec.Ports[0].TargetPort.String())
			for k, v := range b.services[0].Spec.Selector {
				require.Equal(t, v, sts.Spec.Template.Labels[k])
			}
		})
	}
}
