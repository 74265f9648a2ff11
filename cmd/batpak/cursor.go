package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
)

// cursorJSON is one named cursor as cursor ls and info print it. Lag is
// counted in global sequences: the log's end minus the committed
// position (an upper bound on the events of its region still to read),
// as the server counts it.
type cursorJSON struct {
	Name      string               `json:"name"`
	Region    *client.CursorRegion `json:"region,omitempty"` // a server's cursors have one; a local cursor's region is its consumer's
	Committed uint64               `json:"committed"`        // the global sequence it resumes from
	Lag       uint64               `json:"lag"`
	LogEnd    uint64               `json:"log_end"`           // the next global sequence of the store
	Damaged   string               `json:"damaged,omitempty"` // a cursor whose saved position is damaged (or past the log's end): what to do
}

// anyDamaged is the exit of cursor ls and info once they have printed:
// exit 7 (corrupt) when a cursor's saved position is damaged.
func anyDamaged(curs ...cursorJSON) error {
	for _, c := range curs {
		if c.Damaged != "" {
			return &exitCodeError{code: exitCorrupt}
		}
	}
	return nil
}

// localCursorDamaged is what cursor ls and info say of a local cursor
// whose saved position NamedCursor refused with err: what is wrong and
// that cursor reset commits a new one. ok is false for any other error.
func localCursorDamaged(name string, err error) (advice string, ok bool) {
	var ahead *core.CursorAheadError
	if !errors.Is(err, core.ErrCorrupt) && !errors.As(err, &ahead) {
		return "", false
	}
	return fmt.Sprintf("its saved position is damaged (%s): \"batpak cursor reset %s\" starts it again from the beginning, with --to SEQ from SEQ (stop its consumer first)",
		strings.TrimPrefix(err.Error(), "batpak: "), name), true
}

func newCursorCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "cursor",
		Short:   "List, inspect and reset named cursors, with their lag",
		GroupID: "inspect",
		Long: `Named cursors are the durable positions of consumers (core.NamedCursor, a
cursor worker, a plugin worker, a server's cursor routes). "cursor ls"
lists them with the position each resumes from and its lag: the log's end
minus that position, in global sequences (an upper bound on the events
of its region still to read). "cursor info NAME" shows one. "cursor reset
NAME" moves its committed position (the beginning by default, --to SEQ,
or --to-end to skip everything written so far): its consumer reads from
there when it next starts.

A cursor whose saved position is damaged (its file unreadable or not a
regular file, or past the end of the log) is listed as DAMAGED with what
to do; ls lists every other cursor as usual, and ls and info exit 7
(corrupt) after printing. A ".pos" file whose name is no cursor name is
named in a warning and ignored.
"cursor reset NAME" (with --to or --to-end too) replaces a damaged
position.

Locally, ls and info open the store read-only (beside a running writer);
reset takes the store's lock, so stop the consumer first. With --server,
they use the tenant's cursor routes.`,
		Example: `  batpak cursor ls
  batpak cursor info billing -o json
  batpak cursor reset billing --to 1200`,
	}
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List the named cursors with their lag", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			curs, err := a.cursors(cmd)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if f != formatTable {
				rec := newRecords(w, f)
				for _, c := range curs {
					if err := rec.write(c); err != nil {
						return err
					}
				}
				return anyDamaged(curs...)
			}
			if err := printCursors(w, curs); err != nil {
				return err
			}
			return anyDamaged(curs...)
		},
	}
	info := &cobra.Command{
		Use: "info NAME", Short: "Show one named cursor: position and lag", Args: exactArgs("NAME"),
		ValidArgsFunction: completeCursorNames(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			c, err := a.cursor(cmd, args[0])
			if err != nil {
				return err
			}
			err = emit(cmd.OutOrStdout(), f, c, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "name\t%s\n", oneLine(c.Name))
				if c.Region != nil {
					fmt.Fprintf(tw, "region\t%s\n", regionText(*c.Region))
				}
				if c.Damaged != "" {
					fmt.Fprintf(tw, "committed\tDAMAGED: %s\n", oneLine(c.Damaged))
					return tw.Flush()
				}
				fmt.Fprintf(tw, "committed\t%d (the global sequence it resumes from)\n", c.Committed)
				fmt.Fprintf(tw, "log end\t%d\n", c.LogEnd)
				fmt.Fprintf(tw, "lag\t%d (global sequences behind the log's end)\n", c.Lag)
				return tw.Flush()
			})
			if err != nil {
				return err
			}
			return anyDamaged(c)
		},
	}
	var to uint64
	var toEnd bool
	reset := &cobra.Command{
		Use: "reset NAME [--to SEQ | --to-end]", Short: "Move a named cursor's committed position (default: the beginning)", Args: exactArgs("NAME"),
		ValidArgsFunction: completeCursorNames(a),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if toEnd && cmd.Flags().Changed("to") {
				return usagef("--to and --to-end exclude each other")
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			name := args[0]
			rc, err := a.remote()
			if err != nil {
				return err
			}
			var before, pos uint64
			damaged := false // the saved position was damaged
			if rc != nil {
				t, err := rc.tenantClient()
				if err != nil {
					return err
				}
				c, err := a.cursor(cmd, name)
				if err != nil {
					return err
				}
				before, pos = c.Committed, to
				if toEnd {
					pos = c.LogEnd
				}
				damaged = c.Damaged != ""
				if pos < before || damaged {
					// The commit route only moves forward, and a damaged
					// position takes none: define the cursor anew (at the
					// beginning), then move it to pos.
					if err := t.DeleteCursor(cmd.Context(), name); err != nil {
						return remoteError(err)
					}
					if err := t.DefineCursor(cmd.Context(), name, *c.Region); err != nil {
						return remoteError(err)
					}
				}
				if pos > 0 {
					if err := t.CommitCursor(cmd.Context(), name, pos); err != nil {
						return remoteError(err)
					}
				}
			} else {
				res, err := a.loadConfig()
				if err != nil {
					return err
				}
				if err := localCursorExists(res.cfg.Dir, name); err != nil {
					return err
				}
				s, _, _, err := a.openWrite(cmd.Context())
				if err != nil {
					return err
				}
				defer closeStore(s, &err)
				end := s.Stats().GlobalSequence
				pos = to
				if toEnd {
					pos = end
				}
				if pos > end {
					return badInput("--to", fmt.Errorf("%d is past the end of the log (%d)", pos, end))
				}
				cur, err := s.NamedCursor(name, core.All())
				if _, ok := localCursorDamaged(name, err); ok {
					// A damaged position: ResetCursor replaces it with 0,
					// whatever the file holds; then move on to pos.
					damaged = true
					if err := s.ResetCursor(name); err != nil {
						return err
					}
					cur, err = s.NamedCursor(name, core.All())
				}
				if err != nil {
					return err
				}
				before = cur.Committed()
				if !damaged || pos != 0 {
					cur.Seek(pos)
					if err := cur.Commit(); err != nil {
						return err
					}
				}
			}
			moved := struct {
				Name        string `json:"name"`
				From        uint64 `json:"from"`                   // the committed position before (0 when it was damaged)
				FromDamaged bool   `json:"from_damaged,omitempty"` // the position before was damaged
				Committed   uint64 `json:"committed"`              // the committed position now
			}{name, before, damaged, pos}
			return emit(cmd.OutOrStdout(), f, moved, func(w io.Writer) error {
				from := strconv.FormatUint(before, 10)
				if damaged {
					from = "a damaged position"
				}
				_, err := fmt.Fprintf(w, "cursor %s reset from %s to %d\n", oneLine(name), from, pos)
				return err
			})
		},
	}
	reset.Flags().Uint64Var(&to, "to", 0, "the global sequence to resume from (0: the beginning)")
	reset.Flags().BoolVar(&toEnd, "to-end", false, "resume after everything written so far")
	out.registerPersistent(cmd)
	cmd.AddCommand(ls, info, reset)
	return cmd
}

