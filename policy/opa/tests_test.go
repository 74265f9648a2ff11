package opa_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/batpak-go/batpak/policy/opa"
)

// RunTests: outcomes in source order, the filter, and errors a caller can
// tell apart (a bundle that does not load, one that does not compile, a
// bad filter) carrying OPA's file:line messages.

const testedPolicy = `package batpak.write

default allow := false

allow if input.principal.tenant == "acme"
`

const testedPolicyTests = `package batpak.write_test

import data.batpak.write

test_b_passes if write.allow with input as {"principal": {"tenant": "acme"}}

test_a_fails if write.allow with input as {"principal": {"tenant": "globex"}}

conflict := 1 if true

conflict := 2 if true

test_errs if conflict == 1

todo_test_later if false

test_prints if {
	print("looked at", 42)
	false
}
`

func TestRunTestsReportsEveryOutcomeInSourceOrder(t *testing.T) {
	dir := writeBundle(t, map[string]string{"write.rego": testedPolicy, "write_test.rego": testedPolicyTests})
	results, err := opa.RunTests(context.Background(), dir, opa.TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range results {
		outcome := "fail"
		switch {
		case r.Skipped:
			outcome = "skip"
		case r.Passed:
			outcome = "pass"
		case r.Err != nil:
			outcome = "error"
		}
		if r.Package != "data.batpak.write_test" || (!r.Skipped && (filepath.Base(r.File) != "write_test.rego" || r.Row == 0)) {
			t.Errorf("%s: package %q at %s:%d", r.Name, r.Package, r.File, r.Row)
		}
		got = append(got, r.Name+"="+outcome)
		if r.Name == "test_prints" && !strings.Contains(string(r.Output), "looked at 42") {
			t.Errorf("test_prints output %q", r.Output)
		}
		if r.Name == "test_errs" && !strings.Contains(strings.Join(opa.ErrorLines(r.Err), "\n"), "eval_conflict_error") {
			t.Errorf("test_errs error lines %q", opa.ErrorLines(r.Err))
		}
	}
	want := "test_b_passes=pass test_a_fails=fail test_errs=error todo_test_later=skip test_prints=fail"
	if strings.Join(got, " ") != want {
		t.Fatalf("results\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	only, err := opa.RunTests(context.Background(), dir, opa.TestOptions{Run: "test_b_.*"})
	if err != nil || len(only) != 1 || only[0].Name != "test_b_passes" {
		t.Fatalf("filtered: %+v, %v", only, err)
	}
	none, err := opa.RunTests(context.Background(), dir, opa.TestOptions{Run: "nothing_matches"})
	if err != nil || len(none) != 0 {
		t.Fatalf("no match: %+v, %v", none, err)
	}
}

func TestRunTestsClassifiesItsErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		files map[string]string
		run   string
		class error
		text  string
	}{
		{"parse error", map[string]string{"write.rego": "package batpak.write\n\nallow if {\n"}, "", opa.ErrBundleLoad, "write.rego:"},
		{"compile error", map[string]string{"write.rego": "package batpak.write\n\nallow if undefined_fn(1)\n"}, "", opa.ErrBundleCompile, "write.rego:3"},
		{"bad filter", map[string]string{"write.rego": testedPolicy, "write_test.rego": testedPolicyTests}, "(", opa.ErrTestFilter, "error parsing regexp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := opa.RunTests(ctx, writeBundle(t, tc.files), opa.TestOptions{Run: tc.run})
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %v, want %v", err, tc.class)
			}
			if lines := strings.Join(opa.ErrorLines(err), "\n"); !strings.Contains(lines, tc.text) {
				t.Fatalf("error lines %q, want %q in them", lines, tc.text)
			}
			for _, other := range []error{opa.ErrBundleLoad, opa.ErrBundleCompile, opa.ErrTestFilter} {
				if other != tc.class && errors.Is(err, other) {
					t.Fatalf("error %v is also %v", err, other)
				}
			}
		})
	}
	if _, err := opa.RunTests(ctx, filepath.Join(t.TempDir(), "missing"), opa.TestOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
}

