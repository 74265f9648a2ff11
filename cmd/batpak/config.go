package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// defaultDataDir is where the store lives when nothing says otherwise.
const defaultDataDir = "./batpak-data"

// defaultPolicyTimeout is policy.timeout's default, the server's
// (server.Config.PolicyTimeout) and the library's (opa.DefaultTimeout).
const defaultPolicyTimeout = time.Second

// envPrefix prefixes every environment variable batpak reads:
// data_dir is BATPAK_DATA_DIR, sync.every_n_events is
// BATPAK_SYNC_EVERY_N_EVENTS.
const envPrefix = "BATPAK"

// configEnv names a config file when --config is not given.
const configEnv = envPrefix + "_CONFIG"

// valueKind says how a setting's raw value (from a flag, the environment,
// the config file or the default) is parsed.
type valueKind int

const (
	kindPath         valueKind = iota // a path that must not be empty
	kindSize                          // bytes: 268435456 or 256MiB
	kindCount                         // a whole number
	kindDuration                      // a Go duration: 1s, 500ms, 0
	kindSyncMode                      // data | all
	kindCompression                   // none | zstd | s2
	kindOptionalPath                  // a path, or empty for none
	kindText                          // free text, may be empty
	kindList                          // a comma-separated list (a YAML list in the file)
	kindBool                          // true | false
)

// setting is one configuration key: its config-file key, flag name,
// environment variable (derived from the key), default and the core.Config
// field it fills. Settings with no field (policy.dir, principal.*) are not
// store settings: they fill resolved's policy fields instead.
type setting struct {
	key   string // viper key, as written in config.yaml
	flag  string // persistent flag name, without --
	field string // core.Config field, as core.Config.Validate names it; "" if none
	kind  valueKind
	def   any // default, in the form a user would write it
	help  string
}

