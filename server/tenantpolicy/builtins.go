package tenantpolicy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/batpak-go/batpak/policy/opa"
	"github.com/open-policy-agent/opa/v1/ast"
)

// refusedBuiltins are the built-ins a tenant's bundle may not call (nor
// mock with "with"), each with why: opa.SandboxRefusedBuiltins, which
// would make the server call out to the network, read its files or hand
// the tenant its environment and configuration, at upload (its tests) or
// on every write; and opa.SandboxUnboundedBuiltins, one call of which can
// take the server's time and memory without bound. The bundle is also
// compiled without them (opa.Options.Sandboxed): this scan only names
// them in the refusal.
var refusedBuiltins = func() map[string]string {
	m := map[string]string{}
	for _, name := range opa.SandboxRefusedBuiltins {
		m[name] = "it reaches outside the policy"
	}
	for _, name := range opa.SandboxUnboundedBuiltins {
		m[name] = "one call's time and memory have no bound"
	}
	return m
}()

// refuseBuiltins parses the .rego modules under dir and lists each call
// of a refused built-in as "file:line: name is not allowed in a tenant
// bundle" (paths relative to dir), and each number, in a module or a
// .json data file, of more than opa.MaxNumberDigits digits. A module that
// parses neither as Rego v1 nor as v0 is left to the compile stage to
// report.
func refuseBuiltins(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		isJSON := strings.HasSuffix(p, ".json")
		if !isJSON && !strings.HasSuffix(p, ".rego") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		// A long number costs its square in time at every comparison.
		if isJSON {
			if n := opa.NumberDigits(string(src), true); n > opa.MaxNumberDigits {
				out = append(out, fmt.Sprintf("%s: a number of %d digits, over the %d a number may have in a tenant policy bundle", filepath.ToSlash(rel), n, opa.MaxNumberDigits))
			}
			return nil
		}
		mod, err := ast.ParseModuleWithOpts(filepath.ToSlash(rel), string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			// A bundle's .manifest may declare Rego v0.
			if mod, err = ast.ParseModuleWithOpts(filepath.ToSlash(rel), string(src), ast.ParserOptions{RegoVersion: ast.RegoV0}); err != nil {
				return nil
			}
		}
		ast.WalkTerms(mod, func(t *ast.Term) bool {
			if n, ok := t.Value.(ast.Number); ok && len(n) > opa.MaxNumberDigits {
				line := 0
				if t.Location != nil {
					line = t.Location.Row
				}
				out = append(out, fmt.Sprintf("%s:%d: a number of %d characters, over the %d a number may have in a tenant policy bundle", filepath.ToSlash(rel), line, len(n), opa.MaxNumberDigits))
			}
			return false
		})
		ast.WalkRefs(mod, func(r ast.Ref) bool {
			if name := r.String(); refusedBuiltins[name] != "" {
				line := 0
				if loc := r[0].Location; loc != nil {
					line = loc.Row
				}
				out = append(out, fmt.Sprintf("%s:%d: %s is not allowed in a tenant policy bundle (%s)", filepath.ToSlash(rel), line, name, refusedBuiltins[name]))
			}
			return false
		})
		return nil
	})
	sort.Strings(out)
	return out, err
}
