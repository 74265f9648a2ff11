package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/sdk/client"
)

// progressFlags is --progress / --no-progress. A bar is drawn on stderr
// only when stderr is a terminal (never into a file or a pipe), unless
// --progress forces it; --no-progress hides it.
type progressFlags struct{ force, hide bool }

func (p *progressFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&p.force, "progress", false, "show a progress bar even when stderr is not a terminal")
	cmd.Flags().BoolVar(&p.hide, "no-progress", false, "never show a progress bar")
}

// bar returns a progress bar over total units on w (total < 0: unknown,
// a spinner with the count so far), or nil when none is to be drawn.
// unit is "bytes" (shown as KiB, MiB ...), or a noun like "events".
func (p progressFlags) bar(w io.Writer, total int64, what, unit string) *progressbar.ProgressBar {
	if p.hide || (!p.force && !isTerminal(w)) || total == 0 {
		return nil
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetRenderBlankState(true),
	}
	if isTerminal(w) {
		opts = append(opts, progressbar.OptionClearOnFinish())
	} else {
		// Forced into a file or pipe: the final state stays, on its line.
		opts = append(opts, progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
	}
	if unit == "bytes" {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString(unit))
	}
	if total < 0 {
		opts = append(opts, progressbar.OptionSpinnerType(14))
	}
	return progressbar.NewOptions64(total, opts...)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// finishBar ends a bar (nil: none).
func finishBar(b *progressbar.ProgressBar) {
	if b != nil {
		_ = b.Finish()
	}
}

// endBar ends a bar (nil: none): full on success; on a failure as far
// as it came, so that it does not claim what was not done, its line ended
// on w before the error is printed.
func endBar(w io.Writer, b *progressbar.ProgressBar, failed bool) {
	if b == nil {
		return
	}
	if !failed {
		_ = b.Finish()
		return
	}
	_ = b.Exit() // a forced bar (not a terminal) ends its line itself
	if isTerminal(w) {
		fmt.Fprintln(w)
	}
}

// countingReader counts the bytes read through it, for import's bar.
type countingReader struct {
	r   io.Reader
	n   atomic.Int64
	bar *progressbar.ProgressBar
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if c.bar != nil {
		_ = c.bar.Add(n)
	}
	return n, err
}

func newExportCmd(a *app) *cobra.Command {
	var (
		out, output         string
		entityPrefix, scope string
		salvage             bool
		prog                progressFlags
	)
	cmd := &cobra.Command{
		Use:     "export [--out FILE] [--salvage]",
		Short:   "Write every visible event as NDJSON (one JSON object per line)",
		GroupID: "maintenance",
		Long: `Write the store's visible events, in global order, as newline-delimited
JSON: id, entity, scope, kind, clock, global_sequence, correlation_id,
causation_id, timestamp_us, flags, idempotency_key, redacted, payload.
"batpak import" reads it back into another store, keeping ids,
correlation and causation. Hidden (fenced) events are not exported;
redacted ones are, without payload. System records (the store's audit
records of erasures and bypasses) stay behind: "batpak query
--entity-prefix batpak:audit" reads them. Against a server (--server)
it takes the tenant's admin key.

--out FILE writes to FILE instead of stdout ("-o FILE", its older
spelling, still works and says so; -o now names the output format, and
export's only format is json). FILE is replaced only by a complete
export (written beside it, then renamed over it): a failed export leaves
an existing FILE as it was, and a symlink named FILE is replaced, not
written through. A device or a named pipe (/dev/null, /dev/stdout, a
pipe to another program), or a symlink to one, is written into as it
is.

--salvage exports everything readable from a damaged store that
"batpak verify" fails and the other commands refuse to open: it reads the
segment files directly (no store is opened, nothing changes), skips
damaged frames to the next readable one, and reports on stderr every
skipped range (file, offset, length, why), the sequences it found no
event for, and the events it could not confirm, which it does not
export: batch or fence items whose commit record was lost, and items of
a batch that damage cut read before the damage (unless a later item of
the batch chains on them). It never exports an event it cannot show
was acknowledged, nor one sequence twice. Import the result into a new
store to go on. It exits 0 when nothing was skipped, missing or copied,
and 7 (corrupt) when something was, after writing all it could.`,
		Example: `  batpak export --out events.ndjson
  batpak export --scope shop | gzip > shop.ndjson.gz
  batpak export --salvage --out rescued.ndjson && batpak --data-dir ./new import rescued.ndjson`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("output") {
				switch strings.ToLower(output) {
				case formatJSON:
				case formatYAML, formatTable:
					return usagef("export writes NDJSON only (-o json); -o %s is not available", output)
				default:
					if cmd.Flags().Changed("out") {
						return usagef("-o %q is not an output format, and --out is given too", output)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "batpak: warning: export -o FILE is deprecated: use --out %s (-o names the output format)\n", output)
					out = output
				}
			}
			r := core.All()
			if entityPrefix != "" {
				r = r.WithEntity(entityPrefix)
			}
			if scope != "" {
				r = r.WithScope(scope)
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			if rc != nil {
				if entityPrefix != "" || scope != "" || salvage {
					return usagef("export --entity-prefix/--scope/--salvage work on a local store only; a server exports the whole tenant")
				}
				return exportRemote(cmd, rc, out)
			}
			if salvage {
				if entityPrefix != "" || scope != "" {
					return usagef("export --salvage exports every readable event; --entity-prefix and --scope do not apply")
				}
				return a.salvageExport(cmd, out)
			}
			return a.withReadStore(func(s *core.Store, _ *resolved) (err error) {
				w := dataWriter(cmd.OutOrStdout())
				if out != "" && out != "-" {
					f, ferr := createOut(out)
					if ferr != nil {
						return ferr
					}
					defer f.finish(&err) // the closure's result: kept only on success
					w = f
				}
				bar := prog.bar(cmd.ErrOrStderr(), int64(s.Stats().Events), "export", "events")
				n, err := s.Export(w, r, func(n int) {
					if bar != nil && n%1024 == 0 {
						_ = bar.Set(n)
					}
				})
				finishBar(bar)
				if err != nil {
					return err
				}
				if out != "" && out != "-" {
					left := ""
					if kept := int(s.Stats().Events) - n; entityPrefix == "" && scope == "" && kept > 0 {
						verb := "stay"
						if kept == 1 {
							verb = "stays"
						}
						left = fmt.Sprintf("; %s of the store's own (its audit, under batpak:) %s behind", plural(kept, "record", "records"), verb)
					}
					_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %s to %s%s\n", plural(n, "event", "events"), out, left)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write to this file instead of stdout")
	f.StringVarP(&output, "output", "o", formatJSON, "output format: json (NDJSON), the only one; a file name here is the deprecated spelling of --out")
	f.StringVar(&entityPrefix, "entity-prefix", "", "only entities starting with this prefix")
	f.StringVar(&scope, "scope", "", "only this scope")
	f.BoolVar(&salvage, "salvage", false, "export everything readable from a damaged store, skipping unreadable frames")
	prog.register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("output", completeWords(formatJSON))
	completeRegionFlags(a, cmd)
	return cmd
}

// salvageExport is export --salvage: core.SalvageExport on the configured
// directory, its report on stderr.
func (a *app) salvageExport(cmd *cobra.Command, out string) (err error) {
	res, err := a.loadConfig()
	if err != nil {
		return err
	}
	if err := a.localOnly(); err != nil {
		return err
	}
	if err := checkStoreDir(res.cfg.Dir); err != nil {
		return err
	}
	w := dataWriter(cmd.OutOrStdout())
	if out != "" && out != "-" {
		f, ferr := createOut(out)
		if ferr != nil {
			return ferr
		}
		defer f.finish(&err) // the function's result: kept only on success
		w = f
	}
	rep, err := core.SalvageExport(res.cfg.Dir, w)
	if err != nil {
		return err
	}
	e := cmd.ErrOrStderr()
	for _, sk := range rep.Skipped {
		fmt.Fprintf(e, "batpak: skipped %s at offset %d (%s): %s\n", sk.File, sk.Offset, humanBytes(sk.Length), printable.String(sk.Reason))
	}
	where := "stdout"
	if out != "" && out != "-" {
		where = out
	}
	summary := fmt.Sprintf("salvaged %s from %s to %s; %s skipped",
		plural(rep.Events, "event", "events"), plural(rep.Segments, "segment", "segments"), where, plural(len(rep.Skipped), "damaged range", "damaged ranges"))
	for _, g := range rep.Missing {
		fmt.Fprintf(e, "batpak: missing %s: %s\n", plural(int(g.To-g.From), "event", "events"), printable.String(g.Reason))
	}
	if rep.PartialBatches > 0 {
		them := "them"
		if rep.PartialBatches == 1 {
			them = "it"
		}
		summary += fmt.Sprintf("; %s committed but cut by damage (%s of %s not exported, counted as missing: unreadable, or read before the damage and not confirmed by the hash chain)",
			plural(rep.PartialBatches, "batch", "batches"), plural(rep.BatchItemsLost, "event", "events"), them)
	}
	if rep.Unconfirmed > 0 {
		summary += fmt.Sprintf("; %s left out as unconfirmed (of batches or fences that never committed or whose commit was lost, or read before damage in a batch and not confirmed by the hash chain)",
			plural(rep.Unconfirmed, "event", "events"))
	}
	if rep.Duplicates > 0 {
		summary += fmt.Sprintf("; %s not exported again (their sequences were read before: a segment copied)", plural(rep.Duplicates, "event", "events"))
	}
	if len(rep.Missing) > 0 {
		var n uint64
		for _, g := range rep.Missing {
			n += g.To - g.From
		}
		summary += fmt.Sprintf("; %s missing", plural(int(n), "acknowledged event", "acknowledged events"))
	}
	fmt.Fprintf(e, "batpak: %s\n", summary)
	if len(rep.Skipped) > 0 || len(rep.Missing) > 0 || rep.Duplicates > 0 {
		return &exitCodeError{code: exitCorrupt}
	}
	return nil
}

// exportRemote is export against a server: the tenant's events, as the
// server's store writes them.
func exportRemote(cmd *cobra.Command, rc *remoteConf, out string) (err error) {
	t, err := rc.tenantClient()
	if err != nil {
		return err
	}
	w := dataWriter(cmd.OutOrStdout())
	lines := &lineCounter{}
	if out != "" && out != "-" {
		f, ferr := createOut(out)
		if ferr != nil {
			return ferr
		}
		defer f.finish(&err) // the function's result: kept only on success
		w = io.MultiWriter(f, lines)
	}
	if _, err := t.Export(cmd.Context(), w); err != nil {
		return remoteError(err)
	}
	if out != "" && out != "-" {
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %s to %s\n", plural(lines.n, "event", "events"), out)
	}
	return err
}

// lineCounter counts the lines written through it.
type lineCounter struct{ n int }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += bytes.Count(p, []byte("\n"))
	return len(p), nil
}

// importJSON is what import prints with -o json|yaml.
type importJSON struct {
	Imported int `json:"imported"` // events written
	Skipped  int `json:"skipped"`  // already present with the same id and content
}

func newImportCmd(a *app) *cobra.Command {
	var (
		prog progressFlags
		out  outputFlags
	)
	cmd := &cobra.Command{
		Use:     "import FILE",
		Short:   "Write the events of an NDJSON export into the store",
		GroupID: "maintenance",
		Long: `Read an export ("batpak export"; "-" reads stdin) and write its events,
keeping their ids, correlation and causation ids, timestamps, flags and
idempotency keys; this store assigns clocks and global sequences. Events
go in atomic batches of up to 256 through the store's write policy
(action "import"). An event already in the store (same id and content) is
skipped, so an interrupted import can simply be run again. On a terminal,
a progress bar counts the bytes read against the file's size. Against a
server (--server) it takes the tenant's admin key, and the file goes in
requests of at most 8 MiB cut at line ends (smaller when the server's
max_body_bytes refuses one: a line alone is sent whole), each acknowledged
before the next is read, so a file of any size imports; the bar counts the
bytes the server acknowledged. A failure names the line it failed at
(against a server, the lines of the request it refused) and how many
events were imported before it: run the import again to resume. A local
import that fails before writing any event into a --data-dir it created
removes that directory again (one that existed before always stays).`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			var in io.Reader = cmd.InOrStdin()
			total := int64(-1) // unknown (a pipe)
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return badInput("FILE", err)
				}
				defer f.Close()
				in = f
			}
			if f, ok := in.(*os.File); ok {
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					total = fi.Size()
				}
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			bar := prog.bar(cmd.ErrOrStderr(), total, "import", "bytes")
			var st core.ImportStats
			if rc != nil {
				t, err := rc.tenantClient()
				if err != nil {
					return err
				}
				// The file goes in requests of at most 8 MiB, each cut at a
				// line's end; the bar counts the bytes the server has
				// acknowledged, not those read ahead of it.
				cst, err := t.ImportWithOptions(cmd.Context(), in, client.ImportOptions{Progress: func(acked int64, _ client.ImportStats) {
					if bar != nil {
						_ = bar.Set64(acked)
					}
				}})
				endBar(cmd.ErrOrStderr(), bar, err != nil)
				if err != nil {
					return importError(err)
				}
				st = core.ImportStats{Imported: cst.Imported, Skipped: cst.Skipped}
			} else {
				st, err = a.importLocal(cmd, &countingReader{r: in, bar: bar})
				endBar(cmd.ErrOrStderr(), bar, err != nil)
				if err != nil {
					return err
				}
			}
			return emit(cmd.OutOrStdout(), format, importJSON{st.Imported, st.Skipped}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "imported %s, skipped %d already present\n", plural(st.Imported, "event", "events"), st.Skipped)
				return err
			})
		},
	}
	prog.register(cmd)
	out.register(cmd)
	return cmd
}