// settings lists every key, in config.yaml order. Ranges come from
// core/config.go and are enforced by core.Config.Validate.
var settings = []setting{
	{key: "data_dir", flag: "data-dir", field: "Dir", kind: kindPath, def: defaultDataDir,
		help: "store directory (created by write commands)"},
	{key: "segment_max_bytes", flag: "segment-max-bytes", field: "SegmentMaxBytes", kind: kindSize, def: formatSize(core.DefaultSegmentMaxBytes),
		help: "seal a segment file at this size; 64KiB..4GiB-1"},
	{key: "compression", flag: "compression", field: "Compression", kind: kindCompression, def: core.CompressionNone.String(),
		help: "store sealed segments compressed: none, zstd (best ratio) or s2 (cheaper); the segment being written never is"},
	{key: "fd_budget", flag: "fd-budget", field: "FDBudget", kind: kindCount, def: core.DefaultFDBudget,
		help: "segment files kept open and mapped for reads; 2..65536"},
	{key: "single_append_max_bytes", flag: "single-append-max-bytes", field: "SingleAppendMaxBytes", kind: kindSize, def: formatSize(core.DefaultSingleAppendMaxBytes),
		help: "largest accepted event payload; 1..64MiB"},
	{key: "max_json_depth", flag: "max-json-depth", field: "MaxJSONDepth", kind: kindCount, def: core.DefaultMaxJSONDepth,
		help: "deepest nesting of arrays and objects a payload may have; 0..4096 (0: 512)"},
	{key: "broadcast_capacity", flag: "broadcast-capacity", field: "BroadcastCapacity", kind: kindCount, def: core.DefaultBroadcastCapacity,
		help: "notifications held for lossy subscribers; 1..1048576"},
	{key: "channel_capacity", flag: "channel-capacity", field: "ChannelCapacity", kind: kindCount, def: core.DefaultChannelCapacity,
		help: "writer mailbox size; 1..1048576"},
	{key: "pressure_retry_pct", flag: "pressure-retry-pct", field: "PressureRetryPct", kind: kindCount, def: core.DefaultPressureRetryPct,
		help: "mailbox fill percentage at which TrySubmit answers retry; 1..100"},
	{key: "fence_timeout", flag: "fence-timeout", field: "FenceTimeout", kind: kindDuration, def: core.DefaultFenceTimeout.String(),
		help: "a visibility fence left open this long is cancelled (its writes discarded); 1ms..24h"},
	{key: "salvage", flag: "salvage", field: "Salvage", kind: kindBool, def: false,
		help: "open a store whose log lost durable events: record the loss and go on (default: refuse to open)"},
	{key: "sync.every_n_events", flag: "sync-every-n-events", field: "Sync.EveryNEvents", kind: kindCount, def: core.DefaultSyncEveryNEvents,
		help: "fsync after this many events (0 disables); 0..1048576"},
	{key: "sync.interval", flag: "sync-interval", field: "Sync.Interval", kind: kindDuration, def: core.DefaultSyncInterval.String(),
		help: "fsync at most this long after an unsynced write (0 disables); 0..1h"},
	{key: "sync.mode", flag: "sync-mode", field: "Sync.Mode", kind: kindSyncMode, def: core.SyncData.String(),
		help: "sync system call: data (fdatasync) or all (fsync)"},
	{key: "batch.max_size", flag: "batch-max-size", field: "Batch.MaxSize", kind: kindCount, def: core.DefaultBatchMaxSize,
		help: "most items in one atomic batch; 1..4096"},
	{key: "batch.max_bytes", flag: "batch-max-bytes", field: "Batch.MaxBytes", kind: kindSize, def: formatSize(core.DefaultBatchMaxBytes),
		help: "most payload bytes in one atomic batch; 1..16MiB"},
	{key: "batch.group_commit_max_batch", flag: "batch-group-commit-max-batch", field: "Batch.GroupCommitMaxBatch", kind: kindCount, def: 0,
		help: "queued writes one write+fsync may cover (0: all, 1: off); 0..1048576"},
	{key: "policy.dir", flag: "policy-dir", kind: kindOptionalPath, def: "",
		help: "write policy bundle (Rego v1) that append and demo enforce; empty: no policy"},
	{key: "policy.timeout", flag: "policy-timeout", kind: kindDuration, def: defaultPolicyTimeout.String(),
		help: "longest one decision of the write policy may take (append, demo, serve; past it the write is denied); 1ms..1m"},
	{key: "principal.id", flag: "principal-id", kind: kindText, def: "",
		help: "who writes: the principal id policies see as input.principal.id"},
	{key: "principal.tenant", flag: "tenant", kind: kindText, def: "",
		help: "with --server: the tenant to work on (env BATPAK_TENANT, key remote.tenant); locally: the writing principal's tenant (input.principal.tenant)"},
	{key: "principal.roles", flag: "roles", kind: kindList, def: "",
		help: "the writing principal's roles, comma-separated (input.principal.roles)"},
}

// parentKeys are the config-file sections that hold settings.
var parentKeys = map[string]bool{"sync": true, "batch": true, "policy": true, "principal": true}

