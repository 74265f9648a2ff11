package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/sdk/client"
)

// workerLag is a worker's lag as status prints it. The server's lag is
// the log's events past the worker's position, in its region or not: the
// region's events not yet handled exactly when the region is every event,
// an upper bound otherwise (a caught-up worker whose region leaves out
// later events has a lag that does not reach 0), printed "≤ N" then.
// Counting the region's events would walk the log for a region no index
// narrows (a category alone), so status does not.
func workerLag(w client.Worker) string {
	r := w.Region
	if w.Lag == 0 || r.Entity == "" && r.Scope == "" && r.Kind == "" && r.Category == nil {
		return strconv.FormatUint(w.Lag, 10)
	}
	return "≤ " + strconv.FormatUint(w.Lag, 10)
}

// workerLine is one row of worker status.
func workerLine(w client.Worker) string {
	fault := "-"
	if w.LastFault != nil {
		fault = oneLine(w.LastFault.Kind + ": " + w.LastFault.Message)
		if len(fault) > 60 {
			fault = fault[:57] + "..."
		}
	}
	return fmt.Sprintf("%s\t%s\t%s\t%d\t%s\t%d\t%s", oneLine(w.Name), w.State, oneLine(w.Plugin), w.Position, workerLag(w), w.Restarts, fault)
}

