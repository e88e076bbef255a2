package jobspec

import (
	"errors"
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// CheckFile reads a job file and checks it with Check.
func CheckFile(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the job file: %w", err)
	}
	return Check(src, path)
}

// Check parses src as HCL2 native syntax and refuses every call of a
// function that Nomad's job language does not have, or that needs
// filesystem access. Each error names the function and where it is called.
func Check(src []byte, filename string) error {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return fmt.Errorf("HCL syntax: %w", diags)
	}
	var errs []error
	visit := func(n hclsyntax.Node) hcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok {
			return nil
		}
		switch {
		case !NomadFunctions[call.Name]:
			errs = append(errs, fmt.Errorf("%s: %s() is not a function of Nomad's job language", call.NameRange, call.Name))
		case filesystemFunctions[call.Name]:
			errs = append(errs, fmt.Errorf("%s: %s() reads the local filesystem, which a job submitted through the API cannot", call.NameRange, call.Name))
		}
		return nil
	}
	walkExpressions(f.Body.(*hclsyntax.Body), "", func(e hclsyntax.Expression) { hclsyntax.VisitAll(e, visit) })
	return errors.Join(errs...)
}

// walkExpressions calls fn on every expression of body and its blocks, but
// for a variable's type: list(string) is a type constraint, not a call.
func walkExpressions(body *hclsyntax.Body, blockType string, fn func(hclsyntax.Expression)) {
	for name, a := range body.Attributes {
		if blockType == "variable" && name == "type" {
			continue
		}
		fn(a.Expr)
	}
	for _, b := range body.Blocks {
		walkExpressions(b.Body, b.Type, fn)
	}
}