func envName(key string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// operatorTokenEnv is the documented environment variable of
// server.operator_token; envName's BATPAK_SERVER_OPERATOR_TOKEN works too.
const operatorTokenEnv = "BATPAK_OPERATOR_TOKEN"

// envNames lists the environment variables that set key, the one that
// wins when several are set first.
func envNames(key string) []string {
	if key == "server.operator_token" {
		return []string{operatorTokenEnv, envName(key)}
	}
	return []string{envName(key)}
}

// registerConfigFlags adds --config and one persistent flag per setting,
// and binds them to v. Flag defaults only document the defaults: viper
// consults a flag only when it was given on the command line.
func registerConfigFlags(fs *pflag.FlagSet, v *viper.Viper, configFile *string) {
	fs.StringVar(configFile, "config", "", "config file (YAML); env "+configEnv+"; default the first present of ./batpak.yaml, ./config.yaml if it begins \""+configMarker+"\", $XDG_CONFIG_HOME/batpak/config.yaml")
	for _, s := range settings {
		help := s.help + "; env " + envName(s.key)
		switch s.kind {
		case kindCount:
			fs.Int(s.flag, s.def.(int), help)
		case kindDuration:
			d, _ := time.ParseDuration(s.def.(string))
			fs.Duration(s.flag, d, help)
		case kindBool:
			fs.Bool(s.flag, s.def.(bool), help)
		default:
			fs.String(s.flag, s.def.(string), help)
		}
		if err := v.BindPFlag(s.key, fs.Lookup(s.flag)); err != nil {
			panic(err) // only if the flag above was not registered
		}
		v.SetDefault(s.key, s.def)
		bindEnv(v, s.key)
	}
}

// bindEnv binds key to its environment variables (envNames). Every
// setting is bound by name rather than through viper's AutomaticEnv: with
// that, a variable named like a config section — BATPAK_SERVER, the
// --server URL — hid every key of the section (server.*) from the config
// file and the defaults.
func bindEnv(v *viper.Viper, key string) {
	if err := v.BindEnv(append([]string{key}, envNames(key)...)...); err != nil {
		panic(err) // only for an empty key
	}
}

// resolved is the effective configuration of one command run.
type resolved struct {
	cfg           core.Config
	configFile    string // "" when no config file was read
	entries       []entry
	policyDir     string           // policy.dir; "" when writes are not gated
	policyTimeout time.Duration    // policy.timeout: one decision's bound
	principal     policy.Principal // principal.*: who the write verbs write as
}

// source returns where key's value came from ("" for an unknown key).
func (r *resolved) source(key string) string {
	for _, e := range r.entries {
		if e.key == key {
			return e.source
		}
	}
	return ""
}

// entry is one setting's effective value and where it came from.
type entry struct {
	setting
	value  string // rendered effective value
	source string // "flag --x", "env BATPAK_X", "config FILE" or "default"
}

// sourceOf says which layer supplied key's value, in viper's precedence
// order: flag > env > config file > default.
func (a *app) sourceOf(s setting) string {
	if s.flag != "" && a.flags != nil {
		if f := a.flags.Lookup(s.flag); f != nil && f.Changed {
			return "flag --" + s.flag
		}
	}
	for _, name := range envNames(s.key) {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return "env " + name
		}
	}
	if a.configFile != "" && a.v.InConfig(s.key) {
		return "config " + a.configFile
	}
	return "default"
}

// flagChanged reports whether a persistent config flag was given.
func (a *app) flagChanged(name string) bool {
	f := a.flags.Lookup(name)
	return f != nil && f.Changed
}