// importLocal is import into the local store. A failure names how many
// events were imported before it and that running the import again
// resumes. A failure that wrote nothing into a store directory this
// command created (it did not exist before) removes that store and
// directory again (core.RemoveEmpty: checked and removed under the
// store's lock, so a store another process opened there meanwhile is never
// touched), and the parents it created with it: a mistyped file leaves no
// empty store behind. When that cannot be done safely the empty store is
// left and the message says so. A directory that existed before is never
// removed.
func (a *app) importLocal(cmd *cobra.Command, in io.Reader) (st core.ImportStats, err error) {
	res, err := a.loadConfig()
	if err != nil {
		return st, err
	}
	created := missingAncestor(res.cfg.Dir)
	s, _, ctx, err := a.openWrite(cmd.Context())
	if err != nil {
		return st, err
	}
	st, err = s.Import(ctx, in, nil)
	if err == nil {
		closeStore(s, &err)
		return st, err
	}
	empty := st.Imported == 0 && s.Stats().GlobalSequence == 0
	_ = s.Close() // the import's error is the one to report
	if created != "" && empty {
		if rerr := removeNewStore(res.cfg.Dir, created); rerr != nil {
			return st, &detailError{msg: fmt.Sprintf("%s; nothing was imported, and the store directory %s this import created is left: %s", err.Error(), res.cfg.Dir, unprefixed(rerr).Error()), err: err}
		}
		return st, &detailError{msg: fmt.Sprintf("%s; nothing was imported, and the store directory %s this import created is removed again", err.Error(), res.cfg.Dir), err: err}
	}
	return st, &detailError{msg: err.Error() + "; " + importResume(st), err: err}
}

