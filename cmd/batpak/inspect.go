package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
)

// verifyJSON is verify -o json's output.
type verifyJSON struct {
	OK       bool   `json:"ok"`
	Events   int    `json:"events"`            // events a read can show, or may once their fence commits
	Removed  int    `json:"removed,omitempty"` // compaction stubs checked (not events)
	Hidden   int    `json:"hidden,omitempty"`  // events of fences that never committed, checked
	Entities int    `json:"entities"`
	Segments int    `json:"segments"`
	Server   string `json:"server,omitempty"`
	Tenant   string `json:"tenant,omitempty"`
}

func newVerifyCmd(a *app) *cobra.Command {
	var (
		out  outputFlags
		prog progressFlags
	)
	cmd := &cobra.Command{
		Use:     "verify",
		Short:   "Check every event's checksums and hash chain",
		GroupID: "inspect",
		Long: `Read every segment from disk and check each event: frame checksum, payload
digest, chain hash, the link to the entity's previous event, and that
clocks run 0, 1, 2, ... per entity. Prints
"ok: N events in M entities across K segments" (plus the stubs compaction
left of removed events, which are checked but are not events), or the
first failure (file, offset, event id) and exits 7 (corrupt). Safe to run
beside a live writer. On a terminal, a progress bar counts segments.
Against a server (--server) it takes the tenant's admin key.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			if rc != nil {
				return verifyRemote(cmd, rc, format)
			}
			var rep core.VerifyReport
			err = a.withReadStore(func(s *core.Store, _ *resolved) error {
				bar := prog.bar(cmd.ErrOrStderr(), int64(s.Stats().Segments), "verify", "segments")
				var err error
				rep, err = s.VerifyProgress(func(done, total int) {
					if bar != nil {
						bar.ChangeMax(total)
						_ = bar.Set(done)
					}
				})
				finishBar(bar)
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
			v := verifyJSON{OK: true, Events: rep.Events - rep.Removed, Removed: rep.Removed, Hidden: rep.Hidden, Entities: rep.Entities, Segments: rep.Segments}
			return emit(cmd.OutOrStdout(), format, v, func(w io.Writer) error { return printVerify(w, v) })
		},
	}
	out.register(cmd)
	prog.register(cmd)
	return cmd
}

// printVerify writes verify's human line.
func printVerify(w io.Writer, v verifyJSON) error {
	line := fmt.Sprintf("ok: %s in %s across %s", plural(v.Events, "event", "events"), plural(v.Entities, "entity", "entities"), plural(v.Segments, "segment", "segments"))
	if v.Removed > 0 {
		line += fmt.Sprintf(" (and %s of removed events, checked)", plural(v.Removed, "compaction stub", "compaction stubs"))
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// statsJSON is stats --json's output: core.Diagnostics' counts and sizes
// plus the directory. packed_ratio is packed_raw_bytes / packed_bytes (0
// when no segment is packed); the open_* fields say how this (read-only)
// open rebuilt the index.
type statsJSON struct {
	Dir                 string  `json:"dir"`
	Events              uint64  `json:"events"`
	GlobalSequence      uint64  `json:"global_sequence"`
	Entities            int     `json:"entities"`
	Segments            int     `json:"segments"`
	Bytes               int64   `json:"bytes"`
	IndexBytes          int64   `json:"index_bytes"`
	Fsyncs              uint64  `json:"fsyncs"`
	BytesOnDisk         int64   `json:"bytes_on_disk"`
	PackedSegments      int     `json:"packed_segments"`
	PackedBytes         int64   `json:"packed_bytes"`
	PackedRawBytes      int64   `json:"packed_raw_bytes"`
	PackedRatio         float64 `json:"packed_ratio"`
	Footers             int     `json:"footers"`
	OpenPath            string  `json:"open_path"`
	OpenFooters         int     `json:"open_footers"`
	OpenSegmentsScanned int     `json:"open_segments_scanned"`
	OpenRestored        uint64  `json:"open_restored"`
	OpenEntries         uint64  `json:"open_entries"`
	OpenMillis          float64 `json:"open_ms"`
}

func toStatsJSON(dir string, d core.Diagnostics) statsJSON {
	st := d.Stats
	return statsJSON{
		Dir: dir, Events: st.Events, GlobalSequence: st.GlobalSequence, Entities: st.Entities,
		Segments: st.Segments, Bytes: st.Bytes, IndexBytes: st.IndexBytes, Fsyncs: st.Fsyncs,
		BytesOnDisk:    d.BytesOnDisk,
		PackedSegments: d.PackedSegments, PackedBytes: d.PackedBytes, PackedRawBytes: d.PackedRawBytes,
		PackedRatio: math.Round(packedRatio(d)*100) / 100, Footers: d.Footers,
		OpenPath: d.Open.Path, OpenFooters: d.Open.Footers, OpenSegmentsScanned: d.Open.SegmentsScanned,
		OpenRestored: d.Open.Restored, OpenEntries: d.Open.Entries,
		OpenMillis: float64(d.Open.Elapsed.Microseconds()) / 1000,
	}
}

// packedRatio is how many times smaller the packed segments are than
// their content; 0 when none is packed.
func packedRatio(d core.Diagnostics) float64 {
	if d.PackedBytes <= 0 {
		return 0
	}
	return float64(d.PackedRawBytes) / float64(d.PackedBytes)
}

// packedLine describes the packed segments: "3 segments, 12.1 MiB on disk
// for 61.0 MiB raw (5.0x)".
func packedLine(d core.Diagnostics) string {
	if d.PackedSegments == 0 {
		return "none"
	}
	return fmt.Sprintf("%s, %s on disk for %s raw (%.1fx)", plural(d.PackedSegments, "segment", "segments"),
		humanBytes(d.PackedBytes), humanBytes(d.PackedRawBytes), packedRatio(d))
}

func newStatsCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "stats",
		Short:   "Print counts and sizes of the store",
		GroupID: "inspect",
		Long: `Print the store's statistics: visible events, the next global sequence,
entities, segment files, bytes in segments, the index's estimated heap
size, the segment files' size on disk; how many segments are packed
(compressed: what they take on disk, their uncompressed size and the
ratio) and how many have an index footer; and how this open rebuilt the
index: from the checkpoint, from segment footers or by scanning segments,
with the footers it used and the segments whose frames it read. The store
is opened read-only, so the JSON's fsyncs (a count kept by the writer)
is always 0 here and the table leaves it out; the open figures are this
command's own open. Against a server, fsyncs is the tenant's store's
count since it was opened.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			format, err := out.format()
			if err != nil {
				return err
			}
			rc, err := a.remote()
			if err != nil {
				return err
			}
			if rc != nil {
				return statsRemote(cmd, rc, format)
			}
			var (
				d   core.Diagnostics
				dir string
			)
			err = a.withReadStore(func(s *core.Store, res *resolved) error {
				d, dir = s.Diagnostics(), res.cfg.Dir
				return nil
			})
			if err != nil {
				return err
			}
			return emit(cmd.OutOrStdout(), format, toStatsJSON(dir, d), func(w io.Writer) error { return printStats(w, dir, d) })
		},
	}
	out.register(cmd)
	registerMinSeqFlag(cmd, a)
	return cmd
}

