package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Output formats of -o/--output, on every verb that prints data.
const (
	formatTable = "table" // the human form (the default)
	formatJSON  = "json"  // one JSON object per line (NDJSON for a list)
	formatYAML  = "yaml"  // one YAML document per object, "---" between
)

var outputFormats = []string{formatTable, formatJSON, formatYAML}

// outputFlags is -o/--output json|yaml|table plus --json, its older
// spelling (an alias for -o json). A verb that prints data embeds one,
// calls register on its command and format in RunE:
//
//	var out outputFlags
//	... RunE: f, err := out.format(); ...; return emit(w, f, value, tableFn)
//	out.register(cmd)
type outputFlags struct {
	output string
	asJSON bool
	cmd    *cobra.Command
	extra  []string // formats of this verb's own, besides table, json and yaml
}

// allow adds formats a verb renders itself (e.g. "dot" for a causal
// graph); format returns them as given, lower-cased. Call it before
// register.
func (o *outputFlags) allow(formats ...string) { o.extra = append(o.extra, formats...) }

func (o *outputFlags) choices() []string {
	return append(append([]string(nil), outputFormats...), o.extra...)
}

// register adds -o/--output and --json to cmd, with completion of the
// format names.
func (o *outputFlags) register(cmd *cobra.Command) {
	o.cmd = cmd
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", formatTable, "output format: "+strings.Join(o.choices(), ", ")+" (json: one object a line)")
	f.BoolVar(&o.asJSON, "json", false, "the same as -o json")
	_ = cmd.RegisterFlagCompletionFunc("output", completeWords(o.choices()...))
}

// registerPersistent adds -o/--output and --json to a group of verbs
// (tenant, key, plugin, worker, policy ...): every subcommand takes them.
func (o *outputFlags) registerPersistent(cmd *cobra.Command) {
	o.cmd = cmd
	f := cmd.PersistentFlags()
	f.StringVarP(&o.output, "output", "o", formatTable, "output format: "+strings.Join(o.choices(), ", ")+" (json: one object a line)")
	f.BoolVar(&o.asJSON, "json", false, "the same as -o json")
	_ = cmd.RegisterFlagCompletionFunc("output", completeWords(o.choices()...))
}

// format returns the chosen format, or a usage error naming the refused
// value and the choices.
func (o *outputFlags) format() (string, error) {
	f := strings.ToLower(strings.TrimSpace(o.output))
	if o.asJSON {
		if o.cmd != nil && f != formatJSON && f != formatTable {
			return "", usagef("--json and -o %s exclude each other", o.output)
		}
		return formatJSON, nil
	}
	if slices.Contains(o.choices(), f) {
		return f, nil
	}
	c := o.choices()
	return "", usagef("-o %q is not an output format: want %s or %s", o.output, strings.Join(c[:len(c)-1], ", "), c[len(c)-1])
}

// emit writes one value in format f: JSON on one line, a YAML document,
// or the human form that table writes.
func emit(w io.Writer, f string, v any, table func(io.Writer) error) error {
	switch f {
	case formatJSON:
		return newJSONLines(w).write(v)
	case formatYAML:
		return writeYAML(w, v)
	}
	return table(w)
}

// records writes a list of values, one at a time, in JSON (one a line) or
// YAML (one document each, separated by "---").
type records struct {
	w     io.Writer
	f     string
	n     int
	lines jsonLines
}

func newRecords(w io.Writer, f string) *records {
	return &records{w: w, f: f, lines: newJSONLines(w)}
}

func (r *records) write(v any) error {
	r.n++
	if r.f == formatYAML {
		if r.n > 1 {
			if _, err := io.WriteString(r.w, "---\n"); err != nil {
				return err
			}
		}
		return writeYAML(r.w, v)
	}
	return r.lines.write(v)
}

// writeYAML writes v as a YAML document with the same field names and
// order as its JSON form (it goes through JSON, so json tags and custom
// marshalers apply; numbers keep their exact text).
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc yaml.Node
	// JSON is YAML: the node tree keeps key order and the numbers' text.
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("render yaml: %w", err)
	}
	blockStyle(&doc)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("render yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// blockStyle drops the flow style and quoting JSON syntax gave the nodes,
// so the encoder writes block YAML and quotes only where a plain scalar
// would read back as something else.
func blockStyle(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && strings.ContainsAny(n.Value, "\n") {
		n.Style = yaml.LiteralStyle
	} else {
		n.Style = 0
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// completeWords completes a flag's value from a fixed list.
func completeWords(words ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}
