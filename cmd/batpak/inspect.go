package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
)

func newVerifyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "verify",
		Short:   "Check every event's checksums and hash chain",
		GroupID: "inspect",
		Long: `Read every segment from disk and check each event: frame checksum, payload
digest, chain hash, the link to the entity's previous event, and that
clocks run 0, 1, 2, ... per entity. Prints
"ok: N events in M entities across K segments", or the first failure (file,
offset, event id) and exits 1. Safe to run beside a live writer.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			var rep core.VerifyReport
			err = a.withReadStore(func(s *core.Store, _ *resolved) error {
				var err error
				rep, err = s.Verify()
				return err
			})
			// Damaged frames already fail the read-only open; chain
			// breaks in intact frames fail Verify itself.
			if errors.Is(err, core.ErrCorrupt) || errors.Is(err, core.ErrChainBroken) {
				return &inputError{what: "verify failed", err: err}
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "ok: %d events in %d entities across %d segments\n", rep.Events, rep.Entities, rep.Segments)
			return err
		},
	}
}

// statsJSON is stats --json's output: core.Stats plus the directory.
type statsJSON struct {
	Dir            string  `json:"dir"`
	Events         uint64  `json:"events"`
	GlobalSequence uint64  `json:"global_sequence"`
	Entities       int     `json:"entities"`
	Segments       int     `json:"segments"`
	Bytes          int64   `json:"bytes"`
	IndexBytes     int64   `json:"index_bytes"`
	Fsyncs         uint64  `json:"fsyncs"`
	BytesOnDisk    int64   `json:"bytes_on_disk"`
	OpenPath       string  `json:"open_path"`
	OpenMillis     float64 `json:"open_ms"`
}

func newStatsCmd(a *app) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "stats",
		Short:   "Print counts and sizes of the store",
		GroupID: "inspect",
		Long: `Print the store's statistics: visible events, the next global sequence,
entities, segment files, bytes in segments, the index's estimated heap
size. The store is opened read-only, so fsyncs (a count kept by the
writer) is always 0 here.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			var (
				d   core.Diagnostics
				dir string
			)
			err = a.withReadStore(func(s *core.Store, res *resolved) error {
				d, dir = s.Diagnostics(), res.cfg.Dir
				return nil
			})
			st := d.Stats
			if err != nil {
				return err
			}
			if asJSON {
				return newJSONLines(cmd.OutOrStdout()).write(statsJSON{
					Dir: dir, Events: st.Events, GlobalSequence: st.GlobalSequence, Entities: st.Entities,
					Segments: st.Segments, Bytes: st.Bytes, IndexBytes: st.IndexBytes, Fsyncs: st.Fsyncs,
					BytesOnDisk: d.BytesOnDisk, OpenPath: d.Open.Path, OpenMillis: float64(d.Open.Elapsed.Microseconds()) / 1000,
				})
			}
			if err := printStats(cmd.OutOrStdout(), dir, st); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "on disk        %d (%s, zero fill included)\nopened via     %s in %v (%d restored, %d read from the log)\n",
				d.BytesOnDisk, formatSize(d.BytesOnDisk), d.Open.Path, d.Open.Elapsed.Round(time.Microsecond), d.Open.Restored, d.Open.Entries-d.Open.Restored)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the statistics as one JSON object")
	return cmd
}

func printStats(w io.Writer, dir string, st core.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store\t%s\n", dir)
	fmt.Fprintf(tw, "events\t%d\n", st.Events)
	fmt.Fprintf(tw, "next sequence\t%d\n", st.GlobalSequence)
	fmt.Fprintf(tw, "entities\t%d\n", st.Entities)
	fmt.Fprintf(tw, "segments\t%d\n", st.Segments)
	fmt.Fprintf(tw, "bytes\t%d (%s)\n", st.Bytes, humanBytes(st.Bytes))
	fmt.Fprintf(tw, "index bytes\t%d (%s, estimate)\n", st.IndexBytes, humanBytes(st.IndexBytes))
	fmt.Fprintf(tw, "fsyncs\t%d\n", st.Fsyncs)
	return tw.Flush()
}

func newConfigCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "config",
		Short:   "Show the effective configuration and where each value comes from",
		GroupID: "inspect",
		Long: `Print every setting's effective value and its source: a flag, a BATPAK_*
environment variable, the config file, or the default. Precedence, highest
first: flag > environment > config file > default.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := a.loadConfig()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			file := res.configFile
			if file == "" {
				file = "none"
			}
			fmt.Fprintf(w, "config file: %s\n", file)
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tENV")
			for _, e := range res.entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.key, e.value, e.source, envName(e.key))
			}
			return tw.Flush()
		},
	}
}
