package jobspec_test

import (
	"strings"
	"testing"

	"github.com/sensorfarm/sensorfarm/nomad/jobspec"
)

func TestBridgeJobCallsOnlyNomadFunctions(t *testing.T) {
	if err := jobspec.CheckFile("../bridge.hcl"); err != nil {
		t.Fatal(err)
	}
}

// TestCheckRefuses is the control: what Nomad 1.6.5 refuses, the check
// refuses too, among them the regex() the job once used.
func TestCheckRefuses(t *testing.T) {
	for _, c := range []struct{ name, src, want string }{
		{"regex", `variable "x" {
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.x))
    error_message = "no"
  }
}`, "regex() is not a function of Nomad's job language"},
		{"alltrue", `x = alltrue([true])`, "alltrue() is not a function"},
		{"nested", "job \"j\" {\n  meta {\n    a = upper(tostring(1))\n  }\n}", "tostring() is not a function"},
		{"filesystem", `x = file("secret")`, "file() reads the local filesystem"},
		// Nomad 1.6.5: "Call to function \"length\" failed: collection must be
		// a list, a map or a tuple", the mistake the sha256 rule once made.
		{"length of a string", "variable \"s\" {\n  type = string\n  validation {\n    condition     = length(var.s) == 64\n    error_message = \"no\"\n  }\n}\n", "strlen() measures a string"},
		{"syntax", `job "j" {`, "HCL syntax"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := jobspec.Check([]byte(c.src), "test.hcl")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	if err := jobspec.Check([]byte(`x = regex_replace(upper("a"), "[0-9]", "")`), "ok.hcl"); err != nil {
		t.Errorf("functions Nomad has: %v", err)
	}
}