// loadConfig reads the config file (if any), merges flags, environment and
// defaults, and builds and validates the core.Config. It runs once per
// command, lazily, so that help and completion work with a broken config.
func (a *app) loadConfig() (*resolved, error) {
	if a.res != nil {
		return a.res, nil
	}
	if _, err := a.log.logger(a.stderr); err != nil {
		return nil, err
	}
	file, explicit, err := a.findConfigFile()
	if err != nil {
		return nil, err
	}
	if file != "" {
		a.v.SetConfigFile(file)
		a.v.SetConfigType("yaml")
		if err := a.v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file %s: %w", file, err)
		}
		a.configFile = file
		if unknown := a.unknownKeys(); len(unknown) > 0 {
			what, them := "unknown key", "it"
			if len(unknown) > 1 {
				what, them = "unknown keys", "them"
			}
			var meant []string
			for _, q := range unknown {
				k, _ := strconv.Unquote(q)
				if m := meantKey(k); m != "" && len(unknown) == 1 {
					meant = append(meant, m)
				} else if m != "" {
					meant = append(meant, m+" for "+k)
				}
			}
			near := ""
			if len(meant) > 0 {
				near = "did you mean " + strings.Join(meant, ", ") + "? "
			}
			first, _ := strconv.Unquote(unknown[0])
			msg := fmt.Sprintf("config file %s: %s %s (%s%s)", file, what, strings.Join(unknown, ", "), near, knownKeysNear(first))
			if explicit {
				return nil, errors.New(msg)
			}
			// A config.yaml found by looking around may belong to another
			// tool: say so, but do not refuse to run.
			fmt.Fprintf(a.stderr, "batpak: warning: %s; ignoring %s\n", msg, them)
		}
	}

	cfg := core.DefaultConfig(defaultDataDir)
	res := &resolved{configFile: file}
	for _, s := range settings {
		src := a.sourceOf(s)
		raw := a.v.Get(s.key)
		bad := func(err error) error {
			return fmt.Errorf("invalid config: %s (from %s): %v", s.key, src, err)
		}
		var shown string
		switch s.kind {
		case kindPath, kindOptionalPath:
			str, ok := raw.(string)
			if !ok {
				return nil, bad(fmt.Errorf("%v is not a path", raw))
			}
			if str == "" && s.kind == kindPath {
				return nil, bad(errors.New("empty; set it to the store directory"))
			}
			str, err := expandHome(str)
			if err != nil {
				return nil, bad(err)
			}
			switch s.key {
			case "data_dir":
				cfg.Dir = str
			case "policy.dir":
				res.policyDir = str
			}
			shown = orNone(str)
		case kindText:
			str, err := parseText(raw)
			if err != nil {
				return nil, bad(err)
			}
			switch s.key {
			case "principal.id":
				res.principal.ID = str
			case "principal.tenant":
				res.principal.Tenant = str
			}
			shown = orNone(str)
		case kindList:
			list, err := parseList(raw)
			if err != nil {
				return nil, bad(err)
			}
			if s.key == "principal.roles" {
				res.principal.Roles = list
			}
			shown = orNone(strings.Join(list, ","))
		case kindSize:
			n, err := parseSize(raw)
			if err != nil {
				return nil, bad(err)
			}
			switch s.key {
			case "segment_max_bytes":
				cfg.SegmentMaxBytes = n
			case "single_append_max_bytes":
				cfg.SingleAppendMaxBytes = int(n)
			case "batch.max_bytes":
				cfg.Batch.MaxBytes = int(n)
			}
			shown = fmt.Sprintf("%d (%s)", n, formatSize(n))
		case kindCount:
			n, err := parseCount(raw)
			if err != nil {
				return nil, bad(err)
			}
			switch s.key {
			case "fd_budget":
				cfg.FDBudget = n
			case "channel_capacity":
				cfg.ChannelCapacity = n
			case "pressure_retry_pct":
				cfg.PressureRetryPct = n
			case "sync.every_n_events":
				cfg.Sync.EveryNEvents = n
			case "broadcast_capacity":
				cfg.BroadcastCapacity = n
			case "batch.max_size":
				cfg.Batch.MaxSize = n
			case "batch.group_commit_max_batch":
				cfg.Batch.GroupCommitMaxBatch = n
			case "max_json_depth":
				cfg.MaxJSONDepth = n
			}
			shown = strconv.Itoa(n)
		case kindDuration:
			d, err := parseDuration(raw)
			if err != nil {
				return nil, bad(err)
			}
			switch s.key {
			case "sync.interval":
				cfg.Sync.Interval = d
			case "fence_timeout":
				cfg.FenceTimeout = d
			case "policy.timeout":
				if d < time.Millisecond || d > time.Minute {
					return nil, bad(fmt.Errorf("%v: want 1ms..1m", d))
				}
				res.policyTimeout = d
			}
			shown = d.String()
		case kindBool:
			b, err := parseBool(raw)
			if err != nil {
				return nil, bad(err)
			}
			if s.key == "salvage" {
				cfg.Salvage = b
			}
			shown = strconv.FormatBool(b)
		case kindSyncMode:
			m, err := parseSyncMode(raw)
			if err != nil {
				return nil, bad(err)
			}
			cfg.Sync.Mode, shown = m, m.String()
		case kindCompression:
			c, err := parseCompression(raw)
			if err != nil {
				return nil, bad(err)
			}
			cfg.Compression, shown = c, c.String()
		}
		res.entries = append(res.entries, entry{setting: s, value: shown, source: src})
	}
	if err := cfg.Validate(); err != nil {
		return nil, a.explainInvalid(err, res)
	}
	cfg.Logger = a.logger()
	res.cfg = cfg
	a.res = res
	return res, nil
}

// explainInvalid turns core.Config.Validate's *core.ConfigError, which
// names the Go field, into one that names the config key and where its
// value came from.
func (a *app) explainInvalid(err error, res *resolved) error {
	var ce *core.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	for _, e := range res.entries {
		if e.field != "" && e.field == ce.Field {
			return &detailError{msg: fmt.Sprintf("invalid config: %s = %s (from %s): want %s", e.key, e.value, e.source, ce.Want), err: err}
		}
	}
	return err
}

// configMarker is how a file named config.yaml in the current directory
// says it is batpak's: its first line starts with it (the repository's
// config.yaml begins "# batpak configuration: every key, ..."). Without it
// a ./config.yaml is left alone: it may be another tool's.
const configMarker = "# batpak configuration"

