// Package k8scheck checks a kustomize directory of Kubernetes manifests
// without a cluster, for the tests beside them: every object decodes strictly
// into its Kubernetes API type (an unknown or misspelt field fails, as the API
// server's strict field validation would), and kustomize's own engine builds
// the directory. It is a stand-in, not the API server: it runs neither the
// server's validation nor its admission; e2e's TestKubeReal submits the same
// builds to a real kube-apiserver when one is at hand.
package k8scheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Kinds maps "apiVersion/kind" to a new object of its API type. A kind not in
// it is an error: it would be applied unchecked.
type Kinds map[string]func() any

// Decode decodes one YAML document into the API type of its kind, refusing
// unknown and duplicate fields.
func (k Kinds) Decode(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("read apiVersion and kind: %w", err)
	}
	newObj, ok := k[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s/%s is not one this test knows how to check", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// UnmarshalStrict decodes YAML as the API server decodes JSON: keys match
// field names case-sensitively, and unknown or duplicate keys are errors.
// sigs.k8s.io/yaml's UnmarshalStrict alone would not do: it decodes with
// encoding/json, which takes readOnlyRootFileSystem for
// readOnlyRootFilesystem, a field the API server would drop.
func UnmarshalStrict(doc []byte, obj any) error {
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

// SplitDocs splits a multi-document YAML file; empty documents are dropped.
func SplitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// ReadKustomization reads dir/kustomization.yaml strictly.
func ReadKustomization(dir string) (types.Kustomization, error) {
	var k types.Kustomization
	b, err := os.ReadFile(path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return k, err
	}
	if err := UnmarshalStrict(b, &k); err != nil {
		return k, fmt.Errorf("kustomization.yaml: %w", err)
	}
	return k, nil
}

// GeneratorFiles returns the paths the kustomization's generators read
// ("key=path" or "path").
func GeneratorFiles(k types.Kustomization) []string {
	var files []string
	var sources []types.KvPairSources
	for _, g := range k.ConfigMapGenerator {
		sources = append(sources, g.KvPairSources)
	}
	for _, g := range k.SecretGenerator {
		sources = append(sources, g.KvPairSources)
	}
	for _, s := range sources {
		for _, f := range s.FileSources {
			_, p, found := strings.Cut(f, "=")
			if !found {
				p = f
			}
			files = append(files, p)
		}
		files = append(files, s.EnvSources...)
	}
	return files
}

// Build runs kustomize's engine on a copy of dir's files, with userFiles (the
// files the user creates before the first apply, path to content) added, and
// decodes every object it produces strictly.
func (k Kinds) Build(dir string, userFiles map[string][]byte) ([]any, error) {
	return k.BuildSource(Source{Dir: dir, UserFiles: userFiles})
}

// Source is what BuildSource copies and builds.
type Source struct {
	// Dir is the directory whose files are copied.
	Dir string
	// Tree copies Dir's subdirectories too (Go files left out), for an
	// overlay that reaches into a sibling base.
	Tree bool
	// Kustomization is the directory to build, relative to Dir ("" is Dir).
	Kustomization string
	// UserFiles are the files the user creates before the first apply,
	// path (relative to Dir) to content.
	UserFiles map[string][]byte
	// Edit, if set, rewrites each copied file (path relative to Dir) first.
	Edit func(name string, b []byte) []byte
}

// BuildSource runs kustomize's engine on a copy of s.Dir and decodes every
// object it produces strictly.
func (k Kinds) BuildSource(s Source) ([]any, error) {
	docs, err := Render(s)
	if err != nil {
		return nil, err
	}
	var objs []any
	for _, d := range docs {
		obj, err := k.Decode(d.YAML)
		if err != nil {
			return nil, fmt.Errorf("kustomize output %s: %w", d.ID, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// Doc is one object kustomize built, as YAML.
type Doc struct {
	// ID names the object (group, version, kind, namespace and name).
	ID   string
	YAML []byte
}

// Render runs kustomize's engine on a copy of s.Dir and returns the objects
// it builds as YAML, in order, undecoded: what `kubectl apply -k` sends.
func Render(s Source) ([]Doc, error) {
	fs := filesys.MakeFsInMemory()
	const root = "/k8s"
	err := filepath.WalkDir(s.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != s.Dir && !s.Tree {
				return filepath.SkipDir
			}
			return nil
		}
		if s.Tree && strings.HasSuffix(p, ".go") {
			return nil
		}
		rel, err := filepath.Rel(s.Dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if s.Edit != nil {
			b = s.Edit(filepath.ToSlash(rel), b)
		}
		return fs.WriteFile(path.Join(root, filepath.ToSlash(rel)), b)
	})
	if err != nil {
		return nil, err
	}
	for f, b := range s.UserFiles {
		if err := fs.WriteFile(path.Join(root, f), b); err != nil {
			return nil, err
		}
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, path.Join(root, s.Kustomization))
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", err)
	}
	var docs []Doc
	for _, r := range resMap.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize output %s: %w", r.CurId(), err)
		}
		docs = append(docs, Doc{ID: r.CurId().String(), YAML: doc})
	}
	return docs, nil
}

// Core is the kinds a plain workload's directory holds: a StatefulSet, its
// Services, ConfigMaps and Secrets, and a Namespace.
func Core() Kinds {
	return Kinds{
		"v1/Namespace":        func() any { return new(corev1.Namespace) },
		"v1/Service":          func() any { return new(corev1.Service) },
		"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
		"v1/Secret":           func() any { return new(corev1.Secret) },
		"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
	}
}

// StandIns gives each path a placeholder content, for the files a user
// creates (TLS pairs, users files) that generators only copy.
func StandIns(paths ...string) map[string][]byte {
	files := make(map[string][]byte, len(paths))
	for _, p := range paths {
		files[p] = []byte("stand-in for " + p + "\n")
	}
	return files
}

// Built is what `kubectl apply -k` would send, grouped by kind.
type Built struct {
	Namespaces   []*corev1.Namespace
	StatefulSets []*appsv1.StatefulSet
	Services     []*corev1.Service
	ConfigMaps   map[string]*corev1.ConfigMap
	Secrets      map[string]*corev1.Secret
	// Objects is every namespaced object, in build order.
	Objects []metav1.Object
}

// Group sorts the objects of a Build by kind.
func Group(objs []any) Built {
	b := Built{ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{}}
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.Namespace:
			b.Namespaces = append(b.Namespaces, o)
			continue
		case *appsv1.StatefulSet:
			b.StatefulSets = append(b.StatefulSets, o)
		case *corev1.Service:
			b.Services = append(b.Services, o)
		case *corev1.ConfigMap:
			b.ConfigMaps[o.Name] = o
		case *corev1.Secret:
			b.Secrets[o.Name] = o
		}
		if o, ok := obj.(metav1.Object); ok {
			b.Objects = append(b.Objects, o)
		}
	}
	return b
}

// DecodeResources decodes every document of every resource file the
// kustomization kz in dir lists, strictly, and returns what fails.
func (k Kinds) DecodeResources(dir string, kz types.Kustomization) []error {
	if len(kz.Resources) == 0 {
		return []error{errors.New("kustomization.yaml lists no resources")}
	}
	var errs []error
	for _, name := range kz.Resources {
		b, err := os.ReadFile(path.Join(dir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("kustomization.yaml lists %s: %w", name, err))
			continue
		}
		docs := SplitDocs(b)
		if len(docs) == 0 {
			errs = append(errs, fmt.Errorf("%s holds no object", name))
		}
		for i, doc := range docs {
			if _, err := k.Decode(doc); err != nil {
				errs = append(errs, fmt.Errorf("%s, document %d: %w", name, i+1, err))
			}
		}
	}
	return errs
}