// A Rego v0 bundle: ErrBundleLoad and ErrRegoV0, with every file's v1
// parse errors in order; V0Compatible runs it. A bundle broken in both
// versions is not ErrRegoV0.
func TestRunTestsRegoV0(t *testing.T) {
	ctx := context.Background()
	dir := writeBundle(t, map[string]string{
		"write.rego": "package batpak.write\n\ndefault allow = false\n\nallow { input.principal.tenant == \"acme\" }\n\ndeny[msg] { not allow; msg := \"not acme\" }\n",
		"write_test.rego": "package batpak.write_test\n\nimport data.batpak.write\n\n" +
			"test_acme { write.allow with input as {\"principal\": {\"tenant\": \"acme\"}} }\n\n" +
			"test_globex { write.deny[\"not acme\"] with input as {\"principal\": {\"tenant\": \"globex\"}} }\n",
	})
	_, err := opa.RunTests(ctx, dir, opa.TestOptions{})
	if !errors.Is(err, opa.ErrBundleLoad) || !errors.Is(err, opa.ErrRegoV0) {
		t.Fatalf("error %v, want ErrBundleLoad and ErrRegoV0", err)
	}
	want := []string{
		filepath.Join(dir, "write.rego") + ":5: rego_parse_error: `if` keyword is required before rule body",
		filepath.Join(dir, "write.rego") + ":7: rego_parse_error: `contains` keyword is required for partial set rules",
		filepath.Join(dir, "write.rego") + ":7: rego_parse_error: `if` keyword is required before rule body",
		filepath.Join(dir, "write_test.rego") + ":5: rego_parse_error: `if` keyword is required before rule body",
		filepath.Join(dir, "write_test.rego") + ":7: rego_parse_error: `if` keyword is required before rule body",
	}
	if got := opa.ErrorLines(err); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("error lines\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	results, err := opa.RunTests(ctx, dir, opa.TestOptions{V0Compatible: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 || !results[0].Passed || !results[1].Passed || results[0].Name != "test_acme" || results[1].Row != 7 {
		t.Fatalf("results %+v", results)
	}

	// A module that imports rego.v1 parses as v1 under V0Compatible too,
	// as with opa test --v0-compatible.
	mixed := writeBundle(t, map[string]string{
		"write.rego":      "package batpak.write\n\nallow { input.x == 1 }\n",
		"write_test.rego": "package batpak.write_test\n\nimport rego.v1\n\nimport data.batpak.write\n\ntest_x if write.allow with input.x as 1\n",
	})
	if results, err := opa.RunTests(ctx, mixed, opa.TestOptions{V0Compatible: true}); err != nil || len(results) != 1 || !results[0].Passed {
		t.Fatalf("v0 policy with a rego.v1 test: %+v, %v", results, err)
	}

	// A .manifest that says rego_version 0 is followed without V0Compatible.
	declared := writeBundle(t, map[string]string{
		".manifest":       `{"rego_version": 0}`,
		"write.rego":      "package batpak.write\n\nallow { input.x == 1 }\n",
		"write_test.rego": "package batpak.write_test\n\nimport data.batpak.write\n\ntest_x { write.allow with input.x as 1 }\n",
	})
	if results, err := opa.RunTests(ctx, declared, opa.TestOptions{}); err != nil || len(results) != 1 || !results[0].Passed {
		t.Fatalf("bundle declaring rego_version 0: %+v, %v", results, err)
	}

	broken := writeBundle(t, map[string]string{"write.rego": "package batpak.write\n\nallow { input.x == \n"})
	if _, err := opa.RunTests(ctx, broken, opa.TestOptions{}); !errors.Is(err, opa.ErrBundleLoad) || errors.Is(err, opa.ErrRegoV0) {
		t.Fatalf("broken in both versions: %v", err)
	}
	// V0Compatible on a Rego v1 bundle: v1 keywords without an import
	// are v0 parse errors, as with opa test.
	v1 := writeBundle(t, map[string]string{"write.rego": testedPolicy, "write_test.rego": testedPolicyTests})
	if _, err := opa.RunTests(ctx, v1, opa.TestOptions{V0Compatible: true}); !errors.Is(err, opa.ErrBundleLoad) || errors.Is(err, opa.ErrRegoV0) {
		t.Fatalf("v1 bundle under V0Compatible: %v", err)
	}
}

