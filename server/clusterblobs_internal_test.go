package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/control"
)

// TestBlobCollectionSkipsStalePlane: a node whose control plane stopped
// applying its store's changes removes nothing (it might not name a
// blob a later change references) and counts the skip.
func TestBlobCollectionSkipsStalePlane(t *testing.T) {
	p := openTestPlane(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if p.Err() == nil {
		t.Fatal("a closed following plane reports no error")
	}
	g := newBlobCollector(p, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute, time.Minute)
	if _, err := g.collectOnce(); !errors.Is(err, errPlaneStale) {
		t.Fatalf("collection with a stopped plane: %v, want errPlaneStale", err)
	}
	g.collect()
	if g.skipped.Load() != 1 {
		t.Fatalf("skipped collections: %d, want 1", g.skipped.Load())
	}
}

// TestClusterBlobSettings: blob_grace under 1s and blob_collect_every
// under 100ms are refused, naming the setting.
func TestClusterBlobSettings(t *testing.T) {
	for _, tc := range []struct {
		grace, every time.Duration
		want         string
	}{
		{500 * time.Millisecond, 0, "cluster.blob_grace"},
		{0, 10 * time.Millisecond, "cluster.blob_collect_every"},
	} {
		cfg := DefaultConfig()
		cfg.Root = t.TempDir()
		cfg.OperatorToken = "an operator token of enough length 0123456789"
		_, err := (&Server{cfg: cfg}).openClusterNode(ClusterConfig{NodeID: "n1", BlobGrace: tc.grace, BlobCollectEvery: tc.every})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("grace %s, every %s: %v, want an error naming %s", tc.grace, tc.every, err, tc.want)
		}
	}
}

// TestReferencedBlobsSharedAcrossTenants: the same bytes kept by two
// tenants (content-addressed: one blob) stay referenced when one tenant
// deletes its plugin, its policy revisions are pruned, or it is deleted
// altogether; a tenant deleted and created again with the same id
// references nothing of its former self.
func TestReferencedBlobsSharedAcrossTenants(t *testing.T) {
	p := openTestPlane(t)
	defer p.Close()
	ctx := context.Background()
	digest := func(c byte) string { return strings.Repeat(string(c), 64) }
	shared, mine, old := digest('a'), digest('b'), digest('c')
	for _, id := range []string{"acme", "beta"} {
		if _, err := p.CreateTenant(ctx, id, control.Quotas{}, control.Settings{}); err != nil {
			t.Fatal(err)
		}
		v := control.PluginVersion{Version: "1.0.0", Digest: shared, Kind: "projection", Bytes: 1, Manifest: json.RawMessage(`{}`)}
		if _, err := p.AddPluginVersion(ctx, id, v, "count", true, 10, 10); err != nil {
			t.Fatal(err)
		}
		if _, err := p.ActivatePolicy(ctx, id, shared, 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	// acme: its revision "shared" pruned past keep 2, its plugin deleted.
	for _, rev := range []string{old, mine} {
		if _, err := p.ActivatePolicy(ctx, "acme", rev, 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.DeletePlugin(ctx, "acme", "count", ""); err != nil {
		t.Fatal(err)
	}
	refs := referencedBlobs(p)
	if refs[shared] == "" || refs[mine] == "" || refs[old] == "" {
		t.Fatalf("referenced: %v; want %s (beta's), %s and %s (acme's kept revisions)", refs, shared, mine, old)
	}
	if err := p.DeleteTenant(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if refs := referencedBlobs(p); refs[shared] != "" {
		t.Fatalf("after beta's deletion %s is still referenced, by %q (acme pruned it)", shared, refs[shared])
	}
	if _, err := p.CreateTenant(ctx, "beta", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	if refs := referencedBlobs(p); refs[shared] != "" {
		t.Fatalf("beta created again references %s, by %q", shared, refs[shared])
	}
}

// openTestPlane opens a control plane over a fresh store, closed when the
// test ends (the plane first).
func openTestPlane(t *testing.T) *control.Plane {
	t.Helper()
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	p, err := control.Open(control.Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
