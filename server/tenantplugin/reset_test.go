package tenantplugin_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// resetEnv is a control plane with tenant acme, a store holding one event
// of order:1, and the trap fixture (a projection that always faults).
type resetEnv struct {
	testBed
	trap []byte
}

func newResetEnv(t *testing.T) resetEnv {
	t.Helper()
	return resetEnv{testBed: newTestBed(t, control.Quotas{}, "acme"), trap: fixture(t, "trap")}
}

// manifest is trap's manifest at version, quarantined after one fault.
func (e resetEnv) manifest(version string) []byte {
	b, _ := json.Marshal(map[string]any{"name": "trap", "version": version, "kind": "projection",
		"sha256": plugins.Digest(e.trap), "limits": map[string]any{"max_faults": 1}})
	return b
}

// quarantine calls trap on m until it is quarantined.
func (e resetEnv) quarantine(t *testing.T, m *tenantplugin.Manager, who string) {
	t.Helper()
	for i := 0; i < 3; i++ {
		_, _ = m.Project(e.ctx, e.store, "acme", "trap", "order:1")
	}
	if st, err := m.Status("acme", "trap"); err != nil || !st.Quarantined {
		t.Fatalf("%s: status %+v, %v; want quarantined", who, st, err)
	}
}

// Two managers on one control plane stand for two cluster nodes: each
// runs the plugin and quarantines it on its own, and a reset recorded by
// one reaches the other through Sync. A Sync with no new reset lifts
// nothing — after a restart, or for a plugin deleted and added again
// under the same name, whose resets start over.
func TestResetReachesOtherNodesOnce(t *testing.T) {
	e := newResetEnv(t)
	ctx, root, plane, trap, manifest := e.ctx, e.root, e.plane, e.trap, e.manifest
	// The nodes share the modules' directory, as a cluster's nodes hold
	// the same replicated blobs.
	node := func() *tenantplugin.Manager {
		m, err := tenantplugin.Open(ctx, tenantplugin.Options{Dir: filepath.Join(root, "plugins"), Plane: plane})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close(context.Background()) })
		if err := m.WaitStarted(ctx); err != nil { // a node serves its plugins once loaded
			t.Fatal(err)
		}
		return m
	}
	quarantine := func(m *tenantplugin.Manager, who string) { t.Helper(); e.quarantine(t, m, who) }
	quarantined := func(m *tenantplugin.Manager) bool {
		st, err := m.Status("acme", "trap")
		if err != nil {
			t.Fatal(err)
		}
		return st.Quarantined
	}

	leader := node()
	if _, err := leader.Push(ctx, "acme", manifest("1"), trap, true); err != nil {
		t.Fatal(err)
	}
	follower := node()
	follower.Sync(ctx, "acme")
	quarantine(follower, "follower")
	if _, err := leader.Reset(ctx, "acme", "trap"); err != nil {
		t.Fatal(err)
	}
	follower.Sync(ctx, "acme")
	if quarantined(follower) {
		t.Fatal("the follower's quarantine outlived a reset recorded by the leader")
	}

	// A restarted node has applied every reset recorded before: a Sync
	// caused by another change lifts nothing.
	follower.Close(ctx)
	follower = node()
	quarantine(follower, "restarted follower")
	follower.Sync(ctx, "acme")
	if !quarantined(follower) {
		t.Fatal("a Sync with no new reset lifted the restarted follower's quarantine")
	}

	// The plugin deleted and added again, both seen by the follower in
	// one Sync: the new plugin's first reset still reaches it.
	if err := leader.Delete(ctx, "acme", "trap", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.Push(ctx, "acme", manifest("2"), trap, true); err != nil {
		t.Fatal(err)
	}
	follower.Sync(ctx, "acme")
	quarantine(follower, "follower, plugin added again")
	if _, err := leader.Reset(ctx, "acme", "trap"); err != nil {
		t.Fatal(err)
	}
	follower.Sync(ctx, "acme")
	if quarantined(follower) {
		t.Fatal("the re-added plugin's first reset did not reach the follower")
	}
}

// With LocalResets (a rolling upgrade: older nodes cannot read a recorded
// reset) a reset lifts the quarantine on its node and records nothing.
func TestLocalResetsRecordNothing(t *testing.T) {
	e := newResetEnv(t)
	m, err := tenantplugin.Open(e.ctx, tenantplugin.Options{Dir: filepath.Join(e.root, "plugins"), Plane: e.plane, LocalResets: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	if _, err := m.Push(e.ctx, "acme", e.manifest("1"), e.trap, true); err != nil {
		t.Fatal(err)
	}
	e.quarantine(t, m, "before the reset")
	st, err := m.Reset(e.ctx, "acme", "trap")
	if err != nil || st.Quarantined {
		t.Fatalf("reset: %+v, %v", st, err)
	}
	hist, err := e.plane.History(control.PluginEntity("acme"))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hist {
		if h.Kind == "plugin.reset" {
			t.Fatal("a local reset was recorded")
		}
	}
}
