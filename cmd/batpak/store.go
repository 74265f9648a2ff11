package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// withReadStore opens the configured store read-only, runs fn on it and
// closes it.
func (a *app) withReadStore(fn func(s *core.Store, res *resolved) error) (err error) {
	s, res, err := a.openRead()
	if err != nil {
		return err
	}
	defer closeStore(s, &err)
	return fn(s, res)
}

// openRead opens the configured store read-only: no lock is taken, so it
// works beside a live writer, and nothing on disk changes. It refuses, with
// a hint, a directory that does not exist or holds no store.
func (a *app) openRead() (*core.Store, *resolved, error) {
	res, err := a.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if err := a.localOnly(); err != nil {
		return nil, nil, err
	}
	dir := res.cfg.Dir
	if err := checkStoreDir(dir); err != nil {
		return nil, nil, err
	}
	s, err := core.OpenReadOnly(res.cfg)
	if err != nil {
		return nil, nil, salvageHint(err)
	}
	return s, res, nil
}

// openWrite opens (creating if needed) the configured store for writing.
// When policy.dir is set, the store's writes are gated by that policy
// (loaded before the store is opened, so a broken policy changes nothing
// on disk), and the returned context carries the configured principal:
// write with it.
func (a *app) openWrite(ctx context.Context) (*core.Store, *resolved, context.Context, error) {
	res, err := a.loadConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	s, ctx, err := a.openWriteAt(ctx, res.cfg.Dir)
	return s, res, ctx, err
}

// openWriteAt is openWrite on the store directory dir with the configured
// settings (compact --dry-run opens a copy this way).
func (a *app) openWriteAt(ctx context.Context, dir string) (*core.Store, context.Context, error) {
	res, err := a.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if err := a.localOnly(); err != nil {
		return nil, nil, err
	}
	cfg := res.cfg
	cfg.Dir = dir
	if res.policyDir != "" {
		gate, err := opa.Load(ctx, res.policyDir, opa.Options{Timeout: res.policyTimeout})
		if err != nil {
			return nil, nil, regoError(fmt.Sprintf("policy.dir %s (from %s)", res.policyDir, res.source("policy.dir")), unprefixed(err))
		}
		cfg.Admission = policy.NewAdmitter(gate)
	}
	s, err := core.Open(cfg)
	if err != nil {
		var le *core.LockedError
		if errors.As(err, &le) {
			return nil, nil, &detailError{msg: err.Error() + " (one writer at a time; read commands work beside it)", err: err}
		}
		return nil, nil, salvageHint(err)
	}
	return s, policy.WithPrincipal(ctx, res.principal), nil
}

// salvageHint names the CLI's way past a log that lost acknowledged
// events: core's message, which names Config.Salvage, becomes one naming
// --salvage instead (one hint, the CLI's).
func salvageHint(err error) error {
	var lt *core.LogTruncatedError
	if !errors.As(err, &lt) {
		return err
	}
	cli := fmt.Sprintf("the log of %s ends at sequence %d but %s records %d: %d acknowledged events are missing; --salvage (salvage: true, BATPAK_SALVAGE) opens it anyway: a read command shows what is left, a write command records the loss first",
		lt.Dir, lt.Found, lt.Evidence, lt.Recorded, lt.Recorded-lt.Found)
	return &detailError{msg: replaceOnce(err.Error(), strings.TrimPrefix(lt.Error(), "batpak: "), cli), err: err}
}

// replaceOnce is s with old replaced by new, or new when s does not hold
// old (then new is the whole message).
func replaceOnce(s, old, new string) string {
	if !strings.Contains(s, old) {
		return new
	}
	return strings.Replace(s, old, new, 1)
}

// flagWords makes a local store's refusal that names a core.Config field
// as the limit it hit — a payload nested too deep (*core.PayloadError),
// a payload or batch too large — name the CLI's flag and config key for
// that limit instead ("(Config.MaxJSONDepth)" becomes
// "(--max-json-depth, max_json_depth)"). Other errors are returned as
// they are.
func flagWords(err error) error {
	var pe *core.PayloadError
	if !errors.As(err, &pe) && !errors.Is(err, core.ErrPayloadTooLarge) && !errors.Is(err, core.ErrBatchTooLarge) {
		return err
	}
	msg := err.Error()
	for _, st := range settings {
		if st.field == "" || st.flag == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, "(Config."+st.field+")", "(--"+st.flag+", "+st.key+")")
	}
	if msg == err.Error() {
		return err
	}
	return &detailError{msg: msg, err: err}
}

// damageHint is the line the CLI prints after an error that names a
// damaged segment or footer (a *core.CorruptionError; the store's other
// files, a cursor's position say, have remedies of their own): how to
// rescue what is readable, and that --salvage, which only opens a log
// shorter than recorded, does not. It is "" for any other error.
func damageHint(err error) string {
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || !(strings.HasSuffix(ce.File, ".seg") || strings.HasSuffix(ce.File, ".idx")) {
		return ""
	}
	return fmt.Sprintf("To rescue what is readable: batpak --data-dir %s export --salvage --out rescued.ndjson, then batpak --data-dir NEW import rescued.ndjson (the global --salvage does not read past a damaged frame: it only opens a log shorter than recorded).",
		shellQuote(filepath.Dir(ce.File)))
}

// unprefixed drops the "batpak: " prefix of an error that is about to be
// wrapped (the CLI adds one prefix to the whole line).
func unprefixed(err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "batpak: "); ok {
		return &detailError{msg: rest, err: err}
	}
	return err
}

// checkStoreDir tells a missing or foreign directory apart from an empty
// store. A store directory holds a LOCK file and "<id>.seg" segment files
// (see the core package documentation).
func checkStoreDir(dir string) error {
	hint := "write something first, e.g. batpak demo --data-dir " + shellQuote(dir)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return withExitCode(exitNotFound, fmt.Errorf("no store at %s; %s", dir, hint))
	case err != nil:
		return fmt.Errorf("store directory: %w", err)
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory (data_dir must name the store directory)", dir)
	}
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist): // removed since the Stat
		return withExitCode(exitNotFound, fmt.Errorf("no store at %s; %s", dir, hint))
	case err != nil:
		return fmt.Errorf("store directory: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		if e.Name() == "LOCK" || strings.HasSuffix(e.Name(), ".seg") {
			return nil
		}
		names[e.Name()] = e.IsDir()
	}
	clean := filepath.Clean(dir)
	switch {
	case names["tenants"] && names["system"]:
		// A batpak serve root: its tenants' stores are inside.
		return withExitCode(exitNotFound, fmt.Errorf("no store at %s: it is a batpak serve root, whose tenants' stores are %s (stop the server first: it holds them), or ask the server: --server URL --tenant ID",
			clean, shellQuote(filepath.Join(clean, "tenants", "ID"))))
	case len(ents) > 0:
		return withExitCode(exitNotFound, fmt.Errorf("no store at %s (it holds other files, no batpak store's LOCK or segments): --data-dir names a store's own directory", clean))
	}
	return withExitCode(exitNotFound, fmt.Errorf("no store at %s (the directory holds no batpak files); %s", clean, hint))
}

// closeStore closes s and keeps the first error: a writer's Close syncs, so
// its error matters.
func closeStore(s *core.Store, err *error) {
	if cerr := s.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}