func printStats(w io.Writer, dir string, d core.Diagnostics) error {
	st, o := d.Stats, d.Open
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store\t%s\n", dir)
	fmt.Fprintf(tw, "events\t%d\n", st.Events)
	fmt.Fprintf(tw, "next sequence\t%d\n", st.GlobalSequence)
	fmt.Fprintf(tw, "entities\t%d\n", st.Entities)
	fmt.Fprintf(tw, "segments\t%d\n", st.Segments)
	fmt.Fprintf(tw, "bytes\t%d (%s)\n", st.Bytes, humanBytes(st.Bytes))
	fmt.Fprintf(tw, "index bytes\t%d (%s, estimate)\n", st.IndexBytes, humanBytes(st.IndexBytes))
	fmt.Fprintf(tw, "on disk\t%d (%s, zero fill included)\n", d.BytesOnDisk, humanBytes(d.BytesOnDisk))
	fmt.Fprintf(tw, "packed\t%s\n", packedLine(d))
	fmt.Fprintf(tw, "footers\t%d of %d segments\n", d.Footers, st.Segments)
	fmt.Fprintf(tw, "opened via\t%s in %v (%s used, %s scanned; %d restored, %d read from the log)\n",
		o.Path, o.Elapsed.Round(time.Microsecond), plural(o.Footers, "footer", "footers"),
		plural(o.SegmentsScanned, "segment", "segments"), o.Restored, o.Entries-o.Restored)
	return tw.Flush()
}

// verifyRemote is verify against a server: the server checks the
// tenant's store and answers with the same counts.
func verifyRemote(cmd *cobra.Command, rc *remoteConf, format string) error {
	t, err := rc.tenantClient()
	if err != nil {
		return err
	}
	rep, err := t.Verify(cmd.Context())
	if err != nil {
		return remoteError(err)
	}
	if ok, _ := rep["ok"].(bool); !ok {
		msg, _ := rep["error"].(string)
		return withExitCode(exitCorrupt, &inputError{what: "verify failed", err: errors.New(msg)})
	}
	removed := int(jsonInt(rep, "removed"))
	v := verifyJSON{OK: true, Events: int(jsonInt(rep, "events")) - removed, Removed: removed, Hidden: int(jsonInt(rep, "hidden")),
		Entities: int(jsonInt(rep, "entities")), Segments: int(jsonInt(rep, "segments"))}
	if format != formatTable {
		v.Server, v.Tenant = rc.server, rc.tenant
	}
	return emit(cmd.OutOrStdout(), format, v, func(w io.Writer) error { return printVerify(w, v) })
}

