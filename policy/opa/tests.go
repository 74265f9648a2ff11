package opa

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"github.com/open-policy-agent/opa/v1/types"
	"github.com/open-policy-agent/opa/v1/util"
)

// DefaultTestTimeout is TestOptions.Timeout's default.
const DefaultTestTimeout = 5 * time.Second

// DefaultMaxTestOutputBytes is TestOptions.MaxOutputBytes's default
// (1 MiB).
const DefaultMaxTestOutputBytes = 1 << 20

// TestOptions tunes RunTests.
type TestOptions struct {
	// Run runs only the tests whose package.rule name matches this
	// regular expression; "" runs every test.
	Run string
	// Timeout bounds one test; 0 means DefaultTestTimeout (5s). A test
	// that runs out of time is an error (TestResult.Err).
	Timeout time.Duration
	// V0Compatible parses the bundle as Rego v0, the syntax before OPA
	// 1.0 (rule bodies without "if", partial sets without "contains"), as
	// "opa test --v0-compatible" does. A module that imports rego.v1, or
	// a bundle whose .manifest names a rego_version, is parsed as it
	// says either way. Only the tests are affected: the write gate
	// (Load) always parses Rego v1.
	V0Compatible bool
	// MaxOutputBytes bounds what one test's print() calls leave in its
	// TestResult.Output (each call adds its line and a newline): exactly
	// this many bytes are kept; the rest of the test's output is dropped,
	// and the Output then ends with a line saying how many bytes were
	// (naming max_output_bytes). The test runs on and passes or fails as
	// it would have. 0 means DefaultMaxTestOutputBytes (1 MiB); negative:
	// print() calls are compiled out and nothing is kept (what a caller
	// that never shows the output wants).
	MaxOutputBytes int
	// Sandboxed compiles the bundle and its tests with
	// SandboxCapabilities, as Options.Sandboxed does for the gate: a
	// test cannot reach outside the policy either.
	Sandboxed bool
}

// TestResult is one Rego test's outcome. Exactly one of Skipped, Passed
// and Err != nil holds, or none: the test was false or undefined.
type TestResult struct {
	Package  string        // the test's package, e.g. "data.batpak.write"
	Name     string        // the rule, e.g. "test_clerk_may_append"
	File     string        // the file the rule is in; "" when unknown
	Row      int           // its line; 0 when unknown
	Duration time.Duration // how long it ran
	Col      int           // its column; 0 when unknown
	Skipped  bool          // a todo_test_ rule: not run
	Passed   bool          // true
	Err      error         // its evaluation failed (see ErrorLines)
	Output   []byte        // what it printed (print()), bounded by TestOptions.MaxOutputBytes
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
	// ErrRegoV0: the bundle does not parse as Rego v1 but does as Rego
	// v0 (written before OPA 1.0); TestOptions.V0Compatible runs it.
	// Always together with ErrBundleLoad; the text is the v1 parse
	// errors.
	ErrRegoV0 = errors.New("policy bundle is Rego v0")
)

// classified marks err as one or more of RunTests's classes, keeping its
// text.
type classified struct {
	err     error
	classes []error
}

func classify(err error, classes ...error) error { return &classified{err, classes} }

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() []error { return append(slices.Clone(c.classes), c.err) }

// RunTests runs the Rego unit tests of the bundle in dir together with
// its *_test.rego files, as "opa test --bundle DIR" does: DIR is loaded as
// a bundle (Rego v1 unless opts.V0Compatible; its .manifest roots apply,
// data.json and data.yaml files are its data) and every rule named test_*
// is a test. The results are in source order (file, then line). No result
// and no error: dir holds no test (or none matches opts.Run). The error
// is classified by ErrBundleLoad (with ErrRegoV0 when the bundle parses
// as Rego v0), ErrBundleCompile or ErrTestFilter, or is the stat error of
// dir or ctx's error.
func RunTests(ctx context.Context, dir string, opts TestOptions) ([]TestResult, error) {
	results, _, err := runTests(ctx, dir, opts, false)
	return results, err
}

