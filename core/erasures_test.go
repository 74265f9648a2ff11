package core_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
)

// countingSum counts events and Apply calls: a state served from the
// cache costs no call.
type countingSum struct{ applied *atomic.Int64 }

func (countingSum) Name() string          { return "counting-sum" }
func (countingSum) SchemaVersion() uint32 { return 1 }
func (countingSum) Kinds() []core.Kind    { return []core.Kind{kindA} }
func (countingSum) Init() int             { return 0 }

// SupportsIncremental: Project continues from a current cached state
// instead of refolding.
func (countingSum) SupportsIncremental() bool { return true }
func (p countingSum) Apply(n int, _ core.StoredEvent) int {
	p.applied.Add(1)
	return n + 1
}

// A damaged erasure epoch file costs cached projection states, never the
// store: Open moves to a fresh epoch, rewrites the file and says so.
func TestDamagedErasuresFileOpensWithFreshEpoch(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t.TempDir())
	cfg.ProjectionCache = core.NewFileCache(t.TempDir())
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCoord(t, "acct:1", "bank")
	for i := 0; i < 7; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	victim := mustAppend(t, s, mustCoord(t, "other:1", "bank"), kindB, `{"secret":1}`)
	if err := s.Redact(ctx, victim.ID); err != nil { // the erasure epoch file now exists
		t.Fatal(err)
	}
	p := countingSum{applied: &atomic.Int64{}}
	project := func(s *core.Store) (int, int64) {
		t.Helper()
		before := p.applied.Load()
		n, found, err := core.Project(s, "acct:1", p, core.Consistent())
		if err != nil || !found {
			t.Fatalf("Project: %v, %v", found, err)
		}
		return n, p.applied.Load() - before
	}
	if n, applied := project(s); n != 7 || applied != 7 {
		t.Fatalf("first projection %d with %d applies", n, applied)
	}
	if _, applied := project(s); applied != 0 {
		t.Fatalf("the cache was not used (%d applies)", applied)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The cache still serves across a restart while the epoch file is sound.
	s = openWith(t, cfg)
	if _, applied := project(s); applied != 0 {
		t.Fatalf("the cache was not used after a restart (%d applies)", applied)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(cfg.Dir, "erasures")
	for name, damage := range map[string]func(b []byte) []byte{
		"flipped byte": func(b []byte) []byte { b = bytes.Clone(b); b[3] ^= 0x10; return b },
		"truncated":    func(b []byte) []byte { return b[:5] },
		"empty":        func([]byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, damage(orig))
			var logs testenv.Buffer
			dcfg := cfg
			dcfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			s, err := core.Open(dcfg)
			if err != nil {
				t.Fatalf("Open with a damaged erasures file: %v", err)
			}
			defer s.Close()
			if got := s.Diagnostics().Open.ErasureEpochReset; got != 1 {
				t.Errorf("Diagnostics().Open.ErasureEpochReset = %d, want 1", got)
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "erasure epoch") {
				t.Errorf("no warning logged:\n%s", logs.String())
			}
			// States cached before are not reused: refolded, then cached anew.
			if n, applied := project(s); n != 7 || applied != 7 {
				t.Fatalf("after the reset: %d with %d applies, want a refold of 7", n, applied)
			}
			if _, applied := project(s); applied != 0 {
				t.Fatalf("the cache is not used after the reset (%d applies)", applied)
			}
			// The file was rewritten soundly: the next open reports nothing.
			s2 := reopen(t, s)
			if got := s2.Diagnostics().Open.ErasureEpochReset; got != 0 {
				t.Errorf("reopen: ErasureEpochReset = %d, want 0", got)
			}
			if _, applied := project(s2); applied != 0 {
				t.Fatalf("the cache is not used after reopening (%d applies)", applied)
			}
			// Erasures still raise the epoch from the fresh one.
			if err := s2.Redact(ctx, mustAppend(t, s2, mustCoord(t, "other:2", "bank"), kindB, `{}`).ID); err != nil {
				t.Fatal(err)
			}
			if _, applied := project(s2); applied != 7 {
				t.Fatalf("after a redaction the cached state was served (%d applies)", applied)
			}
			if err := s2.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// A file made huge (sparse: 1 TiB that takes no disk) is damaged
	// too, refused by its size before anything is read.
	t.Run("sparse 1 TiB", func(t *testing.T) {
		if err := os.Truncate(path, 1<<40); err != nil {
			t.Skipf("no sparse 1 TiB file here: %v", err)
		}
		s, err := core.Open(cfg)
		if err != nil {
			t.Fatalf("Open with a 1 TiB erasures file: %v", err)
		}
		defer s.Close()
		if got := s.Diagnostics().Open.ErasureEpochReset; got != 1 {
			t.Errorf("Diagnostics().Open.ErasureEpochReset = %d, want 1", got)
		}
		if st, err := os.Stat(path); err != nil || st.Size() != 12 {
			t.Errorf("the erasures file after the reset: %v, %v; want it rewritten (12 bytes)", st, err)
		}
	})
}
