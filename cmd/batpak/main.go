package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/plugincompiler"
	"github.com/batpak-go/batpak/server/tenantpolicy"
)

func main() {
	// A child the server started to compile a tenant's plugin module, or
	// to check and evaluate tenants' policy bundles, does so and exits
	// here (see server/plugincompiler, server/tenantpolicy).
	plugincompiler.RunChild()
	tenantpolicy.RunChild()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default behaviour: a second
		// Ctrl-C ends the process even inside a long, uninterruptible read.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code (the
// table in exitcode.go). Errors are printed to stderr as one "batpak: ..."
// line; a mistake in how the command was called (unknown verb or flag,
// missing or extra arguments) adds one line pointing to the command's
// --help, and a damaged segment one line on rescuing the store (see
// damageHint).
//
// Everything a verb prints on stdout goes through a termSafeWriter: no
// stored or server-sent text reaches the terminal as a control sequence.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	safe := newTermSafeWriter(stdout)
	defer func() { _ = safe.Flush() }()
	root, a := newRootCmd(safe, stderr)
	root.SetIn(stdin)
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ec *exitCodeError
	if errors.As(err, &ec) {
		return ec.code // the command has said everything already
	}
	if ctx.Err() != nil {
		if err == ctx.Err() {
			fmt.Fprintln(stderr, "batpak: interrupted")
		} else {
			fmt.Fprintln(stderr, errorLine(err))
		}
		return exitInterrupted
	}
	if msg, ok := cobraUsageMessage(err); ok {
		err = &usageError{errors.New(msg)}
	}
	var ce *client.Error
	if a.noToken && errors.As(err, &ce) && ce.Status == 401 {
		err = fmt.Errorf("%w (no token was given: --token, --token-file, BATPAK_TOKEN, BATPAK_TOKEN_FILE, remote.token or remote.token_file)", err)
	}
	err = flagWords(err)
	fmt.Fprintln(stderr, errorLine(err))
	if hint := damageHint(err); hint != "" {
		fmt.Fprintln(stderr, printable.String(hint))
	}
	code := exitCodeOf(err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// cobraUsageMessage recognizes the usage errors cobra itself returns
// (unknown command, an Args check of its own) and renders them on one
// line: cobra's "Did you mean this?" block becomes "(did you mean X?)".
func cobraUsageMessage(err error) (string, bool) {
	var ue *usageError
	if errors.As(err, &ue) {
		return "", false
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "unknown command"),
		strings.HasPrefix(msg, "accepts "), strings.HasPrefix(msg, "requires at least"),
		strings.HasPrefix(msg, "invalid argument"), strings.HasPrefix(msg, "unknown flag"):
	default:
		return "", false
	}
	first, rest, _ := strings.Cut(msg, "\n")
	var sugg []string
	for _, l := range strings.Split(rest, "\n") {
		if strings.HasPrefix(l, "\t") {
			sugg = append(sugg, strings.TrimSpace(l))
		}
	}
	if len(sugg) > 0 {
		first += " (did you mean " + strings.Join(sugg, " or ") + "?)"
	}
	return first, true
}

// errorLine renders err with exactly one "batpak: " prefix (core's errors
// carry one already), on one line: control characters, line breaks
// included, are escaped (an error can carry a plugin's or a module's
// text). The one exception is an error the CLI laid out in lines itself (a
// *linesError, e.g. a policy denial with one reason a line, whose text is
// escaped where it is added): its line breaks are kept.
func errorLine(err error) string {
	var msg string
	var le *linesError
	if errors.As(err, &le) {
		lines := strings.Split(err.Error(), "\n")
		for i, l := range lines {
			lines[i] = printable.String(l)
		}
		msg = strings.Join(lines, "\n")
	} else {
		msg = printable.String(err.Error())
	}
	if strings.HasPrefix(msg, "batpak: ") {
		return msg
	}
	return "batpak: " + msg
}

// app is the state shared by the commands of one root command: output
// streams, the viper instance and the config resolved from it.
type app struct {
	stdout, stderr io.Writer
	v              *viper.Viper
	flags          *pflag.FlagSet // the root's persistent flags
	configFlag     string         // --config
	configFile     string         // the config file read, if any
	skippedConfig  string         // a ./config.yaml not read: it does not say it is batpak's
	noToken        bool           // a server was named and no token given (see remote)
	res            *resolved      // set by loadConfig
	log            logFlags       // --log-level, --log-format
	// minSeq is the --min-seq of the read command that runs; minSeqSet
	// says it was given (an empty value given is a usage error).
	minSeq    string
	minSeqSet bool
}

// newRootCmd builds the whole command tree. It uses no globals (its own
// viper instance), so tests can build and run as many as they like.
func newRootCmd(stdout, stderr io.Writer) (*cobra.Command, *app) {
	a := &app{stdout: stdout, stderr: stderr, v: viper.New()}
	root := &cobra.Command{
		Use:   "batpak",
		Short: "An embedded event store with causal metadata",
		Long: `batpak works on an event store in a local directory (--data-dir, default
./batpak-data): append events, read them back by id, entity, scope, kind or
clock, walk causation, verify the hash chains.

Configuration, highest precedence first: flags, BATPAK_* environment
variables (BATPAK_DATA_DIR, BATPAK_SYNC_EVERY_N_EVENTS, ...), the config
file, built-in defaults. The config file is --config FILE, else
$BATPAK_CONFIG, else the first present of ./batpak.yaml, ./config.yaml
(only when its first line begins "# batpak configuration", as this
repository's does: another tool's config.yaml is never read) and
$XDG_CONFIG_HOME/batpak/config.yaml (~/.config/batpak/config.yaml). "batpak
config" shows the file, the effective values and their sources.

Read commands (get, query, ancestors, descendants, correlation, verify,
stats, export, cursor ls/info) open the store read-only and work beside a
running writer; write commands (append, demo, import, redact, compact,
seal, snapshot) take the store's lock. With policy.dir set
(--policy-dir), every write is judged by that Rego policy first, as the
principal --principal-id, --tenant, --roles; "batpak policy" tests and
evaluates policies.

With --server URL and --token (BATPAK_SERVER, BATPAK_TOKEN), append, get,
query, ancestors, descendants, correlation, stats, verify, export, import
and cursor work on the tenant --tenant (BATPAK_TENANT) of a running
"batpak serve" instead; "batpak tenant" and "batpak key" administer that
server, "batpak policy", "plugin" and "worker" manage the tenant's own
policies, plugins and workers there.

Data verbs print a table, or -o json (--json) / -o yaml. Exit codes: 0 ok,
1 error, 2 usage, 3 denied, 4 conflict, 5 not found, 6 locked, 7 corrupt,
8 unavailable, 130 interrupted.`,
		Example: `  batpak demo
  batpak query --entity-prefix order: -o json
  batpak append --entity order:42 --scope shop --kind 1:1 --data '{"total_cents":998}'
  batpak get 0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e`,
		SilenceUsage:  true, // runtime errors are not usage errors; run decides
		SilenceErrors: true, // run prints errors
		Version:       readVersion().String(),
	}
	root.SetVersionTemplate("batpak {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &usageError{suggestFlag(cmd, err)} })
	a.flags = root.PersistentFlags()
	registerConfigFlags(a.flags, a.v, &a.configFlag)
	registerRemoteFlags(a.flags, a.v)
	a.log.register(root)

	root.AddGroup(
		&cobra.Group{ID: "write", Title: "Write commands:"},
		&cobra.Group{ID: "read", Title: "Read commands:"},
		&cobra.Group{ID: "inspect", Title: "Inspect commands:"},
		&cobra.Group{ID: "policy", Title: "Policy commands:"},
		&cobra.Group{ID: "maintenance", Title: "Maintenance commands:"},
		&cobra.Group{ID: "plugin", Title: "Plugin commands:"},
		&cobra.Group{ID: "server", Title: "Server commands:"},
		&cobra.Group{ID: "admin", Title: "Server administration commands (need --server):"},
	)
	root.AddCommand(
		newAppendCmd(a), newDemoCmd(a),
		newGetCmd(a), newQueryCmd(a), newAncestorsCmd(a), newDescendantsCmd(a), newCorrelationCmd(a),
		newVerifyCmd(a), newStatsCmd(a), newConfigCmd(a),
		newPolicyCmd(a),
		newExportCmd(a), newImportCmd(a), newSnapshotCmd(a), newRedactCmd(a), newCompactCmd(a), newSealCmd(a),
		newPluginCmd(a),
		newServeCmd(a),
		newTenantCmd(a), newKeyCmd(a), newWorkerCmd(a), newClusterCmd(a),
		newVersionCmd(a), newCursorCmd(a),
	)
	for _, c := range root.Commands() {
		if c.GroupID == "admin" {
			serverOnlyHelp([]*cobra.Command{c})
		}
	}
	root.InitDefaultCompletionCmd() // now, so that it too refuses unknown shells
	refuseUnknownSubcommands(root)
	return root, a
}

// serverOnlyHelp makes the help of commands that work only against a
// server (and of their subcommands) leave out the local store's flags
// (--data-dir, --sync-*, ...), which do nothing there: their global flags
// are then --server, --token, --tenant, --config and the log flags.
func serverOnlyHelp(cmds []*cobra.Command) []*cobra.Command {
	for _, c := range cmds {
		c.SetHelpFunc(func(cmd *cobra.Command, args []string) {
			var hidden []*pflag.Flag
			for _, s := range settings {
				f := cmd.Root().PersistentFlags().Lookup(s.flag)
				if f != nil && !f.Hidden && s.flag != "tenant" {
					f.Hidden = true
					hidden = append(hidden, f)
				}
			}
			defer func() {
				for _, f := range hidden {
					f.Hidden = false
				}
			}()
			cmd.Root().HelpFunc()(cmd, args)
		})
	}
	return cmds
}

// refuseUnknownSubcommands makes every group of verbs (tenant, key,
// cursor, completion, ...) refuse an argument that names none of its
// verbs with a usage error (exit 2), as the root does; cobra would print
// the group's help and exit 0. With no argument a group prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasParent() || !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return cmd.Help()
	}
}

