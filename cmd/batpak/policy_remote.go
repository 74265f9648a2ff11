package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/policy/opa"
	"github.com/batpak-go/batpak/sdk/client"
)

// newPolicyRemoteCmds are the policy verbs that work on a tenant's own
// policy bundle on a server: push, list, rollback and decisions.
func newPolicyRemoteCmds(a *app) []*cobra.Command {
	return []*cobra.Command{newPolicyPushCmd(a), newPolicyListCmd(a), newPolicyRollbackCmd(a), newPolicyDecisionsCmd(a)}
}

// remoteTenant is a tenant on a server a remote policy verb works on.
type remoteTenant struct {
	*client.Tenant
	id string
}

// ID is the tenant's id.
func (t remoteTenant) ID() string { return t.id }

// policyTenant is the tenant a remote policy verb works on.
func (a *app) policyTenant(verb string) (remoteTenant, error) {
	rc, err := a.needServer("policy " + verb)
	if err != nil {
		return remoteTenant{}, err
	}
	tc, err := rc.tenantClient()
	return remoteTenant{tc, rc.tenant}, err
}

// bundleFile says whether a file of this name goes into a bundle, as the
// server's upload checks allow: .rego and .json files and the .manifest.
func bundleFile(name string) bool {
	return strings.HasSuffix(name, ".rego") || strings.HasSuffix(name, ".json") || name == ".manifest"
}

// yamlDataFile says whether a file of this name is a bundle's data as
// YAML, which the bundle loader reads beside data.json.
func yamlDataFile(name string) bool { return name == "data.yaml" || name == "data.yml" }

// loadedOnly says whether the bundle loader reads a file of this name
// that a bundle on a server cannot hold (its upload takes .rego, .json
// and .manifest files): a Wasm module, a binary plan or manifest, a
// manifest named otherwise than .manifest (the loader takes any name
// ending so).
func loadedOnly(name string) bool {
	return name == "policy.wasm" || name == "plan.pb" || strings.HasSuffix(name, ".manifest.pb") ||
		(strings.HasSuffix(name, ".manifest") && name != ".manifest")
}

// loaderReads says whether the bundle loader reads a file of this name
// (policy eval, policy test and the write gate load a directory so):
// modules, data, the manifest, patches, plans and Wasm modules.
func loaderReads(name string) bool {
	return strings.HasSuffix(name, ".rego") || name == "data.json" || yamlDataFile(name) || name == ".manifest" ||
		name == "patch.json" || name == "plan.json" || loadedOnly(name)
}

// packError refuses to pack a directory whose bundle would behave on the
// server otherwise than it does loaded locally (exit 2: nothing was sent).
func packError(format string, args ...any) error {
	return withExitCode(exitUsage, fmt.Errorf(format, args...))
}