// configSearch is the documented search order (README.md, "Config file"):
// --config FILE, $BATPAK_CONFIG, then the first of these that exists:
// ./batpak.yaml; ./config.yaml when it begins with configMarker;
// $XDG_CONFIG_HOME/batpak/config.yaml (~/.config/batpak/config.yaml when
// XDG_CONFIG_HOME is unset).
func configSearch() []string {
	c := []string{"batpak.yaml", "config.yaml"}
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" {
		c = append(c, filepath.Join(x, "batpak", "config.yaml"))
	} else if home, err := os.UserHomeDir(); err == nil {
		c = append(c, filepath.Join(home, ".config", "batpak", "config.yaml"))
	}
	return c
}

// findConfigFile picks the config file in configSearch's order. explicit
// is true for --config and $BATPAK_CONFIG; an explicit file must exist.
// skipped names a ./config.yaml passed over for lacking configMarker.
func (a *app) findConfigFile() (file string, explicit bool, err error) {
	name := a.configFlag
	if !a.flagChanged("config") {
		name = os.Getenv(configEnv)
	}
	if name != "" {
		st, err := os.Stat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", true, withExitCode(exitNotFound, fmt.Errorf("config file %s does not exist", name))
		case err != nil:
			return "", true, fmt.Errorf("config file: %w", err)
		case st.IsDir():
			return "", true, fmt.Errorf("config file %s is a directory", name)
		}
		return name, true, nil
	}
	for _, c := range configSearch() {
		st, err := os.Stat(c)
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if c == "config.yaml" && !markedConfig(c) {
			a.skippedConfig = c
			continue
		}
		return c, false, nil
	}
	return "", false, nil
}

// markedConfig reports whether file's first line starts with
// configMarker.
func markedConfig(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, len(configMarker)+3) // a UTF-8 byte order mark may come first
	n, _ := io.ReadFull(f, buf)
	return strings.HasPrefix(strings.TrimPrefix(string(buf[:n]), "\uFEFF"), configMarker)
}

// unknownKeys lists config-file keys that are not settings (typos, mostly).
func (a *app) unknownKeys() []string {
	known := map[string]bool{}
	for _, k := range knownKeys() {
		known[k] = true
	}
	var out []string
	for _, k := range a.v.AllKeys() {
		if !known[k] && !parentKeys[k] && !serverParentKeys[k] && k != "remote" && a.v.InConfig(k) {
			out = append(out, strconv.Quote(k))
		}
	}
	slices.Sort(out)
	return out
}

// knownKeys is every key a config file may set: the store's, the
// server's and the remote ones.
func knownKeys() []string {
	var all []string
	for _, s := range settings {
		all = append(all, s.key)
	}
	for _, s := range serverSettings {
		all = append(all, s.key)
	}
	for _, k := range remoteKeys {
		all = append(all, k.key)
	}
	return all
}

// meantKey is the known key within two edits of unknown, or "".
func meantKey(unknown string) string {
	all := knownKeys()
	mean, best := "", 3
	for _, k := range all {
		// Lengths apart by more than two are more than two edits apart:
		// no distance is worked out for them (a hostile file's long
		// keys cost nothing).
		if len(k) > len(unknown)+2 || len(unknown) > len(k)+2 {
			continue
		}
		if d := editDistance(k, unknown); d < best {
			mean, best = k, d
		}
	}
	return mean
}

// knownKeysNear names the known keys of the section an unknown key is in
// ("server.jwt.isuer": the server.jwt keys), or the store's keys and the
// other sections when it is at the top level or in no known section.
func knownKeysNear(unknown string) string {
	all := knownKeys()
	if i := strings.LastIndex(unknown, "."); i > 0 {
		section := unknown[:i+1]
		var ks []string
		for _, k := range all {
			if rest, ok := strings.CutPrefix(k, section); ok && !strings.Contains(rest, ".") {
				ks = append(ks, k)
			}
		}
		if len(ks) > 0 {
			return "known in " + unknown[:i] + ": " + strings.Join(ks, ", ")
		}
	}
	var ks []string
	for _, s := range settings {
		ks = append(ks, s.key)
	}
	return "known: " + strings.Join(ks, ", ") + ", and the server.* and remote.* keys config.yaml documents"
}

var sizeRE = regexp.MustCompile(`(?i)^\s*([0-9]+)\s*(b|kib|mib|gib)?\s*$`)