// printWorker prints one worker's status in full.
func printWorker(out io.Writer, w client.Worker) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "worker\t%s\n", oneLine(w.Name))
	fmt.Fprintf(tw, "state\t%s (desired %s)\n", w.State, w.Desired)
	plugin := oneLine(w.Plugin)
	if w.Running != nil {
		d := w.Running.Digest
		if len(d) > 12 {
			d = d[:12]
		}
		plugin += fmt.Sprintf(" (%s %s, %s…)", oneLine(w.Running.Name), oneLine(w.Running.Version), d)
	}
	fmt.Fprintf(tw, "plugin\t%s\n", plugin)
	fmt.Fprintf(tw, "cursor\t%s\n", oneLine(w.Cursor))
	fmt.Fprintf(tw, "position\t%d\n", w.Position)
	if lag := workerLag(w); strings.HasPrefix(lag, "≤") {
		fmt.Fprintf(tw, "lag\t%s (events past its position, in its region or not)\n", lag)
	} else {
		fmt.Fprintf(tw, "lag\t%s\n", lag)
	}
	fmt.Fprintf(tw, "restarts\t%d (%d faults within %v; max_restarts %d)\n", w.Restarts, w.RecentFaults,
		time.Duration(w.Restart.WindowMs)*time.Millisecond, derefInt(w.Restart.MaxRestarts))
	if w.NextRestart != nil {
		fmt.Fprintf(tw, "next restart\t%s\n", w.NextRestart.UTC().Format(time.RFC3339Nano))
	}
	if w.LastFault != nil {
		fmt.Fprintf(tw, "last fault\t%s %s: %s\n", w.LastFault.Time.UTC().Format(time.RFC3339), w.LastFault.Kind, oneLine(w.LastFault.Message))
	}
	if w.Quarantine != nil {
		fmt.Fprintf(tw, "quarantined\t%s: %s\n", w.Quarantine.Since.UTC().Format(time.RFC3339), oneLine(w.Quarantine.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(w.Log) > 0 {
		fmt.Fprintln(out, "log:")
		for _, l := range w.Log {
			fmt.Fprintf(out, "  %s %-5s %s\n", l.Time.UTC().Format(time.RFC3339), l.Level, oneLine(l.Message))
		}
	}
	return nil
}

func derefInt(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

func newWorkerCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "worker",
		Short:   "Start, stop, delete and inspect hosted workers: handler plugins a server runs for a tenant",
		GroupID: "admin",
		Long: `Manage the hosted workers of the tenant --tenant (BATPAK_TENANT) on --server,
with a key of that tenant as --token (admin to start, stop, reset and
delete; any role to look). A worker feeds the tenant's events, from a
named cursor, to one of the tenant's handler plugins and writes the
reactions it returns; it resumes from its cursor after a server restart.
After a fault it restarts with a backoff; past --max-restarts within
--window it is quarantined until "worker reset". A stopped worker keeps
its definition and cursor until "worker delete".`,
	}
	tenantOf := func(name string) (*client.Tenant, error) {
		rc, err := a.needServer(name)
		if err != nil {
			return nil, err
		}
		return rc.tenantClient()
	}
	show := func(cmd *cobra.Command, f, verb string, w client.Worker) error {
		return emit(cmd.OutOrStdout(), f, w, func(out io.Writer) error {
			_, err := fmt.Fprintf(out, "%s worker %s (plugin %s, state %s)\n", verb, oneLine(w.Name), oneLine(w.Plugin), w.State)
			return err
		})
	}
	var (
		flags              client.WorkerSpec
		category           string
		maxRestarts        int
		window, bMin, bMax time.Duration
		replace            bool
	)
	start := &cobra.Command{
		Use:   "start NAME [--plugin PLUGIN] [flags]",
		Short: "Start (or reconfigure) a worker running one of the tenant's handler plugins",
		Long: `Start the tenant's hosted worker NAME, or change an existing one.

A new worker needs --plugin; each setting left out takes its default:
every event (no --entity, --scope, --kind or --category filter), the
cursor NAME, the server's restart policy.

An existing worker keeps its stored configuration: the command reads
it, changes only the flags given, and starts the worker with the
result. "worker start NAME" alone starts a stopped worker again as it
was; "worker start NAME --plugin P" changes its plugin and keeps its
region filter (--entity, --scope, --kind, --category), cursor and
restart policy. To clear one filter, give it empty (--entity "",
--scope "", --kind "", --category ""); a zero duration (--window 0, --backoff-min 0, --backoff-max 0) returns that
setting to the server's default. With --replace the flags given are the
whole configuration, as for a new worker: every setting left out takes
its default.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			for _, d := range []struct {
				flag string
				v    time.Duration
			}{{"--window", window}, {"--backoff-min", bMin}, {"--backoff-max", bMax}} {
				if d.v < 0 || (d.v > 0 && d.v < time.Millisecond) {
					return usagef("%s %v: want a duration of at least 1ms (0: the server's default)", d.flag, d.v)
				}
			}
			var cat *int
			if cmd.Flags().Changed("category") && category != "" {
				// Sent as given: a number out of range is the server's to
				// refuse, never quietly every category.
				n, err := core.ParseKindNumber(category)
				if err != nil {
					return usagef("--category %q: want a kind category, 0..15 (\"\": every category)", category)
				}
				c := int(n)
				cat = &c
			}
			t, err := tenantOf("worker start")
			if err != nil {
				return err
			}
			name := args[0]
			var spec client.WorkerSpec
			exists := false
			if !replace {
				cur, err := t.Worker(cmd.Context(), name)
				switch {
				case err == nil:
					exists = true
					spec = client.WorkerSpec{Plugin: cur.Plugin, Region: cur.Region, Cursor: cur.Cursor, Restart: cur.Restart}
				case errors.Is(err, client.ErrNotFound):
				default:
					return remoteError(err)
				}
			}
			changed := cmd.Flags().Changed
			if changed("plugin") {
				spec.Plugin = flags.Plugin
			}
			if changed("entity") {
				spec.Region.Entity = flags.Region.Entity
			}
			if changed("scope") {
				spec.Region.Scope = flags.Region.Scope
			}
			if changed("kind") {
				spec.Region.Kind = flags.Region.Kind
			}
			if changed("category") {
				spec.Region.Category = cat
			}
			if changed("cursor") {
				spec.Cursor = flags.Cursor
			}
			if changed("max-restarts") {
				m := maxRestarts
				spec.Restart.MaxRestarts = &m
			}
			if changed("window") {
				spec.Restart.WindowMs = window.Milliseconds()
			}
			if changed("backoff-min") {
				spec.Restart.BackoffMinMs = bMin.Milliseconds()
			}
			if changed("backoff-max") {
				spec.Restart.BackoffMaxMs = bMax.Milliseconds()
			}
			if spec.Plugin == "" {
				if exists {
					return usagef("--plugin is empty: want the tenant's handler plugin to run")
				}
				return usagef("missing required flag --plugin (the tenant's handler plugin to run): worker %s does not exist yet", oneLine(name))
			}
			w, err := t.StartWorker(cmd.Context(), name, spec)
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, f, "started", w)
		},
	}
	f := start.Flags()
	f.StringVar(&flags.Plugin, "plugin", "", "the tenant's handler plugin to run (required for a new worker)")
	f.StringVar(&flags.Region.Entity, "entity", "", `only events of entities with this prefix ("": no entity filter)`)
	f.StringVar(&flags.Region.Scope, "scope", "", `only events of this scope ("": no scope filter)`)
	f.StringVar(&flags.Region.Kind, "kind", "", `only events of this kind ("1:1"; "": no kind filter)`)
	f.StringVar(&category, "category", "", `only events of this kind category, 0..15 ("": every category, the default)`)
	f.StringVar(&flags.Cursor, "cursor", "", "the named cursor it resumes from (default: the worker's name)")
	f.IntVar(&maxRestarts, "max-restarts", 0, "restarts within --window before a fault quarantines it (server default 5; 0..1000)")
	f.DurationVar(&window, "window", 0, "the window faults are counted in (server default 10m; 1s..24h)")
	f.DurationVar(&bMin, "backoff-min", 0, "wait before the first restart, doubling per fault (server default 200ms)")
	f.DurationVar(&bMax, "backoff-max", 0, "cap of the wait between restarts (server default 30s)")
	f.BoolVar(&replace, "replace", false, "the flags given are the whole configuration: every setting left out takes its default, not the existing worker's")

	var yes bool
	del := &cobra.Command{
		Use:   "delete NAME --yes",
		Short: "Stop a worker if it runs and delete it, its cursor's position with it",
		Long: `Delete the tenant's hosted worker NAME: it is stopped after the batch in
hand and forgotten — its definition, status and log, and its cursor's
position (a worker's cursor is its own: a worker or cursor that takes the
name up later starts at the log's beginning). The reactions it wrote stay
in the store. A deleted worker no longer counts towards the server's
limit on the workers a tenant has defined (server.workers_max_defined).
To keep a worker's definition and position, stop it instead.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usagef("worker delete forgets the worker and its cursor's position: add --yes")
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenantOf("worker delete")
			if err != nil {
				return err
			}
			if err := t.DeleteWorker(cmd.Context(), args[0]); err != nil {
				return remoteError(err)
			}
			gone := struct {
				Name    string `json:"name"`
				Deleted bool   `json:"deleted"`
			}{args[0], true}
			return emit(cmd.OutOrStdout(), f, gone, func(out io.Writer) error {
				_, err := fmt.Fprintf(out, "deleted worker %s\n", oneLine(args[0]))
				return err
			})
		},
	}
	del.Flags().BoolVar(&yes, "yes", false, "confirm: the worker's definition and cursor position are forgotten")

	stop := &cobra.Command{
		Use: "stop NAME", Short: "Stop a worker after the batch in hand; it keeps its cursor", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenantOf("worker stop")
			if err != nil {
				return err
			}
			w, err := t.StopWorker(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, f, "stopped", w)
		},
	}
	reset := &cobra.Command{
		Use: "reset NAME", Short: "Clear a worker's quarantine and faults and start it again", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenantOf("worker reset")
			if err != nil {
				return err
			}
			w, err := t.ResetWorker(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			return show(cmd, f, "reset", w)
		},
	}
	status := &cobra.Command{
		Use: "status [NAME]", Short: "Show one worker's status and log, or list the tenant's workers",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenantOf("worker status")
			if err != nil {
				return err
			}
			stdout := cmd.OutOrStdout()
			if len(args) == 1 {
				w, err := t.Worker(cmd.Context(), args[0])
				if err != nil {
					return remoteError(err)
				}
				return emit(stdout, f, w, func(out io.Writer) error { return printWorker(out, w) })
			}
			ws, err := t.Workers(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			if f != formatTable {
				jl := newRecords(stdout, f)
				for _, w := range ws {
					if err := jl.write(w); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tPLUGIN\tPOSITION\tLAG\tRESTARTS\tLAST FAULT")
			for _, w := range ws {
				fmt.Fprintln(tw, workerLine(w))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintln(stdout, plural(len(ws), "worker", "workers"))
			return err
		},
	}
	out.registerPersistent(cmd)
	cmd.AddCommand(start, stop, reset, del, status)
	return cmd
}