// importResume says how far a failed import came and how to go on (the
// words of client.ImportError.Resume, for a local import).
func importResume(st core.ImportStats) string {
	return fmt.Sprintf("%d events were imported (%d already present skipped): run the import again to resume (events already there are skipped)", st.Imported, st.Skipped)
}

// missingAncestor returns the topmost of dir and its parents that does not
// exist ("" when dir exists, or cannot be looked at).
func missingAncestor(dir string) string {
	missing := ""
	for d := filepath.Clean(dir); ; {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			return missing
		}
		missing = d
		parent := filepath.Dir(d)
		if parent == d {
			return missing
		}
		d = parent
	}
}

// removeNewStore removes the empty store in dir that a failed command
// created, and dir (core.RemoveEmpty, which refuses a store holding
// anything and one another process has open), then dir's parents up to top
// (the topmost directory the command created), each only while it is
// empty. The error is RemoveEmpty's: then nothing is removed but, at
// most, the store's files.
func removeNewStore(dir, top string) error {
	if err := core.RemoveEmpty(dir); err != nil {
		return err
	}
	top = filepath.Clean(top)
	for d := filepath.Clean(dir); d != top && filepath.Dir(d) != d; {
		d = filepath.Dir(d)
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

// snapshotJSON is what snapshot prints with -o json|yaml.
type snapshotJSON struct {
	Dest           string `json:"dest"`
	Segments       int    `json:"segments"`
	Bytes          int64  `json:"bytes"`
	GlobalSequence uint64 `json:"global_sequence"` // the copy holds the events below it
	ElapsedMs      int64  `json:"elapsed_ms"`
}

func newSnapshotCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "snapshot DEST",
		Short:   "Copy the store, consistently, into a new directory",
		GroupID: "maintenance",
		Long: `Copy the store into DEST (which must not exist, or be an empty directory;
a symbolic link is refused) while it stays writable: the copy holds
exactly the events published when the snapshot point was taken, with
hidden ranges and durable cursor positions. Open the copy like any store
(--data-dir DEST).`,
		Args: exactArgs("DEST"),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			f, err := out.format()
			if err != nil {
				return err
			}
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			rep, err := s.Snapshot(ctx, args[0])
			if err != nil {
				return err
			}
			v := snapshotJSON{rep.Dest, rep.Segments, rep.Bytes, rep.GlobalSequence, rep.Elapsed.Milliseconds()}
			return emit(cmd.OutOrStdout(), f, v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "snapshot of %s (%s in %s) written to %s in %v\n",
					plural(int(rep.GlobalSequence), "sequence", "sequences"), formatSize(rep.Bytes),
					plural(rep.Segments, "segment", "segments"), rep.Dest, rep.Elapsed.Round(time.Millisecond))
				return err
			})
		},
	}
	out.register(cmd)
	return cmd
}

