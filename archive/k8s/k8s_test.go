// Package k8s_test checks the archive's Kubernetes manifests without a
// cluster, as broker/k8s's test does the broker's: kustomize builds both
// variants, every object decodes strictly into its API type, and what is
// built holds together: the pod meets the restricted Pod Security Standard,
// probes and Service reach --ops-listen, the settings the pod gets pass the
// archive's own validation, and the database is where a volume or a Secret
// puts it.
package k8s_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/archive/config"
	"github.com/sensorfarm/sensorfarm/archive/store"
	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
)

// userFiles are what the user writes before the first apply.
var userFiles = []string{"base/secrets/mqtt-password", "postgres/secrets/postgres-dsn"}

// kinds are the kinds the variants may build: no Namespace, the archive goes
// into the broker's.
var kinds = k8scheck.Kinds{
	"v1/Service":          func() any { return new(corev1.Service) },
	"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
	"v1/Secret":           func() any { return new(corev1.Secret) },
	"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
}

type built struct {
	k8scheck.Built
	sts *appsv1.StatefulSet
}

// build runs kustomize on dir (".", "postgres") with stand-ins for the
// user's files and decodes every object strictly.
func build(t *testing.T, dir string) built {
	t.Helper()
	objs, err := kinds.BuildSource(k8scheck.Source{Dir: ".", Tree: true, Kustomization: dir, UserFiles: k8scheck.StandIns(userFiles...)})
	require.NoError(t, err, "kustomize build %s", dir)
	out := built{Built: k8scheck.Group(objs)}
	for _, o := range out.Objects {
		require.Equal(t, "sensorfarm", o.GetNamespace(), "%s is in the broker's namespace", o.GetName())
	}
	require.Len(t, out.StatefulSets, 1, "one StatefulSet")
	out.sts = out.StatefulSets[0]
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
			require.Empty(t, k8scheck.RestrictedPod(&pod, &c))
			require.False(t, *pod.AutomountServiceAccountToken)
			require.False(t, *pod.EnableServiceLinks, "Service links would set SENSORFARM_* variables")
			for _, v := range pod.Volumes {
				require.Nil(t, v.HostPath, "no hostPath under restricted")
			}

			// Resources: requests and limits, the Go memory limit below it.
			require.Empty(t, k8scheck.Resources(&c))
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}

			// The settings the pod gets, through the archive's own loader.
			var cm *corev1.ConfigMap
			for name, m := range b.ConfigMaps {
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
			require.Contains(t, b.Secrets[mqttSecret].Data, filepath.Base(pw))
			// Load with the files where the test has them.
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600))
			cfgFile := filepath.Join(dir, "archive.yaml")
			require.NoError(t, os.WriteFile(cfgFile, []byte(strings.ReplaceAll(cm.Data["archive.yaml"], pw, filepath.Join(dir, "pw"))), 0o600))
			env := map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom != nil {
					ref := e.ValueFrom.SecretKeyRef
					require.NotNil(t, ref, e.Name)
					require.Contains(t, b.Secrets[ref.Name].Data, ref.Key, e.Name)
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
			require.Len(t, b.Services, 1)
			require.Equal(t, "ops", b.Services[0].Spec.Ports[0].TargetPort.String())
			for k, v := range b.Services[0].Spec.Selector {
				require.Equal(t, v, sts.Spec.Template.Labels[k])
			}
		})
	}
}
