package plugins_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/plugins"
)

// TestLimitsDefaults: zero limits take the documented defaults.
func TestLimitsDefaults(t *testing.T) {
	p := load(t, newHost(t), fixture(t, "counter"), projManifest("defaults"))
	got := p.Manifest().Limits
	want := plugins.Limits{
		MemoryPages:    512,
		Timeout:        plugins.Duration(time.Second),
		MaxOutputBytes: 16 << 20,
		MaxFaults:      5,
		PoolSize:       8,
		TableElements:  1 << 17,
		Tables:         4,
		Globals:        1024,
		LogLines:       256,
		LogBytes:       64 << 10,
		CallDepth:      10000,
		StackBytes:     4 << 20,
		MaxReactions:   plugins.DefaultMaxReactions,
	}
	if got != want {
		t.Fatalf("default limits %+v, want %+v", got, want)
	}
	// Set limits are kept.
	m := projManifest("set")
	m.Limits = plugins.Limits{MemoryPages: 3, Timeout: plugins.Duration(3 * time.Second), MaxOutputBytes: 9, MaxFaults: 1, PoolSize: 2,
		TableElements: 1, Tables: 1, Globals: 1, LogLines: 1, LogBytes: 1, CallDepth: 1, StackBytes: 1 << 10, MaxReactions: 1}
	p = load(t, newHost(t), fixture(t, "counter"), m)
	if got := p.Manifest().Limits; got != m.Limits {
		t.Fatalf("limits %+v, want %+v", got, m.Limits)
	}
}

// TestManifestValidation: Load refuses a bad manifest with a *LoadError
// that wraps ErrInvalidManifest and names the field.
func TestManifestValidation(t *testing.T) {
	h := newHost(t)
	wasm := fixture(t, "counter")
	ok := projManifest("ok")
	with := func(f func(*plugins.Manifest)) plugins.Manifest { m := ok; f(&m); return m }
	cases := []struct {
		name    string
		m       plugins.Manifest
		mention string
	}{
		{"empty name", with(func(m *plugins.Manifest) { m.Name = "" }), `name ""`},
		{"upper-case name", with(func(m *plugins.Manifest) { m.Name = "Counter" }), `name "Counter"`},
		{"name with a space", with(func(m *plugins.Manifest) { m.Name = "my plugin" }), `name "my plugin"`},
		{"name starting with a dash", with(func(m *plugins.Manifest) { m.Name = "-x" }), `name "-x"`},
		{"name of 65 bytes", with(func(m *plugins.Manifest) { m.Name = strings.Repeat("a", 65) }), "name"},
		{"empty version", with(func(m *plugins.Manifest) { m.Version = "" }), "version is empty"},
		{"unknown kind", with(func(m *plugins.Manifest) { m.Kind = "reducer" }), `kind "reducer"`},
		{"empty kind", with(func(m *plugins.Manifest) { m.Kind = "" }), `kind ""`},
		{"short sha256", with(func(m *plugins.Manifest) { m.SHA256 = "abc123" }), `sha256 "abc123"`},
		{"sha256 not hex", with(func(m *plugins.Manifest) { m.SHA256 = strings.Repeat("zz", 32) }), "want 64 hex digits"},
		{"memory over 4 GiB", with(func(m *plugins.Manifest) { m.Limits.MemoryPages = 65537 }), "memory_pages 65537"},
		{"table elements over the ceiling", with(func(m *plugins.Manifest) { m.Limits.TableElements = 1<<22 + 1 }), "table_elements 4194305: at most 4194304"},
		{"tables over the ceiling", with(func(m *plugins.Manifest) { m.Limits.Tables = 65 }), "tables 65: at most 64"},
		{"globals over the ceiling", with(func(m *plugins.Manifest) { m.Limits.Globals = 1<<16 + 1 }), "globals 65537: at most 65536"},
		{"log lines over the ceiling", with(func(m *plugins.Manifest) { m.Limits.LogLines = 1<<16 + 1 }), "log_lines 65537: at most 65536"},
		{"log bytes over the ceiling", with(func(m *plugins.Manifest) { m.Limits.LogBytes = 16<<20 + 1 }), "log_bytes 16777217: at most 16777216"},
		{"call depth over the ceiling", with(func(m *plugins.Manifest) { m.Limits.CallDepth = 1000001 }), "call_depth 1000001: at most 1000000"},
		{"stack bytes over the ceiling", with(func(m *plugins.Manifest) { m.Limits.StackBytes = 256<<20 + 1 }), "stack_bytes 268435457: at most 268435456"},
		{"negative timeout", with(func(m *plugins.Manifest) { m.Limits.Timeout = plugins.Duration(-time.Second) }), "limits.timeout -1s: negative"},
		{"pool size over the ceiling (each idle instance keeps its memory)", with(func(m *plugins.Manifest) { m.Limits.PoolSize = 1 << 30 }), "pool_size 1073741824: at most 256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.Load(context.Background(), wasm, c.m)
			if err == nil {
				t.Fatal("Load accepted the manifest")
			}
			asLoadError(t, err)
			if !errors.Is(err, plugins.ErrInvalidManifest) {
				t.Errorf("errors.Is(%v, ErrInvalidManifest) = false", err)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q does not mention %q", err, c.mention)
			}
		})
	}
	// Every limit at its ceiling is accepted.
	load(t, h, wasm, with(func(m *plugins.Manifest) {
		m.Name = "ceilings"
		m.Limits = plugins.Limits{TableElements: 1 << 22, Tables: 64, Globals: 1 << 16, LogLines: 1 << 16, LogBytes: 16 << 20, CallDepth: 1000000, StackBytes: 256 << 20}
	}))
	// The longest and shortest valid names.
	for _, name := range []string{"a", strings.Repeat("a", 64), "order-total.v2_x"} {
		load(t, h, wasm, with(func(m *plugins.Manifest) { m.Name = name }))
	}
}

