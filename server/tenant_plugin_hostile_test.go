package server_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/control"
)

// storedModules lists the module files kept for a tenant.
func storedModules(t testing.TB, root, tenant string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "plugins", tenant))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// paddedManifest is a pinned manifest for wasm of exactly size bytes as
// the client sends it (compact JSON), padded with an env grant.
func paddedManifest(t testing.TB, name, version string, wasm []byte, size int) json.RawMessage {
	t.Helper()
	mk := func(pad int) []byte {
		b, err := json.Marshal(map[string]any{"name": name, "version": version, "kind": "projection", "sha256": plugins.Digest(wasm),
			"grants": map[string]any{"env": map[string]string{"PAD": strings.Repeat("x", pad)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := mk(0)
	b = mk(size - len(b))
	if len(b) != size {
		t.Fatalf("padded manifest is %d bytes, want %d", len(b), size)
	}
	return b
}

// TestTenantPluginManifestSizeLimit: a manifest of exactly
// control.MaxPluginManifestBytes is accepted; one byte more is refused
// before the module is compiled or stored, naming the limit, and no
// module file is left behind (a hostile admin could otherwise fill the
// disk with modules no version refers to).
func TestTenantPluginManifestSizeLimit(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), nil)
	ctx := context.Background()
	wasm := fixture(t, "counter")
	over := paddedManifest(t, "big", "1", wasm, control.MaxPluginManifestBytes+1)
	for _, activate := range []bool{true, false} {
		_, err := e.acme.PushPlugin(ctx, over, wasm, activate)
		if ce := wantCode(t, "manifest one byte over", err, client.CodePluginRejected); !strings.Contains(ce.Detail, "65536") {
			t.Errorf("manifest over: %q, want it to name the limit", ce.Detail)
		}
		if files := storedModules(t, e.root, "acme"); len(files) != 0 {
			t.Fatalf("a refused upload (activate %v) left %v stored", activate, files)
		}
	}
	// A running plugin, then an oversized manifest for a new version of
	// it (hot swap path and kept-version path): refused, the running
	// version and only its module stay.
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "big", "1", "projection", wasm, nil), wasm, true); err != nil {
		t.Fatal(err)
	}
	v2 := fixture(t, "counter2")
	for _, activate := range []bool{true, false} {
		_, err := e.acme.PushPlugin(ctx, paddedManifest(t, "big", "2", v2, control.MaxPluginManifestBytes+1), v2, activate)
		wantCode(t, "new version's manifest one byte over", err, client.CodePluginRejected)
		if files := storedModules(t, e.root, "acme"); len(files) != 1 || files[0] != plugins.Digest(wasm)+".wasm" {
			t.Fatalf("after a refused version (activate %v): %v stored", activate, files)
		}
		if st, err := e.acme.PluginStatus(ctx, "big"); err != nil || st.Active != "1" || st.Digest != plugins.Digest(wasm) || len(st.Versions) != 1 {
			t.Fatalf("after a refused version: %+v, %v", st, err)
		}
	}
	// Exactly the limit: accepted.
	if _, err := e.acme.PushPlugin(ctx, paddedManifest(t, "big", "2", v2, control.MaxPluginManifestBytes), v2, true); err != nil {
		t.Fatalf("manifest of exactly the limit: %v", err)
	}
}
