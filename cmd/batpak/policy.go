package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// policyEvalTimeout bounds `policy eval`'s one decision.
const policyEvalTimeout = 10 * time.Second

func newPolicyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "policy",
		Short:   "Test and evaluate write policies (Rego v1)",
		GroupID: "policy",
		Long: `A write policy is an Open Policy Agent bundle (Rego v1): a directory of
.rego modules, data.json/data.yaml files and an optional .manifest, whose
decision is data.batpak.write = {allow, deny}. Set policy.dir
(--policy-dir, BATPAK_POLICY_DIR) and the write commands (append, demo)
ask it about every event, as the principal principal.id, principal.tenant
and principal.roles (--principal-id, --tenant, --roles).

  policy test DIR     runs the bundle's Rego unit tests (test_* rules)
  policy eval         asks the bundle about one input document

Against a server (--server, --token, --tenant), a tenant's own bundle:

  policy push DIR|BUNDLE.tar.gz   uploads it (tested and compiled there)
  policy list                     lists its revisions and the active one
  policy rollback [REVISION]      makes an earlier revision active again
  policy decisions                shows its decision log`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(newPolicyTestCmd(a), newPolicyEvalCmd(a))
	cmd.AddCommand(serverOnlyHelp(newPolicyRemoteCmds(a))...)
	return cmd
}

// policyTestFlags are policy test's options.
type policyTestFlags struct {
	run          string
	output       outputFlags // --json / -o json: the shape of "opa test --format json"
	asJSON       bool
	asYAML       bool
	coverage     bool
	threshold    float64
	v0Compatible bool
}

