package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sensorfarm/sensorfarm/internal/k8scheck"
)

// manifestSet is one thing a README tells the user to apply, built as the
// user's kubectl would build it.
type manifestSet struct {
	// dir is the directory, relative to the repository's root.
	dir string
	// plain: `kubectl apply -f dir` (every .yaml file); otherwise
	// `kubectl apply -k dir`.
	plain bool
	// src is the kustomize build, Dir relative to the repository's root.
	src k8scheck.Source
	// alternative: the set replaces another (a variant), so it is checked
	// with a dry run and not stored.
	alternative bool
}

// manifestSets are every set of Kubernetes manifests the repository ships,
// in the order the READMEs apply them (a namespace before what goes in it).
// The files the user creates are stand-ins, except the TLS pairs of
// kubernetes.io/tls Secrets: the API server warns of a tls.crt that is not
// PEM.
func manifestSets(t *testing.T) []manifestSet {
	crt, key := newCA(t, "sensorfarm test CA").issue(t, 2, "broker.farm.lan")
	withTLS := func(files map[string][]byte) map[string][]byte {
		files["secrets/tls.crt"], files["secrets/tls.key"] = crt, key
		return files
	}
	archiveFiles := k8scheck.StandIns("base/secrets/mqtt-password", "postgres/secrets/postgres-dsn")
	return []manifestSet{
		{dir: "broker/k8s/namespace", plain: true},
		{dir: "broker/k8s", src: k8scheck.Source{Dir: "broker/k8s", UserFiles: withTLS(k8scheck.StandIns("secrets/users.yaml"))}},
		{dir: "broker/k8s/podmonitor", src: k8scheck.Source{Dir: "broker/k8s/podmonitor"}},
		// The variant first: its dry run would find the other's objects.
		{dir: "archive/k8s/postgres", alternative: true,
			src: k8scheck.Source{Dir: "archive/k8s", Tree: true, Kustomization: "postgres", UserFiles: archiveFiles}},
		{dir: "archive/k8s", src: k8scheck.Source{Dir: "archive/k8s", Tree: true, UserFiles: archiveFiles}},
		{dir: "nats/k8s", src: k8scheck.Source{Dir: "nats/k8s", UserFiles: withTLS(k8scheck.StandIns("secrets/users.conf"))}},
		{dir: "nomad/server", src: k8scheck.Source{Dir: "nomad/server",
			UserFiles: k8scheck.StandIns("secrets/nomad-agent-ca.pem", "secrets/global-server-nomad.pem", "secrets/global-server-nomad-key.pem")}},
	}
}

// onlyABase are kustomization directories applied only through another.
var onlyABase = []string{"archive/k8s/base"}

// docs builds the set: the objects kubectl would send, as YAML.
func (s manifestSet) docs(t *testing.T) []k8scheck.Doc {
	t.Helper()
	root := repoRoot()
	if !s.plain {
		src := s.src
		src.Dir = filepath.Join(root, src.Dir)
		docs, err := k8scheck.Render(src)
		require.NoError(t, err, "kustomize build %s", s.dir)
		return docs
	}
	files, err := filepath.Glob(filepath.Join(root, s.dir, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "%s holds no .yaml file", s.dir)
	var docs []k8scheck.Doc
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, d := range k8scheck.SplitDocs(b) {
			docs = append(docs, k8scheck.Doc{ID: fmt.Sprintf("%s, document %d", filepath.Base(f), i+1), YAML: d})
		}
	}
	return docs
}

// TestManifestSetsCoverTheRepository fails when a kustomization appears that
// TestKubeReal does not submit. It needs no API server.
func TestManifestSetsCoverTheRepository(t *testing.T) {
	known := slices.Clone(onlyABase)
	for _, s := range manifestSets(t) {
		if !s.plain {
			known = append(known, s.dir)
		}
	}
	var found []string
	root := repoRoot()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.Name() != "kustomization.yaml" {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(p))
		if err != nil {
			return err
		}
		found = append(found, filepath.ToSlash(rel))
		return nil
	})
	require.NoError(t, err)
	require.ElementsMatch(t, known, found, "the kustomizations TestKubeReal submits (or that are only a base) are the repository's: a new one goes into manifestSets")
}

