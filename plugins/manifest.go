package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/batpak-go/batpak/ijson"
)

// Kind is what a plugin does.
type Kind string

const (
	// KindProjection plugins export batpak_fold.
	KindProjection Kind = "projection"
	// KindHandler plugins export batpak_handle.
	KindHandler Kind = "handler"
)

// Limits bound one plugin. Zero fields take the defaults.
type Limits struct {
	// MemoryPages caps linear memory in 64 KiB pages. Default 512 (32 MiB).
	MemoryPages uint32 `json:"memory_pages,omitempty"`
	// Timeout bounds one call. Default 1s.
	Timeout Duration `json:"timeout,omitempty"`
	// MaxOutputBytes bounds a call's output (state or handler answer).
	// Default 16 MiB.
	MaxOutputBytes uint32 `json:"max_output_bytes,omitempty"`
	// MaxFaults is how many consecutive faults quarantine the plugin
	// until it is reloaded. Default 5.
	MaxFaults int `json:"max_faults,omitempty"`
	// PoolSize bounds the idle instances kept for reuse. Default 8, at
	// most MaxPoolSize (each idle instance keeps its linear memory).
	PoolSize int `json:"pool_size,omitempty"`
	// TableElements caps the elements of all the module's tables together,
	// declared and grown (each costs the host 8 bytes). Load refuses a
	// module whose tables declare more at their minimum; a table.grow past
	// it fails (returns -1 to the guest). Default 131072 (1 MiB), at most
	// 4194304 (32 MiB).
	TableElements uint32 `json:"table_elements,omitempty"`
	// Tables caps how many tables the module declares. Default 4, at most
	// 64.
	Tables uint32 `json:"tables,omitempty"`
	// Globals caps how many globals the module declares. Default 1024, at
	// most 65536.
	Globals uint32 `json:"globals,omitempty"`
	// LogLines and LogBytes are each call's log budget: lines and bytes of
	// text through batpak.log and stderr together (a stderr line ends at a
	// newline or 4 KiB). What is over the budget is dropped, counted in
	// Plugin.Stats and noted once per call; a call asking to log more than
	// 16 times either budget faults (FaultLogLimit). Defaults 256 lines and
	// 65536 bytes; at most 65536 lines and 16 MiB.
	LogLines uint32 `json:"log_lines,omitempty"`
	LogBytes uint32 `json:"log_bytes,omitempty"`
	// CallDepth caps the depth of nested calls in the module (Load adds a
	// counter to every function): a call that goes deeper traps and
	// faults with FaultStack. Default 10000, at most 1000000.
	CallDepth uint32 `json:"call_depth,omitempty"`
	// StackBytes caps the call stack one call may use, in bytes, as the
	// host counts it: each nested call of a function charges its frame,
	// 8 × (4 + its parameters + results + locals + the size of its body
	// in bytes), while it runs (Load adds the counter). wazero keeps every
	// value a function holds across a call in a stack slot of its own, so
	// a frame grows with the function's code, not only its locals; the
	// charge bounds it. A call over the limit traps and faults with
	// FaultStack. The host allocates the stack on its heap, up to twice
	// the limit per running call. Default 4194304 (4 MiB), at most
	// 268435456 (256 MiB).
	StackBytes uint32 `json:"stack_bytes,omitempty"`
	// MaxReactions bounds the reactions one call of a handler may return
	// (each costs the host about 80 bytes before it is written, beside
	// its bytes): an answer naming more faults with FaultOutputLimit
	// before any is read. Default 16384, at most 1048576.
	MaxReactions uint32 `json:"max_reactions,omitempty"`
}

// Grants opens the sandbox. By default a plugin sees no files, no network,
// no environment, a clock fixed at 2020-01-01T00:00:00Z and a random
// source of zeros, so a replay gives byte-identical results.
type Grants struct {
	// Env variables visible to the plugin.
	Env map[string]string `json:"env,omitempty"`
	// Clock gives the real wall and monotonic clocks.
	Clock bool `json:"clock,omitempty"`
	// Random gives a cryptographic random source.
	Random bool `json:"random,omitempty"`
}

// Manifest describes a plugin.
type Manifest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Kind    Kind   `json:"kind"`
	// SHA256 pins the module: loading bytes with another digest fails.
	// Empty means unpinned.
	SHA256 string `json:"sha256,omitempty"`
	Limits Limits `json:"limits,omitempty"`
	Grants Grants `json:"grants,omitempty"`
}