func newPolicyTestCmd(_ *app) *cobra.Command {
	var f policyTestFlags
	cmd := &cobra.Command{
		Use:   "test DIR",
		Short: "Run a policy bundle's Rego unit tests",
		Long: `Run the Rego unit tests in DIR, as "opa test --bundle DIR" does: DIR is
loaded as a bundle (Rego v1 unless --v0-compatible; its .manifest roots
apply, data.json and data.yaml files are its data) together with its
*_test.rego files, and every rule named test_* is a test. A test passes
when it is true; one that is false or undefined fails, one whose
evaluation fails is an error.

One line per test (PASS, FAIL, ERROR or SKIP, package.rule, duration),
then "N passed, M failed". What a test prints (print()) is kept up to
1 MiB per test; past that it is cut, with a line saying how much was
dropped. With --json, one JSON array instead, in the
shape of "opa test --format json": per test location (file, row, col),
package, name, fail, error, skip, duration (ns), output (base64).

--coverage also reports which lines the tests evaluated, as "opa test
--coverage" does: the total percentage, then per file its percentage and
the lines not covered. With --json the output is then one object: opa
test --coverage's report (files, covered_lines, not_covered_lines,
coverage) plus "tests", the array above. --threshold P (0 to 100)
implies --coverage and fails when the total is below P percent.

--v0-compatible parses the bundle as Rego v0, the syntax before OPA 1.0
(rule bodies without "if", partial sets without "contains"), as
"opa test --v0-compatible" does; without it, a bundle that parses only as
Rego v0 is refused with its parse errors and a pointer to the flag. The
write gate (policy.dir) always loads Rego v1.

The exit code is 1 when a test fails or errs, when coverage is below
--threshold, when DIR holds no tests, and when the bundle does not load
or compile (the errors name file and line).`,
		Example: `  batpak policy test examples/policies
  batpak policy test examples/policies --run 'test_deny_.*'
  batpak policy test examples/policies --coverage --threshold 90
  batpak policy test examples/policies --json | jq '.[] | select(.fail)'
  batpak policy test ./library --v0-compatible`,
		Args: exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.threshold < 0 || f.threshold > 100 {
				return badInput("--threshold", fmt.Errorf("%v is not a percentage: want 0 to 100", f.threshold))
			}
			if cmd.Flags().Changed("threshold") {
				f.coverage = true
			}
			format, err := f.output.format()
			if err != nil {
				return err
			}
			f.asJSON, f.asYAML = format == formatJSON, format == formatYAML
			return runPolicyTests(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.run, "run", "", "run only tests whose package.rule name matches this regular expression")
	f.output.register(cmd) // -o json (--json): the shape of "opa test --format json"
	fl.BoolVar(&f.coverage, "coverage", false, "report which lines of the bundle the tests evaluated")
	fl.Float64Var(&f.threshold, "threshold", 0, "fail when coverage is below this percentage (0 to 100; implies --coverage)")
	fl.BoolVar(&f.v0Compatible, "v0-compatible", false, "parse the bundle as Rego v0, the syntax before OPA 1.0")
	return cmd
}

// coverageJSON is policy test --coverage --json's output: opa test
// --coverage's report plus the test results.
type coverageJSON struct {
	*opa.Coverage
	Tests []opa.TestResult `json:"tests"`
}

func runPolicyTests(cmd *cobra.Command, dir string, f policyTestFlags) error {
	ctx, w := cmd.Context(), cmd.OutOrStdout()
	if _, err := os.Stat(dir); err != nil {
		return badInput("DIR", err)
	}
	opts := opa.TestOptions{Run: f.run, V0Compatible: f.v0Compatible}
	var results []opa.TestResult
	var cov *opa.Coverage
	var err error
	if f.coverage {
		results, cov, err = opa.RunTestsWithCoverage(ctx, dir, opts)
	} else {
		results, err = opa.RunTests(ctx, dir, opts)
	}
	switch {
	case errors.Is(err, opa.ErrRegoV0):
		return regoV0Error(dir, err)
	case errors.Is(err, opa.ErrBundleLoad):
		return regoError("policy bundle "+dir+" does not load", err)
	case errors.Is(err, opa.ErrTestFilter):
		return badInput("--run", err)
	case errors.Is(err, opa.ErrBundleCompile):
		return regoError("policy bundle "+dir+" does not compile", err)
	case err != nil:
		return err
	}
	if len(results) == 0 {
		if f.run != "" {
			return fmt.Errorf("no tests in %s match --run %q", dir, f.run)
		}
		return fmt.Errorf("no tests in %s: a test is a rule named test_* (by convention in a *_test.rego file)", dir)
	}

	var passed, failed, errored, skipped int
	var out bytes.Buffer
	for _, r := range results {
		name := strings.TrimPrefix(r.Package, "data.") + "." + r.Name
		switch {
		case r.Skipped:
			skipped++
			fmt.Fprintf(&out, "SKIP  %s\n", name)
			continue
		case r.Passed:
			passed++
			fmt.Fprintf(&out, "PASS  %s (%s)\n", name, roundDuration(r.Duration))
		case r.Err != nil:
			errored++
			fmt.Fprintf(&out, "ERROR %s (%s)\n", name, roundDuration(r.Duration))
			for _, line := range opa.ErrorLines(r.Err) {
				fmt.Fprintf(&out, "      %s\n", line)
			}
		default:
			failed++
			fmt.Fprintf(&out, "FAIL  %s (%s)\n", name, roundDuration(r.Duration))
			if r.File != "" {
				fmt.Fprintf(&out, "      %s:%d: the test is false or undefined\n", r.File, r.Row)
			}
		}
		if !r.Passed && len(r.Output) > 0 {
			for _, line := range strings.Split(strings.TrimRight(string(r.Output), "\n"), "\n") {
				fmt.Fprintf(&out, "      | %s\n", line)
			}
		}
	}
	summary := fmt.Sprintf("%d passed, %d failed", passed, failed+errored)
	if errored > 0 {
		summary += fmt.Sprintf(" (%s)", plural(errored, "error", "errors"))
	}
	if skipped > 0 {
		summary += fmt.Sprintf(", %d skipped", skipped)
	}
	fmt.Fprintf(&out, "%s\n", summary)
	if cov != nil {
		printCoverage(&out, dir, cov)
	}
	if f.asJSON {
		out.Reset()
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		var v any = results
		if cov != nil {
			v = coverageJSON{Coverage: cov, Tests: results}
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	if f.asYAML {
		out.Reset()
		var v any = results
		if cov != nil {
			v = coverageJSON{Coverage: cov, Tests: results}
		}
		if err := writeYAML(&out, v); err != nil {
			return err
		}
	}
	if _, err := w.Write(out.Bytes()); err != nil {
		return err
	}
	if failed+errored > 0 {
		return fmt.Errorf("%d of %s in %s failed", failed+errored, plural(len(results)-skipped, "policy test", "policy tests"), dir)
	}
	if cov != nil && cov.Percent < f.threshold {
		return fmt.Errorf("coverage %.2f%% of %s is below --threshold %v%%", cov.Percent, dir, f.threshold)
	}
	return nil
}

// printCoverage writes the coverage report for people: the total, then
// one line per file (its path relative to dir) with its percentage and
// the lines no test evaluated.
func printCoverage(w io.Writer, dir string, cov *opa.Coverage) {
	fmt.Fprintf(w, "coverage: %.2f%% (%d of %s)\n", cov.Percent, cov.CoveredLines,
		plural(cov.CoveredLines+cov.NotCoveredLines, "line", "lines"))
	files := slices.Sorted(maps.Keys(cov.Files))
	names := make([]string, len(files))
	width := 0
	for i, file := range files {
		names[i] = file
		if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
			names[i] = rel
		}
		width = max(width, len(names[i]))
	}
	for i, file := range files {
		fc := cov.Files[file]
		// A file with no line of code (only a package and imports) is
		// neither covered nor not: "-".
		line := fmt.Sprintf("  %-*s %7s", width, names[i], "-")
		if fc.CoveredLines+fc.NotCoveredLines > 0 {
			line = fmt.Sprintf("  %-*s %6.2f%%", width, names[i], fc.Percent)
		}
		if spans := lineSpans(fc.NotCovered); spans != "" {
			line += "  not covered: " + spans
		}
		fmt.Fprintln(w, line)
	}
}

// lineSpans renders the rows of ranges as "3, 7-9, 12".
func lineSpans(ranges []opa.LineRange) string {
	rows := map[int]bool{}
	for _, r := range ranges {
		for row := r.Start.Row; row <= r.End.Row; row++ {
			rows[row] = true
		}
	}
	sorted := slices.Sorted(maps.Keys(rows))
	var parts []string
	for i := 0; i < len(sorted); {
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(sorted[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", sorted[i], sorted[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// maxV0Lines is how many of a Rego v0 bundle's parse errors regoV0Error
// shows: every rule of such a bundle is an error, and the pointer to
// --v0-compatible matters more than the rest.
const maxV0Lines = 5

// regoV0Error reports a bundle that parses only as Rego v0: its first
// parse errors (file and line) and the flag that runs it.
func regoV0Error(dir string, err error) error {
	lines := opa.ErrorLines(err)
	var b strings.Builder
	fmt.Fprintf(&b, "policy bundle %s does not parse as Rego v1 (%s):", dir, plural(len(lines), "error", "errors"))
	for i, l := range lines {
		if i == maxV0Lines {
			fmt.Fprintf(&b, "\n  … and %d more", len(lines)-i)
			break
		}
		b.WriteString("\n  " + l)
	}
	b.WriteString("\nit parses as Rego v0, the syntax before OPA 1.0: run its tests with --v0-compatible")
	return &linesError{detailError{msg: b.String(), err: err}}
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// regoError reports Rego parse, compile or load errors, one per line, each
// naming file and line; the source excerpt OPA shows under an error
// (the line, and a caret under the column) follows it on lines of its
// own. The result is a *linesError: its line breaks are printed as they
// are, every other control character escaped (errorLine).
func regoError(what string, err error) error {
	lines := opa.ErrorLines(err)
	msg := what + ":"
	if len(lines) == 0 {
		return &linesError{detailError{msg: what + ": " + err.Error(), err: err}}
	}
	if len(lines) == 1 {
		msg += " " + lines[0]
	} else {
		msg = fmt.Sprintf("%s (%d errors):", what, len(lines))
		for _, l := range lines {
			msg += "\n  " + strings.ReplaceAll(l, "\n", "\n  ")
		}
	}
	return &linesError{detailError{msg: msg, err: err}}
}

// decisionJSON is policy eval --json's output.
type decisionJSON struct {
	Decision   string          `json:"decision"` // "allowed" or "denied"
	Allowed    bool            `json:"allowed"`
	Reasons    []policy.Reason `json:"reasons"`
	Bundle     string          `json:"bundle"`
	Revision   string          `json:"revision"`
	InputPaths []string        `json:"input_paths"` // null: the policy's decisions are not cached
}

func newPolicyEvalCmd(a *app) *cobra.Command {
	var bundleDir, inputFile string
	var output outputFlags
	cmd := &cobra.Command{
		Use:   "eval [--bundle DIR] --input FILE",
		Short: "Ask a write policy about one input document",
		Long: `Load the policy bundle (--bundle, default policy.dir) as the write commands
do, read FILE (- for stdin) as the policy input document — the JSON object
the store builds for every proposed write: action, principal, event,
batch, entity; see the policy package documentation — and print the
decision: allowed or denied, every reason (code, message and context), the
bundle's revision, and the input paths the policy reads (the fields its
decision cache is keyed on).

event.kind may be written as the CLI's --kind takes it (1:1) and is
shown to the policy as the store does (0x1:0x1); category and type are
filled from it when left out.

Exit codes: 0 allowed, 3 denied, 1 an error (unreadable input, a bundle
that does not load, a policy that could not decide: the store would deny).`,
		Example: `  batpak policy eval --bundle examples/policies --input examples/policies/input-allowed.json
  batpak policy eval --input - --json < input.json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "input"); err != nil {
				return err
			}
			format, err := output.format()
			if err != nil {
				return err
			}
			dir, from := bundleDir, "--bundle"
			if !cmd.Flags().Changed("bundle") {
				res, err := a.loadConfig()
				if err != nil {
					return err
				}
				if res.policyDir == "" {
					return usagef("no policy: give --bundle DIR or set policy.dir (--policy-dir, %s)", envName("policy.dir"))
				}
				dir, from = res.policyDir, "policy.dir (from "+res.source("policy.dir")+")"
			}
			if dir == "" {
				return badInput("--bundle", errors.New("empty"))
			}
			in, err := readInputDoc(cmd.InOrStdin(), inputFile)
			if err != nil {
				return badInput("--input", err)
			}
			// The default options but the timeout: with the cache off
			// (CacheSize < 0), InputPaths would report nothing. One
			// decision asked by hand is not a write waiting on it: the
			// store's 100 ms would deny it on a busy machine.
			gate, err := opa.Load(cmd.Context(), dir, opa.Options{Timeout: policyEvalTimeout})
			if err != nil {
				return regoError(from+" "+dir, unprefixed(err))
			}
			d, evalErr := gate.Decide(cmd.Context(), in)
			out := decisionJSON{
				Decision: "denied", Allowed: d.Allowed, Reasons: d.Reasons, Bundle: dir,
				Revision: d.Revision, InputPaths: gate.InputPaths(),
			}
			if d.Allowed {
				out.Decision = "allowed"
			}
			if out.Reasons == nil {
				out.Reasons = []policy.Reason{}
			}
			err = emit(cmd.OutOrStdout(), format, out, func(w io.Writer) error { return printDecision(w, out) })
			switch {
			case err != nil:
				return err
			case evalErr != nil:
				return fmt.Errorf("the policy could not decide (the store would deny the write): %w", evalErr)
			case !d.Allowed:
				return &exitCodeError{code: exitDenied}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&bundleDir, "bundle", "", "policy bundle directory or .tar.gz (default: policy.dir)")
	f.StringVar(&inputFile, "input", "", "input document (JSON), - for stdin")
	output.register(cmd)
	return cmd
}

// printDecision writes policy eval's decision for people. What the policy
// wrote (codes, messages, context) and the bundle's names are escaped, as
// a remote denial's are, so each stays on its line: a message cannot
// forge "allowed" or another reason.
func printDecision(w io.Writer, d decisionJSON) error {
	var b bytes.Buffer
	b.WriteString(d.Decision + "\n")
	fmt.Fprintf(&b, "bundle:   %s\n", oneLine(d.Bundle))
	fmt.Fprintf(&b, "revision: %s\n", oneLine(orNone(d.Revision)))
	if len(d.Reasons) > 0 {
		fmt.Fprintf(&b, "reasons:  %d\n", len(d.Reasons))
		for _, r := range d.Reasons {
			fmt.Fprintf(&b, "  %s: %s\n", oneLine(r.Code), oneLine(r.Message))
			for _, k := range sortedKeys(r.Context) {
				fmt.Fprintf(&b, "      %s: %s\n", oneLine(k), oneLine(compactJSON(r.Context[k])))
			}
		}
	}
	if d.InputPaths == nil {
		b.WriteString("reads:    the input as a whole, or non-deterministic built-ins (decisions are not cached)\n")
	} else {
		fmt.Fprintf(&b, "reads:    %s\n", oneLine(strings.Join(d.InputPaths, ", ")))
	}
	_, err := w.Write(b.Bytes())
	return err
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// compactJSON renders v as one line of JSON (without HTML escaping).
func compactJSON(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(b.String())
}

// actions are the write paths a proposal can come through.
var actions = []core.Action{core.ActionAppend, core.ActionBatch, core.ActionFence, core.ActionImport, core.ActionReaction, core.ActionPlugin}

// readInputDoc reads a policy input document from name (- for stdin). It
// refuses unknown fields (a typo would otherwise be an empty field the
// policy judges) and normalises what the store would have normalised:
// the kind's spelling and expected_clock's type.
func readInputDoc(stdin io.Reader, name string) (*policy.Input, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(r)
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var in policy.Input
	if err := dec.Decode(&in); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, fmt.Errorf("%s is empty: want one JSON object (the policy input document)", name)
		case errors.As(err, &se):
			return nil, fmt.Errorf("%s is not valid JSON: %v (at byte %d)", name, err, se.Offset)
		case errors.As(err, &te):
			return nil, fmt.Errorf("%s: %s is %s, want %s", name, te.Field, te.Value, te.Type)
		}
		return nil, fmt.Errorf("%s: %v", name, strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s holds more than one JSON value", name)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", name, field, fmt.Sprintf(format, args...))
	}

	known := false
	for _, act := range actions {
		known = known || in.Action == act
	}
	if !known {
		names := make([]string, len(actions))
		for i, act := range actions {
			names[i] = string(act)
		}
		return nil, bad("action", "%q is not a write path: want one of %s", in.Action, strings.Join(names, ", "))
	}

	switch x := in.Event.ExpectedClock.(type) {
	case nil:
	case string:
		if x != "no_events" {
			return nil, bad("event.expected_clock", `%q: want null, "no_events" or a clock`, x)
		}
	case json.Number:
		c, err := strconv.ParseUint(string(x), 10, 64)
		if err != nil {
			return nil, bad("event.expected_clock", "%s is not a clock (a whole number ≥ 0)", x)
		}
		in.Event.ExpectedClock = c
	default:
		return nil, bad("event.expected_clock", `%v: want null, "no_events" or a clock`, x)
	}

	ev := &in.Event
	switch {
	case ev.Kind != "":
		cat, typ, err := parseAnyKind(ev.Kind)
		if err != nil {
			return nil, bad("event.kind", "%v", err)
		}
		if (ev.Category != 0 || ev.Type != 0) && (ev.Category != cat || ev.Type != typ) {
			return nil, bad("event.kind", "%q disagrees with category %d and type %d", ev.Kind, ev.Category, ev.Type)
		}
		ev.Kind, ev.Category, ev.Type = fmt.Sprintf("0x%x:0x%x", cat, typ), cat, typ
	case ev.Category != 0 || ev.Type != 0:
		if ev.Category > 0xF || ev.Type > core.MaxKindType {
			return nil, bad("event", "category %d, type %d is not a kind (category 0..15, type 0..4095)", ev.Category, ev.Type)
		}
		ev.Kind = fmt.Sprintf("0x%x:0x%x", ev.Category, ev.Type)
	}
	return &in, nil
}

// parseAnyKind reads CATEGORY:TYPE (decimal or 0x hex) without refusing
// the reserved categories: the input may describe any kind a gate can see.
func parseAnyKind(s string) (cat, typ uint16, err error) {
	c, t, ok := strings.Cut(s, ":")
	if ok {
		cn, err1 := core.ParseKindNumber(c)
		tn, err2 := core.ParseKindNumber(t)
		if err1 == nil && err2 == nil && cn <= 0xF && tn <= core.MaxKindType {
			return uint16(cn), uint16(tn), nil
		}
	}
	return 0, 0, fmt.Errorf("%q is not a kind: want CATEGORY:TYPE, e.g. 0x1:0x1 or 1:1 (category 0..15, type 0..4095)", s)
}

// denialError renders a policy denial with every reason and its context,
// one reason a line.
func denialError(d *policy.Denial) error {
	return denialErrorOf("write", "nothing was written", d)
}

// maintenanceDenial turns a *policy.Denial refusing a destructive
// operation (what: "redact", "compact") into the CLI's message; other
// errors pass as they are.
func maintenanceDenial(what string, err error) error {
	var d *policy.Denial
	if errors.As(err, &d) {
		return denialErrorOf(what, "nothing was changed", d)
	}
	return err
}

func denialErrorOf(what, outcome string, d *policy.Denial) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s denied by gate %q", what, d.Gate)
	if d.Revision != "" {
		fmt.Fprintf(&b, " (policy revision %s)", d.Revision)
	}
	b.WriteString("; " + outcome + ":")
	reasons := d.Reasons
	if len(reasons) == 0 {
		reasons = []policy.Reason{{Code: d.Code, Message: d.Message, Context: d.Context}}
	}
	for _, r := range reasons {
		// Code and message can carry payload text a policy quoted: escape
		// them, so each reason stays one line.
		fmt.Fprintf(&b, "\n  %s: %s", printable.String(r.Code), printable.String(r.Message))
		if len(r.Context) > 0 {
			b.WriteString(" " + printable.String(compactJSON(r.Context)))
		}
	}
	return &linesError{detailError{msg: b.String(), err: d}}
}
