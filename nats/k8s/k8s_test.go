// Package k8s_test checks the NATS cluster's Kubernetes manifests without a
// cluster, as broker/k8s's test checks the broker's: every file decodes
// strictly into the Kubernetes API types, kustomize really builds the
// directory, and what it builds holds together. nats.conf is loaded by
// nats-server's own parser (v2.15.2, the version of the image and of
// bin/nats-server) with each pod's environment, so its listeners, routes,
// files and replicas are checked against the pods, Services and volumes.
package k8s_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
	"github.com/sensorfarm/sensorfarm/internal/testpki"
)

var kinds = k8scheck.Kinds{
	"v1/Namespace":                  func() any { return new(corev1.Namespace) },
	"v1/Service":                    func() any { return new(corev1.Service) },
	"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                     func() any { return new(corev1.Secret) },
	"apps/v1/StatefulSet":           func() any { return new(appsv1.StatefulSet) },
	"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
}

// userFiles are the files the user creates before the first apply
// (nats/README.md). The test makes real ones, since nats-server's parser
// reads them: an export of users, and a self-signed TLS pair.
var userFiles = []string{"secrets/users.conf", "secrets/tls.crt", "secrets/tls.key"}

func TestManifestsDecodeStrictly(t *testing.T) {
	k, err := k8scheck.ReadKustomization(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range kinds.DecodeResources(".", k) {
		t.Error(err)
	}
	// The decoding would fail on a typo rather than drop the field.
	b, err := os.ReadFile("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
	if _, err := kinds.Decode([]byte(bad)); err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
		t.Errorf("a misspelt field decoded without an error naming it: %v", err)
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	k, err := k8scheck.ReadKustomization(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range k8scheck.ListsEveryFile(".", k, userFiles, ".yaml", ".conf") {
		t.Error(err)
	}
}

// built is what `kubectl apply -k` would send.
type built struct {
	k8scheck.Built
	sts  *appsv1.StatefulSet
	pdbs []*policyv1.PodDisruptionBudget
}

func build(t *testing.T) built {
	t.Helper()
	files := map[string][]byte{}
	files["secrets/users.conf"] = exportUsers(t)
	files["secrets/tls.crt"], files["secrets/tls.key"] = throwawayCert(t)
	objs, err := kinds.Build(".", files)
	if err != nil {
		t.Fatal(err)
	}
	b := built{Built: k8scheck.Group(objs)}
	for _, obj := range objs {
		if p, ok := obj.(*policyv1.PodDisruptionBudget); ok {
			b.pdbs = append(b.pdbs, p)
		}
	}
	if len(b.StatefulSets) != 1 {
		t.Fatalf("kustomize built %d StatefulSets, want 1", len(b.StatefulSets))
	}
	b.sts = b.StatefulSets[0]
	return b
}

// exportUsers runs the real `broker user export --format nats` on a users
// file with one user of each role.
func exportUsers(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(dir, "users.yaml")
	for _, args := range [][]string{
		{"--role", "bridge", "--site", "farm1", "--node", "node1", "farm1-node1"},
		{"--role", "reader", "grafana"},
		{"--role", "admin", "root"},
	} {
		cmd := exec.Command("go", append([]string{"run", "../../broker", "user", "add", "--users", users, "--cost", "10"}, args...)...)
		cmd.Stdin = strings.NewReader("a-password\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("broker user add: %v: %s", err, out)
		}
	}
	out, err := exec.Command("go", "run", "../../broker", "user", "export", "--users", users, "--format", "nats", "--out", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("broker user export: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "users.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b built) container(t *testing.T) *corev1.Container {
	t.Helper()
	cs := b.sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("the pod has %d containers, want 1 (nats)", len(cs))
	}
	return &cs[0]
}

func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString, what string) int32 {
	t.Helper()
	n, err := k8scheck.ContainerPort(c, p)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return n
}

func namedPort(t *testing.T, c *corev1.Container, name string) int {
	t.Helper()
	return int(containerPort(t, c, intstr.FromString(name), "container port "+name))
}

// mountFor returns the volume mounted at the directory holding file.
func mountFor(t *testing.T, b built, c *corev1.Container, file string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if filepath.Dir(file) == m.MountPath {
			if m.SubPath != "" {
				t.Errorf("%s is mounted with subPath: the kubelet would never update it", file)
			}
			for _, v := range b.sts.Spec.Template.Spec.Volumes {
				if v.Name == m.Name {
					return v
				}
			}
			t.Fatalf("mount %s has no volume", m.Name)
		}
	}
	t.Fatalf("no volume is mounted at %s, where nats-server looks for %s", filepath.Dir(file), file)
	return corev1.Volume{}
}

// loadConfig writes the files the pod's config volume holds to a directory
// and loads nats.conf from there with nats-server's own parser, in the
// environment of the pod named podName, which it returns.
func loadConfig(t *testing.T, b built, c *corev1.Container, podName string) (*natsserver.Options, map[string]string) {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("args %q give no --config FILE", c.Args)
	}
	podPath := c.Args[i+1]
	v := mountFor(t, b, c, podPath)
	if v.Projected == nil {
		t.Fatalf("--config %s is on volume %q, which is not the projected ConfigMap and Secret", podPath, v.Name)
	}
	dir := t.TempDir()
	for _, src := range v.Projected.Sources {
		var data map[string][]byte
		switch {
		case src.ConfigMap != nil:
			cm, ok := b.ConfigMaps[src.ConfigMap.Name]
			if !ok {
				t.Fatalf("volume %s names ConfigMap %s, which kustomize did not build", v.Name, src.ConfigMap.Name)
			}
			data = map[string][]byte{}
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
		case src.Secret != nil:
			s, ok := b.Secrets[src.Secret.Name]
			if !ok {
				t.Fatalf("volume %s names Secret %s, which kustomize did not build", v.Name, src.Secret.Name)
			}
			data = s.Data
		}
		for k, d := range data {
			if err := os.WriteFile(filepath.Join(dir, k), d, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Fatalf("env %s comes from elsewhere than the pod's name; the test cannot see its value", e.Name)
			}
			val = podName
		}
		env[e.Name] = val
		// A file in a mounted Secret (the TLS pair) is read from a copy of
		// the Secret here, as nats-server loads it while parsing.
		for _, m := range c.VolumeMounts {
			if filepath.IsAbs(val) && filepath.Dir(val) == m.MountPath {
				if v := mountFor(t, b, c, val); v.Secret != nil && b.Secrets[v.Secret.SecretName] != nil {
					local := filepath.Join(t.TempDir(), filepath.Base(val))
					if err := os.WriteFile(local, b.Secrets[v.Secret.SecretName].Data[filepath.Base(val)], 0o600); err != nil {
						t.Fatal(err)
					}
					val = local
				}
			}
		}
		t.Setenv(e.Name, val)
	}
	opts, err := natsserver.ProcessConfigFile(filepath.Join(dir, filepath.Base(podPath)))
	if err != nil {
		t.Fatalf("nats-server refuses its Kubernetes configuration: %v", err)
	}
	return opts, env
}

func TestKustomizeBuildHoldsTogether(t *testing.T) {
	b := build(t)
	sts, c := b.sts, b.container(t)
	pod := sts.Spec.Template.Spec
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("replicas %v: want 3, the smallest JetStream cluster that survives a node", sts.Spec.Replicas)
	}
	replicas := int(*sts.Spec.Replicas)
	opts, env := loadConfig(t, b, c, sts.Name+"-1")

	t.Run("namespace", func(t *testing.T) {
		if len(b.Namespaces) != 1 {
			t.Fatalf("%d Namespaces built, want 1", len(b.Namespaces))
		}
		ns := b.Namespaces[0]
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s does not enforce the restricted Pod Security Standard", ns.Name)
		}
		for _, o := range b.Objects {
			if o.GetNamespace() != ns.Name {
				t.Errorf("%s is in namespace %q, not %q", o.GetName(), o.GetNamespace(), ns.Name)
			}
		}
	})

	t.Run("start and spread", func(t *testing.T) {
		if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Error("podManagementPolicy is not Parallel: the first pod would wait for ever for a JetStream quorum")
		}
		aa := pod.Affinity
		if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
			aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != corev1.LabelHostname {
			t.Error("no required pod anti-affinity on the host name: two replicas on one node would lose the quorum with it")
		} else if sel := aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector; sel == nil ||
			!selects(sel.MatchLabels, sts.Spec.Template.Labels) {
			t.Error("the anti-affinity does not select the NATS pods")
		}
		if len(b.pdbs) != 1 {
			t.Fatalf("%d PodDisruptionBudgets, want 1", len(b.pdbs))
		}
		p := b.pdbs[0].Spec
		if p.Selector == nil || !selects(p.Selector.MatchLabels, sts.Spec.Template.Labels) {
			t.Error("the PodDisruptionBudget does not select the NATS pods")
		}
		if p.MaxUnavailable == nil || p.MaxUnavailable.IntValue() != 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1: two of three keep the quorum", p.MaxUnavailable)
		}
	})

	t.Run("the configuration matches the pod", func(t *testing.T) {
		if opts.ServerName != sts.Name+"-1" {
			t.Errorf("server_name %q, want the pod's name", opts.ServerName)
		}
		for _, l := range []struct {
			what, host string
			port       int
			name       string
		}{
			{"client", opts.Host, opts.Port, "client"},
			{"cluster", opts.Cluster.Host, opts.Cluster.Port, "cluster"},
			{"mqtt", opts.MQTT.Host, opts.MQTT.Port, "mqtts"},
			{"http", opts.HTTPHost, opts.HTTPPort, "monitor"},
		} {
			if l.host != "0.0.0.0" {
				t.Errorf("%s listens on %q: want 0.0.0.0, reachable from outside the pod", l.what, l.host)
			}
			if want := namedPort(t, c, l.name); l.port != want {
				t.Errorf("%s listens on port %d, container port %s is %d", l.what, l.port, l.name, want)
			}
		}
		if opts.Cluster.Name == "" {
			t.Error("the cluster has no name")
		}
		var routes []string
		for _, r := range opts.Routes {
			routes = append(routes, r.String())
		}
		var want []string
		for i := range replicas {
			want = append(want, (&url.URL{Scheme: "nats-route", Host: fmt.Sprintf("%s-%d.%s.%s.svc:%d", sts.Name, i, sts.Spec.ServiceName,
				b.Namespaces[0].Name, namedPort(t, c, "cluster"))}).String())
		}
		if !slices.Equal(routes, want) {
			t.Errorf("routes %v, want every pod's stable name %v", routes, want)
		}
		if !opts.JetStream {
			t.Error("JetStream is off")
		}
		if opts.MQTT.StreamReplicas != replicas {
			t.Errorf("mqtt stream_replicas %d: want %d, every message on every node", opts.MQTT.StreamReplicas, replicas)
		}
		if opts.MQTT.TLSConfig == nil {
			t.Error("MQTT without TLS: the NodePort would carry passwords in the clear")
		}
		if opts.OCSPConfig == nil || opts.OCSPConfig.Mode != natsserver.OCSPModeNever {
			t.Error("ocsp is not off: nats-server would fetch OCSP responses from the internet for a must-staple certificate")
		}
		if len(opts.Users) != 3 {
			t.Errorf("%d users from users.conf, want the export's 3", len(opts.Users))
		}
	})

	t.Run("volumes", func(t *testing.T) {
		var claim string
		for _, m := range c.VolumeMounts {
			if m.MountPath == filepath.Clean(opts.StoreDir) {
				claim = m.Name
			}
		}
		var found bool
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if pvc.Name != claim {
				continue
			}
			found = true
			size, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
			if !ok {
				t.Errorf("claim template %s requests no storage", claim)
			} else if opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore >= size.Value() {
				t.Errorf("max_file_store %d is not below the volume's %s: JetStream would fail on a full disk instead of refusing writes",
					opts.JetStreamMaxStore, size.String())
			}
		}
		if !found {
			t.Errorf("store_dir %s is not on one of the volumeClaimTemplates", opts.StoreDir)
		}
		for _, f := range []string{env["NATS_TLS_CERT"], env["NATS_TLS_KEY"]} {
			v := mountFor(t, b, c, f)
			if v.Secret == nil {
				t.Errorf("%s is on volume %q, which is not a Secret", f, v.Name)
				continue
			}
			s, ok := b.Secrets[v.Secret.SecretName]
			if !ok {
				t.Errorf("volume %s names Secret %s, which kustomize did not build", v.Name, v.Secret.SecretName)
			} else if _, ok := s.Data[filepath.Base(f)]; !ok {
				t.Errorf("Secret %s has no key %s", s.Name, filepath.Base(f))
			} else if s.Type != corev1.SecretTypeTLS {
				t.Errorf("Secret %s has type %q; cert-manager writes %q", s.Name, s.Type, corev1.SecretTypeTLS)
			}
		}
	})

	t.Run("probes", func(t *testing.T) {
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
		}{{"startupProbe", c.StartupProbe}, {"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: want an HTTP GET of /healthz", p.name)
				continue
			}
			if !strings.HasPrefix(p.probe.HTTPGet.Path, "/healthz") {
				t.Errorf("%s gets %s, want nats-server's /healthz", p.name, p.probe.HTTPGet.Path)
			}
			if got := int(containerPort(t, c, p.probe.HTTPGet.Port, p.name)); got != opts.HTTPPort {
				t.Errorf("%s on port %d; nats-server serves /healthz on http %d", p.name, got, opts.HTTPPort)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		var clusterIP, nodePort, headless bool
		for _, s := range b.Services {
			if !selects(s.Spec.Selector, sts.Spec.Template.Labels) {
				t.Errorf("Service %s selects %v; the pods' labels are %v", s.Name, s.Spec.Selector, sts.Spec.Template.Labels)
			}
			for _, p := range s.Spec.Ports {
				target := p.TargetPort
				if target == (intstr.IntOrString{}) {
					target = intstr.FromInt32(p.Port)
				}
				got := int(containerPort(t, c, target, fmt.Sprintf("Service %s port %s", s.Name, p.Name)))
				if s.Spec.Type == corev1.ServiceTypeNodePort && (p.NodePort < 30000 || p.NodePort > 32767) {
					t.Errorf("Service %s port %s: nodePort %d outside the default range 30000-32767", s.Name, p.Name, p.NodePort)
				}
				if p.Port == 8883 && got != opts.MQTT.Port {
					t.Errorf("Service %s sends 8883 to %d, not to MQTT's %d", s.Name, got, opts.MQTT.Port)
				}
			}
			serves8883 := slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 8883 })
			switch {
			case s.Spec.ClusterIP == corev1.ClusterIPNone:
				headless = s.Name == sts.Spec.ServiceName && s.Spec.PublishNotReadyAddresses
			case s.Spec.Type == corev1.ServiceTypeNodePort:
				nodePort = serves8883
			case s.Spec.Type == corev1.ServiceTypeClusterIP || s.Spec.Type == "":
				clusterIP = serves8883
			}
		}
		if !clusterIP || !nodePort {
			t.Errorf("want a ClusterIP and a NodePort Service for MQTT over TLS (8883): ClusterIP %v, NodePort %v", clusterIP, nodePort)
		}
		if !headless {
			t.Errorf("serviceName %q is not a headless Service of this directory publishing not-ready pods (the routes need them)", sts.Spec.ServiceName)
		}
	})

	t.Run("non-root, read-only, no capabilities", func(t *testing.T) {
		for _, err := range k8scheck.RestrictedPod(&pod, c) {
			t.Error(err)
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, err := range k8scheck.Resources(c) {
			t.Error(err)
		}
		soft, err := k8scheck.GoMemLimit(c)
		if err != nil {
			t.Fatal(err)
		}
		if mem := opts.JetStreamMaxMemory; mem <= 0 || mem >= soft.Value()/4 {
			t.Errorf("max_memory_store %d: want a small part of GOMEMLIMIT %s", mem, soft.String())
		}
	})

	t.Run("image is the tested version", func(t *testing.T) {
		if c.Image != "nats:"+natsserver.VERSION && !strings.HasPrefix(c.Image, "nats:"+natsserver.VERSION+"-") {
			t.Errorf("image %s: want nats at %s, the version go.mod pins and the tests run", c.Image, natsserver.VERSION)
		}
	})
}

// selects reports whether every label of sel is on labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// throwawayCert returns a certificate for the MQTT listener and its key.
func throwawayCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	ca, err := testpki.NewCA("sensorfarm-nats test CA")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = ca.Issue(2, "sensorfarm-nats.sensorfarm-nats.svc")
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}
