package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/plugins/abi"
)

// pluginCacheEnv names the plugin compilation cache directory when
// --cache-dir is not given.
const pluginCacheEnv = envPrefix + "_PLUGIN_CACHE_DIR"

func newPluginCmd(a *app) *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:     "plugin",
		Short:   "Build, inspect and run WebAssembly plugins",
		GroupID: "plugin",
		Long: `A plugin is a WebAssembly module that speaks batpak's plugin ABI v1
(package plugins/abi): a projection plugin folds an entity's events into
state, a handler plugin answers a cursor worker's batches. Go plugins
import sdk/guest; see sdk/guest/README.md, "Write your first plugin".

  plugin build DIR      compiles the Go plugin in DIR to DIR/<name>.wasm
  plugin inspect FILE   lists a module's exports and imports, its ABI
                        version, and whether the plugin host loads it
  plugin project        folds one entity's events through a projection
                        plugin and prints the state

Against a server (--server, --token, --tenant):

  plugin push FILE.wasm --manifest M.json (or DIR)
                        uploads a plugin version (admin key)
  plugin list, plugin status NAME
                        the tenant's plugins; versions, faults, logs
  plugin swap NAME VERSION, plugin reset NAME, plugin delete NAME

inspect and project compile modules with wazero and keep the compiled code
in a cache directory, so the second run of a plugin starts in milliseconds
instead of about a second: --cache-dir, else $` + pluginCacheEnv + `, else
$XDG_CACHE_HOME/batpak/wazero (~/.cache/batpak/wazero on Linux,
~/Library/Caches/batpak/wazero on macOS). "none" keeps it in memory. The
cache lives outside the store: project opens the store read-only and
changes nothing in data_dir.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	cmd.PersistentFlags().StringVar(&cacheDir, "cache-dir", "", `compiled-module cache for inspect and project ("none": in memory); env `+pluginCacheEnv+`; default $XDG_CACHE_HOME/batpak/wazero`)
	cmd.AddCommand(newPluginBuildCmd(a), newPluginInspectCmd(a, &cacheDir), newPluginProjectCmd(a, &cacheDir))
	cmd.AddCommand(serverOnlyHelp(newPluginRemoteCmds(a))...)
	return cmd
}

// pluginCacheDir resolves the compilation cache directory: the flag, then
// the environment, then the user cache directory; "" means in memory.
func pluginCacheDir(flag string) string {
	dir := flag
	if dir == "" {
		dir = os.Getenv(pluginCacheEnv)
	}
	switch {
	case dir == "none":
		return ""
	case dir != "":
		if d, err := expandHome(dir); err == nil {
			return d
		}
		return dir
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "" // no home: compile in memory
	}
	return filepath.Join(base, "batpak", "wazero")
}

// newPluginHost returns a plugin host on the cache directory whose plugin
// log lines go to stderr.
func (a *app) newPluginHost(cacheFlag string) (*plugins.Host, error) {
	dir := pluginCacheDir(cacheFlag)
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("plugin cache directory: %w", err)
		}
	}
	h, err := plugins.NewHost(plugins.HostOptions{CacheDir: dir, Logger: a.logger()})
	if err != nil {
		return nil, fmt.Errorf("plugin cache directory %s: %w", dir, unprefixed(err))
	}
	return h, nil
}

// ---- build ----

// goBuildFlags are the flags plugin build passes to go build.
var goBuildFlags = []string{"-buildmode=c-shared", "-trimpath"}

func newPluginBuildCmd(a *app) *cobra.Command {
	var out, oldOut string
	cmd := &cobra.Command{
		Use:   "build DIR [-o OUT.wasm]",
		Short: "Compile a Go plugin to WebAssembly",
		Long: `Compile the Go plugin whose main package is in DIR:

  GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o OUT .