// Duration is a time.Duration that reads and writes as "250ms" in JSON.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"250ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ErrInvalidManifest is wrapped by manifest validation errors.
var ErrInvalidManifest = errors.New("batpak: invalid plugin manifest")

func (m *Manifest) normalize() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(format, args...))
	}
	switch {
	case !nameRE.MatchString(m.Name):
		return bad("name %q: want 1..64 of a-z 0-9 . _ -, starting with a letter or digit", m.Name)
	case m.Version == "":
		return bad("version is empty")
	case m.Kind != KindProjection && m.Kind != KindHandler:
		return bad("kind %q: want projection or handler", m.Kind)
	case m.SHA256 != "" && !isHex64(m.SHA256):
		return bad("sha256 %q: want 64 hex digits", m.SHA256)
	}
	m.SHA256 = strings.ToLower(m.SHA256)
	l := &m.Limits
	if l.MemoryPages == 0 {
		l.MemoryPages = 512
	}
	if l.MemoryPages > 65536 {
		return bad("limits.memory_pages %d: at most 65536 (4 GiB)", l.MemoryPages)
	}
	if l.Timeout < 0 {
		return bad("limits.timeout %s: negative (leave it out for the default, 1s)", time.Duration(l.Timeout))
	}
	if l.Timeout == 0 {
		l.Timeout = Duration(time.Second)
	}
	if l.MaxOutputBytes == 0 {
		l.MaxOutputBytes = 16 << 20
	}
	if l.MaxFaults <= 0 {
		l.MaxFaults = 5
	}
	if l.PoolSize <= 0 {
		l.PoolSize = 8
	}
	if l.PoolSize > MaxPoolSize {
		return bad("limits.pool_size %d: at most %d", l.PoolSize, MaxPoolSize)
	}
	for _, f := range []struct {
		v        *uint32
		name     string
		def, max uint32
	}{
		{&l.TableElements, "table_elements", 1 << 17, maxTableElements},
		{&l.Tables, "tables", 4, maxTables},
		{&l.Globals, "globals", 1024, maxGlobals},
		{&l.LogLines, "log_lines", 256, 1 << 16},
		{&l.LogBytes, "log_bytes", 64 << 10, 16 << 20},
		{&l.CallDepth, "call_depth", 10000, 1000000},
		{&l.StackBytes, "stack_bytes", 4 << 20, 256 << 20},
		{&l.MaxReactions, "max_reactions", DefaultMaxReactions, 1 << 20},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v > f.max {
			return bad("limits.%s %d: at most %d", f.name, *f.v, f.max)
		}
	}
	return nil
}

// The most a manifest may allow of Limits.TableElements, Limits.Tables
// and Limits.Globals.
const (
	maxTableElements = 1 << 22
	maxTables        = 64
	maxGlobals       = 1 << 16
)

// DefaultMaxReactions is Limits.MaxReactions when the manifest leaves it
// out.
const DefaultMaxReactions = 16384

// MaxPoolSize is the most idle instances a plugin may keep (Limits.PoolSize).
const MaxPoolSize = 256

func isHex64(s string) bool {
	_, err := hex.DecodeString(s)
	return len(s) == 64 && err == nil
}

// LoadManifest reads a manifest from a JSON file.
func LoadManifest(path string) (Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Manifest{}, err
	}
	var m Manifest
	// One JSON value whose objects never repeat a member: encoding/json
	// would let the last of two "name" members win.
	if err := ijson.Validate(b, 0); err != nil {
		var je *ijson.Error
		if errors.As(err, &je) && je.Rule == ijson.RuleDuplicateKey {
			return Manifest{}, fmt.Errorf("%w: %s: the member %q appears twice (at byte %d)", ErrInvalidManifest, path, je.Key, je.Offset)
		}
		return Manifest{}, fmt.Errorf("%w: %s: %v", ErrInvalidManifest, path, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %s: %v", ErrInvalidManifest, path, err)
	}
	return m, nil
}

// Digest is the hex SHA-256 of module bytes, as Manifest.SHA256 pins it.
func Digest(wasm []byte) string {
	sum := sha256.Sum256(wasm)
	return hex.EncodeToString(sum[:])
}
