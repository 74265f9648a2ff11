package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// `batpak verify`, run again and again beside a writer (in this process)
// that appends and compacts in a loop, always exits 0: a compaction
// committing while it reads is never reported as damage. It runs for 3 s
// and until 10 runs beside 5 compactions are done (at most 15 s).
func TestVerifyBesideCompactingWriter(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	cfg := core.DefaultConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	pad := strings.Repeat("p", 300)
	appendN := func(from, n int) error {
		for i := from; i < from+n; i++ {
			at, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%30), "shop")
			if _, err := s.Append(ctx, at, core.MustKind(1, 1), []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))); err != nil {
				return err
			}
		}
		return nil
	}
	if err := appendN(0, 600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var compactions atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 600; ; i += 40 {
			select {
			case <-stop:
				return
			default:
			}
			if err := appendN(i, 40); err != nil {
				t.Errorf("append: %v", err)
				return
			}
			cc := core.CompactConfig{Merge: true, Tombstone: func(ev core.StoredEvent) bool { return ev.GlobalSequence%7 == 0 }}
			if i%80 == 0 {
				cc = core.CompactConfig{Merge: true, MaxPerEntity: 15}
			}
			if _, err := s.Compact(ctx, cc); err != nil {
				t.Errorf("compact: %v", err)
				return
			}
			compactions.Add(1)
		}
	}()
	start := time.Now()
	runs, failed := 0, 0
	for {
		el := time.Since(start)
		if el > 15*time.Second || (el > 3*time.Second && runs >= 10 && compactions.Load() >= 5) {
			break
		}
		runs++
		var out, errb bytes.Buffer
		if code := run(ctx, []string{"verify", "--data-dir", dir}, strings.NewReader(""), &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "ok: ") {
			failed++
			t.Errorf("verify beside a compacting writer: exit %d\n%s%s", code, out.String(), errb.String())
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d verify runs beside %d compactions in %v; %d failed", runs, compactions.Load(), time.Since(start).Round(time.Millisecond), failed)
	if runs < 10 || compactions.Load() < 5 {
		t.Fatalf("%d runs beside %d compactions: too few to test anything", runs, compactions.Load())
	}
}