run in DIR, so DIR may belong to this module or to one of its own. OUT
defaults to DIR/<base name of DIR>.wasm. go build's messages pass
through; then the module's size and SHA-256 (the digest a manifest's
sha256 field pins; -trimpath makes it the same on every machine with the
same Go version and sources). Needs the go command (the Go version go.mod names, 1.26, or later).`,
		Example: `  batpak plugin build examples/plugins/counter
  batpak plugin build ./myplugin --out myplugin.wasm`,
		Args: exactArgs("DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("output") {
				if cmd.Flags().Changed("out") {
					return usagef("--out and -o/--output (its deprecated spelling) exclude each other")
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "batpak: warning: plugin build -o/--output is deprecated: use --out %s\n", oldOut)
				out = oldOut
			}
			return a.runPluginBuild(cmd.Context(), cmd.OutOrStdout(), args[0], out)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the .wasm file to write (default DIR/<base name of DIR>.wasm)")
	cmd.Flags().StringVarP(&oldOut, "output", "o", "", "deprecated spelling of --out")
	_ = cmd.Flags().MarkHidden("output")
	return cmd
}

func (a *app) runPluginBuild(ctx context.Context, w io.Writer, dir, out string) error {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return badInput("DIR", err)
	case !st.IsDir():
		return badInput("DIR", fmt.Errorf("%s is not a directory (give the directory of the plugin's main package)", dir))
	}
	if !hasGoSource(dir) {
		return badInput("DIR", fmt.Errorf("%s holds no .go files: plugin build builds plugins written in Go; build one in another language with its own toolchain (the C example: examples/plugins/c-counter/build.sh) and give the .wasm to plugin inspect, plugin project or plugin push", dir))
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if out == "" {
		out = filepath.Join(dir, filepath.Base(absDir)+".wasm")
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return errors.New("plugin build needs the go command (Go 1.26 or later, as go.mod says), and it is not on PATH; install Go from https://go.dev/dl/ or build by hand: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o OUT.wasm DIR")
	}
	args := append(append([]string{"build"}, goBuildFlags...), "-o", absOut, ".")
	c := exec.CommandContext(ctx, goBin, args...)
	c.Dir = absDir
	c.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	c.Stdout, c.Stderr = a.stderr, a.stderr
	start := time.Now()
	if err := c.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("go build of %s failed (%v); its messages are above. The plugin's main package needs //go:build wasip1 or no build constraint, a func main() {}, and must import sdk/guest (or export the ABI functions itself)", dir, err)
	}
	wasm, err := os.ReadFile(absOut)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "built   %s (%s, %d bytes) in %v\n", out, humanBytes(int64(len(wasm))), len(wasm), time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(w, "sha256  %s\n", plugins.Digest(wasm))
	return nil
}

// ---- inspect ----

type wasmFunc struct {
	Module  string   `json:"module,omitempty"` // imports only
	Name    string   `json:"name"`
	Kind    string   `json:"kind"` // function or memory
	Params  []string `json:"params,omitempty"`
	Results []string `json:"results,omitempty"`
}

func (f wasmFunc) signature() string {
	if f.Kind != "function" {
		return f.Kind
	}
	s := "(" + strings.Join(f.Params, ", ") + ")"
	if len(f.Results) > 0 {
		s += " -> " + strings.Join(f.Results, ", ")
	}
	return s
}

type memoryInfo struct {
	MinPages uint32  `json:"min_pages"`
	MaxPages *uint32 `json:"max_pages"`
}

type inspectReport struct {
	File       string      `json:"file"`
	Size       int         `json:"size"`
	SHA256     string      `json:"sha256"`
	ABIVersion *int32      `json:"abi_version"` // nil: could not be called
	ABIError   string      `json:"abi_error,omitempty"`
	Kinds      []string    `json:"kinds"` // what the exports allow: projection, handler
	Loads      bool        `json:"loads"`
	LoadError  string      `json:"load_error,omitempty"`
	Manifest   string      `json:"manifest"` // the manifest the load check used
	Memory     *memoryInfo `json:"memory"`
	Exports    []wasmFunc  `json:"exports"`
	Imports    []wasmFunc  `json:"imports"`
}

func newPluginInspectCmd(a *app, cacheDir *string) *cobra.Command {
	var out outputFlags
	var manifest string
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a module's exports, imports, ABI version and whether it loads",
		Long: `Show what a WebAssembly module offers the plugin host: size and SHA-256,
the ABI version its batpak_abi_version export returns, the plugin kinds
its exports allow (batpak_fold: projection, batpak_handle: handler; a Go
guest exports both, and its manifest says which it is),
its linear memory, its exported and imported functions with their
signatures — and whether the plugin host (package plugins) loads it:
ABI version, required exports, WASI-only imports, _initialize, memory
limit and, with --manifest, the manifest's sha256 pin and limits.