func newRedactCmd(a *app) *cobra.Command {
	var (
		entity, reason string
		dryRun         bool
		out            outputFlags
	)
	cmd := &cobra.Command{
		Use:     "redact [ID]",
		Short:   "Erase an event's payload (or every payload of an entity)",
		GroupID: "maintenance",
		Long: `Overwrite the payload of event ID on disk with zeros, in place, and mark
the event redacted; with --entity, every event of that entity. The
header stays, so the hash chain still verifies ("batpak verify"), and
reads show the event as redacted with no payload. Projection caches never
serve state computed before the redaction. Snapshots and exports taken
earlier still hold the payload.

A redaction that erases anything is always recorded (with policy.dir set
or not), before it is done, as an audit event on entity
batpak:audit:maintenance (who, why, what, how many); --reason says why.

With policy.dir set (--policy-dir), the redaction is judged by the policy
first (input.action "redact", or "erase" with --entity; the events and
entities it would erase are in input.maintenance), as the principal
--principal-id, --tenant, --roles.

--dry-run says what would be erased (the events, their entities, the
payload bytes) from a read-only open and changes nothing; the policy is
not consulted.

--entity naming an entity with no events fails with exit 5 (not found),
so a mistyped name in an erasure request does not pass for done; one
whose events are all redacted already redacts nothing and says so (exit
0).`,
		Example: `  batpak redact 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e --reason "GDPR request 17"
  batpak redact --entity customer:42 --dry-run`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeEventIDs(a),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			switch {
			case len(args) == 0 && entity == "":
				return usagef("redact needs an event ID, or --entity ENTITY for every event of an entity")
			case len(args) == 1 && entity != "":
				return usagef("give an event ID or --entity, not both")
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			var id core.EventID
			if len(args) == 1 {
				if id, err = core.ParseEventID(args[0]); err != nil {
					return badInput("ID", err)
				}
			}
			if dryRun {
				return a.redactDryRun(cmd.OutOrStdout(), f, id, entity)
			}
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			ctx = core.WithReason(ctx, reason)
			if entity != "" {
				n, err := s.EraseEntity(ctx, entity)
				if err != nil {
					return maintenanceDenial("redact", err)
				}
				already := 0
				if n == 0 {
					evs, err := s.Stream(entity)
					if err != nil {
						return err
					}
					if len(evs) == 0 {
						return noEntityEvents(entity, s.Dir())
					}
					already = len(evs)
				}
				return emit(cmd.OutOrStdout(), f, redactJSON{Entity: entity, Redacted: n, AlreadyRedacted: already}, func(w io.Writer) error {
					if n == 0 {
						_, err := fmt.Fprintf(w, "redacted 0 events of %s: its %s already redacted\n", oneLine(entity), plural(already, "event was", "events were"))
						return err
					}
					_, err := fmt.Fprintf(w, "redacted %s of %s; recorded as an audit event on %s\n", plural(n, "event", "events"), oneLine(entity), core.MaintenanceAuditEntity)
					return err
				})
			}
			if err := s.Redact(ctx, id); err != nil {
				return maintenanceDenial("redact", err)
			}
			return emit(cmd.OutOrStdout(), f, redactJSON{ID: id.String(), Redacted: 1}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "redacted %s\n", id)
				return err
			})
		},
	}
	out.register(cmd)
	cmd.Flags().StringVar(&entity, "entity", "", "redact every event of this entity")
	cmd.Flags().StringVar(&reason, "reason", "", "why (the policy sees it; the audit record keeps it)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "say what would be erased; change nothing")
	completeRegionFlags(a, cmd)
	return cmd
}

