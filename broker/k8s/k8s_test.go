// Package k8s_test checks the broker's Kubernetes manifests without a
// cluster: every file decodes strictly into the Kubernetes API types (an
// unknown or misspelt field fails), kustomize really builds the directory,
// and what it builds holds together: ports, probes, volumes, Services and the
// broker's own settings agree with each other.
package k8s_test

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/types"

	"github.com/sensorfarm/sensorfarm/broker/config"
	"github.com/sensorfarm/sensorfarm/broker/ops"
	"github.com/sensorfarm/sensorfarm/broker/server"
	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
)

// userFiles are the files the user creates before the first apply (the
// secretGenerator reads them); the test writes stand-ins, since kustomize
// only copies their bytes.
var userFiles = []string{"secrets/users.yaml", "secrets/tls.crt", "secrets/tls.key"}

// kinds are the object kinds this directory may hold or generate, each
// decoded into its API type. Any other kind fails the test: it would be
// applied unchecked.
var kinds = func() k8scheck.Kinds {
	k := k8scheck.Core()
	k["networking.k8s.io/v1/NetworkPolicy"] = func() any { return new(networkingv1.NetworkPolicy) }
	return k
}()

func readKustomization(t *testing.T) types.Kustomization {
	t.Helper()
	k, err := k8scheck.ReadKustomization(".")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestManifestsDecodeStrictly(t *testing.T) {
	for _, err := range kinds.DecodeResources(".", readKustomization(t)) {
		t.Error(err)
	}
}

// TestStrictDecodeCatchesUnknownFields makes sure the decoding above would
// fail on a typo rather than drop the field, as a plain Unmarshal would.
func TestStrictDecodeCatchesUnknownFields(t *testing.T) {
	b, err := os.ReadFile("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, typo := range []string{"readOnlyRootFileSystem:", "readOnlyRootFS:"} {
		bad := bytes.Replace(b, []byte("readOnlyRootFilesystem:"), []byte(typo), 1)
		if bytes.Equal(bad, b) {
			t.Fatal("statefulset.yaml has no readOnlyRootFilesystem to misspell")
		}
		if _, err := kinds.Decode(bad); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(typo, ":")) {
			t.Errorf("%s decoded without an error naming it: %v", typo, err)
		}
	}
}

func TestKustomizationListsEveryFile(t *testing.T) {
	for _, err := range k8scheck.ListsEveryFile(".", readKustomization(t), userFiles, ".yaml", ".yml") {
		t.Error(err)
	}
}

// built is what `kubectl apply -k` would send, decoded into API types.
type built struct {
	k8scheck.Built
	namespace string // the kustomization's namespace
	policies  []*networkingv1.NetworkPolicy
}

// build runs kustomize's own engine on a copy of the directory, with
// stand-ins for the files the user creates, and decodes every object it
// produces strictly.
func build(t *testing.T) built {
	t.Helper()
	return buildWith(t, nil)
}

// buildWith is build with edit applied to each file's content first.
func buildWith(t *testing.T, edit func(name string, b []byte) []byte) built {
	t.Helper()
	objs, err := kinds.BuildSource(k8scheck.Source{Dir: ".", UserFiles: k8scheck.StandIns(userFiles...), Edit: edit})
	if err != nil {
		t.Fatal(err)
	}
	out := built{Built: k8scheck.Group(objs), namespace: readKustomization(t).Namespace}
	for _, obj := range objs {
		if p, ok := obj.(*networkingv1.NetworkPolicy); ok {
			out.policies = append(out.policies, p)
		}
	}
	return out
}

// broker returns the one StatefulSet and its broker container.
func (b built) broker(t *testing.T) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	if len(b.StatefulSets) != 1 {
		t.Fatalf("kustomize built %d StatefulSets, want 1", len(b.StatefulSets))
	}
	sts := b.StatefulSets[0]
	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("the StatefulSet's pod has %d containers, want 1 (the broker)", len(cs))
	}
	return sts, &cs[0]
}

