// Package jobspec checks what this repository can check of a Nomad job file
// without Nomad: its HCL syntax, and that it calls only functions Nomad's
// job language has, and length() on no string variable. It does not stand in for Nomad: Nomad's own parser,
// validation, scheduler and client run in e2e/nomad_real_test.go whenever
// a nomad binary is at hand, and `nomad job validate` is the check to run
// before a `nomad job run`.
package jobspec

// NomadFunctions are the functions of Nomad's job language (HCL2), as
// jobspec2/functions.go of Nomad v1.6.5 (tag v1.6.5, commit a7cfff37)
// registers them. The filesystem functions (abspath to pathexpand) are
// registered too, but refuse to run unless the job is parsed with
// filesystem access, which `nomad job run` allows and the HTTP API does
// not: a job should not use them. There is no regex, regexall, alltrue,
// anytrue, setsubtract or tostring: regex_replace, setintersection and
// convert are what Nomad has instead. length is go-cty's: lists, maps and
// tuples only (a string fails "collection must be a list, a map or a
// tuple"); strlen measures a string.
var NomadFunctions = map[string]bool{
	"abs": true, "base64decode": true, "base64encode": true, "bcrypt": true,
	"can": true, "ceil": true, "chomp": true, "chunklist": true,
	"cidrhost": true, "cidrnetmask": true, "cidrsubnet": true, "cidrsubnets": true,
	"coalesce": true, "coalescelist": true, "compact": true, "concat": true,
	"contains": true, "convert": true, "csvdecode": true, "distinct": true,
	"element": true, "flatten": true, "floor": true, "format": true,
	"formatdate": true, "formatlist": true, "indent": true, "index": true,
	"join": true, "jsondecode": true, "jsonencode": true, "keys": true,
	"length": true, "log": true, "lookup": true, "lower": true,
	"max": true, "md5": true, "merge": true, "min": true,
	"parseint": true, "pow": true, "range": true, "reverse": true,
	"replace": true, "regex_replace": true, "rsadecrypt": true, "setintersection": true,
	"setproduct": true, "setunion": true, "sha1": true, "sha256": true,
	"sha512": true, "signum": true, "slice": true, "sort": true,
	"split": true, "strlen": true, "strrev": true, "substr": true,
	"timeadd": true, "title": true, "trim": true, "trimprefix": true,
	"trimspace": true, "trimsuffix": true, "try": true, "upper": true,
	"urlencode": true, "uuidv4": true, "uuidv5": true, "values": true,
	"yamldecode": true, "yamlencode": true, "zipmap": true,

	"abspath": true, "basename": true, "dirname": true, "file": true,
	"filebase64": true, "fileexists": true, "fileset": true, "pathexpand": true,
}

// filesystemFunctions need filesystem access to the machine that parses
// the job; a job submitted through the HTTP API is parsed without it.
var filesystemFunctions = map[string]bool{
	"abspath": true, "basename": true, "dirname": true, "file": true,
	"filebase64": true, "fileexists": true, "fileset": true, "pathexpand": true,
}
