package core_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// dirHolds reports the files under dir whose bytes contain needle.
func dirHolds(dir, needle string) []string {
	var hits []string
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(needle)) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

// TestErasureLeavesNoStateBehind: once EraseEntity returns, no file of
// the store or of its FileCache holds the erased payload (the cache drops
// the entity's states, as an LRUCache does); and a store whose erasure
// epoch file went missing (a backup that copied only the segments) moves
// to a fresh epoch instead of counting from 0 again, so a cache a custom
// implementation kept cannot serve a state folded before the erasure.
func TestErasureLeavesNoStateBehind(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"FileCache", "LRUCache"} {
		t.Run(name, func(t *testing.T) {
			cacheDir := filepath.Join(t.TempDir(), "states")
			cfg := testConfig(t.TempDir())
			lru := core.NewLRUCache(100)
			if name == "FileCache" {
				cfg.ProjectionCache = core.NewFileCache(cacheDir)
			} else {
				cfg.ProjectionCache = lru
			}
			s := openWith(t, cfg)
			for _, e := range []string{"user:42", "user:43"} {
				mustAppend(t, s, mustCoord(t, e, "s"), kindA, secretPayload("SSN-"+e))
				if got := mustProjectSecrets(t, s, e, core.Consistent()); strings.Join(got, ",") != "SSN-"+e {
					t.Fatal(got)
				}
			}
			if n, err := s.EraseEntity(ctx, "user:42"); err != nil || n != 1 {
				t.Fatal(n, err)
			}
			if hits := append(dirHolds(cfg.Dir, "SSN-user:42"), dirHolds(cacheDir, "SSN-user:42")...); len(hits) > 0 {
				t.Fatalf("after EraseEntity, files still hold the erased payload: %v", hits)
			}
			if name == "FileCache" && len(dirHolds(cacheDir, "SSN-user:43")) != 1 {
				t.Fatal("the other entity's cached state went too")
			}
			if name == "LRUCache" && lru.Len() != 1 {
				t.Fatalf("the LRU cache holds %d states after the erasure, want the other entity's 1", lru.Len())
			}
		})
	}

	// A cache that keeps everything (a custom one), and the epoch file lost.
	cfg := testConfig(t.TempDir())
	keep := &keepAllCache{states: map[string]core.CachedState{}}
	cfg.ProjectionCache = keep
	s := openWith(t, cfg)
	mustAppend(t, s, mustCoord(t, "user:42", "s"), kindA, secretPayload("SSN-1"))
	mustProjectSecrets(t, s, "user:42", core.Consistent())
	if _, err := s.EraseEntity(ctx, "user:42"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.Dir, "erasures")); err != nil {
		t.Fatal(err)
	}
	s2 := openWith(t, cfg)
	if s2.Diagnostics().Open.ErasureEpochReset != 1 {
		t.Error("Open did not report the missing erasure epoch file")
	}
	if got := mustProjectSecrets(t, s2, "user:42", core.MaybeStale(time.Hour)); len(got) != 0 {
		t.Fatalf("with its erasure epoch file gone, the store served a state folded before the erasure: %v", got)
	}
	// A new store writes its epoch file at once: reopening it reports no reset.
	fresh := testConfig(t.TempDir())
	openWith(t, fresh).Close()
	if d := openWith(t, fresh).Diagnostics().Open; d.ErasureEpochReset != 0 {
		t.Fatal("a new store's second Open reported a reset erasure epoch")
	}
}

// keepAllCache is a ProjectionCache that forgets nothing.
type keepAllCache struct {
	mu     sync.Mutex
	states map[string]core.CachedState
}

func (c *keepAllCache) Get(key string) (core.CachedState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.states[key]
	return st, ok
}

func (c *keepAllCache) Put(key string, st core.CachedState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.states[key] = st
}

// TestCompactionForgetsTombstonedStates: a compaction that tombstones an
// entity's payloads drops that entity's cached states from a FileCache,
// and only that entity's.
func TestCompactionForgetsTombstonedStates(t *testing.T) {
	ctx := context.Background()
	cacheDir := filepath.Join(t.TempDir(), "states")
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10 // the events below end up in sealed segments
	cfg.ProjectionCache = core.NewFileCache(cacheDir)
	s := openWith(t, cfg)
	for _, e := range []string{"user:42", "user:43"} {
		mustAppend(t, s, mustCoord(t, e, "s"), kindA, secretPayload("SSN-"+e))
	}
	for i := range 1000 { // fill past the first segments
		mustAppend(t, s, mustCoord(t, fmt.Sprint("pad:", i), "s"), kindA, `{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	}
	for _, e := range []string{"user:42", "user:43"} {
		mustProjectSecrets(t, s, e, core.Consistent())
	}
	rep, err := s.Compact(ctx, core.TombstoneWhere(func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "user:42" }))
	if err != nil || rep.EventsTombstoned != 1 {
		t.Fatalf("Compact: %+v, %v", rep, err)
	}
	if hits := dirHolds(cacheDir, "SSN-user:42"); len(hits) > 0 {
		t.Fatalf("after the compaction the cache still holds the tombstoned payload: %v", hits)
	}
	if len(dirHolds(cacheDir, "SSN-user:43")) != 1 {
		t.Fatal("the other entity's cached state went too")
	}
}

// blockingProjection folds strings, blocking in its first Apply until
// release is closed (started is closed once it blocks).
type blockingProjection struct{ started, release chan struct{} }

func (blockingProjection) Name() string          { return "slow" }
func (blockingProjection) SchemaVersion() uint32 { return 1 }
func (blockingProjection) Kinds() []core.Kind    { return nil }
func (blockingProjection) Init() []string        { return nil }
func (p blockingProjection) Apply(st []string, ev core.StoredEvent) []string {
	if len(st) == 0 {
		close(p.started)
		<-p.release
	}
	return append(st, string(ev.Payload))
}

// TestFoldFiledAfterAnErasureLeavesNothing: a fold that read an entity's
// events before EraseEntity and files its state after the erasure forgot
// the entity's states leaves no file in the FileCache holding the erased
// payload.
func TestFoldFiledAfterAnErasureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewFileCache(dir) })
	c := mustCoord(t, "user:1", "s")
	mustAppend(t, s, c, kindA, `{"ssn":"SECRET-123-45"}`)
	mustAppend(t, s, c, kindA, `{"n":2}`)
	p := blockingProjection{started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan struct{})
	go func() { _, _, _ = core.Project(s, "user:1", p, core.Consistent()); close(done) }()
	<-p.started
	if n, err := s.EraseEntity(context.Background(), "user:1"); err != nil || n != 2 {
		t.Fatalf("EraseEntity: %d, %v", n, err)
	}
	close(p.release)
	<-done
	if hits := dirHolds(dir, "SECRET-123-45"); len(hits) > 0 {
		t.Fatalf("after EraseEntity, cache files %v hold the erased payload", hits)
	}
}