// containerPort resolves a probe's or a Service's port (a name or a number)
// to one the container declares, or fails.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString, what string) int32 {
	t.Helper()
	n, err := k8scheck.ContainerPort(c, p)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return n
}

func namedPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	return containerPort(t, c, intstr.FromString(name), "container port "+name)
}

func volume(t *testing.T, sts *appsv1.StatefulSet, name string) corev1.Volume {
	t.Helper()
	v, err := k8scheck.Volume(&sts.Spec.Template.Spec, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mountOf returns the volume mount whose directory holds file.
func mountOf(t *testing.T, c *corev1.Container, file string) corev1.VolumeMount {
	t.Helper()
	m, err := k8scheck.MountOf(c, file)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// loadBrokerConfig loads the broker's settings as main does, from the
// container's args and environment, with the ConfigMap's file where --config
// points.
func loadBrokerConfig(t *testing.T, b built, sts *appsv1.StatefulSet, c *corev1.Container) (config.Config, string) {
	t.Helper()
	if len(c.Command) != 0 {
		t.Fatalf("the container overrides the image's entrypoint with %q", c.Command)
	}
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("the broker's args %q give no --config FILE", c.Args)
	}
	podPath := c.Args[i+1]
	m := mountOf(t, c, podPath)
	v := volume(t, sts, m.Name)
	if v.ConfigMap == nil {
		t.Fatalf("--config %s is on volume %q, which is not a ConfigMap", podPath, m.Name)
	}
	cm, ok := b.ConfigMaps[v.ConfigMap.Name]
	if !ok {
		t.Fatalf("volume %q names ConfigMap %q, which kustomize did not build", v.Name, v.ConfigMap.Name)
	}
	text, ok := cm.Data[filepath.Base(podPath)]
	if !ok {
		t.Fatalf("ConfigMap %s has no key %q for --config %s", cm.Name, filepath.Base(podPath), podPath)
	}
	local := filepath.Join(t.TempDir(), filepath.Base(podPath))
	if err := os.WriteFile(local, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	args := slices.Clone(c.Args)
	args[i+1] = local
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Fatalf("env %s comes from elsewhere; the test cannot see its value", e.Name)
		}
		env[e.Name] = e.Value
	}
	cfg, err := config.Load(args, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("the broker refuses its Kubernetes settings: %v", err)
	}
	return cfg, podPath
}

func port(t *testing.T, flag, addr string) int32 {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", flag, addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s %q listens on loopback: nothing outside the pod could reach it", flag, addr)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("%s %q: %v", flag, addr, err)
	}
	return int32(n)
}

