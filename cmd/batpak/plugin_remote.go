package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
)

// newPluginRemoteCmds are the plugin verbs that work on a server's
// tenant (--server, --token, --tenant): push, list, status, swap, reset
// and delete.
func newPluginRemoteCmds(a *app) []*cobra.Command {
	var out outputFlags
	tenant := func(name string) (*client.Tenant, error) {
		rc, err := a.needServer(name)
		if err != nil {
			return nil, err
		}
		return rc.tenantClient()
	}
	showPlugin := func(cmd *cobra.Command, f, verb string, tp client.TenantPlugin) error {
		return emit(cmd.OutOrStdout(), f, tp, func(w io.Writer) error {
			digest := ""
			for _, v := range tp.Versions {
				if v.Version == tp.Active {
					digest = v.Digest
				}
			}
			_, err := fmt.Fprintf(w, "%s plugin %s: active version %s (sha256 %s), %s kept\n",
				verb, oneLine(tp.Name), oneLine(tp.Active), digest, plural(len(tp.Versions), "version", "versions"))
			return err
		})
	}
	var manifestPath string
	var noActivate bool
	push := &cobra.Command{
		Use:   "push FILE.wasm --manifest M.json | push DIR",
		Short: "Upload a plugin to the server's tenant (admin key): a new version, active at once unless --no-activate",
		Long: `Upload a WebAssembly module and its manifest as a version of the tenant's
plugin named in the manifest. DIR holds manifest.json and one .wasm file.
The server validates and compiles the module before keeping it (refused
with the reason otherwise); the manifest's sha256 pins the module (when
the manifest has none, the file's SHA-256 is filled in and said on
stderr). Activating swaps the running version hot: no request fails.

A version is immutable: pushing a kept version again with the same module
and manifest only activates it; with another module or manifest it is
refused (CONFLICT, exit 4): give the change a new version. A manifest
naming a member twice is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			wasmPath, mfPath, err := pluginFiles(args[0], manifestPath)
			if err != nil {
				return err
			}
			wasm, err := os.ReadFile(wasmPath)
			if err != nil {
				return badInput(wasmPath, err)
			}
			raw, err := os.ReadFile(mfPath)
			if err != nil {
				return badInput("--manifest", err)
			}
			// A member given twice would be one (the last) once decoded
			// here: the server refuses such a manifest, and so does this.
			var je *ijson.Error
			if err := ijson.Validate(raw, 0); errors.As(err, &je) && je.Rule == ijson.RuleDuplicateKey {
				return badInput(mfPath, fmt.Errorf("the member %q appears twice (at byte %d): give each member once", oneLine(je.Key), je.Offset))
			}
			var mf map[string]any
			if err := json.Unmarshal(raw, &mf); err != nil {
				return badInput(mfPath, fmt.Errorf("not a JSON object: %w", err))
			}
			if sum, _ := mf["sha256"].(string); sum == "" {
				mf["sha256"] = plugins.Digest(wasm)
				fmt.Fprintf(cmd.ErrOrStderr(), "batpak: the manifest pins no module: pinned to %s's sha256 %s\n", filepath.Base(wasmPath), mf["sha256"])
				if raw, err = json.Marshal(mf); err != nil {
					return err
				}
			}
			t, err := tenant("plugin push")
			if err != nil {
				return err
			}
			tp, err := t.PushPlugin(cmd.Context(), raw, wasm, !noActivate)
			if err != nil {
				return remoteError(err)
			}
			return showPlugin(cmd, f, "pushed", tp)
		},
	}
	push.Flags().StringVar(&manifestPath, "manifest", "", "the plugin's manifest (JSON); default DIR/manifest.json or manifest.json beside FILE.wasm")
	push.Flags().BoolVar(&noActivate, "no-activate", false, "keep the version without making it active (a new plugin is active anyway)")

	var listAllNodes bool
	list := &cobra.Command{
		Use: "list", Short: "List the server tenant's plugins", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenant("plugin list")
			if err != nil {
				return err
			}
			if listAllNodes {
				l, err := t.PluginsAllNodes(cmd.Context())
				if err != nil {
					return remoteError(err)
				}
				return emit(cmd.OutOrStdout(), f, l, func(w io.Writer) error { return printPluginClusterList(w, l) })
			}
			ps, err := t.Plugins(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			w := cmd.OutOrStdout()
			if f != formatTable {
				out := newRecords(w, f)
				for _, p := range ps {
					if err := out.write(p); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tACTIVE\tVERSIONS\tSTATE\tSHA256")
			for _, p := range ps {
				state := "loaded"
				switch {
				case p.Quarantined:
					state = "quarantined"
				case !p.Loaded:
					state = "not-loaded"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", oneLine(p.Name), p.Kind, oneLine(p.Active), p.Versions, state, p.Digest)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintln(w, plural(len(ps), "plugin", "plugins"))
			return err
		},
	}
	list.Flags().BoolVar(&listAllNodes, "all-nodes", false, "on a cluster, each plugin's state on every node (loaded everywhere, quarantined anywhere)")
	var allNodes bool
	status := &cobra.Command{
		Use: "status NAME", Short: "Show a server plugin's versions, faults, quarantine, counters and recent logs", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenant("plugin status")
			if err != nil {
				return err
			}
			if allNodes {
				st, err := t.PluginStatusAllNodes(cmd.Context(), args[0])
				if err != nil {
					return remoteError(err)
				}
				return emit(cmd.OutOrStdout(), f, st, func(w io.Writer) error { return printPluginClusterStatus(w, st) })
			}
			st, err := t.PluginStatus(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			return emit(cmd.OutOrStdout(), f, st, func(w io.Writer) error { return printPluginStatus(w, st) })
		},
	}
	status.Flags().BoolVar(&allNodes, "all-nodes", false, "on a cluster, every node's part (each node runs the plugin and counts its own faults), counters summed")
	swap := &cobra.Command{
		Use: "swap NAME VERSION", Short: "Make a kept version of a server plugin active (hot; admin key)", Args: exactArgs("NAME", "VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenant("plugin swap")
			if err != nil {
				return err
			}
			tp, err := t.SwapPlugin(cmd.Context(), args[0], args[1])
			if err != nil {
				return remoteError(err)
			}
			return showPlugin(cmd, f, "swapped", tp)
		},
	}
	reset := &cobra.Command{
		Use: "reset NAME", Short: "Lift a server plugin's quarantine (admin key)", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenant("plugin reset")
			if err != nil {
				return err
			}
			st, err := t.ResetPlugin(cmd.Context(), args[0])
			if err != nil {
				return remoteError(err)
			}
			return emit(cmd.OutOrStdout(), f, st, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "reset plugin %s: takes calls again\n", oneLine(st.Name))
				return err
			})
		},
	}
	var delVersion string
	var yes bool
	del := &cobra.Command{
		Use: "delete NAME [--version V] --yes", Short: "Delete a server plugin, or one inactive version (admin key)", Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return usagef("plugin delete removes the plugin's kept modules: add --yes")
			}
			f, err := out.format()
			if err != nil {
				return err
			}
			t, err := tenant("plugin delete")
			if err != nil {
				return err
			}
			if err := t.DeletePlugin(cmd.Context(), args[0], delVersion); err != nil {
				return remoteError(err)
			}
			gone := pluginDeleted{Name: args[0], Version: delVersion, Deleted: true}
			return emit(cmd.OutOrStdout(), f, gone, func(w io.Writer) error {
				what := "plugin " + oneLine(args[0])
				if delVersion != "" {
					what = "version " + oneLine(delVersion) + " of " + what
				}
				_, err := fmt.Fprintf(w, "deleted %s\n", what)
				return err
			})
		},
	}
	del.Flags().StringVar(&delVersion, "version", "", "delete only this version (not the active one)")
	del.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	cmds := []*cobra.Command{push, list, status, swap, reset, del}
	for _, c := range cmds {
		out.register(c) // per verb: the plugin group's local verbs have -o of their own
	}
	return cmds
}

// pluginFiles resolves push's argument: FILE.wasm with --manifest (or
// manifest.json beside it), or a directory holding manifest.json and
// one .wasm file.
func pluginFiles(arg, manifest string) (wasm, mf string, err error) {
	fi, err := os.Stat(arg)
	if err != nil {
		return "", "", badInput(arg, err)
	}
	dir := filepath.Dir(arg)
	wasm = arg
	if fi.IsDir() {
		dir = arg
		found, _ := filepath.Glob(filepath.Join(arg, "*.wasm"))
		if len(found) != 1 {
			return "", "", badInput(arg, fmt.Errorf("want one .wasm file in the directory, found %d", len(found)))
		}
		wasm = found[0]
	}
	if manifest == "" {
		manifest = filepath.Join(dir, "manifest.json")
		if _, err := os.Stat(manifest); errors.Is(err, os.ErrNotExist) {
			return "", "", usagef("no manifest: give --manifest M.json (or put manifest.json beside the module)")
		}
	}
	return wasm, manifest, nil
}

// pluginDeleted is what plugin delete prints with -o json|yaml.
type pluginDeleted struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // only this version went; empty: the whole plugin
	Deleted bool   `json:"deleted"`
}

// pluginState is a plugin's state on one node: quarantined, loaded, or
// why it is not loaded.
func pluginState(quarantined, loaded bool, loadError string) string {
	switch {
	case quarantined:
		return "quarantined"
	case !loaded:
		return notLoaded(loadError)
	}
	return "loaded"
}

// notLoaded is the state of a plugin not running: why, or, with no load
// error, that the node is still loading it (it applied the upload a
// moment ago, or is compiling the module).
func notLoaded(loadError string) string {
	if loadError == "" {
		return "not loaded yet"
	}
	return "not loaded: " + oneLine(loadError)
}

// nodeName prints a node's id; a single server's is "-".
func nodeName(id string) string {
	if id == "" {
		return "-"
	}
	return oneLine(id)
}

// printPluginClusterList prints what plugin list --all-nodes gathered.
func printPluginClusterList(w io.Writer, l client.PluginClusterList) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tACTIVE\tVERSIONS\tSTATE\tSHA256")
	names := func(ns []string) string {
		out := make([]string, len(ns))
		for i, n := range ns {
			out[i] = nodeName(n)
		}
		return strings.Join(out, ",")
	}
	for _, p := range l.Plugins {
		var state []string
		if len(p.QuarantinedOn) > 0 {
			state = append(state, "quarantined on "+names(p.QuarantinedOn))
		}
		if len(p.NotLoadedOn) > 0 {
			state = append(state, "not-loaded on "+names(p.NotLoadedOn))
		}
		if len(state) == 0 {
			state = append(state, "loaded")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", oneLine(p.Name), p.Kind, oneLine(p.Active), p.Versions, strings.Join(state, "; "), p.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "node %s: no list: %s\n", nodeName(n.Node), oneLine(n.Error))
		}
	}
	_, err := fmt.Fprintf(w, "%s, as %d of %d nodes answered\n", plural(len(l.Plugins), "plugin", "plugins"), l.Answered, l.Answered+l.Unanswered)
	return err
}

// printPluginClusterStatus prints what plugin status --all-nodes gathered.
func printPluginClusterStatus(w io.Writer, st client.PluginClusterStatus) error {
	var quarantined, unloaded []string
	for _, n := range st.Nodes {
		switch {
		case n.Error != "":
		case n.Quarantined:
			quarantined = append(quarantined, nodeName(n.Node))
		case !n.Loaded:
			unloaded = append(unloaded, nodeName(n.Node))
		}
	}
	var states []string
	if len(quarantined) > 0 {
		states = append(states, "quarantined on "+strings.Join(quarantined, ", ")+" (plugin reset NAME lifts it on every node)")
	}
	if len(unloaded) > 0 {
		states = append(states, "not loaded on "+strings.Join(unloaded, ", "))
	}
	state := strings.Join(states, "; ")
	if state == "" {
		state = "loaded"
	}
	fmt.Fprintf(w, "plugin %s: active version %s, %s\n", oneLine(st.Name), oneLine(st.Active), state)
	s := st.Stats
	fmt.Fprintf(w, "requests %d, calls %d (%.3fs), faults %d, log lines %d (%d dropped): %d of %d nodes\n",
		s.Requests, s.Calls, s.CallSeconds, s.Faults, s.LogLines, s.DroppedLogLines, st.Answered, st.Answered+st.Unanswered)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tACTIVE\tREQUESTS\tCALLS\tFAULTS\tSHA256")
	for _, n := range st.Nodes {
		node := nodeName(n.Node)
		if n.Error != "" {
			fmt.Fprintf(tw, "%s\terror\t\t\t\t\t\n", node)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", node, pluginState(n.Quarantined, n.Loaded, n.LoadError), oneLine(n.Active), n.Stats.Requests, n.Stats.Calls, n.Stats.Faults, n.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "node %s: no part: %s\n", nodeName(n.Node), oneLine(n.Error))
		}
	}
	for _, n := range st.Nodes {
		for _, f := range n.Faults {
			fmt.Fprintf(w, "fault %s %s %s@%s: %s\n", nodeName(n.Node), f.Time.UTC().Format(time.RFC3339), f.Kind, oneLine(f.Version), oneLine(f.Message))
		}
	}
	for _, n := range st.Nodes {
		for _, l := range n.Logs {
			fmt.Fprintf(w, "log %s %s %s %s: %s\n", nodeName(n.Node), l.Time.UTC().Format(time.RFC3339), strings.ToLower(l.Level), l.Stream, oneLine(l.Text))
		}
	}
	return nil
}

func printPluginStatus(w io.Writer, st client.PluginStatus) error {
	state := pluginState(st.Quarantined, st.Loaded, st.LoadError)
	if st.Quarantined {
		state += " (plugin reset NAME lifts it)"
	}
	fmt.Fprintf(w, "plugin %s: active version %s, %s\n", oneLine(st.Name), oneLine(st.Active), state)
	if st.Node != "" {
		fmt.Fprintf(w, "node %s: its own counters, faults, logs and quarantine (--all-nodes for every node's)\n", oneLine(st.Node))
	}
	if st.Digest != "" {
		fmt.Fprintf(w, "sha256 %s\n", st.Digest)
	}
	s := st.Stats
	fmt.Fprintf(w, "requests %d, calls %d (%.3fs), faults %d, log lines %d (%d dropped)\n",
		s.Requests, s.Calls, s.CallSeconds, s.Faults, s.LogLines, s.DroppedLogLines)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tKIND\tBYTES\tUPLOADED\tSHA256")
	for _, v := range st.Versions {
		mark := ""
		if v.Version == st.Active {
			mark = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%d\t%s\t%s\n", oneLine(v.Version), mark, v.Kind, v.Bytes, v.Uploaded.UTC().Format(time.RFC3339), v.Digest)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range st.Faults {
		fmt.Fprintf(w, "fault %s %s@%s: %s\n", f.Time.UTC().Format(time.RFC3339), f.Kind, oneLine(f.Version), oneLine(f.Message))
	}
	for _, l := range st.Logs {
		fmt.Fprintf(w, "log %s %s %s: %s\n", l.Time.UTC().Format(time.RFC3339), strings.ToLower(l.Level), l.Stream, oneLine(l.Text))
	}
	return nil
}
