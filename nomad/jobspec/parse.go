package jobspec

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// JobFile is a parsed job file: its variables, with the values they took,
// and the job with every variable resolved. Runtime interpolations are
// still in the job, literally, as Nomad keeps them until a client places
// the task (see Place).
type JobFile struct {
	Variables map[string]cty.Value
	Job       Job
}

// Variable is an HCL2 input variable block.
type Variable struct {
	Name        string         `hcl:"name,label"`
	Description string         `hcl:"description,optional"`
	Type        hcl.Expression `hcl:"type,optional"`
	Default     cty.Value      `hcl:"default,optional"`
	Validations []Validation   `hcl:"validation,block"`
}

// Validation is a variable's condition, checked once its value is known.
type Validation struct {
	Condition    hcl.Expression `hcl:"condition"`
	ErrorMessage string         `hcl:"error_message"`
}

var jobFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "job", LabelNames: []string{"name"}},
}}

// functions are the HCL functions the job uses, each one Nomad's job
// parser also provides; any other call is an error.
var functions = map[string]function.Function{
	"can":    tryfunc.CanFunc,
	"concat": stdlib.ConcatFunc,
	"regex":  stdlib.RegexFunc,
}

// ParseJobFile reads a job file as `nomad job run -var name=value` would:
// vars are the -var values, given as strings; a variable whose type is not
// string takes its value as an HCL expression, as Nomad does.
func ParseJobFile(path string, vars map[string]string) (*JobFile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the job file: %w", err)
	}
	return ParseJob(src, path, vars)
}

// ParseJob is ParseJobFile on the file's contents.
func ParseJob(src []byte, filename string, vars map[string]string) (*JobFile, error) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	content, diags := f.Body.Content(jobFileSchema)
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	var jobBlock *hcl.Block
	var decls []Variable
	for _, b := range content.Blocks {
		switch b.Type {
		case "variable":
			v := Variable{Name: b.Labels[0]}
			if diags := gohcl.DecodeBody(b.Body, nil, &v); diags.HasErrors() {
				return nil, diagErr(diags)
			}
			decls = append(decls, v)
		case "job":
			if jobBlock != nil {
				return nil, fmt.Errorf("%s: a second job block; a job file holds one", b.DefRange)
			}
			jobBlock = b
		}
	}
	if jobBlock == nil {
		return nil, fmt.Errorf("%s: no job block", filename)
	}
	values, err := resolveVariables(decls, vars)
	if err != nil {
		return nil, err
	}
	runtime, err := runtimeReferences(jobBlock.Body)
	if err != nil {
		return nil, err
	}
	ctx := &hcl.EvalContext{Variables: runtime, Functions: functions}
	ctx.Variables["var"] = cty.ObjectVal(values)

	jf := &JobFile{Variables: values, Job: Job{Name: jobBlock.Labels[0]}}
	if diags := gohcl.DecodeBody(dynblock.Expand(jobBlock.Body, ctx), ctx, &jf.Job); diags.HasErrors() {
		return nil, diagErr(diags)
	}
	return jf, nil
}

// resolveVariables gives each declared variable its -var value or its
// default, converted to its type, and checks its validations.
func resolveVariables(decls []Variable, vars map[string]string) (map[string]cty.Value, error) {
	values := make(map[string]cty.Value, len(decls))
	declared := make(map[string]bool, len(decls))
	for _, d := range decls {
		if declared[d.Name] {
			return nil, fmt.Errorf("variable %q is declared twice", d.Name)
		}
		declared[d.Name] = true
	}
	for name := range vars {
		if !declared[name] {
			return nil, fmt.Errorf("-var %s: the job declares no such variable", name)
		}
	}
	for _, d := range decls {
		ty := cty.DynamicPseudoType
		if d.Type != nil && !isNullExpr(d.Type) {
			t, diags := typeexpr.TypeConstraint(d.Type)
			if diags.HasErrors() {
				return nil, fmt.Errorf("variable %q: %w", d.Name, diagErr(diags))
			}
			ty = t
		}
		val := d.Default
		if raw, ok := vars[d.Name]; ok {
			v, err := parseVarValue(raw, ty)
			if err != nil {
				return nil, fmt.Errorf("-var %s: %w", d.Name, err)
			}
			val = v
		}
		if val.IsNull() {
			return nil, fmt.Errorf("variable %q has no default and no -var value", d.Name)
		}
		val, err := convert.Convert(val, ty)
		if err != nil {
			return nil, fmt.Errorf("variable %q: %w", d.Name, err)
		}
		values[d.Name] = val
	}
	for _, d := range decls {
		if err := validate(d, values); err != nil {
			return nil, err
		}
	}
	return values, nil
}

// diagErr reports every error of diags, each with its place in the file,
// where hcl.Diagnostics' own Error names only the first.
func diagErr(diags hcl.Diagnostics) error {
	var errs []error
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	return errors.Join(errs...)
}