// parseSize reads a byte count: a whole number, or a whole number followed
// by B, KiB, MiB or GiB (case-insensitive).
func parseSize(raw any) (int64, error) {
	if s, ok := raw.(string); ok {
		m := sizeRE.FindStringSubmatch(s)
		if m == nil {
			return 0, fmt.Errorf("%q is not a size: want bytes (268435456) or a whole number of KiB, MiB or GiB (256MiB)", s)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is too large", s)
		}
		mult := int64(1)
		switch strings.ToLower(m[2]) {
		case "kib":
			mult = 1 << 10
		case "mib":
			mult = 1 << 20
		case "gib":
			mult = 1 << 30
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return n * mult, nil
	}
	n, err := toInt64(raw)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}

// formatSize renders n in the largest binary unit that divides it.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func parseCount(raw any) (int, error) {
	n, err := toInt64(raw)
	if err != nil {
		return 0, err
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return int(n), nil
}

// toInt64 accepts what YAML, the environment and flags produce for a
// whole number.
func toInt64(raw any) (int64, error) {
	switch x := raw.(type) {
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case int32:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d is too large", x)
		}
		return int64(x), nil
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, fmt.Errorf("%v is not a whole number", x)
		}
		return int64(x), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 0, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a whole number", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%v is not a whole number", raw)
}

// parseBool reads true or false (YAML, the environment or a flag).
func parseBool(raw any) (bool, error) {
	switch x := raw.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true":
			return true, nil
		case "false", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("%v is not true or false", raw)
}

// parseDuration reads a Go duration string ("1s", "250ms", "0").
func parseDuration(raw any) (time.Duration, error) {
	switch x := raw.(type) {
	case time.Duration:
		return x, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration: want a number with a unit, e.g. 1s or 250ms", x)
		}
		return d, nil
	case int, int64:
		if n, _ := toInt64(x); n == 0 {
			return 0, nil
		}
	}
	return 0, fmt.Errorf("%v is not a duration: want a number with a unit, e.g. 1s or 250ms", raw)
}

// expandHome expands a leading ~/ to the home directory.
func expandHome(path string) (string, error) {
	rest, ok := strings.CutPrefix(path, "~/")
	if !ok {
		return path, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot expand ~: %w", err)
	}
	return filepath.Join(home, rest), nil
}

// orNone renders an empty value as (none), so that "batpak config" always
// has a word in the value column.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// parseText reads a free-text value; YAML may have made a number or a
// boolean of it (principal.id: 42).
func parseText(raw any) (string, error) {
	switch x := raw.(type) {
	case nil:
		return "", nil
	case string:
		return strings.TrimSpace(x), nil
	case int, int64, uint64, float64, bool:
		return fmt.Sprint(x), nil
	}
	return "", fmt.Errorf("%v is not a single value", raw)
}

// parseList reads a list: a comma-separated string (flags, environment,
// the file) or a YAML list. Items are trimmed; empty items are dropped.
func parseList(raw any) ([]string, error) {
	var items []string
	switch x := raw.(type) {
	case nil:
	case string:
		items = strings.Split(x, ",")
	case []string:
		items = x
	case []any:
		for _, it := range x {
			s, err := parseText(it)
			if err != nil {
				return nil, fmt.Errorf("list item %w", err)
			}
			items = append(items, s)
		}
	default:
		return nil, fmt.Errorf("%v is not a list: want a,b,c or a YAML list", raw)
	}
	var out []string
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out, nil
}

func parseSyncMode(raw any) (core.SyncMode, error) {
	s, _ := raw.(string)
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "data":
		return core.SyncData, nil
	case "all":
		return core.SyncAll, nil
	}
	return 0, fmt.Errorf("%v is not a sync mode: want data (fdatasync) or all (fsync)", raw)
}

// parseCompression reads a compression setting: none, zstd or s2 (any
// case), as core.ParseCompression reads it.
func parseCompression(raw any) (core.Compression, error) {
	if s, ok := raw.(string); ok {
		if c, err := core.ParseCompression(s); err == nil {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%s is not a compression: want none, zstd or s2", quoteRaw(raw))
}

// quoteRaw renders a refused raw value: strings quoted, anything else
// (a YAML number, list, ...) as is.
func quoteRaw(raw any) string {
	if s, ok := raw.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(raw)
}