// noEntityEvents is redact --entity's refusal of an entity with no
// events (exit 5): an erasure request naming it was mistyped, or is about
// another store.
func noEntityEvents(entity, dir string) error {
	return withExitCode(exitNotFound, fmt.Errorf("no events of entity %q in %s: nothing redacted (batpak query --entity-prefix lists entities by prefix)", entity, dir))
}

// redactJSON is what redact prints with -o json|yaml.
type redactJSON struct {
	ID              string `json:"id,omitempty"`     // the event redacted (or to be)
	Entity          string `json:"entity,omitempty"` // --entity: every event of it
	Redacted        int    `json:"redacted"`         // events erased (dry run: that would be)
	DryRun          bool   `json:"dry_run,omitempty"`
	PayloadBytes    int    `json:"payload_bytes,omitempty"`    // dry run: the payload bytes to erase
	AlreadyRedacted int    `json:"already_redacted,omitempty"` // events with no payload left (--entity: when none was redacted)
}

// redactDryRun reports what redact would erase, from a read-only open.
func (a *app) redactDryRun(w io.Writer, f string, id core.EventID, entity string) error {
	return a.withReadStore(func(s *core.Store, res *resolved) error {
		var evs []core.StoredEvent
		if entity != "" {
			var err error
			if evs, err = s.Stream(entity); err != nil {
				return err
			}
		} else {
			ev, err := s.Get(id)
			if errors.Is(err, core.ErrNotFound) {
				return &detailError{msg: fmt.Sprintf("no event %s in %s", id, res.cfg.Dir), err: err}
			}
			if err != nil {
				return err
			}
			evs = []core.StoredEvent{ev}
		}
		if entity != "" && len(evs) == 0 {
			return noEntityEvents(entity, res.cfg.Dir)
		}
		n, bytes, already := 0, 0, 0
		for _, ev := range evs {
			if ev.Redacted {
				already++
				continue
			}
			n++
			bytes += len(ev.Payload)
		}
		v := redactJSON{Entity: entity, Redacted: n, DryRun: true, PayloadBytes: bytes, AlreadyRedacted: already}
		what := "entity " + oneLine(entity)
		if entity == "" {
			what, v.ID = id.String(), id.String()
		}
		return emit(w, f, v, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "dry run: would redact %s (%s of payload) of %s; %d already redacted; nothing changed\n",
				plural(n, "event", "events"), humanBytes(int64(bytes)), what, already)
			return err
		})
	})
}

