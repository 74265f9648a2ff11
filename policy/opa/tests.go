package opa

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// DefaultTestTimeout is TestOptions.Timeout's default.
const DefaultTestTimeout = 5 * time.Second

// TestOptions tunes RunTests.
type TestOptions struct {
	// Run runs only the tests whose package.rule name matches this
	// regular expression; "" runs every test.
	Run string
	// Timeout bounds one test; 0 means DefaultTestTimeout (5s). A test
	// that runs out of time is an error (TestResult.Err).
	Timeout time.Duration
}

// TestResult is one Rego test's outcome. Exactly one of Skipped, Passed
// and Err != nil holds, or none: the test was false or undefined.
type TestResult struct {
	Package  string        // the test's package, e.g. "data.batpak.write"
	Name     string        // the rule, e.g. "test_clerk_may_append"
	File     string        // the file the rule is in; "" when unknown
	Row      int           // its line; 0 when unknown
	Duration time.Duration // how long it ran
	Skipped  bool          // a todo_test_ rule: not run
	Passed   bool          // true
	Err      error         // its evaluation failed (see ErrorLines)
	Output   []byte        // what it printed (print())
}

// Errors RunTests classifies (errors.Is); the error's text is OPA's own.
var (
	// ErrBundleLoad: the directory does not load as a bundle (an
	// unreadable file, a Rego parse error, bad data or .manifest).
	ErrBundleLoad = errors.New("policy bundle does not load")
	// ErrBundleCompile: the bundle loads but does not compile.
	ErrBundleCompile = errors.New("policy bundle does not compile")
	// ErrTestFilter: TestOptions.Run is not a regular expression.
	ErrTestFilter = errors.New("test filter is not a regular expression")
)

// classified marks err as one of RunTests's classes, keeping its text.
type classified struct{ class, err error }

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() []error { return []error{c.class, c.err} }

// RunTests runs the Rego unit tests of the bundle in dir together with
// its *_test.rego files, as "opa test --bundle DIR" does: DIR is loaded as
// a bundle (Rego v1; its .manifest roots apply, data.json and data.yaml
// files are its data) and every rule named test_* is a test. The results
// are in source order (file, then line). No result and no error: dir
// holds no test (or none matches opts.Run). The error is classified by
// ErrBundleLoad, ErrBundleCompile or ErrTestFilter, or is the stat error
// of dir or ctx's error.
func RunTests(ctx context.Context, dir string, opts TestOptions) ([]TestResult, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTestTimeout
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	b, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		WithSkipBundleVerification(true).
		AsBundle(dir)
	if err != nil {
		return nil, &classified{ErrBundleLoad, err}
	}
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().
		WithCapabilities(ast.CapabilitiesForThisVersion()).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetDefaultRegoVersion(ast.RegoV1).
		SetBundles(map[string]*bundle.Bundle{dir: b}).
		CapturePrintOutput(true).
		SetTimeout(opts.Timeout).
		Filter(opts.Run)
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		if strings.HasPrefix(err.Error(), "error parsing regexp") {
			return nil, &classified{ErrTestFilter, err}
		}
		return nil, &classified{ErrBundleCompile, err}
	}
	var results []TestResult
	for r := range ch {
		tr := TestResult{
			Package: r.Package, Name: r.Name, Duration: r.Duration,
			Skipped: r.Skip, Passed: !r.Skip && r.Pass(), Err: r.Error, Output: r.Output,
		}
		if r.Skip {
			tr.Err = nil
		}
		if r.Location != nil {
			tr.File, tr.Row = r.Location.File, r.Location.Row
		}
		results = append(results, tr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Tests run in parallel; report them in source order.
	slices.SortFunc(results, func(a, b TestResult) int {
		if a.File != "" && b.File != "" && (a.File != b.File || a.Row != b.Row) {
			if a.File != b.File {
				return strings.Compare(a.File, b.File)
			}
			return a.Row - b.Row
		}
		return strings.Compare(a.Package+"."+a.Name, b.Package+"."+b.Name)
	})
	return results, nil
}

// ErrorLines flattens OPA's error lists (parse, compile, load and
// evaluation errors) into one line each, "file:line: code: message",
// sorted as OPA sorts them. Another error gives its text's non-empty
// lines, without a "batpak: " prefix; nil gives none.
func ErrorLines(err error) []string {
	if err == nil {
		return nil
	}
	var ae ast.Errors
	var le loader.Errors
	var one *ast.Error
	switch {
	case errors.As(err, &ae):
		ae.Sort()
		out := make([]string, 0, len(ae))
		for _, e := range ae {
			out = append(out, e.Error())
		}
		return out
	case errors.As(err, &le):
		var out []string
		for _, e := range le {
			out = append(out, ErrorLines(e)...)
		}
		return out
	case errors.As(err, &one):
		return []string{one.Error()}
	}
	var out []string
	for _, l := range strings.Split(strings.TrimPrefix(err.Error(), "batpak: "), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
