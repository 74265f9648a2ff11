package client_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// codes returns the string constants named Code* of a Go file.
func codes(t *testing.T, file string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && len(vs.Values) == 1 {
			if lit, ok := vs.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING && len(vs.Names[0].Name) > 4 && vs.Names[0].Name[:4] == "Code" {
				s, _ := strconv.Unquote(lit.Value)
				out = append(out, s)
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}

// The client knows every problem code the server answers with (the client
// does not import the server, so the two lists are kept in step here).
func TestClientKnowsEveryServerCode(t *testing.T) {
	_, here, _, _ := runtime.Caller(0)
	dir := filepath.Dir(here)
	server := codes(t, filepath.Join(dir, "..", "..", "server", "wire", "wire.go"))
	client := codes(t, filepath.Join(dir, "errors.go"))
	if len(server) < 10 {
		t.Fatalf("found only %d server codes: %v", len(server), server)
	}
	for _, c := range server {
		if !slices.Contains(client, c) {
			t.Errorf("the server answers with %s, which sdk/client has no constant for", c)
		}
	}
}
