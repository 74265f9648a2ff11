package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
)

// The causal browsing verbs: descendants (what an event caused,
// transitively) and correlation (every event of its conversation), each
// printed as a tree of causation links, as Graphviz DOT (-o dot) or as
// JSON (-o json, --json), from a local store or a server.

// causalMaxLimit is the most events one call asks for: what a server
// answers at most (httpapi.MaxPageLimit), so local and remote agree.
const causalMaxLimit = 1000

type causalFlags struct {
	limit, depth int
	out          outputFlags // table (the tree; "tree" is its other name), dot, json, yaml
}

func newDescendantsCmd(a *app) *cobra.Command {
	var f causalFlags
	cmd := &cobra.Command{
		Use:     "descendants ID",
		Short:   "Show what an event caused, transitively, as a tree",
		GroupID: "read",
		Long: `Print the event and every event it caused, then what those caused, and so
on: a tree of causation links, children in global order. At most --limit
events (up to 1000) and --depth links below the event are followed; the
last line says when more were left out. An event whose cause is not in this
store is the root of its own tree.

-o dot prints a Graphviz digraph (pipe it to "dot -Tsvg"); -o json (or
--json; -o yaml likewise) prints {"events": [...], "truncated": bool} with the events in
global order and the fields of query --json.`,
		Example: `  batpak descendants 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e
  batpak descendants 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e --depth 2 -o dot | dot -Tsvg > tree.svg`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error { return runCausal(cmd, a, args[0], f, true) },
	}
	causalFlagSet(cmd, &f, true)
	registerMinSeqFlag(cmd, a)
	return cmd
}

func newCorrelationCmd(a *app) *cobra.Command {
	var f causalFlags
	cmd := &cobra.Command{
		Use:     "correlation ID",
		Short:   "Show every event of an event's conversation (same correlation id)",
		GroupID: "read",
		Long: `Print every event with the same correlation id as the event — the
conversation it belongs to — in global order, laid out as a tree of
causation links (an event whose cause is not in the conversation starts a
tree of its own). At most --limit events (up to 1000), the earliest; the
last line says when more were left out.

-o dot prints a Graphviz digraph; -o json (or --json; -o yaml likewise) prints
{"events": [...], "truncated": bool} with the events in global order and
the fields of query --json.`,
		Example: `  batpak correlation 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e`,
		Args:    exactArgs("ID"),
		RunE:    func(cmd *cobra.Command, args []string) error { return runCausal(cmd, a, args[0], f, false) },
	}
	causalFlagSet(cmd, &f, false)
	registerMinSeqFlag(cmd, a)
	return cmd
}

func causalFlagSet(cmd *cobra.Command, f *causalFlags, depth bool) {
	cmd.Flags().IntVar(&f.limit, "limit", causalMaxLimit, fmt.Sprintf("show at most N events (1 to %d)", causalMaxLimit))
	if depth {
		cmd.Flags().IntVar(&f.depth, "depth", core.DefaultCausalMaxDepth, "follow at most N causation links below the event")
	}
	f.out.allow("tree", "dot")
	f.out.register(cmd)
}

func runCausal(cmd *cobra.Command, a *app, arg string, f causalFlags, down bool) error {
	id, err := core.ParseEventID(arg)
	if err != nil {
		return badInput("ID", err)
	}
	if f.limit < 1 || f.limit > causalMaxLimit {
		return badInput("--limit", fmt.Errorf("%d is outside 1 to %d", f.limit, causalMaxLimit))
	}
	if down && f.depth < 1 {
		return badInput("--depth", fmt.Errorf("%d is less than 1", f.depth))
	}
	format, err := f.out.format()
	if err != nil {
		return err
	}
	lim := core.CausalLimits{MaxEvents: f.limit, MaxDepth: f.depth}
	rc, err := a.remote()
	if err != nil {
		return err
	}
	var res core.CausalResult
	if rc != nil {
		res, err = causalRemote(cmd.Context(), rc, id, lim, down)
	} else {
		err = a.withReadStore(func(s *core.Store, r *resolved) error {
			var err error
			if down {
				res, err = s.Descendants(id, lim)
			} else {
				res, err = s.Correlation(id, lim)
			}
			if errors.Is(err, core.ErrNotFound) {
				return &detailError{msg: fmt.Sprintf("no event %s in %s", id, r.cfg.Dir), err: err}
			}
			return err
		})
	}
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	switch format {
	case formatJSON, formatYAML:
		evs := make([]eventJSON, len(res.Events))
		for i, ev := range res.Events {
			evs[i] = toEventJSON(ev)
		}
		return emit(w, format, struct {
			Events    []eventJSON `json:"events"`
			Truncated bool        `json:"truncated"`
		}{evs, res.Truncated}, nil)
	case "dot":
		return writeCausalDOT(w, res.Events, down)
	}
	if err := writeCausalTree(w, res.Events); err != nil {
		return err
	}
	end := ""
	if res.Truncated {
		if down {
			end = " (more left out: raise --limit or --depth, or run descendants on a listed id)"
		} else {
			end = " (more left out: raise --limit)"
		}
	}
	what := "caused by the event, itself included"
	if !down {
		what = "in the conversation " + res.Events[0].Header.CorrelationID.String()
	}
	_, err = fmt.Fprintf(w, "%s %s%s\n", plural(len(res.Events), "event", "events"), what, end)
	return err
}

