package core_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

type counter struct{}

func (counter) Name() string                        { return "counter" }
func (counter) SchemaVersion() uint32               { return 1 }
func (counter) Kinds() []core.Kind                  { return []core.Kind{kindA} }
func (counter) Init() int                           { return 0 }
func (counter) Apply(n int, _ core.StoredEvent) int { return n + 1 }
func (counter) SupportsIncremental() bool           { return true }

func TestIssue4Smoke(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(10) })
	ctx := context.Background()
	sub := s.SubscribeLossy(core.Entity("p:"))
	defer sub.Close()
	c := mustCoord(t, "p:1", "s")
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, kindA, `{}`)
	}
	n := 0
	for range core.Take(sub.All(ctx), 10) {
		n++
	}
	if n != 10 || sub.Dropped() != 0 {
		t.Fatal(n, sub.Dropped())
	}
	cur := s.Cursor(core.All())
	var got []int
	for _, m := range []int{3, 3, 100, 100} {
		evs, err := cur.Poll(m)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, len(evs))
	}
	if fmt.Sprint(got) != "[3 3 4 0]" {
		t.Fatal(got)
	}
	st, found, err := core.Project(s, "p:1", counter{}, core.Consistent())
	if err != nil || !found || st != 10 {
		t.Fatal(st, found, err)
	}
	mustAppend(t, s, c, kindA, `{}`)
	st, _, _ = core.Project(s, "p:1", counter{}, core.Consistent())
	if st != 11 {
		t.Fatal(st)
	}
	seen := map[uint64]int{}
	panicked := false
	w, err := s.CursorWorker(ctx, core.Entity("p:"), core.WorkerConfig{BatchSize: 1}, func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
		seq := b[0].GlobalSequence
		seen[seq]++
		if seq == 1 && !panicked {
			panicked = true
			panic("boom")
		}
		if seq == 2 {
			return core.Stop, nil
		}
		return core.Continue, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Join(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "map[0:1 1:2 2:1]" {
		t.Fatal(seen)
	}
	wa := core.WatchProjection(s, "p:1", counter{})
	v, err := wa.Next(ctx)
	if err != nil || v != 11 {
		t.Fatal(v, err)
	}
	go func() { time.Sleep(10 * time.Millisecond); mustAppend(t, s, c, kindA, `{}`) }()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err = wa.Next(cctx)
	if err != nil || v != 12 {
		t.Fatal(v, err)
	}
	s.Close()
	if _, err := sub.Recv(ctx); !errors.Is(err, core.ErrSubscriptionClosed) {
		t.Fatal(err)
	}
}