// TestLoadManifest reads manifests from JSON: durations as strings,
// unknown fields refused, and the C counter's manifest.json.
func TestLoadManifest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m, err := plugins.LoadManifest(write("good.json", `{
		"name": "order-total", "version": "1.2.0", "kind": "handler",
		"sha256": "`+strings.Repeat("0f", 32)+`",
		"limits": {"memory_pages": 64, "timeout": "250ms", "max_output_bytes": 4096, "max_faults": 2, "pool_size": 3},
		"grants": {"env": {"REGION": "eu"}, "clock": true}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := plugins.Manifest{
		Name: "order-total", Version: "1.2.0", Kind: plugins.KindHandler, SHA256: strings.Repeat("0f", 32),
		Limits: plugins.Limits{MemoryPages: 64, Timeout: plugins.Duration(250 * time.Millisecond), MaxOutputBytes: 4096, MaxFaults: 2, PoolSize: 3},
		Grants: plugins.Grants{Env: map[string]string{"REGION": "eu"}, Clock: true},
	}
	if a, b := mustJSON(t, m), mustJSON(t, want); a != b {
		t.Fatalf("LoadManifest:\n%s\nwant\n%s", a, b)
	}
	if !strings.Contains(mustJSON(t, m), `"timeout":"250ms"`) {
		t.Errorf("Duration does not marshal as a string: %s", mustJSON(t, m))
	}

	for name, body := range map[string]string{
		"unknown field":  `{"name": "x", "version": "1", "kind": "projection", "grants": {"files": ["/"]}}`,
		"bad duration":   `{"name": "x", "version": "1", "kind": "projection", "limits": {"timeout": "soon"}}`,
		"number timeout": `{"name": "x", "version": "1", "kind": "projection", "limits": {"timeout": 5}}`,
		"not JSON":       `name: x`,
		"name twice":     `{"name": "x", "version": "1", "kind": "projection", "name": "y"}`,
	} {
		if _, err := plugins.LoadManifest(write("bad.json", body)); !errors.Is(err, plugins.ErrInvalidManifest) {
			t.Errorf("%s: %v, want ErrInvalidManifest", name, err)
		}
	}
	if _, err := plugins.LoadManifest(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}

	cm, err := plugins.LoadManifest(filepath.Join(moduleRoot, "examples", "plugins", "c-counter", "manifest.json"))
	if err != nil {
		t.Fatalf("c-counter/manifest.json: %v", err)
	}
	if cm.Name != "c-counter" || cm.Kind != plugins.KindProjection {
		t.Errorf("c-counter/manifest.json: %+v", cm)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
