package opa_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