The exit code is 1 when the host refuses the module; the report is
printed either way. The ABI version is read by instantiating the module
in a sandbox (no files, network or environment) and calling
batpak_abi_version, after _initialize for a Go guest.`,
		Example: `  batpak plugin inspect examples/plugins/counter/counter.wasm
  batpak plugin inspect order-total.wasm --manifest examples/plugins/order-total/manifest.json --json`,
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := out.format()
			if err != nil {
				return err
			}
			return a.runPluginInspect(cmd.Context(), cmd.OutOrStdout(), args[0], manifest, *cacheDir, format)
		},
	}
	cmd.Flags().StringVar(&manifest, "manifest", "", "check loading with this manifest (default: one named after FILE, of the kind the exports say)")
	out.register(cmd)
	return cmd
}

func (a *app) runPluginInspect(ctx context.Context, w io.Writer, file, manifestFile, cacheFlag string, format string) error {
	wasm, err := readWasm(file)
	if err != nil {
		return err
	}
	rep := inspectReport{File: file, Size: len(wasm), SHA256: plugins.Digest(wasm), Exports: []wasmFunc{}, Imports: []wasmFunc{}}

	// The module's shape, and its ABI version as it answers itself.
	ins, err := plugins.Inspect(ctx, wasm)
	if err != nil {
		return fmt.Errorf("%s is %v", file, unprefixed(err))
	}
	for _, e := range ins.Exports {
		rep.Exports = append(rep.Exports, wasmItem(e))
	}
	for _, i := range ins.Imports {
		rep.Imports = append(rep.Imports, wasmItem(i))
	}
	if m := ins.Memory; m != nil {
		rep.Memory = &memoryInfo{MinPages: m.MinPages, MaxPages: m.MaxPages}
	}
	rep.Kinds = []string{}
	for _, k := range ins.Kinds {
		rep.Kinds = append(rep.Kinds, string(k))
	}
	kind := plugins.KindProjection
	if len(ins.Kinds) == 1 && ins.Kinds[0] == plugins.KindHandler {
		kind = plugins.KindHandler
	}
	if ins.ABIError != nil {
		rep.ABIError = ins.ABIError.Error()
	} else {
		v := ins.ABIVersion
		rep.ABIVersion = &v
	}

	// The verdict: does the plugin host load it?
	m := defaultManifest(file, kind)
	rep.Manifest = "default (name " + m.Name + ", kind " + string(m.Kind) + ")"
	if manifestFile != "" {
		if m, err = plugins.LoadManifest(manifestFile); err != nil {
			return badInput("--manifest", err)
		}
		rep.Manifest = manifestFile
	}
	h, err := a.newPluginHost(cacheFlag)
	if err != nil {
		return err
	}
	defer h.Close(context.Background())
	if _, err := h.Load(ctx, wasm, m); err != nil {
		rep.LoadError = strings.TrimPrefix(err.Error(), "batpak: ")
	} else {
		rep.Loads = true
	}

	if format != formatTable {
		if err := emit(w, format, rep, nil); err != nil {
			return err
		}
	} else if err := printInspect(w, &rep); err != nil {
		return err
	}
	if !rep.Loads {
		return &exitCodeError{code: exitError}
	}
	return nil
}

func printInspect(w io.Writer, rep *inspectReport) error {
	var b bytes.Buffer
	// Names and messages come from the module: print them escaped.
	row := func(k, v string) { fmt.Fprintf(&b, "%-12s %s\n", k, printable.String(v)) }
	row("file", rep.File)
	row("size", fmt.Sprintf("%s (%d bytes)", humanBytes(int64(rep.Size)), rep.Size))
	row("sha256", rep.SHA256)
	if rep.ABIVersion != nil {
		note := ""
		if *rep.ABIVersion != abi.Version {
			note = fmt.Sprintf(" (this host speaks version %d)", abi.Version)
		}
		row("abi version", fmt.Sprintf("%d%s", *rep.ABIVersion, note))
	} else {
		row("abi version", "unknown: "+rep.ABIError)
	}
	switch len(rep.Kinds) {
	case 0:
		row("kind", fmt.Sprintf("none (exports neither %s nor %s)", abi.ExportFold, abi.ExportHandle))
	case 1:
		row("kind", rep.Kinds[0])
	default:
		row("kind", "projection or handler (exports both; the manifest says which — a Go guest built on sdk/guest always exports both)")
	}
	if rep.Memory != nil {
		mem := fmt.Sprintf("%d pages (%s) initial", rep.Memory.MinPages, humanBytes(int64(rep.Memory.MinPages)*65536))
		if rep.Memory.MaxPages != nil {
			mem += fmt.Sprintf(", at most %d", *rep.Memory.MaxPages)
		}
		row("memory", mem)
	} else {
		row("memory", "none")
	}
	if rep.Loads {
		row("loads", "yes, with manifest "+rep.Manifest)
	} else {
		row("loads", "NO, with manifest "+rep.Manifest+": "+rep.LoadError)
	}
	table := func(title string, fs []wasmFunc) {
		fmt.Fprintf(&b, "%s (%d)\n", title, len(fs))
		qualified := func(f wasmFunc) string {
			if f.Module != "" {
				return printable.String(f.Module + "." + f.Name)
			}
			return printable.String(f.Name)
		}
		width := 0
		for _, f := range fs {
			width = max(width, len(qualified(f)))
		}
		for _, f := range fs {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, qualified(f), f.signature())
		}
	}
	table("exports", rep.Exports)
	table("imports", rep.Imports)
	_, err := w.Write(b.Bytes())
	return err
}

func wasmItem(it plugins.ModuleItem) wasmFunc {
	return wasmFunc{Module: it.Module, Name: it.Name, Kind: it.Kind, Params: it.Params, Results: it.Results}
}

// ---- project ----

func newPluginProjectCmd(a *app, cacheDir *string) *cobra.Command {
	var (
		file, manifestFile, entity string
		kinds                      []string
		out                        outputFlags
	)
	cmd := &cobra.Command{
		Use:   "project --plugin FILE --entity E [--manifest FILE] [--kinds K,...] [--json]",
		Short: "Fold an entity's events through a projection plugin",
		Long: `Load the projection plugin FILE, open the store read-only and fold the