// Coverage: what the tests evaluated, per file, and less of it when a
// test is taken away.
func TestRunTestsWithCoverage(t *testing.T) {
	ctx := context.Background()
	policy := "package batpak.write\n\ndefault allow := false\n\nallow if input.principal.tenant == \"acme\"\n\ndeny contains \"NO_PRINCIPAL\" if {\n\tnot input.principal\n}\n"
	allowTest := "package batpak.write_test\n\nimport data.batpak.write\n\ntest_acme if write.allow with input as {\"principal\": {\"tenant\": \"acme\"}}\n\n" +
		"test_globex if not write.allow with input as {\"principal\": {\"tenant\": \"globex\"}}\n"
	denyTest := "package batpak.write_test\n\nimport data.batpak.write\n\ntest_no_principal if \"NO_PRINCIPAL\" in write.deny with input as {}\n"

	dir := writeBundle(t, map[string]string{"write.rego": policy, "allow_test.rego": allowTest, "deny_test.rego": denyTest})
	results, cov, err := opa.RunTestsWithCoverage(ctx, dir, opa.TestOptions{})
	if err != nil || len(results) != 3 {
		t.Fatalf("%d results, %v", len(results), err)
	}
	file := filepath.Join(dir, "write.rego")
	if len(cov.Files) != 3 || cov.Files[file] == nil {
		t.Fatalf("files %v", cov.Files)
	}
	full := *cov.Files[file]
	if full.NotCoveredLines != 0 || full.Percent != 100 || cov.NotCoveredLines != 0 || cov.Percent != 100 {
		t.Fatalf("with both tests: %+v, total %.2f%%", full, cov.Percent)
	}

	if err := os.Remove(filepath.Join(dir, "deny_test.rego")); err != nil {
		t.Fatal(err)
	}
	_, cov, err = opa.RunTestsWithCoverage(ctx, dir, opa.TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := cov.Files[file]
	if len(cov.Files) != 2 || part.CoveredLines >= full.CoveredLines || part.NotCoveredLines != 2 || part.Percent >= 100 || cov.Percent >= 100 {
		t.Fatalf("without the deny test: %+v, total %.2f%%", part, cov.Percent)
	}
	if want := 100 * float64(cov.CoveredLines) / float64(cov.CoveredLines+cov.NotCoveredLines); cov.Percent != want {
		t.Errorf("total %.4f%%, want %.4f%% (%d covered, %d not)", cov.Percent, want, cov.CoveredLines, cov.NotCoveredLines)
	}
	for _, r := range part.NotCovered {
		if r.Start.Row < 7 || r.End.Row > 8 {
			t.Errorf("not covered %+v: want only the deny rule, lines 7-8", r)
		}
	}

	// RunTests has no coverage; a bundle that does not load, none either.
	if _, cov, err := opa.RunTestsWithCoverage(ctx, writeBundle(t, map[string]string{"write.rego": "package batpak.write\n\nallow if {\n"}), opa.TestOptions{}); cov != nil || !errors.Is(err, opa.ErrBundleLoad) {
		t.Fatalf("broken bundle: coverage %v, error %v", cov, err)
	}
}

// A TestResult marshals as opa test --format json writes one, so OPA's
// own decoder reads it back.
func TestTestResultJSONIsOPAs(t *testing.T) {
	dir := writeBundle(t, map[string]string{"write.rego": testedPolicy, "write_test.rego": testedPolicyTests})
	results, err := opa.RunTests(context.Background(), dir, opa.TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(results)
	if err != nil {
		t.Fatal(err)
	}
	var back []*tester.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("OPA's decoder: %v\n%s", err, b)
	}
	if len(back) != len(results) {
		t.Fatalf("%d results back, %d out", len(back), len(results))
	}
	for i, r := range results {
		o := back[i]
		failed := !r.Skipped && !r.Passed && r.Err == nil
		if o.Package != r.Package || o.Name != r.Name || o.Skip != r.Skipped || o.Fail != failed || o.Pass() != r.Passed ||
			(o.Error != nil) != (r.Err != nil) || o.Duration != r.Duration || string(o.Output) != string(r.Output) ||
			o.Location == nil || o.Location.File != r.File || o.Location.Row != r.Row || o.Location.Col != r.Col {
			t.Errorf("%s: OPA reads back %+v", r.Name, o)
		}
	}
}

// printingTests print in a loop, exactly up to the bound, one byte past
// it, and each its own name (so that each result's output is shown to be
// its own test's).
const printingTests = `package batpak.write_test

test_loop if {
	every i in numbers.range(1, 20000) {
		print("line", i)
	}
}

test_exact if {
	print(concat("", ["x" | some _ in numbers.range(1, 1023)]))
}

test_over if {
	print(concat("", ["y" | some _ in numbers.range(1, 1024)]))
}

todo_test_skipped if print("never")

test_a if print("test_a")

test_b if print("test_b")

test_c if {
	print("test_c")
	false
}
`

// TestRunTestsBoundsPrintOutput: a test's print() output is kept up to
// TestOptions.MaxOutputBytes — exactly the bound whole, one byte more
// cut at the bound with a line counting what was dropped — so a test
// printing in a loop takes no more memory than that; the tests pass or
// fail as they would; each result carries its own test's output; a
// negative bound keeps none.
func TestRunTestsBoundsPrintOutput(t *testing.T) {
	dir := writeBundle(t, map[string]string{"write.rego": testedPolicy, "write_test.rego": printingTests})
	results, err := opa.RunTests(context.Background(), dir, opa.TestOptions{MaxOutputBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]opa.TestResult{}
	for _, r := range results {
		byName[r.Name] = r
	}
	if len(byName) != 7 {
		t.Fatalf("results %v", results)
	}
	loop := byName["test_loop"]
	if !loop.Passed || !strings.HasPrefix(string(loop.Output), "line 1\nline 2\n") {
		t.Errorf("test_loop: passed %v, output starts %.40q", loop.Passed, loop.Output)
	}
	kept, note, found := strings.Cut(string(loop.Output), "\n(")
	total := 0
	for i := 1; i <= 20000; i++ {
		total += len(fmt.Sprintf("line %d\n", i))
	}
	if !found || len(kept) != 1024 || note != fmt.Sprintf("%d more bytes of print output dropped: max_output_bytes 1024)\n", total-1024) {
		t.Errorf("test_loop kept %d bytes then %q, want 1024 and a note of %d dropped", len(kept), note, total-1024)
	}
	if o := string(byName["test_exact"].Output); o != strings.Repeat("x", 1023)+"\n" {
		t.Errorf("test_exact (exactly the bound): output of %d bytes %.40q…, want it whole", len(o), o)
	}
	if o := string(byName["test_over"].Output); o != strings.Repeat("y", 1024)+"\n(1 more bytes of print output dropped: max_output_bytes 1024)\n" {
		t.Errorf("test_over (one byte past the bound): output %.60q…", o)
	}
	for _, name := range []string{"test_a", "test_b", "test_c"} {
		if r := byName[name]; string(r.Output) != name+"\n" {
			t.Errorf("%s: output %q, want its own", name, r.Output)
		}
	}
	if r := byName["test_c"]; r.Passed || r.Err != nil || !byName["test_a"].Passed || !byName["todo_test_skipped"].Skipped {
		t.Errorf("outcomes changed: %+v", byName)
	}

	results, err = opa.RunTests(context.Background(), dir, opa.TestOptions{MaxOutputBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if len(r.Output) != 0 {
			t.Errorf("%s with no output kept: %.40q", r.Name, r.Output)
		}
		if (r.Name == "test_loop" || r.Name == "test_a") && !r.Passed {
			t.Errorf("%s did not pass with print compiled out", r.Name)
		}
	}
}