// exitCodeError ends a command with a particular exit code after it has
// printed its result (policy eval: 3 for a denial); run prints nothing.
type exitCodeError struct{ code int }

func (e *exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usageError marks a mistake in how a command was called; run prints the
// command's usage after the message.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// inputError names the flag or argument whose value was refused, e.g.
// "--kind: invalid event kind 0x0:0x1: category 0x0 is reserved ...". It
// keeps the cause for errors.Is/As.
type inputError struct {
	what string
	err  error
}

func (e *inputError) Error() string {
	return e.what + ": " + strings.TrimPrefix(e.err.Error(), "batpak: ")
}
func (e *inputError) Unwrap() error { return e.err }

func badInput(what string, err error) error { return &inputError{what: what, err: err} }

// detailError replaces an error's message with a more specific one and
// keeps the cause for errors.Is/As.
type detailError struct {
	msg string
	err error
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.err }

// linesError is a detailError whose message the CLI laid out in several
// lines, every untrusted part of them already escaped (see errorLine).
type linesError struct{ detailError }

// noArgs refuses positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// exactArgs wants exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usagef("%s needs %s", cmd.CommandPath(), strings.Join(names[len(args):], " "))
		case len(args) > len(names):
			return usagef("%s takes %d argument(s) (%s), got %d: %q", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args), args)
		}
		return nil
	}
}

// requireFlags returns a usage error naming every listed flag that was not
// given. (cobra's MarkFlagRequired errors could not be told apart from
// runtime errors.)
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			missing = append(missing, "--"+n)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return usagef("missing required flag %s", missing[0])
	}
	return usagef("missing required flags %s", strings.Join(missing, ", "))
}