// RunTestsWithCoverage runs the tests as RunTests does and reports which
// lines of the bundle (its tests included) they evaluated, as "opa test
// --coverage" does. Coverage is reported whether or not the tests pass;
// it is nil exactly when the error is not.
func RunTestsWithCoverage(ctx context.Context, dir string, opts TestOptions) ([]TestResult, *Coverage, error) {
	return runTests(ctx, dir, opts, true)
}

func runTests(ctx context.Context, dir string, opts TestOptions, withCoverage bool) ([]TestResult, *Coverage, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTestTimeout
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, nil, err
	}
	version := ast.RegoV1
	if opts.V0Compatible {
		version = ast.RegoV0
	}
	b, err := loadTestBundle(dir, version)
	if err != nil {
		if version == ast.RegoV1 {
			if v0, v0err := loadTestBundle(dir, ast.RegoV0); v0err == nil {
				return nil, nil, classify(v1ParseErrors(v0, err), ErrBundleLoad, ErrRegoV0)
			}
		}
		return nil, nil, classify(err, ErrBundleLoad)
	}
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return nil, nil, err
	}
	defer store.Abort(ctx, txn)
	if opts.MaxOutputBytes == 0 {
		opts.MaxOutputBytes = DefaultMaxTestOutputBytes
	}
	printing := opts.MaxOutputBytes > 0
	caps := ast.CapabilitiesForThisVersion()
	if opts.Sandboxed {
		caps = SandboxCapabilities()
	}
	compiler := ast.NewCompiler().
		WithCapabilities(caps).
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(printing).
		WithDefaultRegoVersion(version)
	bundles := map[string]*bundle.Bundle{dir: b}
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetDefaultRegoVersion(version).
		SetBundles(bundles).
		CapturePrintOutput(printing).
		SetTimeout(opts.Timeout).
		Filter(opts.Run)
	// The runner keeps each test's print() output in a buffer of its own
	// that grows without bound (a test printing in a loop takes memory
	// until its timeout). Each test's evaluation gets a bounded hook
	// instead, set on the test's query as it is built. With the tests run
	// one at a time — the runner builds a test's query, runs it and hands
	// over its result before it builds the next — the hooks are made in
	// the order of the results that are not skipped (a skipped test gets
	// none): each such result takes the oldest hook left.
	var omu sync.Mutex
	var hooks []*boundedOutput
	if printing {
		runner = runner.SetParallel(1).AddCustomBuiltins([]*tester.Builtin{{
			Decl: &ast.Builtin{Name: "batpak.internal.bounded_print", Decl: types.NewFunction(nil, types.A)},
			Func: func(r *rego.Rego) {
				out := &boundedOutput{max: opts.MaxOutputBytes}
				omu.Lock()
				hooks = append(hooks, out)
				omu.Unlock()
				rego.PrintHook(out)(r)
			},
		}})
	}
	var cov *cover.Cover
	if withCoverage {
		// As opa test --coverage: the supplementary runs mark lines the
		// rule index or early exit skipped (LineRange.Kinds).
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov).
			SetCoverageRuns([]cover.Kind{cover.KindIndexExcluded, cover.KindEarlyExit})
	}
	ch, err := runner.RunTests(ctx, txn)
	if err != nil {
		if strings.HasPrefix(err.Error(), "error parsing regexp") {
			return nil, nil, classify(err, ErrTestFilter)
		}
		return nil, nil, classify(err, ErrBundleCompile)
	}
	var results []TestResult
	for r := range ch {
		tr := TestResult{
			Package: r.Package, Name: r.Name, Duration: r.Duration,
			Skipped: r.Skip, Passed: !r.Skip && r.Pass(), Err: r.Error,
		}
		if !r.Skip {
			omu.Lock()
			if len(hooks) > 0 {
				tr.Output, hooks = hooks[0].bytes(), hooks[1:]
			}
			omu.Unlock()
		}
		if r.Skip {
			tr.Err = nil
		}
		if r.Location != nil {
			tr.File, tr.Row, tr.Col = r.Location.File, r.Location.Row, r.Location.Col
		}
		results = append(results, tr)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
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
	if cov == nil {
		return results, nil, nil
	}
	// Keyed by the modules' own paths, as the locations the tests
	// covered are (bundle.ParsedModules would prefix dir once more).
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		modules[m.Path] = m.Parsed
	}
	return results, coverageOf(cov.Report(modules)), nil
}