visible events of entity E through it (core.Project over
plugins.Projection: up to ` + strconv.Itoa(core.ProjectBatchSize) + ` events, core.ProjectBatchSize, per call
into the sandbox), then print the state, whether the entity had events of the folded kinds
(found) and the entity's generation (one past the global sequence of its
latest event; 0 when it has none).

The state is printed as JSON when it is JSON; otherwise as hex, and an
8-byte state also as a little-endian unsigned integer (the counter
example's state). --kinds folds only the listed kinds (CAT:TYPE, comma-
separated); by default the plugin sees every event of the entity.

Without --manifest the plugin is loaded as a projection named after FILE
(counter.wasm: "counter") with version 0.0.0 and default limits (32 MiB
of memory, 1 s per call). Compiled code is cached (see batpak plugin
--help).`,
		Example: `  batpak demo
  batpak plugin build examples/plugins/counter
  batpak plugin project --plugin examples/plugins/counter/counter.wasm --entity order:1
  batpak plugin project --plugin order-total.wasm --manifest examples/plugins/order-total/manifest.json --entity order:1 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "plugin", "entity"); err != nil {
				return err
			}
			var only []core.Kind
			for _, ks := range kinds {
				k, err := core.ParseKind(ks)
				if err != nil {
					return badInput("--kinds", err)
				}
				only = append(only, k)
			}
			format, err := out.format()
			if err != nil {
				return err
			}
			return a.runPluginProject(cmd.Context(), cmd.OutOrStdout(), file, manifestFile, entity, only, *cacheDir, format)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "plugin", "", "the plugin's .wasm file (required)")
	f.StringVar(&manifestFile, "manifest", "", "the plugin's manifest.json (default: a projection named after FILE)")
	f.StringVar(&entity, "entity", "", "the entity to project (required)")
	f.StringSliceVar(&kinds, "kinds", nil, "fold only these kinds, e.g. 1:1,1:3 (default: all)")
	out.register(cmd)
	completeRegionFlags(a, cmd)
	return cmd
}

type projectResult struct {
	Plugin      string          `json:"plugin"`
	Version     string          `json:"version"`
	SHA256      string          `json:"sha256"`
	Entity      string          `json:"entity"`
	Found       bool            `json:"found"`
	Generation  uint64          `json:"generation"`
	StateBytes  int             `json:"state_bytes"`
	State       json.RawMessage `json:"state,omitempty"`        // when the state is JSON
	StateHex    *string         `json:"state_hex,omitempty"`    // otherwise
	StateUint64 *uint64         `json:"state_uint64,omitempty"` // an 8-byte state
}