// remoteStatsJSON is stats --json against a server: the fields of
// statsJSON the server reports, under the same names, and where.
type remoteStatsJSON struct {
	Server         string `json:"server"`
	Tenant         string `json:"tenant"`
	Events         uint64 `json:"events"`
	GlobalSequence uint64 `json:"global_sequence"`
	Entities       int    `json:"entities"`
	Segments       int    `json:"segments"`
	Bytes          int64  `json:"bytes"`
	IndexBytes     int64  `json:"index_bytes"`
	Fsyncs         uint64 `json:"fsyncs"`
}

// statsRemote is stats against a server: the counts and sizes its stats
// route reports (the on-disk and open figures are the server's own).
func statsRemote(cmd *cobra.Command, rc *remoteConf, format string) error {
	t, err := rc.tenantClient()
	if err != nil {
		return err
	}
	st, err := t.Stats(cmd.Context())
	if err != nil {
		return remoteError(err)
	}
	out := remoteStatsJSON{Server: rc.server, Tenant: rc.tenant,
		Events: uint64(jsonInt(st, "events")), GlobalSequence: uint64(jsonInt(st, "global_sequence")),
		Entities: int(jsonInt(st, "entities")), Segments: int(jsonInt(st, "segments")),
		Bytes: jsonInt(st, "bytes"), IndexBytes: jsonInt(st, "index_bytes"), Fsyncs: uint64(jsonInt(st, "fsyncs"))}
	w := cmd.OutOrStdout()
	if format != formatTable {
		return emit(w, format, out, nil)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "store\t%s\n", rc.where())
	fmt.Fprintf(tw, "events\t%d\n", out.Events)
	fmt.Fprintf(tw, "next sequence\t%d\n", out.GlobalSequence)
	fmt.Fprintf(tw, "entities\t%d\n", out.Entities)
	fmt.Fprintf(tw, "segments\t%d\n", out.Segments)
	fmt.Fprintf(tw, "bytes\t%d (%s)\n", out.Bytes, humanBytes(out.Bytes))
	fmt.Fprintf(tw, "index bytes\t%d (%s, estimate)\n", out.IndexBytes, humanBytes(out.IndexBytes))
	fmt.Fprintf(tw, "fsyncs\t%d\n", out.Fsyncs)
	return tw.Flush()
}

// configJSON is config -o json's output: the file read (empty: none),
// a ./config.yaml passed over, and every setting.
type configJSON struct {
	ConfigFile    string              `json:"config_file"`
	SkippedConfig string              `json:"skipped_config,omitempty"`
	Settings      []configSettingJSON `json:"settings"`
}

type configSettingJSON struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source string `json:"source"`
	Env    string `json:"env"`
}

func newConfigCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:     "config",
		Short:   "Show the effective configuration and where each value comes from",
		GroupID: "inspect",
		Long: `Print the config file read (see the search order in batpak --help) and
every setting's effective value and its source: a flag, a BATPAK_*
environment variable, the config file, or the default. The server.* keys
(batpak serve) follow the store's; their flags are serve's own. Precedence, highest
first: flag > environment > config file > default.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := out.format()
			if err != nil {
				return err
			}
			res, err := a.loadConfig()
			if err != nil {
				return err
			}
			doc := configJSON{ConfigFile: res.configFile, SkippedConfig: a.skippedConfig}
			add := func(key, value, source, env string) {
				doc.Settings = append(doc.Settings, configSettingJSON{Key: key, Value: value, Source: source, Env: env})
			}
			for _, e := range res.entries {
				add(e.key, e.value, e.source, envName(e.key))
			}
			// The server's keys (batpak serve; their flags belong to it).
			for _, ss := range serverSettings {
				a.v.SetDefault(ss.key, ss.def)
				bindEnv(a.v, ss.key)
				val := fmt.Sprint(a.v.Get(ss.key))
				if ss.key == "server.operator_token" && val != "" {
					val = "(set, not shown)"
				}
				add(ss.key, val, a.sourceOf(setting{key: ss.key}), envNames(ss.key)[0])
			}
			// The server the data commands talk to, if any.
			for _, k := range remoteKeys {
				val := a.v.GetString(k.key)
				if k.key == "remote.token" && val != "" {
					val = "(set, not shown)"
				}
				if k.key == "remote.server" {
					val = redactedURL(val)
				}
				add(k.key, orNone(val), a.remoteSource(k.key, k.flag, k.env), k.env)
			}
			return emit(cmd.OutOrStdout(), format, doc, func(w io.Writer) error {
				file := doc.ConfigFile
				if file == "" {
					file = "none"
				}
				if doc.SkippedConfig != "" {
					file += fmt.Sprintf(" (%s not read: its first line does not begin %q; name it with --config or rename it batpak.yaml)", doc.SkippedConfig, configMarker)
				}
				fmt.Fprintf(w, "config file: %s\n", file)
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "KEY\tVALUE\tSOURCE\tENV")
				for _, e := range doc.Settings {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Key, e.Value, e.Source, e.Env)
				}
				return tw.Flush()
			})
		},
	}
	out.register(cmd)
	return cmd
}