// packBundle makes a policy bundle (gzip-compressed tar) of dir's .rego,
// .json and .manifest files, in name order with fixed times and modes,
// so that the same files make the same bytes and so the same revision.
// A data.yaml or data.yml becomes data.json in its directory (read as the
// bundle loader reads it), so the server's bundle holds the data the
// local one does. It refuses (naming the files) a directory holding both
// data.json and data.yaml/data.yml, YAML that is not JSON data, and any
// other file the loader reads that a server's bundle cannot hold (a Wasm
// module, a binary plan or manifest, one under a directory whose name
// starts with ".", which is left out). It returns the names of the other
// files it left out.
func packBundle(dir string) ([]byte, []string, error) {
	var names, skipped []string
	yamls := map[string]string{} // the data.json a YAML data file becomes → that file
	shown := func(rel string) string { return oneLine(filepath.Join(dir, filepath.FromSlash(rel))) }
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return nil
		case hiddenDir(rel):
			// .git and the like are left out, unnamed; what the loader
			// would read there is refused.
			if d.Type().IsRegular() && loaderReads(d.Name()) {
				return packError("%s is in a directory whose name starts with \".\": policy eval, policy test and the write gate read it, but push leaves such directories out; move it or remove it", shown(rel))
			}
		case !d.Type().IsRegular():
			skipped = append(skipped, rel)
		case yamlDataFile(d.Name()):
			js := path.Join(path.Dir(rel), "data.json")
			if other, ok := yamls[js]; ok {
				return packError("%s and %s are both data of one directory: keep one", shown(other), shown(rel))
			}
			yamls[js] = rel
		case loadedOnly(d.Name()):
			return packError("%s is read by the bundle loader, but a bundle on a server holds only .rego, .json and .manifest files: remove it, or push a bundle without it", shown(rel))
		case bundleFile(d.Name()):
			names = append(names, rel)
		default:
			skipped = append(skipped, rel)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	converted := map[string][]byte{}
	for _, js := range slices.Sorted(maps.Keys(yamls)) {
		y := yamls[js]
		if slices.Contains(names, js) {
			return nil, nil, packError("%s and %s are both data of one directory: keep one", shown(js), shown(y))
		}
		b, err := yamlData(filepath.Join(dir, filepath.FromSlash(y)))
		if err != nil {
			return nil, nil, badInput(shown(y), err)
		}
		converted[js] = b
		names = append(names, js)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, n := range names {
		b, ok := converted[n]
		if !ok {
			if b, err = os.ReadFile(filepath.Join(dir, filepath.FromSlash(n))); err != nil {
				return nil, nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: path.Clean(n), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), skipped, nil
}

// hiddenDir says whether the slash-separated relative path rel lies under
// a directory whose name starts with ".".
func hiddenDir(rel string) bool {
	parts := strings.Split(rel, "/")
	for _, part := range parts[:len(parts)-1] {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// yamlData reads a data.yaml (or data.yml) file as the bundle loader does
// and returns the same data as JSON.
func yamlData(name string) ([]byte, error) {
	raw, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	v, err := opa.DataFromYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("does not convert to JSON data: %s", oneLine(err.Error()))
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("does not convert to JSON data: %v", err)
	}
	return b.Bytes(), nil
}

// bundleError renders a refused upload: the server's line and, for a
// bundle that does not compile or fails its tests, one error a line.
func bundleError(err error) error {
	var e *client.Error
	if errors.As(err, &e) && errors.Is(err, client.ErrBundleRejected) {
		stage, errs := e.BundleErrors()
		var b strings.Builder
		fmt.Fprintf(&b, "server refused the policy bundle: it %s (%s, HTTP %d); the active revision stays",
			map[string]string{"tests": "fails its tests", "compile": "does not compile"}[stage], e.Code, e.Status)
		for _, l := range errs {
			b.WriteString("\n  " + strings.ReplaceAll(l, "\n", " "))
		}
		return &linesError{detailError{msg: b.String(), err: err}}
	}
	if errors.As(err, &e) && errors.Is(err, client.ErrBundleInvalid) && e.Entry() != "" {
		return &detailError{msg: fmt.Sprintf("server refused the policy bundle: entry %q: %s (%s, HTTP %d)", e.Entry(), e.Detail, e.Code, e.Status), err: err}
	}
	return remoteError(err)
}

func newPolicyPushCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:   "push DIR|BUNDLE.tar.gz",
		Short: "Upload a policy bundle as the tenant's own policy on --server (admin key)",
		Long: `Upload a policy bundle to the tenant --tenant on --server (with an admin key
of that tenant, or the operator credential, as --token). A directory is
packed first: its .rego, .json and .manifest files (directories whose name
starts with "." left out; other files are named on stderr and left out),
in name order with fixed times, so the same files are the same revision.
A data.yaml or data.yml is sent as the data.json of its directory, read as
policy eval and policy test read it, so the server decides as they do.
Refused before anything is sent (exit 2, naming the files): a directory
holding both data.json and data.yaml or data.yml (or both YAML files),
and any other file the local loader reads that a server's bundle cannot
hold (policy.wasm, plan.pb, a .manifest.pb or NAME.manifest, or a .rego or
data file under a directory whose name starts with "."). YAML that does
not convert to JSON data is refused naming the file. A .tar.gz is sent as it is.

The server runs the bundle's Rego tests and compiles it: a bundle that
does not compile or fails a test is refused with its errors (one a line)
and the active revision stays. An accepted bundle becomes the active
revision for the tenant's next write; its revision (the SHA-256 of the
bundle) is printed. Pushing the active bundle again changes nothing.`,
		Example: `  batpak policy push ./policies --server https://batpak.example:8080 --token $KEY --tenant acme
  batpak policy push bundle.tar.gz`,
		Args: exactArgs("DIR|BUNDLE.tar.gz"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			tc, err := a.policyTenant("push")
			if err != nil {
				return err
			}
			src := args[0]
			fi, err := os.Stat(src)
			if err != nil {
				return badInput("DIR|BUNDLE.tar.gz", err)
			}
			var data []byte
			if fi.IsDir() {
				var skipped []string
				if data, skipped, err = packBundle(src); err != nil {
					var ce *codedError
					var ie *inputError
					if errors.As(err, &ce) || errors.As(err, &ie) {
						return err
					}
					return badInput("DIR", err)
				}
				if len(skipped) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "batpak: left out of the bundle (not .rego, .json or .manifest): %s\n", oneLine(strings.Join(skipped, ", ")))
				}
			} else if data, err = os.ReadFile(src); err != nil {
				return badInput("BUNDLE.tar.gz", err)
			}
			tp, err := tc.PushPolicy(cmd.Context(), bytes.NewReader(data))
			if err != nil {
				return bundleError(err)
			}
			return emit(cmd.OutOrStdout(), f, tp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "policy revision %s is active for tenant %s (%s)\n",
					tp.Active, oneLine(tc.ID()), plural(len(data), "byte", "bytes"))
				return err
			})
		},
	}
	out.register(cmd) // json and yaml: the tenant's policy revisions as one object
	return cmd
}

func newPolicyListCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tenant's policy revisions on --server; * marks the active one",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			tc, err := a.policyTenant("list")
			if err != nil {
				return err
			}
			tp, err := tc.Policies(cmd.Context())
			if err != nil {
				return remoteError(err)
			}
			return emit(cmd.OutOrStdout(), f, tp, func(w io.Writer) error { return printPolicyRevisions(w, tp) })
		},
	}
	out.register(cmd) // json and yaml: one object (active, revisions)
	return cmd
}

// printPolicyRevisions is the table of policy list.
func printPolicyRevisions(w io.Writer, tp client.TenantPolicy) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTIVE\tREVISION\tBYTES\tUPLOADED\tBY")
	for _, r := range tp.Revisions {
		mark := ""
		if r.Revision == tp.Active {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", mark, r.Revision, r.Bytes, r.Uploaded.UTC().Format(time.RFC3339), principalID(r.By))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, plural(len(tp.Revisions), "revision", "revisions"))
	return err
}

// principalID is a principal's id, or its JSON when it has none.
func principalID(raw []byte) string {
	var p struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &p) == nil && p.ID != "" {
		return oneLine(p.ID)
	}
	return oneLine(string(raw))
}

// resolveRevision finds the revision rev names: a whole revision or a
// prefix of one (at least 4 hex digits) that only one revision has.
func resolveRevision(tp client.TenantPolicy, rev string) (string, error) {
	if len(rev) < 4 {
		return "", badInput("REVISION", fmt.Errorf("%q is too short: give at least 4 hex digits of a revision policy list shows", rev))
	}
	var found []string
	for _, r := range tp.Revisions {
		if strings.HasPrefix(r.Revision, rev) {
			found = append(found, r.Revision)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", badInput("REVISION", fmt.Errorf("the tenant has no policy revision %s (see policy list)", oneLine(rev)))
	}
	return "", badInput("REVISION", fmt.Errorf("%s names %d revisions: give more of it", oneLine(rev), len(found)))
}

func newPolicyRollbackCmd(a *app) *cobra.Command {
	var out outputFlags
	cmd := &cobra.Command{
		Use:   "rollback [REVISION]",
		Short: "Make an earlier policy revision active again on --server (admin key)",
		Long: `Make an earlier revision of the tenant's policy bundle active again: the one
named (the whole revision or a unique prefix of at least 4 hex digits, as
policy list shows), or without REVISION the one uploaded just before the
active one. Its tests are not run again: they passed at upload.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one argument (REVISION), got %d: %q", cmd.CommandPath(), len(args), args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			tc, err := a.policyTenant("rollback")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			tp, err := tc.Policies(ctx)
			if err != nil {
				return remoteError(err)
			}
			var rev string
			if len(args) == 1 {
				if rev, err = resolveRevision(tp, args[0]); err != nil {
					return err
				}
			} else {
				i := slices.IndexFunc(tp.Revisions, func(r client.PolicyRevision) bool { return r.Revision == tp.Active })
				if i < 1 {
					return fmt.Errorf("tenant %s has no policy revision uploaded before the active one to roll back to; name one (policy list)", oneLine(tc.ID()))
				}
				rev = tp.Revisions[i-1].Revision
			}
			tp, err = tc.RollbackPolicy(ctx, rev)
			if err != nil {
				return remoteError(err)
			}
			return emit(cmd.OutOrStdout(), f, tp, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "policy revision %s is active for tenant %s\n", tp.Active, oneLine(tc.ID()))
				return err
			})
		},
	}
	out.register(cmd) // json and yaml: the tenant's policy revisions as one object
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration back from now
// ("1h", "30m").
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q is negative: want a duration back from now (1h) or an RFC 3339 time", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (1h, 30m) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return t, nil
}

func newPolicyDecisionsCmd(a *app) *cobra.Command {
	var (
		out                 outputFlags
		denied, allowed     bool
		since, revision, id string
		limit               int
	)
	cmd := &cobra.Command{
		Use:   "decisions",
		Short: "Show the tenant's policy decision log on --server, newest first (admin key)",
		Long: `Show the tenant's policy decision log, newest first: every denial of its
writes (by the platform policy or its own bundle), and the allowed writes
its decision_allow_sample setting picks. One line a decision: time,
result, layer, revision (12 digits), action, principal, reason and the
entity; with --json one JSON object a line with everything recorded,
the input fields the policy read included.

The server keeps the log on disk across restarts, the newest
server.policy_decision_log_size decisions within
server.policy_decision_log_bytes.`,
		Example: `  batpak policy decisions --denied --since 1h
  batpak policy decisions --id 5f0c… --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := out.format()
			if err != nil {
				return err
			}
			if denied && allowed {
				return usagef("--denied and --allowed exclude each other (neither: both)")
			}
			if limit < 1 {
				return badInput("--limit", fmt.Errorf("%d: want at least 1", limit))
			}
			q := client.PolicyDecisionQuery{ID: id, Limit: min(limit, 1000)}
			if denied {
				q.Result = "denied"
			}
			if allowed {
				q.Result = "allowed"
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return badInput("--since", err)
				}
				q.Since = t
			}
			tc, err := a.policyTenant("decisions")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if revision != "" {
				tp, err := tc.Policies(ctx)
				if err != nil {
					return remoteError(err)
				}
				if q.Revision, err = resolveRevision(tp, revision); err != nil {
					return badInput("--revision", errors.Unwrap(err))
				}
			}
			var all []client.PolicyDecision
			for len(all) < limit {
				q.Limit = min(limit-len(all), 1000)
				p, err := tc.QueryPolicyDecisions(ctx, q)
				if err != nil {
					return remoteError(err)
				}
				all = append(all, p.Decisions...)
				// An empty page, or a server that hands back the cursor it
				// was given, would be asked again for ever.
				if p.Next == "" || len(p.Decisions) == 0 || p.Next == q.Cursor {
					break
				}
				q.Cursor = p.Next
			}
			return printDecisions(cmd.OutOrStdout(), all, f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&denied, "denied", false, "only denials")
	fl.BoolVar(&allowed, "allowed", false, "only the sampled allowed writes")
	fl.StringVar(&since, "since", "", "only decisions since this time: a duration back from now (1h) or RFC 3339")
	fl.StringVar(&revision, "revision", "", "only decisions of this bundle revision (or a unique prefix)")
	fl.StringVar(&id, "id", "", "only the decision with this id (a denial's decision_id)")
	fl.IntVar(&limit, "limit", 100, "at most this many decisions")
	out.register(cmd)
	return cmd
}

// printDecisions writes decisions in format f: a table, or one JSON object
// a line (YAML: a document each).
func printDecisions(w io.Writer, ds []client.PolicyDecision, f string) error {
	if f != formatTable {
		out := newRecords(w, f)
		for _, d := range ds {
			if err := out.write(d); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tRESULT\tLAYER\tREVISION\tACTION\tPRINCIPAL\tREASON\tENTITY")
	for _, d := range ds {
		rev := d.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev == "" {
			rev = "-"
		}
		reason := "-"
		if len(d.Reasons) > 0 {
			reason = d.Reasons[0].Code
			if len(d.Reasons) > 1 {
				reason += fmt.Sprintf(" (+%d)", len(d.Reasons)-1)
			}
		}
		entity := "-"
		if e, ok := d.Input["event.entity"].(string); ok {
			entity = e
		}
		result := oneLine(d.Result)
		if d.SuppressedBefore > 0 {
			// The principal's decisions the server did not record before
			// this one (its share of the log was used).
			result += fmt.Sprintf(" (+%d suppressed)", d.SuppressedBefore)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Time.UTC().Format(time.RFC3339), result, oneLine(d.Layer), oneLine(rev),
			oneLine(d.Action), principalID(d.Principal), oneLine(reason), oneLine(entity))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, plural(len(ds), "decision", "decisions"))
	return err
}
