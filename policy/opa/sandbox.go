package opa

import (
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// SandboxRefusedBuiltins are the built-ins a sandboxed policy cannot call:
// each reaches outside the policy — the network (http.send,
// net.lookup_ip_addr), URLs and the host's files through a JSON schema's
// "$ref" (json.match_schema, json.verify_schema), or the host's
// environment and configuration (opa.runtime).
var SandboxRefusedBuiltins = []string{
	"http.send",
	"net.lookup_ip_addr",
	"json.match_schema",
	"json.verify_schema",
	"opa.runtime",
}

// SandboxUnboundedBuiltins are the built-ins a sandboxed policy cannot
// call because one call's time and memory have no bound that can be
// checked before it runs, and it cannot be interrupted:
// strings.render_template (a Go template: ranges nested over a list of n
// elements print n^k times) and graph.reachable_paths (every path of a
// graph: exponentially many). See also MaxBuiltinResultBytes, for the
// built-ins bounded instead.
var SandboxUnboundedBuiltins = []string{
	"strings.render_template",
	"graph.reachable_paths",
}

// SandboxCapabilities returns the capabilities a sandboxed policy
// (Options.Sandboxed, TestOptions.Sandboxed) is compiled with: this OPA
// version's, less SandboxRefusedBuiltins and SandboxUnboundedBuiltins,
// and no network host. A module
// calling a refused built-in, in any Rego version, does not compile
// ("undefined function"); one mocking it with "with" does not either.
func SandboxCapabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(slices.Clone(caps.Builtins), func(b *ast.Builtin) bool {
		return slices.Contains(SandboxRefusedBuiltins, b.Name) || slices.Contains(SandboxUnboundedBuiltins, b.Name)
	})
	caps.AllowNet = []string{}
	return caps
}
