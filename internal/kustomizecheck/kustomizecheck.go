// Package kustomizecheck builds a kustomize directory with kustomize's own
// engine and decodes every object strictly into its Kubernetes API type, as
// the API server would refuse it: an unknown, misspelt or duplicate field is
// an error. For the manifest tests (nomad/server; the same approach as
// broker/k8s/k8s_test.go).
package kustomizecheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kinds are the object kinds a checked directory may hold or generate. Any
// other kind is an error: it would be applied unchecked.
var kinds = map[string]func() any{
	"v1/Namespace":        func() any { return new(corev1.Namespace) },
	"v1/Service":          func() any { return new(corev1.Service) },
	"v1/ConfigMap":        func() any { return new(corev1.ConfigMap) },
	"v1/Secret":           func() any { return new(corev1.Secret) },
	"apps/v1/StatefulSet": func() any { return new(appsv1.StatefulSet) },
}

// DecodeStrict decodes one YAML document into the API type of its kind.
func DecodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("read apiVersion and kind: %w", err)
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s/%s is not one this check knows", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// UnmarshalStrict decodes YAML as the API server decodes JSON: keys match
// field names case-sensitively, unknown or duplicate keys are errors.
// (sigs.k8s.io/yaml's UnmarshalStrict alone decodes with encoding/json,
// which matches keys case-insensitively.)
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

// Kustomization reads dir/kustomization.yaml strictly.
func Kustomization(dir string) (types.Kustomization, error) {
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

// SplitDocs splits a multi-document YAML file; empty documents are dropped.
func SplitDocs(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---")) {
		var content bool
		for _, line := range bytes.Split(d, []byte("\n")) {
			if l := bytes.TrimSpace(line); len(l) > 0 && l[0] != '#' {
				content = true
			}
		}
		if content {
			docs = append(docs, d)
		}
	}
	return docs
}

// Built is what `kubectl apply -k` would send, decoded into API types.
type Built struct {
	Namespaces   []*corev1.Namespace
	StatefulSets []*appsv1.StatefulSet
	Services     []*corev1.Service
	ConfigMaps   map[string]*corev1.ConfigMap
	Secrets      map[string]*corev1.Secret
}

// Build runs kustomize on a copy of dir's files in memory, with
// stand-ins for userFiles (files the user creates, which generators only
// copy), and decodes every object it produces strictly.
func Build(dir string, userFiles []string) (Built, error) {
	out := Built{ConfigMaps: map[string]*corev1.ConfigMap{}, Secrets: map[string]*corev1.Secret{}}
	fs := filesys.MakeFsInMemory()
	const root = "/k"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out, err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return out, err
		}
		if err := fs.WriteFile(path.Join(root, e.Name()), b); err != nil {
			return out, err
		}
	}
	for _, f := range userFiles {
		if err := fs.WriteFile(path.Join(root, f), []byte("stand-in for "+f+"\n")); err != nil {
			return out, err
		}
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, root)
	if err != nil {
		return out, fmt.Errorf("kustomize build: %w", err)
	}
	for _, r := range resMap.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return out, fmt.Errorf("kustomize output %s: %w", r.CurId(), err)
		}
		obj, err := DecodeStrict(doc)
		if err != nil {
			return out, fmt.Errorf("kustomize output %s: %w", r.CurId(), err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			out.Namespaces = append(out.Namespaces, o)
		case *appsv1.StatefulSet:
			out.StatefulSets = append(out.StatefulSets, o)
		case *corev1.Service:
			out.Services = append(out.Services, o)
		case *corev1.ConfigMap:
			out.ConfigMaps[o.Name] = o
		case *corev1.Secret:
			out.Secrets[o.Name] = o
		}
	}
	return out, nil
}

// Objects returns every namespaced object built.
func (b Built) Objects() []metav1.Object {
	var objs []metav1.Object
	for _, s := range b.StatefulSets {
		objs = append(objs, s)
	}
	for _, s := range b.Services {
		objs = append(objs, s)
	}
	for _, c := range b.ConfigMaps {
		objs = append(objs, c)
	}
	for _, s := range b.Secrets {
		objs = append(objs, s)
	}
	return objs
}
