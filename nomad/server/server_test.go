// Package server_test checks the Nomad servers' Kubernetes manifests without
// a cluster, as strictly as broker/k8s: every file decodes strictly into the
// API types, kustomize really builds the directory, and what it builds holds
// together (ports, advertised addresses, NodePorts, probes, volumes, the
// configuration file Nomad reads). The configuration itself is run by a real
// Nomad agent in e2e/nomad_real_test.go.
package server_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
)

// userFiles are the TLS files README.md tells the user to create.
var userFiles = []string{"secrets/nomad-agent-ca.pem", "secrets/global-server-nomad.pem", "secrets/global-server-nomad-key.pem"}

// nodePorts are the ports a board reaches the servers on: HTTP, RPC (the
// servers of nomad/client.hcl), Serf.
var nodePorts = map[string]int32{"http": 32646, "rpc": 32647, "serf": 32648}

func TestManifestsDecodeStrictly(t *testing.T) {
	k, err := k8scheck.ReadKustomization(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range k8scheck.Core().DecodeResources(".", k) {
		t.Error(err)
	}
	for _, err := range k8scheck.ListsEveryFile(".", k, userFiles, ".yaml") {
		t.Error(err)
	}
}

// TestStrictDecodeCatchesUnknownFields is the control for the above.
func TestStrictDecodeCatchesUnknownFields(t *testing.T) {
	b, err := os.ReadFile("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to string }{
		{"readOnlyRootFilesystem:", "readOnlyRootFileSystem:"},
		{"publishNotReadyAddresses", "publishNotReady"},
	} {
		src := b
		if c.from == "publishNotReadyAddresses" {
			if src, err = os.ReadFile("service-headless.yaml"); err != nil {
				t.Fatal(err)
			}
		}
		bad := bytes.Replace(src, []byte(c.from), []byte(c.to), 1)
		if bytes.Equal(bad, src) {
			t.Fatalf("%s is not there to misspell", c.from)
		}
		if _, err := k8scheck.Core().Decode(bad); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(c.to, ":")) {
			t.Errorf("%s decoded without an error naming it: %v", c.to, err)
		}
	}
}

// serverConfig reads the tls paths and data_dir of server.hcl. Nomad reads
// its agent configuration with HCL 1; the file keeps to the syntax HCL 1 and
// 2 share, and the real Nomad agent of the e2e test reads it as Nomad does.
func serverConfig(t *testing.T, text string) (dataDir string, tls map[string]string) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(text), "server.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	body := f.Body.(*hclsyntax.Body)
	str := func(a *hclsyntax.Attribute) string {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return v.AsString()
	}
	dataDir = str(body.Attributes["data_dir"])
	tls = map[string]string{}
	for _, b := range body.Blocks {
		if b.Type == "tls" {
			for _, k := range []string{"ca_file", "cert_file", "key_file"} {
				if a, ok := b.Body.Attributes[k]; ok {
					tls[k] = str(a)
				}
			}
		}
	}
	return dataDir, tls
}