func TestKustomizeBuildHoldsTogether(t *testing.T) {
	b := build(t)
	sts, c := b.broker(t)
	pod := sts.Spec.Template.Spec
	cfg, _ := loadBrokerConfig(t, b, sts, c)

	t.Run("one replica", func(t *testing.T) {
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
			t.Errorf("replicas %s: mochi-mqtt does not cluster; want exactly 1", show(sts.Spec.Replicas, "%d"))
		}
	})

	// kubectl delete -k deletes what the kustomization builds: a Namespace
	// among it would take the PersistentVolumeClaim (the retained readings
	// and the sessions) with it.
	t.Run("delete -k keeps the volume", func(t *testing.T) {
		if len(b.Namespaces) != 0 {
			t.Errorf("kustomize builds Namespace %s: kubectl delete -k would delete it and the volume in it", b.Namespaces[0].Name)
		}
		if b.namespace == "" {
			t.Fatal("kustomization.yaml sets no namespace")
		}
		for _, o := range b.Objects {
			if o.GetNamespace() != b.namespace {
				t.Errorf("%s is in namespace %q, not %q", o.GetName(), o.GetNamespace(), b.namespace)
			}
		}
		p := sts.Spec.PersistentVolumeClaimRetentionPolicy
		if p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
			t.Errorf("persistentVolumeClaimRetentionPolicy %+v: want Retain when deleted and when scaled", p)
		}
	})

	t.Run("listeners match container ports", func(t *testing.T) {
		if got, want := port(t, "--listen", cfg.Listen), namedPort(t, c, "mqtt"); got != want {
			t.Errorf("--listen %s, container port mqtt %d", cfg.Listen, want)
		}
		if cfg.TLSListen == "" {
			t.Fatal("--tls-listen is off: the NodePort's 8883 would lead nowhere")
		}
		if got, want := port(t, "--tls-listen", cfg.TLSListen), namedPort(t, c, "mqtts"); got != want {
			t.Errorf("--tls-listen %s, container port mqtts %d", cfg.TLSListen, want)
		}
		if cfg.OpsListen == "" {
			t.Fatal("--ops-listen is off: no probes, no metrics")
		}
		if got, want := port(t, "--ops-listen", cfg.OpsListen), namedPort(t, c, "ops"); got != want {
			t.Errorf("--ops-listen %s, container port ops %d", cfg.OpsListen, want)
		}
	})

	t.Run("probes", func(t *testing.T) {
		ops := port(t, "--ops-listen", cfg.OpsListen)
		for _, p := range []struct {
			name, path string
			probe      *corev1.Probe
		}{
			{"startupProbe", "/healthz", c.StartupProbe},
			{"livenessProbe", "/healthz", c.LivenessProbe},
			{"readinessProbe", "/readyz", c.ReadinessProbe},
		} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s: want an HTTP GET of %s", p.name, p.path)
				continue
			}
			if p.probe.HTTPGet.Path != p.path {
				t.Errorf("%s gets %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
			}
			if got := containerPort(t, c, p.probe.HTTPGet.Port, p.name); got != 0 && got != ops {
				t.Errorf("%s on port %d; the broker serves %s on --ops-listen %s", p.name, got, p.path, cfg.OpsListen)
			}
		}
	})

	t.Run("prometheus annotations", func(t *testing.T) {
		a := sts.Spec.Template.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("scrape annotations %v", a)
		}
		if got, want := a["prometheus.io/port"], strconv.Itoa(int(namedPort(t, c, "ops"))); got != want {
			t.Errorf("prometheus.io/port %q, the ops port is %s", got, want)
		}
	})

	t.Run("data volume", func(t *testing.T) {
		var claim string
		for _, m := range c.VolumeMounts {
			if m.MountPath == filepath.Clean(cfg.DataDir) {
				claim = m.Name
			}
		}
		if claim == "" {
			t.Fatalf("nothing is mounted at --data %s: the store would be on the read-only root", cfg.DataDir)
		}
		var found bool
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if pvc.Name == claim {
				found = true
				if _, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
					t.Errorf("claim template %s requests no storage", claim)
				}
			}
		}
		if !found {
			t.Errorf("--data %s is mounted from %q, which is not one of the volumeClaimTemplates", cfg.DataDir, claim)
		}
	})

	t.Run("secrets hold the files the broker reads", func(t *testing.T) {
		for _, f := range []struct{ flag, file string }{
			{"--users", cfg.Users}, {"--tls-cert", cfg.TLSCert}, {"--tls-key", cfg.TLSKey},
		} {
			m := mountOf(t, c, f.file)
			if m.SubPath != "" {
				t.Errorf("%s is mounted with subPath: the kubelet would never update it", f.file)
			}
			v := volume(t, sts, m.Name)
			if v.Secret == nil {
				t.Errorf("%s %s is on volume %q, which is not a Secret", f.flag, f.file, v.Name)
				continue
			}
			if m := v.Secret.DefaultMode; m == nil || *m != 0o440 {
				t.Errorf("Secret volume %s: defaultMode %s, want 0440 (owner and fsGroup read)", v.Name, show(m, "%#o"))
			}
			s, ok := b.Secrets[v.Secret.SecretName]
			if !ok {
				t.Errorf("volume %q names Secret %q, which kustomize did not build", v.Name, v.Secret.SecretName)
				continue
			}
			if _, ok := s.Data[filepath.Base(f.file)]; !ok {
				t.Errorf("%s %s: Secret %s has no key %q", f.flag, f.file, s.Name, filepath.Base(f.file))
			}
		}
		if tls := b.Secrets[volume(t, sts, mountOf(t, c, cfg.TLSCert).Name).Secret.SecretName]; tls != nil && tls.Type != corev1.SecretTypeTLS {
			t.Errorf("Secret %s has type %q; cert-manager writes %q", tls.Name, tls.Type, corev1.SecretTypeTLS)
		}
	})

	t.Run("every mount has a volume", func(t *testing.T) {
		names := map[string]bool{}
		for _, v := range pod.Volumes {
			names[v.Name] = true
		}
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			names[pvc.Name] = true
		}
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				t.Errorf("mount %s at %s has no volume", m.Name, m.MountPath)
			}
		}
		for _, v := range pod.Volumes {
			if v.ConfigMap != nil && b.ConfigMaps[v.ConfigMap.Name] == nil {
				t.Errorf("volume %s names ConfigMap %s, which kustomize did not build", v.Name, v.ConfigMap.Name)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		var clusterIP, nodePort, headless bool
		for _, s := range b.Services {
			if len(s.Spec.Selector) == 0 {
				t.Errorf("Service %s selects nothing", s.Name)
			}
			for k, v := range s.Spec.Selector {
				if sts.Spec.Template.Labels[k] != v {
					t.Errorf("Service %s selects %s=%s; the pod's labels are %v", s.Name, k, v, sts.Spec.Template.Labels)
				}
			}
			for _, p := range s.Spec.Ports {
				target := p.TargetPort
				if target == (intstr.IntOrString{}) {
					target = intstr.FromInt32(p.Port)
				}
				containerPort(t, c, target, fmt.Sprintf("Service %s port %s", s.Name, p.Name))
				if s.Spec.Type == corev1.ServiceTypeNodePort && (p.NodePort < 30000 || p.NodePort > 32767) {
					t.Errorf("Service %s port %s: nodePort %d outside the default range 30000-32767", s.Name, p.Name, p.NodePort)
				}
			}
			switch {
			case s.Spec.ClusterIP == corev1.ClusterIPNone:
				headless = s.Name == sts.Spec.ServiceName
			case s.Spec.Type == corev1.ServiceTypeNodePort:
				// TLS only: a bridge's password must not cross the Wi-Fi in clear.
				nodePort = servesPorts(s, 8883) && len(s.Spec.Ports) == 1
			case s.Spec.Type == corev1.ServiceTypeClusterIP || s.Spec.Type == "":
				clusterIP = servesPorts(s, 1883, 8883)
			}
		}
		if !clusterIP || !nodePort {
			t.Errorf("want a ClusterIP Service for 1883 and 8883 and a NodePort for 8883 alone: ClusterIP %v, NodePort (TLS only) %v", clusterIP, nodePort)
		}
		if !headless {
			t.Errorf("serviceName %q is not a headless Service of this directory", sts.Spec.ServiceName)
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
	})

	t.Run("grace period covers the broker's stop", func(t *testing.T) {
		need := server.StopTimeout + ops.ShutdownTimeout
		g := pod.TerminationGracePeriodSeconds
		if g == nil || time.Duration(*g)*time.Second <= need {
			t.Errorf("terminationGracePeriodSeconds %s: the broker may take %s to stop before the kubelet's SIGKILL", show(g, "%d"), need)
		}
	})
}