func (a *app) runPluginProject(ctx context.Context, w io.Writer, file, manifestFile, entity string, only []core.Kind, cacheFlag string, format string) (err error) {
	wasm, err := readWasm(file)
	if err != nil {
		return badInput("--plugin", err)
	}
	m := defaultManifest(file, plugins.KindProjection)
	if manifestFile != "" {
		if m, err = plugins.LoadManifest(manifestFile); err != nil {
			return badInput("--manifest", err)
		}
		if m.Kind != plugins.KindProjection {
			return badInput("--manifest", fmt.Errorf("%s describes a %s plugin; plugin project runs projection plugins", manifestFile, m.Kind))
		}
	}
	// Open the store first: a missing store is the likelier mistake and
	// costs nothing to find.
	s, _, err := a.openRead()
	if err != nil {
		return err
	}
	defer closeStore(s, &err)
	h, err := a.newPluginHost(cacheFlag)
	if err != nil {
		return err
	}
	defer h.Close(context.Background())
	t0 := time.Now()
	p, err := h.Load(ctx, wasm, m)
	if err != nil {
		return fmt.Errorf("loading %s: %w", file, unprefixed(err))
	}
	loaded := time.Since(t0)
	t1 := time.Now()
	state, found, err := core.Project(s, entity, plugins.Projection{P: p, Ctx: ctx, Only: only}, core.Consistent())
	if err != nil {
		return fmt.Errorf("projecting %s: %w", entity, unprefixed(err))
	}
	folded := time.Since(t1)
	pm := p.Manifest()
	res := projectResult{
		Plugin: pm.Name, Version: pm.Version, SHA256: p.Digest(),
		Entity: entity, Found: found, Generation: s.EntityGeneration(entity), StateBytes: len(state),
	}
	switch {
	case len(state) > 0 && json.Valid(state):
		res.State = json.RawMessage(state)
	case len(state) > 0:
		hx := hex.EncodeToString(state)
		res.StateHex = &hx
		if len(state) == 8 {
			v := binary.LittleEndian.Uint64(state)
			res.StateUint64 = &v
		}
	}
	if format != formatTable {
		return emit(w, format, res, nil)
	}
	var b bytes.Buffer
	// What the plugin returned is printed escaped, line by line (a
	// pretty-printed state has lines of its own).
	row := func(k, v string) {
		lines := strings.Split(v, "\n")
		for i, l := range lines {
			lines[i] = printable.String(l)
		}
		fmt.Fprintf(&b, "%-11s %s\n", k, strings.Join(lines, "\n"))
	}
	row("plugin", fmt.Sprintf("%s %s (sha256 %s…; loaded in %v, folded in %v)", res.Plugin, res.Version, res.SHA256[:12],
		loaded.Round(time.Millisecond), folded.Round(10*time.Microsecond)))
	row("entity", entity)
	row("found", fmt.Sprint(found))
	row("generation", fmt.Sprint(res.Generation))
	switch {
	case res.State != nil:
		var pretty bytes.Buffer
		if len(state) > 72 && json.Indent(&pretty, state, "            ", "  ") == nil {
			row("state", pretty.String())
		} else {
			var c bytes.Buffer
			_ = json.Compact(&c, state)
			row("state", c.String())
		}
	case res.StateUint64 != nil:
		row("state", fmt.Sprintf("%s (8 bytes; as a little-endian uint64: %d)", *res.StateHex, *res.StateUint64))
	case res.StateHex != nil:
		row("state", fmt.Sprintf("%s (%d bytes)", *res.StateHex, len(state)))
	default:
		row("state", "(empty)")
	}
	_, err = w.Write(b.Bytes())
	return err
}

// ---- shared ----

// readWasm reads a module file, refusing a directory or a file that is
// plainly not WebAssembly with a hint.
func readWasm(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s does not exist (build a Go plugin with: batpak plugin build DIR)", file)
	case err != nil:
		return nil, err
	case len(b) < 8 || !bytes.Equal(b[:4], []byte("\x00asm")):
		return nil, fmt.Errorf("%s is not a WebAssembly module (no \\0asm header)", file)
	}
	return b, nil
}

var unsafeNameChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// defaultManifest names a plugin after its file: "Order Total.wasm" is
// "order-total", version 0.0.0, default limits.
func defaultManifest(file string, kind plugins.Kind) plugins.Manifest {
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	name := strings.Trim(unsafeNameChars.ReplaceAllString(strings.ToLower(base), "-"), "-._")
	if len(name) > 64 {
		name = name[:64]
	}
	if name == "" {
		name = "plugin"
	}
	return plugins.Manifest{Name: name, Version: "0.0.0", Kind: kind}
}

// hasGoSource reports whether dir holds a .go file that is not a test.
func hasGoSource(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}
