package k8scheck

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// RestrictedPod returns what in the pod and its container the restricted Pod
// Security Standard, which our namespaces enforce, would refuse, and what else
// we ask of every workload: a numeric non-root UID and an fsGroup, so that
// the container can write its volumes. Where the standard allows a choice we
// do not make (a container-level seccomp profile, NET_BIND_SERVICE, safe
// sysctls, some SELinux types) it refuses more. It sees the pod's spec only,
// not the AppArmor annotations of its metadata. e2e's TestKubeReal checks it
// against a real API server's PodSecurity.
func RestrictedPod(pod *corev1.PodSpec, c *corev1.Container) []error {
	var errs []error
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		errs = append(errs, errors.New("runAsNonRoot is not set"))
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		errs = append(errs, errors.New("runAsUser is not a numeric non-root UID"))
	}
	if psc == nil || psc.FSGroup == nil {
		errs = append(errs, fmt.Errorf("no fsGroup: container %s could not write its volumes", c.Name))
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errs = append(errs, errors.New("no RuntimeDefault seccomp profile: the restricted namespace would refuse the pod"))
	}
	if psc != nil && (psc.AppArmorProfile != nil && psc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined || len(psc.Sysctls) != 0 || psc.SELinuxOptions != nil ||
		psc.WindowsOptions != nil && psc.WindowsOptions.HostProcess != nil && *psc.WindowsOptions.HostProcess) {
		errs = append(errs, errors.New("the pod's securityContext sets an Unconfined AppArmor profile, sysctls, SELinux options or a Windows hostProcess"))
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		errs = append(errs, errors.New("hostNetwork, hostPID or hostIPC is set"))
	}
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil && v.CSI == nil && v.DownwardAPI == nil && v.EmptyDir == nil && v.Ephemeral == nil &&
			v.PersistentVolumeClaim == nil && v.Projected == nil && v.Secret == nil {
			errs = append(errs, fmt.Errorf("volume %s is of a type the restricted standard does not allow (hostPath, ...)", v.Name))
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		errs = append(errs, errors.New("readOnlyRootFilesystem is not set"))
	}
	// The standard applies to every container, init containers included.
	var containers []corev1.Container
	for _, pc := range slices.Concat(pod.InitContainers, pod.Containers) {
		if pc.Name != c.Name {
			containers = append(containers, pc)
		}
	}
	for _, pc := range append(containers, *c) {
		errs = append(errs, restrictedContainer(&pc)...)
	}
	return errs
}

// restrictedContainer returns what the restricted Pod Security Standard
// refuses in one container, where a container's securityContext overrides
// the pod's. It asks for more than the standard where we do: capabilities
// drop ALL and add nothing (the standard allows NET_BIND_SERVICE).
func restrictedContainer(c *corev1.Container) []error {
	var errs []error
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		errs = append(errs, fmt.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name))
	}
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		errs = append(errs, fmt.Errorf("container %s: capabilities: want drop ALL and nothing added", c.Name))
	}
	for _, p := range c.Ports {
		if p.HostPort != 0 {
			errs = append(errs, fmt.Errorf("container %s: hostPort %d", c.Name, p.HostPort))
		}
	}
	if sc == nil {
		return errs
	}
	if sc.Privileged != nil && *sc.Privileged {
		errs = append(errs, fmt.Errorf("container %s: privileged", c.Name))
	}
	if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
		errs = append(errs, fmt.Errorf("container %s: runAsNonRoot is false", c.Name))
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		errs = append(errs, fmt.Errorf("container %s: runAsUser is 0", c.Name))
	}
	if sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
		errs = append(errs, fmt.Errorf("container %s: seccomp profile Unconfined", c.Name))
	}
	if sc.AppArmorProfile != nil && sc.AppArmorProfile.Type == corev1.AppArmorProfileTypeUnconfined {
		errs = append(errs, fmt.Errorf("container %s: AppArmor profile Unconfined", c.Name))
	}
	if sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess {
		errs = append(errs, fmt.Errorf("container %s: a Windows hostProcess", c.Name))
	}
	if sc.SELinuxOptions != nil || sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
		errs = append(errs, fmt.Errorf("container %s: SELinux options or a procMount are set", c.Name))
	}
	return errs
}

// Resources returns what is missing from the container's resources: a
// request and a limit of CPU and memory, each request at most its limit, and
// a GOMEMLIMIT below the memory limit, so that the Go runtime collects before
// the kernel kills.
func Resources(c *corev1.Container) []error {
	var errs []error
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[r]
		lim, okLim := c.Resources.Limits[r]
		if !okReq || !okLim {
			errs = append(errs, fmt.Errorf("%s: want both a request and a limit", r))
		} else if req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("%s: request %s above limit %s", r, req.String(), lim.String()))
		}
	}
	soft, err := GoMemLimit(c)
	if err != nil {
		return append(errs, err)
	}
	if hard := c.Resources.Limits[corev1.ResourceMemory]; soft.Cmp(hard) >= 0 {
		errs = append(errs, fmt.Errorf("GOMEMLIMIT %s is not below the memory limit %s", soft.String(), hard.String()))
	}
	return errs
}

// GoMemLimit returns the container's GOMEMLIMIT, which must be set.
func GoMemLimit(c *corev1.Container) (resource.Quantity, error) {
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil {
			return q, fmt.Errorf("GOMEMLIMIT %q: %w", e.Value, err)
		}
		return q, nil
	}
	return resource.Quantity{}, errors.New("no GOMEMLIMIT: the Go runtime would not know of the memory limit")
}

// ContainerPort resolves a probe's or a Service's port (a name or a number)
// to one the container declares.
func ContainerPort(c *corev1.Container, p intstr.IntOrString) (int32, error) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %s is not a port of container %s", p.String(), c.Name)
}

// MountOf returns the container's volume mount whose directory holds file.
func MountOf(c *corev1.Container, file string) (corev1.VolumeMount, error) {
	for _, m := range c.VolumeMounts {
		if filepath.Dir(file) == m.MountPath {
			return m, nil
		}
	}
	return corev1.VolumeMount{}, fmt.Errorf("no volume is mounted at %s, where container %s looks for %s", filepath.Dir(file), c.Name, file)
}

// Volume returns the pod's volume called name.
func Volume(pod *corev1.PodSpec, name string) (corev1.Volume, error) {
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v, nil
		}
	}
	return corev1.Volume{}, fmt.Errorf("the pod has no volume %q", name)
}
