package server

import (
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
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := control.Open(control.Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
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
