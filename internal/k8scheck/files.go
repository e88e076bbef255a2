package k8scheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/types"
)

// ListsEveryFile returns how dir and its kustomization k disagree: a file
// with one of the extensions exts in dir that k neither lists as a resource
// nor reads in a generator (kubectl apply -k would leave it out), a file k
// lists that is not there, and a file under secrets/ that k reads but that is
// not one of userFiles (the files the README tells the user to create), or
// the reverse.
func ListsEveryFile(dir string, k types.Kustomization, userFiles []string, exts ...string) []error {
	var errs []error
	listed := append(slices.Clone(k.Resources), GeneratorFiles(k)...)
	for _, p := range listed {
		if strings.HasPrefix(p, "secrets/") {
			if !slices.Contains(userFiles, p) {
				errs = append(errs, fmt.Errorf("kustomization.yaml reads %s, which the README does not tell the user to create", p))
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			errs = append(errs, fmt.Errorf("kustomization.yaml lists %s: %w", p, err))
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return append(errs, err)
	}
	for _, e := range entries {
		if e.IsDir() || !slices.Contains(exts, filepath.Ext(e.Name())) || e.Name() == "kustomization.yaml" {
			continue
		}
		if !slices.Contains(listed, e.Name()) {
			errs = append(errs, fmt.Errorf("%s is in the directory but not in kustomization.yaml: kubectl apply -k would leave it out", e.Name()))
		}
	}
	for _, f := range userFiles {
		if !slices.Contains(listed, f) {
			errs = append(errs, fmt.Errorf("the README tells the user to create %s, but no generator reads it", f))
		}
	}
	return errs
}