// TestKubeReal creates every manifest set the repository ships on a real
// kube-apiserver (on a real etcd, both on loopback), as a first `kubectl
// apply` would, with strict field validation: each object goes through the
// server's decoding, defaulting, validation and admission (PodSecurity
// included) and is stored, so the sets must also fit together (names,
// NodePorts). No controller or kubelet runs: no pod is made. A variant that
// replaces another set is checked with a dry run. Any error or any warning
// fails. Kinds the plain API server does not serve (a third-party CRD such
// as prometheus-operator's PodMonitor) are logged as not checked.
//
// It runs when a kube-apiserver binary is on PATH or at $KUBE_APISERVER and
// an etcd at $ETCD or on PATH; README.md ("The manifests on a real API
// server") says how to get both.
func TestKubeReal(t *testing.T) {
	apiserverBin, etcdBin := findKube(t)
	k := startKube(t, apiserverBin, etcdBin)
	t.Logf("kube-apiserver %s on etcd %s, ready", k.version, k.etcdVersion)

	var namespaces []string
	used := map[string][]string{} // namespace -> objects in it
	var unchecked []string
	sets := manifestSets(t)
	for _, s := range sets {
		docs := s.docs(t)
		require.NotEmpty(t, docs, "%s builds no object", s.dir)
		// A Namespace goes first, as kubectl sends it first.
		slices.SortStableFunc(docs, func(a, b k8scheck.Doc) int {
			return boolInt(!isNamespace(a)) - boolInt(!isNamespace(b))
		})
		accepted := 0
		for _, d := range docs {
			o, err := k.submit(d.YAML, s.alternative && !isNamespace(d))
			what := s.dir + ": " + d.ID
			switch {
			case errors.Is(err, errNotServed):
				unchecked = append(unchecked, what)
				t.Logf("NOT CHECKED by the real server (%v): %s", err, what)
				continue
			case err != nil:
				t.Errorf("%s: %v", what, err)
				continue
			}
			accepted++
			if o.Kind == "Namespace" {
				namespaces = append(namespaces, o.Name)
			} else if o.Namespace != "" {
				used[o.Namespace] = append(used[o.Namespace], what)
			}
		}
		t.Logf("%s: %d of %d objects accepted without a warning (dry run: %v)", s.dir, accepted, len(docs), s.alternative)
	}
	// Every namespace an object goes into is one the repository ships, and
	// it enforces the restricted Pod Security Standard the READMEs promise
	// (without the label, PodSecurity would have had nothing to warn about).
	for ns, objs := range used {
		if !slices.Contains(namespaces, ns) {
			t.Errorf("namespace %s is not created by any manifest set, but %s go into it", ns, strings.Join(objs, ", "))
			continue
		}
		var got struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		k.mustGet(t, "/api/v1/namespaces/"+ns, &got)
		require.Equal(t, "restricted", got.Metadata.Labels["pod-security.kubernetes.io/enforce"], "namespace %s enforces the restricted Pod Security Standard", ns)
	}
	t.Logf("namespaces created: %s; not checked by the real server: %d object(s)", strings.Join(namespaces, ", "), len(unchecked))

	// The controls: the same submission (a dry run, under another name)
	// refuses a misspelt field and warns of a pod template that breaks the
	// restricted standard.
	var sts []byte
	i := slices.IndexFunc(sets, func(s manifestSet) bool { return s.dir == "broker/k8s" })
	for _, d := range sets[i].docs(t) {
		if strings.Contains(d.ID, "StatefulSet") {
			sts = renamed(t, d.YAML, "control")
		}
	}
	require.NotNil(t, sts, "broker/k8s builds a StatefulSet")
	t.Run("control: a misspelt field is refused", func(t *testing.T) {
		bad := bytes.Replace(sts, []byte("readOnlyRootFilesystem:"), []byte("readOnlyRootFileSystem:"), 1)
		require.NotEqual(t, sts, bad)
		_, err := k.submit(bad, true)
		require.ErrorContains(t, err, "readOnlyRootFileSystem")
	})
	// Each break of the restricted standard in the pod template: the real
	// server warns of it, and so must the stand-in check (k8scheck's
	// RestrictedPod) that make test runs without a server.
	for _, c := range []struct {
		name  string
		warns string // what the server's warning says
		spoil func(pod, container map[string]any)
	}{
		{"allowPrivilegeEscalation", "allowPrivilegeEscalation != false", func(_, c map[string]any) { sub(c, "securityContext")["allowPrivilegeEscalation"] = true }},
		{"privileged", "privileged (container", func(_, c map[string]any) {
			sub(c, "securityContext")["privileged"] = true
			sub(c, "securityContext")["allowPrivilegeEscalation"] = true // the API server's validation refuses privileged without it
		}},
		{"capabilities", "unrestricted capabilities", func(_, c map[string]any) { sub(sub(c, "securityContext"), "capabilities")["add"] = []any{"NET_ADMIN"} }},
		{"runAsUser=0", "runAsUser=0", func(_, c map[string]any) { sub(c, "securityContext")["runAsUser"] = 0 }},
		{"runAsNonRoot", "runAsNonRoot != true", func(_, c map[string]any) { sub(c, "securityContext")["runAsNonRoot"] = false }},
		{"seccompProfile", "seccompProfile", func(_, c map[string]any) {
			sub(c, "securityContext")["seccompProfile"] = map[string]any{"type": "Unconfined"}
		}},
		{"appArmorProfile", "forbidden AppArmor profile", func(_, c map[string]any) {
			sub(c, "securityContext")["appArmorProfile"] = map[string]any{"type": "Unconfined"}
		}},
		{"hostPort", "hostPort", func(_, c map[string]any) { c["ports"].([]any)[0].(map[string]any)["hostPort"] = 31999 }},
		{"host namespaces", "host namespaces", func(p, _ map[string]any) { p["hostNetwork"] = true }},
		{"hostPath volumes", "restricted volume types", func(p, _ map[string]any) {
			p["volumes"] = append(p["volumes"].([]any), map[string]any{"name": "host", "hostPath": map[string]any{"path": "/"}})
		}},
		{"forbidden sysctls", "forbidden sysctls", func(p, _ map[string]any) {
			sub(p, "securityContext")["sysctls"] = []any{map[string]any{"name": "kernel.msgmax", "value": "65536"}}
		}},
		{"an init container", `container \"init\"`, func(p, c map[string]any) {
			p["initContainers"] = []any{map[string]any{"name": "init", "image": c["image"]}}
		}},
	} {
		t.Run("control: "+c.name+" is warned of, by the server and the stand-in", func(t *testing.T) {
			var obj map[string]any
			require.NoError(t, yaml.Unmarshal(sts, &obj))
			pod := sub(sub(sub(obj, "spec"), "template"), "spec")
			c.spoil(pod, pod["containers"].([]any)[0].(map[string]any))
			bad, err := yaml.Marshal(obj)
			require.NoError(t, err)
			_, err = k.submit(bad, true)
			require.ErrorContains(t, err, "would violate PodSecurity")
			require.ErrorContains(t, err, c.warns)

			decoded, err := k8scheck.Core().Decode(bad)
			require.NoError(t, err)
			spec := decoded.(*appsv1.StatefulSet).Spec.Template.Spec
			require.NotEmpty(t, k8scheck.RestrictedPod(&spec, &spec.Containers[0]), "the stand-in passes what the server warns of")
		})
	}
}