// boundedOutput is one test's print() output, kept up to max bytes.
type boundedOutput struct {
	buf     []byte
	max     int
	dropped int
}

// Print implements print.Hook.
func (o *boundedOutput) Print(_ print.Context, msg string) error {
	n := len(msg) + 1
	if room := o.max - len(o.buf); o.dropped > 0 || n > room {
		if o.dropped == 0 {
			o.buf = append(o.buf, (msg + "\n")[:room]...)
			n -= room
		}
		o.dropped += n
		return nil
	}
	o.buf = append(append(o.buf, msg...), '\n')
	return nil
}

// bytes is the output kept, and a line counting what was dropped.
func (o *boundedOutput) bytes() []byte {
	if o.dropped == 0 {
		return o.buf
	}
	return fmt.Appendf(o.buf, "\n(%d more bytes of print output dropped: max_output_bytes %d)\n", o.dropped, o.max)
}

// v1ParseErrors returns the Rego v1 parse errors of every module of b
// (loaded as Rego v0), sorted by file and line: the loader stops at the
// first file that fails, and which one that is varies from run to run.
// Without any, it returns loadErr.
func v1ParseErrors(b *bundle.Bundle, loadErr error) error {
	var all ast.Errors
	for _, m := range b.Modules {
		_, err := ast.ParseModuleWithOpts(m.Path, string(m.Raw), ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		var errs ast.Errors
		if errors.As(err, &errs) {
			all = append(all, errs...)
		}
	}
	if len(all) == 0 {
		return loadErr
	}
	all.Sort()
	return all
}

// loadTestBundle loads dir as a bundle with its test files, parsing
// modules as version unless the bundle says otherwise.
func loadTestBundle(dir string, version ast.RegoVersion) (*bundle.Bundle, error) {
	return loader.NewFileLoader().
		WithRegoVersion(version).
		WithProcessAnnotation(true).
		WithSkipBundleVerification(true).
		AsBundle(dir)
}

// MarshalJSON writes the result in the shape of one element of "opa test
// --format json": location (file, row, col), package, name, fail (false
// or undefined), error (code, message, location), skip, duration
// (nanoseconds) and output (what it printed, base64 as OPA writes it);
// fail, error, skip and output only when set.
func (r TestResult) MarshalJSON() ([]byte, error) {
	type location struct {
		File string `json:"file"`
		Row  int    `json:"row"`
		Col  int    `json:"col"`
	}
	out := struct {
		Location *location    `json:"location,omitempty"`
		Package  string       `json:"package"`
		Name     string       `json:"name"`
		Fail     bool         `json:"fail,omitempty"`
		Error    *resultError `json:"error,omitempty"`
		Skip     bool         `json:"skip,omitempty"`
		Duration int64        `json:"duration"`
		Output   []byte       `json:"output,omitempty"`
	}{
		Package: r.Package, Name: r.Name, Skip: r.Skipped, Duration: int64(r.Duration), Output: r.Output,
		Fail: !r.Skipped && !r.Passed && r.Err == nil,
	}
	if r.File != "" {
		out.Location = &location{File: r.File, Row: r.Row, Col: r.Col}
	}
	if r.Err != nil {
		out.Error = newResultError(r.Err)
	}
	return json.Marshal(out)
}

// resultError is an evaluation error as opa test --format json writes it.
type resultError struct {
	Code     string         `json:"code,omitempty"`
	Message  string         `json:"message"`
	Location *errorLocation `json:"location,omitempty"`
}

type errorLocation struct {
	File string `json:"file"`
	Row  int    `json:"row"`
	Col  int    `json:"col"`
}

func newResultError(err error) *resultError {
	var te *topdown.Error
	if errors.As(err, &te) {
		e := &resultError{Code: te.Code, Message: te.Message}
		if te.Location != nil {
			e.Location = &errorLocation{File: te.Location.File, Row: te.Location.Row, Col: te.Location.Col}
		}
		return e
	}
	return &resultError{Message: err.Error()}
}

// Coverage is the share of a bundle's Rego lines its tests evaluated, in
// the shape "opa test --coverage" reports: a line is covered when a rule
// head or an expression on it was evaluated by some test, not covered
// when it holds one that none evaluated; other lines (comments, imports,
// package) are neither. Files are keyed by path, as TestResult.File.
type Coverage struct {
	Files           map[string]*FileCoverage `json:"files"`
	CoveredLines    int                      `json:"covered_lines"`
	NotCoveredLines int                      `json:"not_covered_lines"`
	Percent         float64                  `json:"coverage"` // 100 × covered / (covered + not covered); 0 with no lines
}

// FileCoverage is one file's coverage.
type FileCoverage struct {
	Covered         []LineRange `json:"covered,omitempty"`
	NotCovered      []LineRange `json:"not_covered,omitempty"`
	CoveredLines    int         `json:"covered_lines,omitempty"`
	NotCoveredLines int         `json:"not_covered_lines,omitempty"`
	Percent         float64     `json:"coverage,omitempty"`
}

// LineRange is a range of lines, from Start to End inclusive. Kinds says
// why a not-covered range was skipped, when OPA knows: "index_excluded"
// (the rule index ruled it out without trying it) or "early_exit" (the
// evaluation stopped at an earlier answer).
type LineRange struct {
	Start Position `json:"start"`
	End   Position `json:"end"`
	Kinds []string `json:"kinds,omitempty"`
}

// Position is a place in a file; Col is 0 when the range spans whole
// lines.
type Position struct {
	Row int `json:"row"`
	Col int `json:"col,omitempty"`
}

func coverageOf(r cover.Report) *Coverage {
	c := &Coverage{
		Files:        make(map[string]*FileCoverage, len(r.Files)),
		CoveredLines: r.CoveredLines, NotCoveredLines: r.NotCoveredLines, Percent: r.Coverage,
	}
	ranges := func(rs []cover.Range) []LineRange {
		var out []LineRange
		for _, rg := range rs {
			lr := LineRange{Start: Position(rg.Start), End: Position(rg.End)}
			for _, k := range rg.Kinds {
				lr.Kinds = append(lr.Kinds, string(k))
			}
			out = append(out, lr)
		}
		return out
	}
	for file, fr := range r.Files {
		c.Files[file] = &FileCoverage{
			Covered: ranges(fr.Covered), NotCovered: ranges(fr.NotCovered),
			CoveredLines: fr.CoveredLines, NotCoveredLines: fr.NotCoveredLines, Percent: fr.Coverage,
		}
	}
	return c
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
			out = append(out, detab(e.Error()))
		}
		return out
	case errors.As(err, &le):
		var out []string
		for _, e := range le {
			out = append(out, ErrorLines(e)...)
		}
		return out
	case errors.As(err, &one):
		return []string{detab(one.Error())}
	}
	var out []string
	for _, l := range strings.Split(strings.TrimPrefix(err.Error(), "batpak: "), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// detab indents the source excerpt OPA adds to a parse error (lines
// starting with a tab) with two spaces: a tab is a control character that
// terminals and one-line renderings show escaped.
func detab(s string) string { return strings.ReplaceAll(s, "\t", "  ") }

// DataFromYAML decodes a bundle's data.yaml (or data.yml) as OPA's
// loader reads it, for a caller sending the bundle where only data.json
// is taken: the same value, so a policy decides the same there. An error
// names what does not decode.
func DataFromYAML(raw []byte) (any, error) {
	var v any
	if err := util.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}