// causalRemote is runCausal's read against a server.
func causalRemote(ctx context.Context, rc *remoteConf, id core.EventID, lim core.CausalLimits, down bool) (core.CausalResult, error) {
	t, err := rc.tenantClient()
	if err != nil {
		return core.CausalResult{}, err
	}
	var p client.CausalPage
	if down {
		p, err = t.Descendants(ctx, id.String(), lim.MaxEvents, lim.MaxDepth)
	} else {
		p, err = t.Correlation(ctx, id.String(), lim.MaxEvents)
	}
	if errors.Is(err, client.ErrNotFound) {
		return core.CausalResult{}, &detailError{msg: fmt.Sprintf("no event %s in %s", id, rc.where()), err: err}
	} else if err != nil {
		return core.CausalResult{}, remoteError(err)
	}
	evs := make([]core.StoredEvent, 0, len(p.Events))
	for _, w := range p.Events {
		ev, err := fromWire(w)
		if err != nil {
			return core.CausalResult{}, err
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return core.CausalResult{}, fmt.Errorf("no event %s in %s", id, rc.where())
	}
	return core.CausalResult{Events: evs, Truncated: p.Truncated}, nil
}

// causalForest lays evs (in global order) out as trees of causation
// links: the roots (events whose cause is not among evs) and each event's
// children, both in global order.
func causalForest(evs []core.StoredEvent) (roots []int, children map[int][]int) {
	at := make(map[core.EventID]int, len(evs))
	for i, ev := range evs {
		at[ev.Header.ID] = i
	}
	children = map[int][]int{}
	for i, ev := range evs {
		if p, ok := at[ev.Header.CausationID]; ok && p < i {
			children[p] = append(children[p], i)
		} else {
			roots = append(roots, i)
		}
	}
	return roots, children
}

// writeCausalTree prints evs as indented trees, one event a line.
func writeCausalTree(w io.Writer, evs []core.StoredEvent) error {
	roots, children := causalForest(evs)
	var b strings.Builder
	var walk func(i int, prefix, branch string)
	walk = func(i int, prefix, branch string) {
		ev := evs[i]
		h := ev.Header
		payload := compactPayload(ev.Payload, 50)
		if ev.Redacted {
			payload = "(redacted)"
		}
		fmt.Fprintf(&b, "%s%s#%d %s %s %s clock %d %s\n", prefix, branch, ev.GlobalSequence, h.ID,
			oneLine(ev.Coordinate.Entity), h.Kind, h.Clock, payload)
		kids := children[i]
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		for j, c := range kids {
			if j == len(kids)-1 {
				walk(c, next, "└─ ")
			} else {
				walk(c, next, "├─ ")
			}
		}
	}
	for _, r := range roots {
		walk(r, "", "")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCausalDOT prints evs as a Graphviz digraph: a node per event
// (sequence, entity, kind), an edge from each cause to what it caused.
func writeCausalDOT(w io.Writer, evs []core.StoredEvent, down bool) error {
	var b strings.Builder
	name := "correlation"
	if down {
		name = "descendants"
	}
	fmt.Fprintf(&b, "digraph %s {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n", name)
	roots, children := causalForest(evs)
	for i, ev := range evs {
		label := fmt.Sprintf("#%d %s\\n%s clock %d", ev.GlobalSequence, dotEscape(ev.Coordinate.Entity), ev.Header.Kind, ev.Header.Clock)
		if ev.Redacted {
			label += "\\n(redacted)"
		}
		attrs := ""
		if slices.Contains(roots, i) {
			attrs = ", style=bold"
		}
		fmt.Fprintf(&b, "  %q [label=\"%s\"%s];\n", ev.Header.ID.String(), label, attrs)
	}
	for i, ev := range evs {
		for _, c := range children[i] {
			fmt.Fprintf(&b, "  %q -> %q;\n", ev.Header.ID.String(), evs[c].Header.ID.String())
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotEscape makes s safe inside a double-quoted DOT string: quotes and
// backslashes escaped, line breaks shown as \n text.
func dotEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\\n`, "\r", `\\r`).Replace(s)
}