// sub is m[key] as a map, made if absent.
func sub(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

// renamed is doc with metadata.name set to name.
func renamed(t *testing.T, doc []byte, name string) []byte {
	t.Helper()
	var obj map[string]any
	require.NoError(t, yaml.Unmarshal(doc, &obj))
	obj["metadata"].(map[string]any)["name"] = name
	out, err := yaml.Marshal(obj)
	require.NoError(t, err)
	return out
}

func isNamespace(d k8scheck.Doc) bool {
	var tm metav1.TypeMeta
	return yaml.Unmarshal(d.YAML, &tm) == nil && tm.Kind == "Namespace"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func findKube(t *testing.T) (apiserver, etcd string) {
	t.Helper()
	apiserver = os.Getenv("KUBE_APISERVER")
	if apiserver == "" {
		apiserver, _ = exec.LookPath("kube-apiserver")
	}
	etcd = os.Getenv("ETCD")
	if etcd == "" {
		etcd, _ = exec.LookPath("etcd")
	}
	switch {
	case apiserver == "":
		skip(t, "no kube-apiserver binary on PATH and $KUBE_APISERVER is not set, so the Kubernetes manifests were not checked by a real API server (README.md: \"The manifests on a real API server\")")
	case etcd == "":
		skip(t, "kube-apiserver found but no etcd on PATH or at $ETCD (Debian: apt-get install etcd-server), so the Kubernetes manifests were not checked by a real API server")
	}
	return apiserver, etcd
}

// kube is a running kube-apiserver and how to reach it.
type kube struct {
	base        string
	token       string
	client      *http.Client
	version     string
	etcdVersion string
}

// startKube runs etcd and kube-apiserver on free loopback ports with their
// data in temporary directories, and waits until the API server is ready.
// Authentication is a static token, authorization allows all; no cloud
// provider, no kubelets, no webhooks: nothing leaves loopback.
func startKube(t *testing.T, apiserverBin, etcdBin string) *kube {
	t.Helper()
	dir := t.TempDir()
	clientURL, peerURL := "http://"+freeAddr(t), "http://"+freeAddr(t)
	etcd := start(t, "etcd", etcdBin,
		"--name", "default",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--initial-cluster-state", "new")
	k := &kube{token: fmt.Sprintf("sensorfarm-test-%d", os.Getpid()), etcdVersion: "?"}
	waitHTTP(t, etcd, &http.Client{Timeout: 5 * time.Second}, clientURL+"/version", "", 60*time.Second, func(body []byte) {
		var v struct {
			Server string `json:"etcdserver"`
		}
		if json.Unmarshal(body, &v) == nil {
			k.etcdVersion = v.Server
		}
	})

	// The service-account signing key the API server requires, and the token.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	saKey := filepath.Join(dir, "sa.key")
	require.NoError(t, os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600))
	tokens := filepath.Join(dir, "tokens.csv")
	require.NoError(t, os.WriteFile(tokens, []byte(k.token+",sensorfarm-test,sensorfarm-test,system:masters\n"), 0o600))

	addr := freeAddr(t)
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	certDir := filepath.Join(dir, "certs")
	apiserver := start(t, "kube-apiserver", apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", port,
		"--cert-dir", certDir,
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--token-auth-file", tokens, "--anonymous-auth=false",
		"--authorization-mode", "AlwaysAllow",
		"--allow-privileged=true", // as kubeadm and k3s run it: PodSecurity, not this flag, keeps privileged pods out
		"--endpoint-reconciler-type", "none",
		"--profiling=false")
	k.base = "https://" + addr

	// The serving certificate it makes for itself in --cert-dir, trusted
	// once it is there.
	crt := filepath.Join(certDir, "apiserver.crt")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(crt); err == nil {
			break
		}
		if !apiserver.running() || time.Now().After(deadline) {
			t.Fatalf("kube-apiserver wrote no %s (running: %v)", crt, apiserver.running())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the key and certificate are written one after the other
	pemCrt, err := os.ReadFile(crt)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemCrt), "%s holds a certificate", crt)
	k.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	// Generous: two loaded cores take a minute or more to bring it up.
	waitHTTP(t, apiserver, k.client, k.base+"/readyz", k.token, 4*time.Minute, nil)
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	k.mustGet(t, "/version", &v)
	k.version = v.GitVersion
	if bi, err := buildinfo.ReadFile(apiserverBin); err == nil {
		for _, d := range append(bi.Deps, &bi.Main) {
			if d.Path == "k8s.io/kubernetes" {
				k.version = "built from k8s.io/kubernetes " + d.Version
			}
		}
	}
	return k
}

// waitHTTP polls url until it answers 200, then hands onReady the body.
func waitHTTP(t *testing.T, p *process, c *http.Client, url, token string, limit time.Duration, onReady func([]byte)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last string
	for {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if onReady != nil {
					onReady(body)
				}
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, body)
		} else {
			last = err.Error()
		}
		if !p.running() {
			t.Fatalf("%s exited (%v) before %s answered", p.name, p.err, url)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s; last answer: %s", url, limit, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (k *kube) do(method, p string, body []byte) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, k.base+p, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func (k *kube) mustGet(t *testing.T, p string, into any) {
	t.Helper()
	resp, body, err := k.do(http.MethodGet, p, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", p, body)
	require.NoError(t, json.Unmarshal(body, into), "GET %s", p)
}

// errNotServed is a kind the API server has no resource for.
var errNotServed = errors.New("a kind this API server does not serve")

// object names what was submitted.
type object struct {
	Kind, Namespace, Name string
}

// submit creates the object in doc (dry run: checked, not stored),
// with strict field validation. An error, or any warning, is returned as
// an error with the server's message.
func (k *kube) submit(doc []byte, dryRun bool) (object, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return object{}, fmt.Errorf("YAML to JSON: %w", err)
	}
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return object{}, fmt.Errorf("read apiVersion, kind and metadata: %w", err)
	}
	o := object{Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name}
	collection, err := k.collection(head.APIVersion, head.Kind, o.Namespace)
	if err != nil {
		return o, err
	}
	q := "?fieldValidation=Strict&fieldManager=sensorfarm-test"
	if dryRun {
		q += "&dryRun=All"
	}
	resp, body, err := k.do(http.MethodPost, collection+q, j)
	if err != nil {
		return o, fmt.Errorf("POST %s: %w", collection, err)
	}
	var problems []string
	if resp.StatusCode != http.StatusCreated {
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			problems = append(problems, fmt.Sprintf("refused (%s): %s", resp.Status, st.Message))
		} else {
			problems = append(problems, fmt.Sprintf("refused (%s): %s", resp.Status, body))
		}
	}
	for _, w := range resp.Header.Values("Warning") {
		problems = append(problems, "Warning: "+w)
	}
	if len(problems) > 0 {
		return o, errors.New(strings.Join(problems, "; "))
	}
	return o, nil
}

// collection is the path to POST an object of kind to, found by the API
// server's discovery: a kind it does not serve is errNotServed.
func (k *kube) collection(apiVersion, kind, namespace string) (string, error) {
	gv := "/apis/" + apiVersion
	if !strings.Contains(apiVersion, "/") {
		gv = "/api/" + apiVersion
	}
	resp, body, err := k.do(http.MethodGet, gv, nil)
	if err != nil {
		return "", fmt.Errorf("discovery of %s: %w", apiVersion, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return "", fmt.Errorf("%w: no API group %s", errNotServed, apiVersion)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery of %s: %s: %s", apiVersion, resp.Status, body)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(body, &list); err != nil {
		return "", fmt.Errorf("discovery of %s: %w", apiVersion, err)
	}
	for _, r := range list.APIResources {
		if r.Kind != kind || strings.Contains(r.Name, "/") {
			continue
		}
		if !r.Namespaced {
			return path.Join(gv, r.Name), nil
		}
		if namespace == "" {
			return "", fmt.Errorf("%s is namespaced, but the object names no namespace", kind)
		}
		return path.Join(gv, "namespaces", namespace, r.Name), nil
	}
	return "", fmt.Errorf("%w: no kind %s in %s", errNotServed, kind, apiVersion)
}