func isNullExpr(e hcl.Expression) bool {
	// An absent optional attribute decodes as an expression for null.
	v, diags := e.Value(nil)
	return !diags.HasErrors() && v.IsNull()
}

// parseVarValue reads a -var value: a string variable takes it as it is,
// anything else as an HCL expression.
func parseVarValue(raw string, ty cty.Type) (cty.Value, error) {
	if ty == cty.String {
		return cty.StringVal(raw), nil
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), "-var", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diagErr(diags)
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, diagErr(diags)
	}
	return v, nil
}

// validate checks a variable's validation conditions, which see only var.
func validate(d Variable, values map[string]cty.Value) error {
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(values)}, Functions: functions}
	for _, v := range d.Validations {
		ok, diags := v.Condition.Value(ctx)
		if diags.HasErrors() {
			return fmt.Errorf("variable %q: validation: %w", d.Name, diagErr(diags))
		}
		if ok.Type() != cty.Bool || ok.IsNull() {
			return fmt.Errorf("variable %q: a validation condition must be true or false", d.Name)
		}
		if ok.False() {
			return fmt.Errorf("variable %q: %s", d.Name, v.ErrorMessage)
		}
	}
	return nil
}

// isRuntimeRoot reports whether a reference is one a Nomad client resolves
// when it places the task: node and attribute names, node metadata and the
// task's NOMAD_* environment.
func isRuntimeRoot(name string) bool {
	switch name {
	case "node", "attr", "meta":
		return true
	}
	return strings.HasPrefix(name, "NOMAD_")
}

// runtimeReferences finds every ${node.*}, ${attr.*}, ${meta.*} and
// ${NOMAD_*} in the job and gives each the string "${name}", so that
// evaluating the job leaves them literally in place. Nomad's own parser
// (jobspec2, on its fork of HCL) does the same through an UnknownVariable
// hook that upstream HCL does not have; unlike Nomad's, any other unknown
// name (a typo such as ${nod.datacenter}) is an error here, not a literal
// passed on to the task.
func runtimeReferences(body hcl.Body) (map[string]cty.Value, error) {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil, fmt.Errorf("the job is not in HCL native syntax")
	}
	tree := &refTree{}
	var walk func(b *hclsyntax.Body) error
	walk = func(b *hclsyntax.Body) error {
		for _, a := range b.Attributes {
			for _, tr := range a.Expr.Variables() {
				if !isRuntimeRoot(tr.RootName()) {
					continue
				}
				if err := tree.add(tr); err != nil {
					return err
				}
			}
		}
		for _, blk := range b.Blocks {
			if err := walk(blk.Body); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(sb); err != nil {
		return nil, err
	}
	vals := make(map[string]cty.Value, len(tree.children))
	for root, sub := range tree.children {
		vals[root] = sub.value()
	}
	return vals, nil
}

// refTree holds dotted names: a leaf is the string "${dotted.name}", an
// inner node an object of the names below it.
type refTree struct {
	leaf     string
	children map[string]*refTree
}

func (t *refTree) add(tr hcl.Traversal) error {
	names := []string{tr.RootName()}
	for _, step := range tr[1:] {
		a, ok := step.(hcl.TraverseAttr)
		if !ok {
			return fmt.Errorf("%s: a runtime interpolation must be a dotted name such as ${node.unique.name}", tr.SourceRange())
		}
		names = append(names, a.Name)
	}
	full := "${" + strings.Join(names, ".") + "}"
	node := t
	for _, n := range names {
		if node.leaf != "" {
			return fmt.Errorf("%s: %s is used both as a name and as a prefix of %s", tr.SourceRange(), node.leaf, full)
		}
		if node.children == nil {
			node.children = map[string]*refTree{}
		}
		next, ok := node.children[n]
		if !ok {
			next = &refTree{}
			node.children[n] = next
		}
		node = next
	}
	if len(node.children) > 0 {
		return fmt.Errorf("%s: %s is used both as a name and as a prefix of others", tr.SourceRange(), full)
	}
	node.leaf = full
	return nil
}

func (t *refTree) value() cty.Value {
	if t.children == nil {
		return cty.StringVal(t.leaf)
	}
	attrs := make(map[string]cty.Value, len(t.children))
	for k, c := range t.children {
		attrs[k] = c.value()
	}
	return cty.ObjectVal(attrs)
}

// ParseClientFile reads a Nomad agent configuration into Client; anything
// Client does not name is an error.
func ParseClientFile(path string) (*Client, error) {
	var c Client
	if err := decodeFile(path, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParsePolicyFile reads an ACL policy into Policy; anything Policy does not
// name is an error.
func ParsePolicyFile(path string) (*Policy, error) {
	var p Policy
	if err := decodeFile(path, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func decodeFile(path string, into any) error {
	f, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		return diagErr(diags)
	}
	if diags := gohcl.DecodeBody(f.Body, nil, into); diags.HasErrors() {
		return diagErr(diags)
	}
	return nil
}