func servesPorts(s *corev1.Service, ports ...int32) bool {
	for _, want := range ports {
		if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == want }) {
			return false
		}
	}
	return true
}

// show formats an optional value for a message.
func show[T any](v *T, format string) string {
	if v == nil {
		return "unset"
	}
	return fmt.Sprintf(format, *v)
}

// The namespace is created on its own, once, with the name the
// kustomization puts everything in.
func TestNamespaceFile(t *testing.T) {
	b, err := os.ReadFile("namespace/namespace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj, err := kinds.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		t.Fatalf("namespace/namespace.yaml holds a %T", obj)
	}
	if want := readKustomization(t).Namespace; ns.Name != want {
		t.Errorf("namespace/namespace.yaml creates %q; the kustomization uses %q", ns.Name, want)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s does not enforce the restricted Pod Security Standard", ns.Name)
	}
}

// The NetworkPolicy selects the broker's pod, lets TLS in from anywhere and
// plain MQTT and the ops port from pods only, and lets nothing out.
func TestNetworkPolicy(t *testing.T) {
	b := build(t)
	sts, c := b.broker(t)
	if len(b.policies) != 1 {
		t.Fatalf("%d NetworkPolicies built, want 1", len(b.policies))
	}
	np := b.policies[0]
	for k, v := range np.Spec.PodSelector.MatchLabels {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("the NetworkPolicy selects %s=%s; the pod's labels are %v", k, v, sts.Spec.Template.Labels)
		}
	}
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || len(np.Spec.Egress) != 0 {
		t.Error("want Egress in policyTypes and no egress rule: the broker connects nowhere")
	}
	open := map[int32]string{} // port -> "anywhere" or "pods"
	for _, r := range np.Spec.Ingress {
		from := "anywhere"
		if len(r.From) > 0 {
			from = "pods"
			for _, p := range r.From {
				if p.IPBlock != nil {
					t.Errorf("ingress from an ipBlock %v", p.IPBlock)
				}
			}
		}
		for _, p := range r.Ports {
			if p.Port == nil {
				t.Fatal("an ingress rule without a port opens every port")
			}
			open[containerPort(t, c, *p.Port, "NetworkPolicy port")] = from
		}
	}
	want := map[int32]string{namedPort(t, c, "mqtts"): "anywhere", namedPort(t, c, "mqtt"): "pods", namedPort(t, c, "ops"): "pods"}
	if !maps.Equal(open, want) {
		t.Errorf("ingress %v, want %v", open, want)
	}
}

