package control_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// A tenant's plugin versions, the active one, kept-but-inactive
// versions, swaps and deletions are recorded, audited and replayed; the
// limits on plugins and versions are enforced; a deleted tenant's
// plugins go with it.
func TestPluginVersionsReplay(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(ctx, "globex", control.Quotas{}, control.Settings{}))
	v := func(version, content string) control.PluginVersion {
		return control.PluginVersion{Version: version, Digest: rev(content), Kind: "projection", Bytes: 10, Manifest: json.RawMessage(`{"name":"count"}`)}
	}
	must(t)(p.AddPluginVersion(ctx, "acme", v("1", "one"), "count", true, 2, 2))
	tp := must(t)(p.AddPluginVersion(ctx, "acme", v("2", "two"), "count", false, 2, 2)).(control.TenantPlugin)
	if tp.Active != "1" || len(tp.Versions) != 2 || tp.Versions[1].Digest != rev("two") || tp.Versions[0].By.ID != "operator" {
		t.Fatalf("after a kept version: %+v", tp)
	}
	if _, err := p.AddPluginVersion(ctx, "acme", v("3", "three"), "count", true, 2, 2); !errors.Is(err, control.ErrLimit) {
		t.Fatalf("a third version with a limit of 2: %v, want ErrLimit", err)
	}
	if _, err := p.AddPluginVersion(ctx, "acme", v("2", "other"), "count", true, 2, 2); !errors.Is(err, control.ErrExists) {
		t.Fatalf("version 2 with another module: %v, want ErrExists", err)
	}
	changed := v("2", "two")
	changed.Manifest = json.RawMessage(`{"name":"count","limits":{"timeout":"2s"}}`)
	if _, err := p.AddPluginVersion(ctx, "acme", changed, "count", true, 2, 2); !errors.Is(err, control.ErrExists) {
		t.Fatalf("version 2 with another manifest: %v, want ErrExists", err)
	}
	must(t)(p.AddPluginVersion(ctx, "acme", v("1", "one"), "other", true, 2, 2))
	if _, err := p.AddPluginVersion(ctx, "acme", v("1", "one"), "third", true, 2, 2); !errors.Is(err, control.ErrLimit) {
		t.Fatalf("a third plugin with a limit of 2: %v, want ErrLimit", err)
	}
	if _, err := p.SwapPlugin(ctx, "acme", "count", "9"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("swap to an unknown version: %v", err)
	}
	must(t)(p.SwapPlugin(ctx, "acme", "count", "2"))
	if err := p.DeletePlugin(ctx, "acme", "count", "2"); !errors.Is(err, control.ErrInvalid) {
		t.Fatalf("delete the active version: %v, want ErrInvalid", err)
	}
	check(t, p.DeletePlugin(ctx, "acme", "count", "1"))
	check(t, p.DeletePlugin(ctx, "acme", "other", ""))
	// Resets are counted, for every node to apply; an unknown plugin
	// has none.
	first := must(t)(p.ResetPlugin(ctx, "acme", "count")).(control.TenantPlugin).ResetSeq
	if tp := must(t)(p.ResetPlugin(ctx, "acme", "count")).(control.TenantPlugin); first == 0 || tp.ResetSeq <= first {
		t.Fatalf("after two resets: %+v (the first at %d)", tp, first)
	}
	if _, err := p.ResetPlugin(ctx, "acme", "nope"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("reset of an unknown plugin: %v, want ErrNotFound", err)
	}
	if ps := p.Plugins("globex"); len(ps) != 0 {
		t.Fatalf("globex has acme's plugins: %+v", ps)
	}
	before := p.Plugins("acme")
	if len(before) != 1 || before[0].Active != "2" || len(before[0].Versions) != 1 || before[0].ResetSeq == 0 {
		t.Fatalf("before replay: %+v", before)
	}
	hist, err := p.History(control.PluginEntity("acme"))
	check(t, err)
	kinds := []string{}
	for _, h := range hist {
		kinds = append(kinds, h.Kind)
	}
	if want := []string{"plugin.added", "plugin.kept", "plugin.added", "plugin.swapped", "plugin.deleted", "plugin.deleted", "plugin.reset", "plugin.reset"}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("history %v, want %v", kinds, want)
	}
	check(t, p.Close())

	p = open(t, dir)
	if after := p.Plugins("acme"); !reflect.DeepEqual(before, after) {
		t.Fatalf("replayed plugins %+v, want %+v", after, before)
	}
	if got := p.PluginTenants(); !reflect.DeepEqual(got, []string{"acme"}) {
		t.Fatalf("PluginTenants = %v", got)
	}
	check(t, p.DeleteTenant(ctx, "acme"))
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	if ps := p.Plugins("acme"); len(ps) != 0 {
		t.Fatalf("a re-created tenant inherits plugins: %+v", ps)
	}
	check(t, p.Close())
}

// SamePluginManifest: spacing, member order and the pin's case aside,
// manifests are the same only when they say the same.
func TestSamePluginManifest(t *testing.T) {
	a := json.RawMessage(`{"name":"count","version":"1","sha256":"ABCD","limits":{"timeout":"1s","pool_size":2}}`)
	for b, want := range map[string]bool{
		` { "limits": {"pool_size": 2, "timeout": "1s"}, "sha256": "abcd", "version": "1", "name": "count" } `: true,
		`{"name":"count","version":"1","sha256":"abcd","limits":{"timeout":"2s","pool_size":2}}`:               false,
		`{"name":"count","version":"1","sha256":"abcd","limits":{"timeout":"1s"}}`:                             false,
		`{"name":"count","version":"1","sha256":"abcd","limits":{"timeout":"1s","pool_size":2.0}}`:             false,
	} {
		if got := control.SamePluginManifest(a, json.RawMessage(b)); got != want {
			t.Errorf("SamePluginManifest(%s, %s) = %v, want %v", a, b, got, want)
		}
	}
}
