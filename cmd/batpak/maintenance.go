package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
)

// progressMin is the number of events from which export and import show a
// progress bar on stderr (--progress forces it, --no-progress hides it).
const progressMin = 20000

// newProgress returns a progress bar over total items, or nil when it
// should not be shown.
func newProgress(w io.Writer, total int64, what string, force, hide bool) *progressbar.ProgressBar {
	if hide || (!force && total < progressMin) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("events"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func newExportCmd(a *app) *cobra.Command {
	var (
		out                 string
		entityPrefix, scope string
		progress, quiet     bool
	)
	cmd := &cobra.Command{
		Use:     "export",
		Short:   "Write every visible event as NDJSON (one JSON object per line)",
		GroupID: "maintenance",
		Long: `Write the store's visible events, in global order, as newline-delimited
JSON: id, entity, scope, kind, clock, global_sequence, correlation_id,
causation_id, timestamp_us, flags, idempotency_key, redacted, payload.
"batpak import" reads it back into another store, keeping ids,
correlation and causation. Hidden (fenced) events are not exported;
redacted ones are, without payload. System records (the store's audit
records of erasures and bypasses) stay behind: "batpak query
--entity-prefix batpak:audit" reads them.`,
		Example: `  batpak export --out events.ndjson
  batpak export --scope shop | gzip > shop.ndjson.gz`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
				if entityPrefix != "" || scope != "" {
					return usagef("export --entity-prefix/--scope work on a local store only; a server exports the whole tenant")
				}
				return exportRemote(cmd, rc, out)
			}
			return a.withReadStore(func(s *core.Store, _ *resolved) error {
				w := cmd.OutOrStdout()
				if out != "" && out != "-" {
					f, err := os.Create(out)
					if err != nil {
						return err
					}
					defer f.Close()
					w = f
				}
				bar := newProgress(cmd.ErrOrStderr(), int64(s.Stats().Events), "export", progress, quiet)
				n, err := s.Export(w, r, func(n int) {
					if bar != nil && n%1024 == 0 {
						_ = bar.Set(n)
					}
				})
				if bar != nil {
					_ = bar.Finish()
				}
				if err != nil {
					return err
				}
				if out != "" && out != "-" {
					_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %s to %s\n", plural(n, "event", "events"), out)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "write to this file instead of stdout")
	f.StringVar(&entityPrefix, "entity-prefix", "", "only entities starting with this prefix")
	f.StringVar(&scope, "scope", "", "only this scope")
	f.BoolVar(&progress, "progress", false, "always show a progress bar")
	f.BoolVar(&quiet, "no-progress", false, "never show a progress bar")
	return cmd
}

// exportRemote is export against a server: the tenant's events, as the
// server's store writes them.
func exportRemote(cmd *cobra.Command, rc *remoteConf, out string) error {
	t, err := rc.tenantClient()
	if err != nil {
		return err
	}
	var w io.Writer = cmd.OutOrStdout()
	lines := &lineCounter{}
	if out != "" && out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
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

func newImportCmd(a *app) *cobra.Command {
	var progress, quiet bool
	cmd := &cobra.Command{
		Use:     "import FILE",
		Short:   "Write the events of an NDJSON export into the store",
		GroupID: "maintenance",
		Long: `Read an export ("batpak export"; "-" reads stdin) and write its events,
keeping their ids, correlation and causation ids, timestamps, flags and
idempotency keys; this store assigns clocks and global sequences. Events
go in atomic batches of up to 256 through the store's write policy
(action "import"). An event already in the store (same id and content) is
skipped, so an interrupted import can simply be run again.`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			var total int64
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return badInput("FILE", err)
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil {
					total = fi.Size() / 200 // a rough event count, for the bar
				}
				in = f
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			if rc != nil {
				t, err := rc.tenantClient()
				if err != nil {
					return err
				}
				st, err := t.Import(cmd.Context(), in)
				if err != nil {
					return remoteError(err)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "imported %s, skipped %d already present\n", plural(st.Imported, "event", "events"), st.Skipped)
				return err
			}
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			bar := newProgress(cmd.ErrOrStderr(), max(total, 1), "import", progress, quiet || total == 0)
			st, err := s.Import(ctx, in, func(lines int) {
				if bar != nil {
					if int64(lines) > bar.GetMax64() {
						bar.ChangeMax64(int64(lines) * 2)
					}
					_ = bar.Set(lines)
				}
			})
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "imported %s, skipped %d already present\n", plural(st.Imported, "event", "events"), st.Skipped)
			return err
		},
	}
	cmd.Flags().BoolVar(&progress, "progress", false, "always show a progress bar")
	cmd.Flags().BoolVar(&quiet, "no-progress", false, "never show a progress bar")
	return cmd
}

func newSnapshotCmd(a *app) *cobra.Command {
	return &cobra.Command{
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
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			rep, err := s.Snapshot(ctx, args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "snapshot of %s (%s in %s) written to %s in %v\n",
				plural(int(rep.GlobalSequence), "sequence", "sequences"), formatSize(rep.Bytes),
				plural(rep.Segments, "segment", "segments"), rep.Dest, rep.Elapsed.Round(time.Millisecond))
			return err
		},
	}
}

func newRedactCmd(a *app) *cobra.Command {
	var entity, reason string
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

With policy.dir set (--policy-dir), the redaction is judged by the policy
first (input.action "redact", or "erase" with --entity; the events and
entities it would erase are in input.maintenance), as the principal
--principal-id, --tenant, --roles; --reason says why. An admitted
redaction is recorded, before it is done, as an audit event on entity
batpak:audit:maintenance (who, why, what, how many).`,
		Example: `  batpak redact 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e --reason "GDPR request 17"
  batpak redact --entity customer:42`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if (len(args) == 1) == (entity != "") {
				return usagef("give an event ID or --entity, not both")
			}
			var id core.EventID
			if len(args) == 1 {
				if id, err = core.ParseEventID(args[0]); err != nil {
					return badInput("ID", err)
				}
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
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "redacted %s of %s\n", plural(n, "event", "events"), entity)
				return err
			}
			if err := s.Redact(ctx, id); err != nil {
				return maintenanceDenial("redact", err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "redacted %s\n", id)
			return err
		},
	}
	cmd.Flags().StringVar(&entity, "entity", "", "redact every event of this entity")
	cmd.Flags().StringVar(&reason, "reason", "", "why (the policy sees it; the audit record keeps it)")
	return cmd
}

func newCompactCmd(a *app) *cobra.Command {
	var (
		merge        bool
		maxAge       time.Duration
		maxPerEntity int
		tombstone    string
		reason       string
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
old segments or the new ones.

Rewritten segments are written with the configured compression: with
zstd or s2 they are packed, with none (the default) packed segments are
written back plain. Run compact with the compression the store uses.
Data reclaimed counts uncompressed segment bytes; on disk counts file
sizes, zero fill and compression included (the new files can take more
room: packed segments written back plain, say).

With policy.dir set (--policy-dir), the compaction is judged by the policy
(input.action "compact") once the new segments are written and before they
take effect: input.maintenance says what it would remove or tombstone and
of which entities. One that removes or tombstones events is recorded as an
audit event on entity batpak:audit:maintenance before it takes effect.`,
		Example: `  batpak compact --merge
  batpak compact --max-age 720h --max-per-entity 1000`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			cfg := core.CompactConfig{Merge: merge, MaxAge: maxAge, MaxPerEntity: maxPerEntity}
			if tombstone != "" {
				cfg.Tombstone = func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == tombstone }
			}
			if maxAge < 0 || maxPerEntity < 0 {
				return usagef("--max-age and --max-per-entity must not be negative")
			}
			s, _, ctx, err := a.openWrite(cmd.Context())
			if err != nil {
				return err
			}
			defer closeStore(s, &err)
			rep, err := s.Compact(core.WithReason(ctx, reason), cfg)
			if err != nil {
				return maintenanceDenial("compact", err)
			}
			disk := humanBytes(rep.DiskBytesReclaimed) + " on disk reclaimed"
			if rep.DiskBytesReclaimed < 0 {
				disk = humanBytes(-rep.DiskBytesReclaimed) + " more on disk"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "compacted %s: %s removed, %s tombstoned, %d fewer files, %s of data reclaimed, %s, in %v\n",
				plural(rep.SegmentsRewritten, "segment", "segments"), plural(rep.EventsRemoved, "event", "events"),
				plural(rep.EventsTombstoned, "event", "events"), rep.SegmentsRemoved, humanBytes(rep.BytesReclaimed),
				disk, rep.Elapsed.Round(time.Millisecond))
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&merge, "merge", false, "combine sealed segments into as few files as segment_max_bytes allows")
	f.DurationVar(&maxAge, "max-age", 0, "remove events older than this (e.g. 720h)")
	f.IntVar(&maxPerEntity, "max-per-entity", 0, "keep only each entity's newest N events")
	f.StringVar(&tombstone, "tombstone-entity", "", "erase the payloads of this entity's events (they stay, redacted)")
	f.StringVar(&reason, "reason", "", "why (the policy sees it; the audit record keeps it)")
	return cmd
}

func newSealCmd(a *app) *cobra.Command {
	return &cobra.Command{
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
			if err := s.SealSegments(ctx); err != nil {
				return err
			}
			elapsed := time.Since(began)
			return printSeal(cmd.OutOrStdout(), res.cfg.Compression, before, s.Diagnostics(), elapsed)
		},
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