// podMonitor is the part of the Prometheus Operator's PodMonitor this
// directory uses. The operator's Go types are not a dependency: decoding
// strictly into this refuses any field not listed here, a stricter check
// than the CRD's schema, but it cannot check types the way the API server
// does.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// The PodMonitor scrapes the broker's ops port at /metrics.
func TestPodMonitor(t *testing.T) {
	b := build(t)
	sts, c := b.broker(t)
	raw, err := os.ReadFile("podmonitor/podmonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pm podMonitor
	if err := k8scheck.UnmarshalStrict(raw, &pm); err != nil {
		t.Fatal(err)
	}
	if pm.APIVersion != "monitoring.coreos.com/v1" || pm.Kind != "PodMonitor" {
		t.Fatalf("podmonitor.yaml holds %s/%s", pm.APIVersion, pm.Kind)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("the PodMonitor selects %s=%s; the pod's labels are %v", k, v, sts.Spec.Template.Labels)
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	e := pm.Spec.PodMetricsEndpoints[0]
	namedPort(t, c, e.Port)
	if e.Port != "ops" || e.Path != "/metrics" {
		t.Errorf("PodMonitor scrapes port %q path %q, want ops /metrics", e.Port, e.Path)
	}
	k, err := os.ReadFile("podmonitor/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(k), "namespace: "+b.namespace) {
		t.Errorf("podmonitor/kustomization.yaml does not put it in namespace %s", b.namespace)
	}
}

// The images entry that make image prints (broker/image's pinHint) pins the
// broker's container to a digest: the entry's name is the container's image.
func TestImagePinnedByDigest(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	b := buildWith(t, func(name string, b []byte) []byte {
		if name != "kustomization.yaml" {
			return b
		}
		pinned := regexp.MustCompile(`(?m)^    newTag: .*$`).ReplaceAll(b, []byte("    newName: registry.farm.lan/sensorfarm/broker\n    digest: "+digest))
		if bytes.Equal(pinned, b) {
			t.Fatal("kustomization.yaml has no images entry with newTag to replace")
		}
		return pinned
	})
	_, c := b.broker(t)
	if want := "registry.farm.lan/sensorfarm/broker@" + digest; c.Image != want {
		t.Errorf("image %q, want %q: the images entry does not name the container's image", c.Image, want)
	}
}