func mountOf(t *testing.T, c *corev1.Container, file string) corev1.VolumeMount {
	t.Helper()
	m, err := k8scheck.MountOf(c, file)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func volume(t *testing.T, sts *appsv1.StatefulSet, name string) corev1.Volume {
	t.Helper()
	v, err := k8scheck.Volume(&sts.Spec.Template.Spec, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString, proto corev1.Protocol, what string) int32 {
	t.Helper()
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, cp := range c.Ports {
		if cp.Protocol != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	t.Errorf("%s: port %s/%s is not a port of container %s", what, p.String(), proto, c.Name)
	return 0
}

func TestKustomizeBuildHoldsTogether(t *testing.T) {
	objs, err := k8scheck.Core().Build(".", k8scheck.StandIns(userFiles...))
	b := k8scheck.Group(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.StatefulSets) != 1 || len(b.StatefulSets[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one StatefulSet with one container")
	}
	sts := b.StatefulSets[0]
	pod := sts.Spec.Template.Spec
	c := &pod.Containers[0]
	script := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")

	t.Run("namespace", func(t *testing.T) {
		if len(b.Namespaces) != 1 {
			t.Fatalf("%d Namespaces built, want 1", len(b.Namespaces))
		}
		for _, o := range b.Objects {
			if o.GetNamespace() != b.Namespaces[0].Name {
				t.Errorf("%s is in namespace %q, not %q", o.GetName(), o.GetNamespace(), b.Namespaces[0].Name)
			}
		}
	})

	t.Run("three servers, one per node", func(t *testing.T) {
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
			t.Errorf("replicas: want 3 (a Raft majority survives one lost node)")
		}
		a := pod.Affinity
		if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
			t.Fatal("no required pod anti-affinity: two servers on one node would share its NodePorts")
		}
		term := a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0]
		if term.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("anti-affinity topologyKey %q, want kubernetes.io/hostname", term.TopologyKey)
		}
		for k, v := range term.LabelSelector.MatchLabels {
			if sts.Spec.Template.Labels[k] != v {
				t.Errorf("anti-affinity selects %s=%s, not the servers' labels %v", k, v, sts.Spec.Template.Labels)
			}
		}
	})

	t.Run("configuration file", func(t *testing.T) {
		own, err := os.ReadFile("server.hcl")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`-config=(\S+/server\.hcl)`).FindStringSubmatch(script)
		if m == nil {
			t.Fatalf("the command %q does not read a server.hcl", script)
		}
		v := volume(t, sts, mountOf(t, c, m[1]).Name)
		if v.ConfigMap == nil || b.ConfigMaps[v.ConfigMap.Name] == nil {
			t.Fatalf("%s is not on a ConfigMap volume kustomize built", m[1])
		}
		if got := b.ConfigMaps[v.ConfigMap.Name].Data[filepath.Base(m[1])]; got != string(own) {
			t.Errorf("the ConfigMap's server.hcl is not the file the e2e test runs")
		}
		dataDir, tls := serverConfig(t, string(own))
		var claim bool
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if pvc.Name == mountOf(t, c, dataDir+"/x").Name {
				claim = true
			}
		}
		if !claim {
			t.Errorf("data_dir %s is not on a volumeClaimTemplate", dataDir)
		}
		if len(tls) != 3 {
			t.Fatalf("server.hcl's tls block names %d files, want ca_file, cert_file, key_file", len(tls))
		}
		for k, f := range tls {
			v := volume(t, sts, mountOf(t, c, f).Name)
			if v.Secret == nil || b.Secrets[v.Secret.SecretName] == nil {
				t.Errorf("%s %s is not on a Secret volume kustomize built", k, f)
				continue
			}
			if _, ok := b.Secrets[v.Secret.SecretName].Data[filepath.Base(f)]; !ok {
				t.Errorf("%s %s: Secret %s has no key %s", k, f, v.Secret.SecretName, filepath.Base(f))
			}
		}
	})

	t.Run("advertised addresses a board reaches", func(t *testing.T) {
		var nodeIP bool
		for _, e := range c.Env {
			if e.Name == "NODE_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP" {
				nodeIP = true
			}
		}
		if !nodeIP {
			t.Error("no NODE_IP from the downward API's status.hostIP: a pod IP is not reachable from a board")
		}
		for name, port := range nodePorts {
			if !strings.Contains(script, fmt.Sprintf(`%s = "%%s:%d"`, name, port)) && !strings.Contains(script, fmt.Sprintf(`%s  = "%%s:%d"`, name, port)) {
				t.Errorf("the advertise block the command writes has no %s = NODE_IP:%d", name, port)
			}
		}
		if !strings.Contains(script, `"$NODE_IP" "$NODE_IP" "$NODE_IP"`) {
			t.Error("the advertise block is not filled from $NODE_IP")
		}
		ns := b.Namespaces[0].Name
		for i := range *sts.Spec.Replicas {
			join := fmt.Sprintf("-retry-join=%s-%d.%s.%s.svc", sts.Name, i, sts.Spec.ServiceName, ns)
			if !strings.Contains(script, join) {
				t.Errorf("the command has no %s", join)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		var nodePort, clusterIP, headless bool
		for _, s := range b.Services {
			for k, v := range s.Spec.Selector {
				if sts.Spec.Template.Labels[k] != v {
					t.Errorf("Service %s selects %s=%s; the pod's labels are %v", s.Name, k, v, sts.Spec.Template.Labels)
				}
			}
			for _, p := range s.Spec.Ports {
				containerPort(t, c, p.TargetPort, p.Protocol, fmt.Sprintf("Service %s port %s", s.Name, p.Name))
			}
			switch {
			case s.Spec.ClusterIP == corev1.ClusterIPNone:
				headless = s.Name == sts.Spec.ServiceName && s.Spec.PublishNotReadyAddresses
			case s.Spec.Type == corev1.ServiceTypeNodePort:
				nodePort = true
				if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
					t.Errorf("NodePort %s: externalTrafficPolicy %q; want Local, so that a node's ports reach the server that advertised them", s.Name, s.Spec.ExternalTrafficPolicy)
				}
				for name, want := range nodePorts {
					i := slices.IndexFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.TargetPort.StrVal == name })
					if i < 0 || s.Spec.Ports[i].NodePort != want {
						t.Errorf("NodePort %s: %s is not on node port %d", s.Name, name, want)
					}
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
					return p.NodePort == nodePorts["serf"] && p.Protocol == corev1.ProtocolUDP
				}) {
					t.Errorf("NodePort %s: Serf's UDP (gossip) is not on %d/udp", s.Name, nodePorts["serf"])
				}
			default:
				clusterIP = true
			}
		}
		if !nodePort || !clusterIP || !headless {
			t.Errorf("want a NodePort (%v), a ClusterIP (%v) and the governing headless Service publishing not-ready pods (%v)", nodePort, clusterIP, headless)
		}
	})

	t.Run("probes", func(t *testing.T) {
		r := c.ReadinessProbe
		if r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/v1/agent/health?type=server" || r.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("readinessProbe: want an HTTPS GET of /v1/agent/health?type=server (200 once a leader is known)")
		} else if containerPort(t, c, r.HTTPGet.Port, "", "readinessProbe") != 4646 {
			t.Error("readinessProbe is not on the HTTP API's port")
		}
		for name, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe} {
			if p == nil || p.TCPSocket == nil {
				t.Errorf("%s: want a TCP check of the API (a server without quorum is alive)", name)
			}
		}
	})

	t.Run("non-root, read-only, no capabilities", func(t *testing.T) {
		for _, err := range k8scheck.RestrictedPod(&pod, c) {
			t.Error(err)
		}
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/nomad/run" && volume(t, sts, m.Name).EmptyDir == nil {
				t.Error("/nomad/run, where the command writes advertise.hcl, is not an emptyDir")
			}
		}
	})

	t.Run("resources", func(t *testing.T) {
		for _, err := range k8scheck.Resources(c) {
			t.Error(err)
		}
	})
}
