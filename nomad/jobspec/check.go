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
	body := f.Body.(*hclsyntax.Body)
	strs := stringVariables(body)
	var errs []error
	visit := func(n hclsyntax.Node) hcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok {
			return nil
		}
		switch {
		case call.Name == "length" && len(call.Args) == 1 && strs[variableName(call.Args[0])]:
			errs = append(errs, fmt.Errorf("%s: length() of the string var.%s: Nomad's length takes a list, map or tuple only; strlen() measures a string", call.NameRange, variableName(call.Args[0])))
		case !NomadFunctions[call.Name]:
			errs = append(errs, fmt.Errorf("%s: %s() is not a function of Nomad's job language", call.NameRange, call.Name))
		case filesystemFunctions[call.Name]:
			errs = append(errs, fmt.Errorf("%s: %s() reads the local filesystem, which a job submitted through the API cannot", call.NameRange, call.Name))
		}
		return nil
	}
	walkExpressions(body, "", func(e hclsyntax.Expression) { hclsyntax.VisitAll(e, visit) })
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

// stringVariables are the variables declared with type = string.
func stringVariables(body *hclsyntax.Body) map[string]bool {
	strs := map[string]bool{}
	for _, b := range body.Blocks {
		if b.Type != "variable" || len(b.Labels) != 1 {
			continue
		}
		if a, ok := b.Body.Attributes["type"]; ok {
			if tr, ok := a.Expr.(*hclsyntax.ScopeTraversalExpr); ok && tr.Traversal.RootName() == "string" && len(tr.Traversal) == 1 {
				strs[b.Labels[0]] = true
			}
		}
	}
	return strs
}

// variableName is NAME for an expression var.NAME, else "".
func variableName(e hclsyntax.Expression) string {
	tr, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok || tr.Traversal.RootName() != "var" || len(tr.Traversal) != 2 {
		return ""
	}
	if a, ok := tr.Traversal[1].(hcl.TraverseAttr); ok {
		return a.Name
	}
	return ""
}
