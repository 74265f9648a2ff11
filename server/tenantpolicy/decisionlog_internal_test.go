package tenantpolicy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A stray file in a tenant's decision log whose name reads as a number but
// is not the log's own spelling ("7.jsonl" beside 0000000000000007.jsonl)
// is ignored: it once failed every later load, so that the tenant's
// decisions went unwritten and every query failed.
func TestDecisionLogIgnoresStrayNames(t *testing.T) {
	dir := t.TempDir()
	open := func() *decisionStore {
		s, err := newDecisionStore(dir, 1000, 1<<20, 1024, slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	write := func(s *decisionStore, from, n int) {
		for i := from; i < from+n; i++ {
			if !s.enqueue("acme", []byte(fmt.Sprintf(`{"decision_id":"d%d","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n", i))) {
				t.Fatal("enqueue refused")
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s := open()
	write(s, 0, 5)
	s.close()
	if err := os.WriteFile(filepath.Join(dir, "acme", "7.jsonl"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.close()
	write(s, 100, 50)
	p, err := s.query("acme", DecisionQuery{Limit: 1000})
	if err != nil || len(p.Decisions) != 55 || s.writeErrs.Load() != 0 {
		t.Fatalf("after a stray 7.jsonl: %d decisions, %v, %d write errors; want 55, none", len(p.Decisions), err, s.writeErrs.Load())
	}
}