// printCursors writes cursor ls's table.
func printCursors(w io.Writer, curs []cursorJSON) error {
	if len(curs) == 0 {
		_, err := fmt.Fprintln(w, "no named cursors")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCOMMITTED\tLAG\tREGION")
	for _, c := range curs {
		region := "-"
		if c.Region != nil {
			region = regionText(*c.Region)
		}
		if c.Damaged != "" {
			fmt.Fprintf(tw, "%s\tDAMAGED\t-\t%s\n", oneLine(c.Name), region)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", oneLine(c.Name), c.Committed, c.Lag, region)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range curs {
		if c.Damaged != "" {
			fmt.Fprintf(w, "cursor %s: %s\n", oneLine(c.Name), oneLine(c.Damaged))
		}
	}
	_, err := fmt.Fprintln(w, plural(len(curs), "cursor", "cursors"))
	return err
}

// regionText renders a server cursor's region like core.Region does.
func regionText(r client.CursorRegion) string {
	var parts []string
	if r.Entity != "" {
		parts = append(parts, "entity "+strconv.Quote(r.Entity)+"*")
	}
	if r.Scope != "" {
		parts = append(parts, "scope "+strconv.Quote(r.Scope))
	}
	if r.Kind != "" {
		parts = append(parts, "kind "+r.Kind)
	}
	if r.Category != nil {
		parts = append(parts, fmt.Sprintf("category %d", *r.Category))
	}
	if len(parts) == 0 {
		return "all"
	}
	return oneLine(strings.Join(parts, ", "))
}

// cursors lists the named cursors, local or remote, by name.
func (a *app) cursors(cmd *cobra.Command) ([]cursorJSON, error) {
	rc, err := a.remote()
	if err != nil {
		return nil, err
	}
	if rc != nil {
		t, err := rc.tenantClient()
		if err != nil {
			return nil, err
		}
		infos, err := t.Cursors(cmd.Context())
		if err != nil {
			return nil, remoteError(err)
		}
		out := make([]cursorJSON, 0, len(infos))
		for _, in := range infos {
			r := in.Region
			out = append(out, cursorJSON{Name: in.Name, Region: &r, Committed: in.Committed, Lag: in.Lag, LogEnd: in.Committed + in.Lag, Damaged: in.Damaged})
		}
		slices.SortFunc(out, func(x, y cursorJSON) int { return strings.Compare(x.Name, y.Name) })
		return out, nil
	}
	var out []cursorJSON
	err = a.withReadStore(func(s *core.Store, res *resolved) error {
		names, stray, err := localCursorNames(res.cfg.Dir)
		if err != nil {
			return err
		}
		for _, n := range stray {
			fmt.Fprintf(cmd.ErrOrStderr(), "batpak: warning: %s is not a named cursor's position (not a cursor name); ignored: move it aside\n", oneLine(filepath.Join(res.cfg.Dir, "cursors", n)))
		}
		end := s.Stats().GlobalSequence
		for _, n := range names {
			cur, err := s.NamedCursor(n, core.All())
			if advice, ok := localCursorDamaged(n, err); ok {
				out = append(out, cursorJSON{Name: n, LogEnd: end, Damaged: advice})
				continue
			}
			if err != nil {
				return err
			}
			c := cur.Committed()
			out = append(out, cursorJSON{Name: n, Committed: c, Lag: end - min(c, end), LogEnd: end})
		}
		return nil
	})
	return out, err
}

// cursor returns one named cursor; a missing one is a not-found error.
func (a *app) cursor(cmd *cobra.Command, name string) (cursorJSON, error) {
	if rc, err := a.remote(); err == nil && rc == nil {
		res, err := a.loadConfig()
		if err != nil {
			return cursorJSON{}, err
		}
		if err := checkStoreDir(res.cfg.Dir); err != nil {
			return cursorJSON{}, err
		}
		if err := localCursorExists(res.cfg.Dir, name); err != nil {
			return cursorJSON{}, err
		}
	}
	curs, err := a.cursors(cmd)
	if err != nil {
		return cursorJSON{}, err
	}
	for _, c := range curs {
		if c.Name == name {
			return c, nil
		}
	}
	return cursorJSON{}, withExitCode(exitNotFound, fmt.Errorf("no named cursor %q", name))
}

// The position file of core's named cursor NAME is cursors/NAME.pos in
// the store directory (core/cursor.go).
const cursorFileSuffix = ".pos"

// localCursorNames lists the named cursors of a store directory: every
// "NAME.pos" entry of its cursors directory whose NAME is a cursor name,
// whatever it is (a symbolic link, directory or pipe there is a damaged
// position, as NamedCursor says, which cursor reset replaces). stray are
// the ".pos" entries whose name is not a cursor name: no cursor reads
// them.
func localCursorNames(dir string) (names, stray []string, err error) {
	ents, err := os.ReadDir(filepath.Join(dir, "cursors"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cursors: %w", err)
	}
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), cursorFileSuffix)
		switch {
		case !ok:
		case cursorNameRE.MatchString(n):
			names = append(names, n)
		default:
			stray = append(stray, e.Name())
		}
	}
	slices.Sort(names)
	slices.Sort(stray)
	return names, stray, nil
}

// cursorNameRE is core's rule for a named cursor's name (core/cursor.go).
var cursorNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// localCursorExists refuses, as not found, a cursor name the store has
// no position for (reset would otherwise create a new cursor).
func localCursorExists(dir, name string) error {
	names, _, err := localCursorNames(dir)
	if err != nil {
		return err
	}
	if slices.Contains(names, name) {
		return nil
	}
	known := "none"
	if len(names) > 0 {
		known = strings.Join(names, ", ")
	}
	return withExitCode(exitNotFound, fmt.Errorf("no named cursor %q in %s (named cursors: %s)", name, dir, known))
}

// completeCursorNames offers the local store's named cursors.
func completeCursorNames(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(_ *cobra.Command, args []string, typed string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		res, err := a.loadConfig()
		if err != nil || a.localOnly() != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, _, _ := localCursorNames(res.cfg.Dir)
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, typed) && len(out) < completionMax {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