func newCompactCmd(a *app) *cobra.Command {
	var (
		merge        bool
		maxAge       time.Duration
		maxPerEntity int
		minSegments  int
		tombstone    string
		reason       string
		dryRun       bool
		prog         progressFlags
		out          outputFlags
	)
	cmd := &cobra.Command{
		Use:     "compact",
		Short:   "Rewrite sealed segments: retention, tombstones, merging",
		GroupID: "maintenance",
		Long: `Rewrite the sealed segments (never the one being written) to drop what
is no longer wanted: events older than --max-age, events beyond each
entity's newest --max-per-entity, the payloads of --tombstone-entity's
events; --merge combines small segments. Removed events leave a header
stub so the hash chain still verifies; global sequences, ids and the
payloads of kept events are unchanged. A crash at any point leaves the
old segments or the new ones. --tombstone-entity leaves the events in the
segment being written as they are: to erase all of an entity's payloads,
use batpak redact --entity E.

Rewritten segments are written with the configured compression: with
zstd or s2 they are packed, with none (the default) packed segments are
written back plain. Run compact with the compression the store uses.
Data reclaimed counts uncompressed segment bytes; on disk counts file
sizes, zero fill and compression included (the new files can take more
room: packed segments written back plain, say).

A compaction that removes or tombstones events is always recorded (with
policy.dir set or not) as an audit event on entity
batpak:audit:maintenance before it takes effect: what it removed or
tombstoned, of which entities, --reason; the summary says so, and
"batpak query --entity-prefix batpak:audit" reads the records.

With policy.dir set (--policy-dir), the compaction is judged by the policy
(input.action "compact") once the new segments are written and before they
take effect: input.maintenance says what it would remove or tombstone and
of which entities.

--dry-run compacts a private copy of the store (in the temporary
directory; it needs room for one) and reports what compacting the store
would do, policy decision included; the store itself is only read. On a
terminal, a bar counts the sealed segments read. --min-segments N does
nothing (and says so) while fewer than N segments are sealed.`,
		Example: `  batpak compact --merge
  batpak compact --max-age 720h --max-per-entity 1000 --dry-run`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			cfg := core.CompactConfig{Merge: merge, MaxAge: maxAge, MaxPerEntity: maxPerEntity, MinSegments: minSegments}
			if tombstone != "" {
				cfg.Tombstone = func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == tombstone }
			}
			if maxAge < 0 || maxPerEntity < 0 || minSegments < 0 {
				return usagef("--max-age, --max-per-entity and --min-segments must not be negative")
			}
			format, err := out.format()
			if err != nil {
				return err
			}
			var s *core.Store
			var ctx context.Context
			prefix := "compacted"
			if dryRun {
				res, err := a.loadConfig()
				if err != nil {
					return err
				}
				if err := checkStoreDir(res.cfg.Dir); err != nil {
					return err
				}
				tmp, err := os.MkdirTemp("", "batpak-compact-dry-run-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				copyDir := filepath.Join(tmp, "store")
				if err := core.CopyFiles(res.cfg.Dir, copyDir); err != nil {
					return fmt.Errorf("dry run: copy the store: %w", err)
				}
				if s, ctx, err = a.openWriteAt(cmd.Context(), copyDir); err != nil {
					return err
				}
				prefix = "dry run (on a copy; the store is unchanged): would compact"
			} else {
				if s, _, ctx, err = a.openWrite(cmd.Context()); err != nil {
					return err
				}
			}
			defer closeStore(s, &err)
			var bar *progressbar.ProgressBar
			cfg.Progress = func(done, total int) {
				if bar == nil {
					bar = prog.bar(cmd.ErrOrStderr(), int64(total), "compact", "segments")
				}
				if bar != nil {
					_ = bar.Set(done)
				}
			}
			rep, err := s.Compact(core.WithReason(ctx, reason), cfg)
			finishBar(bar)

			if err != nil {
				return maintenanceDenial("compact", err)
			}
			if format != formatTable {
				return emit(cmd.OutOrStdout(), format, compactReportJSON{
					DryRun: dryRun, SegmentsRewritten: rep.SegmentsRewritten, SegmentsRemoved: rep.SegmentsRemoved,
					EventsRemoved: rep.EventsRemoved, EventsTombstoned: rep.EventsTombstoned, BytesReclaimed: rep.BytesReclaimed,
					DiskBytesReclaimed: rep.DiskBytesReclaimed, ElapsedMillis: float64(rep.Elapsed.Microseconds()) / 1000,
					Skipped: rep.Skipped, AuditEntity: compactAudit(rep),
				}, nil)
			}
			if rep.Skipped {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s nothing: fewer segments are sealed than --min-segments %d\n", prefix, minSegments)
				return err
			}
			disk := humanBytes(rep.DiskBytesReclaimed) + " on disk reclaimed"
			if rep.DiskBytesReclaimed < 0 {
				disk = humanBytes(-rep.DiskBytesReclaimed) + " more on disk"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s removed, %s tombstoned, %d fewer files, %s of data reclaimed, %s, in %v\n",
				prefix, plural(rep.SegmentsRewritten, "segment", "segments"), plural(rep.EventsRemoved, "event", "events"),
				plural(rep.EventsTombstoned, "event", "events"), rep.SegmentsRemoved, humanBytes(rep.BytesReclaimed),
				disk, rep.Elapsed.Round(time.Millisecond))
			if err == nil && compactAudit(rep) != "" {
				verb := "recorded"
				if dryRun {
					verb = "would be recorded"
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s as an audit event on %s (batpak query --entity-prefix batpak:audit)\n", verb, core.MaintenanceAuditEntity)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&merge, "merge", false, "combine sealed segments into as few files as segment_max_bytes allows")
	f.DurationVar(&maxAge, "max-age", 0, "remove events older than this (e.g. 720h)")
	f.IntVar(&maxPerEntity, "max-per-entity", 0, "keep only each entity's newest N events")
	f.IntVar(&minSegments, "min-segments", 0, "do nothing unless at least N segments are sealed (0: no minimum)")
	f.StringVar(&tombstone, "tombstone-entity", "", "erase the payloads of this entity's events in sealed segments (they stay, redacted; redact --entity erases them all)")
	f.StringVar(&reason, "reason", "", "why (the policy sees it; the audit record keeps it)")
	f.BoolVar(&dryRun, "dry-run", false, "compact a copy and report what would be done; the store is only read")
	prog.register(cmd)
	out.register(cmd)
	completeRegionFlags(a, cmd)
	return cmd
}

// compactReportJSON is compact -o json's output (core.CompactReport; with
// dry_run, what compacting the store would do).
type compactReportJSON struct {
	DryRun             bool    `json:"dry_run"`
	SegmentsRewritten  int     `json:"segments_rewritten"`
	SegmentsRemoved    int     `json:"segments_removed"`
	EventsRemoved      int     `json:"events_removed"`
	EventsTombstoned   int     `json:"events_tombstoned"`
	BytesReclaimed     int64   `json:"bytes_reclaimed"`
	DiskBytesReclaimed int64   `json:"disk_bytes_reclaimed"`
	ElapsedMillis      float64 `json:"elapsed_ms"`
	Skipped            bool    `json:"skipped,omitempty"` // fewer sealed segments than --min-segments: nothing done
	// AuditEntity is where the compaction was recorded as an audit event
	// (core.MaintenanceAuditEntity; a dry run's record is on the copy):
	// set when it removed or tombstoned events.
	AuditEntity string `json:"audit_entity,omitempty"`
}

// compactAudit is the entity a compaction's audit event was written on:
// core records every compaction that removes or tombstones events, with
// an admission gate or without (Store.Compact). "" when it wrote none.
func compactAudit(rep core.CompactReport) string {
	if rep.Skipped || rep.EventsRemoved+rep.EventsTombstoned == 0 {
		return ""
	}
	return core.MaintenanceAuditEntity
}

// sealJSON is seal -o json's output: what the sealed segments looked like
// before and after.
type sealJSON struct {
	Compression   string       `json:"compression"`
	ElapsedMillis float64      `json:"elapsed_ms"`
	Before        sealSideJSON `json:"before"`
	After         sealSideJSON `json:"after"`
}

type sealSideJSON struct {
	Segments       int   `json:"segments"`
	PackedSegments int   `json:"packed_segments"`
	Footers        int   `json:"footers"`
	BytesOnDisk    int64 `json:"bytes_on_disk"`
}

func sealSide(d core.Diagnostics) sealSideJSON {
	return sealSideJSON{Segments: d.Segments, PackedSegments: d.PackedSegments, Footers: d.Footers, BytesOnDisk: d.BytesOnDisk}
}

func newSealCmd(a *app) *cobra.Command {
	var (
		prog progressFlags
		out  outputFlags
	)
	cmd := &cobra.Command{
		Use:     "seal",
		Short:   "Pack (compress) the sealed segments and write their footers now",
		GroupID: "maintenance",
		Long: `Do now, and wait for, what a store opened for writing does in the
background after each rotation: pack every sealed segment (never the one
being written) with the configured compression, one at a time, in blocks
of about 64 KiB, and write an index footer beside every sealed segment
that lacks a current one (the next open replays footers instead of reading
frames). A write command stops that background work when it closes the
store, so segments sealed by short commands stay plain until something
seals them. Packing rewrites a segment as a new file generation, crash
safely: events, ids, sequences and the hash chain are unchanged.

With compression none, only footers are written; segments packed earlier
stay packed. Prints the packed segments, footers and bytes on disk before
and after.`,
		Example: `  batpak seal --compression zstd
  BATPAK_COMPRESSION=s2 batpak seal`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			// The figures before come from a read-only open: a store opened
			// for writing starts sealing in the background at once, so its
			// own figures would already include part of the work.
			var before core.Diagnostics
			if err := a.withReadStore(func(s *core.Store, _ *resolved) error {
				before = s.Diagnostics()
				return nil
			}); err != nil {
				return err
			}
			s, res, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			began := time.Now()
			stop := sealProgress(prog.bar(cmd.ErrOrStderr(), sealWork(before, res.cfg.Compression), "seal", "segments"), s, before)
			err = s.SealSegments(ctx)
			stop()
			if err != nil {
				return err
			}
			elapsed := time.Since(began)
			after := s.Diagnostics()
			doc := sealJSON{Compression: res.cfg.Compression.String(), ElapsedMillis: float64(elapsed.Microseconds()) / 1000,
				Before: sealSide(before), After: sealSide(after)}
			return emit(cmd.OutOrStdout(), format, doc, func(w io.Writer) error {
				return printSeal(w, res.cfg.Compression, before, after, elapsed)
			})
		},
	}
	prog.register(cmd)
	out.register(cmd)
	return cmd
}

// sealWork is the work seal has before it: the sealed segments (all but
// the one being written) that lack a footer, plus, with compression on,
// those not packed yet.
func sealWork(d core.Diagnostics, c core.Compression) int64 {
	sealed := max(d.Segments-1, 0)
	n := max(sealed-d.Footers, 0)
	if c != core.CompressionNone {
		n += max(sealed-d.PackedSegments, 0)
	}
	return int64(n)
}

// sealProgress moves bar (nil: none) as s's footers and packed segments
// grow past before, looking every 100ms, until the returned stop.
func sealProgress(bar *progressbar.ProgressBar, s *core.Store, before core.Diagnostics) (stop func()) {
	if bar == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				d := s.Diagnostics()
				_ = bar.Set(max(d.Footers-before.Footers, 0) + max(d.PackedSegments-before.PackedSegments, 0))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		finishBar(bar)
	}
}

// printSeal reports what seal changed.
func printSeal(w io.Writer, c core.Compression, before, after core.Diagnostics, elapsed time.Duration) error {
	fmt.Fprintf(w, "sealed in %v (compression %s)\n", roundElapsed(elapsed), c)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	packed := fmt.Sprintf("%d → %s", before.PackedSegments, plural(after.PackedSegments, "segment", "segments"))
	if after.PackedSegments > 0 {
		packed += fmt.Sprintf(", %s on disk for %s raw (%.1fx)", humanBytes(after.PackedBytes), humanBytes(after.PackedRawBytes), packedRatio(after))
	}
	if c == core.CompressionNone {
		packed += "; compression none packs nothing (--compression zstd or s2 does)"
	}
	fmt.Fprintf(tw, "packed\t%s\n", packed)
	fmt.Fprintf(tw, "footers\t%d → %d of %s\n", before.Footers, after.Footers, plural(after.Segments, "segment", "segments"))
	fmt.Fprintf(tw, "on disk\t%s → %s%s\n", humanBytes(before.BytesOnDisk), humanBytes(after.BytesOnDisk), diskChange(before.BytesOnDisk, after.BytesOnDisk))
	return tw.Flush()
}

// diskChange renders a change in bytes on disk: " (1.2 MiB reclaimed)",
// " (3.0 KiB more)" or "".
func diskChange(before, after int64) string {
	switch {
	case after < before:
		return fmt.Sprintf(" (%s reclaimed)", humanBytes(before-after))
	case after > before:
		return fmt.Sprintf(" (%s more)", humanBytes(after-before))
	}
	return ""
}

// roundElapsed rounds a duration for display: to the millisecond, or the
// microsecond below 10ms.
func roundElapsed(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}
