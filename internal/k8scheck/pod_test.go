package k8scheck

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func restrictedPod() (*corev1.PodSpec, *corev1.Container) {
	yes, no, uid, group := true, false, int64(65532), int64(65532)
	pod := &corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{
		RunAsNonRoot: &yes, RunAsUser: &uid, FSGroup: &group,
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}}
	c := &corev1.Container{
		Name: "app",
		SecurityContext: &corev1.SecurityContext{
			ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		Env: []corev1.EnvVar{{Name: "GOMEMLIMIT", Value: "100MiB"}},
	}
	return pod, c
}

// Each break of a pod that passes is reported, named.
func TestRestrictedPodAndResources(t *testing.T) {
	pod, c := restrictedPod()
	if errs := append(RestrictedPod(pod, c), Resources(c)...); len(errs) != 0 {
		t.Fatalf("a restricted pod fails: %v", errs)
	}
	for _, tc := range []struct {
		want  string
		spoil func(*corev1.PodSpec, *corev1.Container)
	}{
		{"runAsNonRoot", func(p *corev1.PodSpec, _ *corev1.Container) { p.SecurityContext.RunAsNonRoot = nil }},
		{"runAsUser", func(p *corev1.PodSpec, _ *corev1.Container) { root := int64(0); p.SecurityContext.RunAsUser = &root }},
		{"fsGroup", func(p *corev1.PodSpec, _ *corev1.Container) { p.SecurityContext.FSGroup = nil }},
		{"seccomp", func(p *corev1.PodSpec, _ *corev1.Container) {
			p.SecurityContext.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
		}},
		{"seccomp", func(p *corev1.PodSpec, _ *corev1.Container) { p.SecurityContext = nil }},
		{"readOnlyRootFilesystem", func(_ *corev1.PodSpec, c *corev1.Container) {
			f := false
			c.SecurityContext.ReadOnlyRootFilesystem = &f
		}},
		{"allowPrivilegeEscalation", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext.AllowPrivilegeEscalation = nil }},
		{"capabilities", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.Capabilities.Add = []corev1.Capability{"NET_RAW"}
		}},
		{"capabilities", func(_ *corev1.PodSpec, c *corev1.Container) { c.SecurityContext = nil }},
		// The restricted standard's other rules, each as the real API
		// server's PodSecurity warns of it (e2e/kube_real_test.go).
		{"hostNetwork", func(p *corev1.PodSpec, _ *corev1.Container) { p.HostNetwork = true }},
		{"volume host", func(p *corev1.PodSpec, _ *corev1.Container) {
			p.Volumes = append(p.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}},
		{"sysctls", func(p *corev1.PodSpec, _ *corev1.Container) {
			p.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.msgmax", Value: "65536"}}
		}},
		{"hostPort", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.Ports = []corev1.ContainerPort{{ContainerPort: 8883, HostPort: 8883}}
		}},
		{"privileged", func(_ *corev1.PodSpec, c *corev1.Container) { yes := true; c.SecurityContext.Privileged = &yes }},
		{"runAsUser is 0", func(_ *corev1.PodSpec, c *corev1.Container) { root := int64(0); c.SecurityContext.RunAsUser = &root }},
		{"runAsNonRoot is false", func(_ *corev1.PodSpec, c *corev1.Container) { no := false; c.SecurityContext.RunAsNonRoot = &no }},
		{"seccomp profile Unconfined", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}},
		{"AppArmor profile Unconfined", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}},
		{"hostProcess", func(_ *corev1.PodSpec, c *corev1.Container) {
			yes := true
			c.SecurityContext.WindowsOptions = &corev1.WindowsSecurityContextOptions{HostProcess: &yes}
		}},
		{"container init: allowPrivilegeEscalation", func(p *corev1.PodSpec, _ *corev1.Container) {
			p.InitContainers = []corev1.Container{{Name: "init"}}
		}},
		{"cpu: want both", func(_ *corev1.PodSpec, c *corev1.Container) { delete(c.Resources.Limits, corev1.ResourceCPU) }},
		{"memory: request", func(_ *corev1.PodSpec, c *corev1.Container) {
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("256Mi")
		}},
		{"no GOMEMLIMIT", func(_ *corev1.PodSpec, c *corev1.Container) { c.Env = nil }},
		{"not below the memory limit", func(_ *corev1.PodSpec, c *corev1.Container) { c.Env[0].Value = "128MiB" }},
	} {
		pod, c := restrictedPod()
		tc.spoil(pod, c)
		errs := append(RestrictedPod(pod, c), Resources(c)...)
		if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
			t.Errorf("break of %s: got %v", tc.want, errs)
		}
	}
}
