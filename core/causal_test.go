package core_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// react appends an event caused by cause (correlation: cause's, unless
// corr is given).
func react(t testing.TB, s *core.Store, entity string, cause core.Receipt, payload string) core.Receipt {
	t.Helper()
	r, err := s.AppendReaction(context.Background(), mustCoord(t, entity, "s"), kindB, []byte(payload), cause.CorrelationID, cause.ID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustDescendants(t testing.TB, s *core.Store, id core.EventID, lim core.CausalLimits) core.CausalResult {
	t.Helper()
	res, err := s.Descendants(id, lim)
	if err != nil {
		t.Fatalf("Descendants(%s): %v", id, err)
	}
	return res
}

func mustCorrelation(t testing.TB, s *core.Store, id core.EventID, lim core.CausalLimits) core.CausalResult {
	t.Helper()
	res, err := s.Correlation(id, lim)
	if err != nil {
		t.Fatalf("Correlation(%s): %v", id, err)
	}
	return res
}

func receiptIDs(rs ...core.Receipt) []core.EventID {
	out := make([]core.EventID, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// checkCausalOrder: global order, each event after its cause when that
// is in the result, and every event but the first caused by one in it.
func checkCausalOrder(t testing.TB, what string, evs []core.StoredEvent) {
	t.Helper()
	at := map[core.EventID]int{}
	for i, ev := range evs {
		if i > 0 && ev.GlobalSequence <= evs[i-1].GlobalSequence {
			t.Fatalf("%s: not in global order at %d", what, i)
		}
		if i > 0 {
			if j, ok := at[ev.Header.CausationID]; !ok || j >= i {
				t.Fatalf("%s: event %d (%s) caused by %s, not an earlier event of the result", what, i, ev.Header.ID, ev.Header.CausationID)
			}
		}
		at[ev.Header.ID] = i
	}
}

// causalTree writes root → a, b, c; a → a1, a2; b → b1; b1 → b11, with
// unrelated events and an event caused from outside the store between
// them. It returns the receipts by name.
func causalTree(t testing.TB, s *core.Store) map[string]core.Receipt {
	t.Helper()
	r := map[string]core.Receipt{}
	r["root"] = mustAppend(t, s, mustCoord(t, "order:1", "s"), kindA, `{"n":"root"}`)
	r["other"] = mustAppend(t, s, mustCoord(t, "order:2", "s"), kindA, `{"n":"other"}`)
	r["a"] = react(t, s, "pay:1", r["root"], `{"n":"a"}`)
	r["b"] = react(t, s, "ship:1", r["root"], `{"n":"b"}`)
	outside, err := s.AppendReaction(context.Background(), mustCoord(t, "order:3", "s"), kindA, []byte(`{"n":"outside"}`),
		core.NewEventID(), core.NewEventID())
	if err != nil {
		t.Fatal(err)
	}
	r["outside"] = outside
	r["a1"] = react(t, s, "pay:1", r["a"], `{"n":"a1"}`)
	r["c"] = react(t, s, "mail:1", r["root"], `{"n":"c"}`)
	r["b1"] = react(t, s, "ship:1", r["b"], `{"n":"b1"}`)
	r["a2"] = react(t, s, "pay:2", r["a"], `{"n":"a2"}`)
	r["other1"] = react(t, s, "order:2", r["other"], `{"n":"other1"}`)
	r["b11"] = react(t, s, "ship:2", r["b1"], `{"n":"b11"}`)
	return r
}

func names(r map[string]core.Receipt, evs []core.StoredEvent) string {
	by := map[core.EventID]string{}
	for k, v := range r {
		by[v.ID] = k
	}
	var out []string
	for _, ev := range evs {
		out = append(out, by[ev.Header.ID])
	}
	return strings.Join(out, " ")
}

// checkTree checks what Descendants and Correlation say of causalTree.
func checkTree(t *testing.T, s *core.Store, r map[string]core.Receipt, what string) {
	t.Helper()
	for id, want := range map[string]string{
		"root":    "root a b a1 c b1 a2 b11",
		"a":       "a a1 a2",
		"b":       "b b1 b11",
		"b1":      "b1 b11",
		"c":       "c",
		"other":   "other other1",
		"outside": "outside",
	} {
		res := mustDescendants(t, s, r[id].ID, core.CausalLimits{})
		if got := names(r, res.Events); got != want || res.Truncated {
			t.Errorf("%s: Descendants(%s) = %q truncated %v; want %q", what, id, got, res.Truncated, want)
		}
		checkCausalOrder(t, what, res.Events)
	}
	for id, want := range map[string]string{
		"root":    "root a b a1 c b1 a2 b11",
		"b11":     "root a b a1 c b1 a2 b11",
		"other1":  "other other1",
		"outside": "outside",
	} {
		res := mustCorrelation(t, s, r[id].ID, core.CausalLimits{})
		if got := names(r, res.Events); got != want || res.Truncated {
			t.Errorf("%s: Correlation(%s) = %q truncated %v; want %q", what, id, got, res.Truncated, want)
		}
	}
}

func TestDescendantsFanOutTree(t *testing.T) {
	s := openStore(t)
	r := causalTree(t, s)
	checkTree(t, s, r, "live")
	// Every descendant has the root among its ancestors: the two walks agree.
	for _, ev := range mustDescendants(t, s, r["root"].ID, core.CausalLimits{}).Events {
		anc, err := s.Ancestors(ev.Header.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if anc[len(anc)-1].Header.ID != r["root"].ID {
			t.Fatalf("Ancestors(%s) ends at %s, not the root", ev.Header.ID, anc[len(anc)-1].Header.ID)
		}
	}
	if _, err := s.Descendants(core.NewEventID(), core.CausalLimits{}); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Descendants(unknown) = %v; want ErrNotFound", err)
	}
	if _, err := s.Correlation(core.NewEventID(), core.CausalLimits{}); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Correlation(unknown) = %v; want ErrNotFound", err)
	}
}

// A diamond: two causal paths cannot meet (an event has one cause), but a
// conversation joins branches of several trees, and an event reached both
// as a member and as a descendant is returned once.
func TestCausalDiamond(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	top := mustAppend(t, s, mustCoord(t, "d:0", "s"), kindA, `{"n":0}`)
	left := react(t, s, "d:l", top, `{"n":"l"}`)
	right := react(t, s, "d:r", top, `{"n":"r"}`)
	// bottom is caused by left and joins the conversation of right's own
	// new thread, started by other.
	other := mustAppend(t, s, mustCoord(t, "d:o", "s"), kindA, `{"n":"o"}`)
	bottom, err := s.AppendReaction(ctx, mustCoord(t, "d:b", "s"), kindB, []byte(`{"n":"b"}`), other.ID, left.ID)
	if err != nil {
		t.Fatal(err)
	}
	res := mustDescendants(t, s, top.ID, core.CausalLimits{})
	if got, want := ids(res.Events), receiptIDs(top, left, right, bottom); !slices.Equal(got, want) {
		t.Fatalf("Descendants(top) = %v; want %v", got, want)
	}
	if got, want := ids(mustCorrelation(t, s, top.ID, core.CausalLimits{}).Events), receiptIDs(top, left, right); !slices.Equal(got, want) {
		t.Fatalf("Correlation(top) = %v; want %v", got, want)
	}
	if got, want := ids(mustCorrelation(t, s, bottom.ID, core.CausalLimits{}).Events), receiptIDs(other, bottom); !slices.Equal(got, want) {
		t.Fatalf("Correlation(bottom) = %v; want %v", got, want)
	}
	// A conversation named by an id that is no event of the store.
	ext := core.NewEventID()
	var members []core.Receipt
	for i := range 3 {
		members = append(members, mustAppendOpts(t, s, mustCoord(t, "ext", "s"), kindA, payloadN(i), core.AppendOptions{CorrelationID: ext}))
	}
	if got, want := ids(mustCorrelation(t, s, members[1].ID, core.CausalLimits{}).Events), receiptIDs(members...); !slices.Equal(got, want) {
		t.Fatalf("Correlation(external) = %v; want %v", got, want)
	}
}

func TestCausalLimits(t *testing.T) {
	s := openStore(t)
	// A chain 10 deep and a fan-out of 5.
	chain := []core.Receipt{mustAppend(t, s, mustCoord(t, "chain", "s"), kindA, `{}`)}
	for i := 1; i < 10; i++ {
		chain = append(chain, react(t, s, "chain", chain[i-1], payloadN(i)))
	}
	for depth, want := range map[int]struct {
		n         int
		truncated bool
	}{1: {2, true}, 3: {4, true}, 8: {9, true}, 9: {10, false}, 10: {10, false}} {
		res := mustDescendants(t, s, chain[0].ID, core.CausalLimits{MaxDepth: depth})
		if len(res.Events) != want.n || res.Truncated != want.truncated {
			t.Errorf("MaxDepth %d: %d events truncated %v; want %d, %v", depth, len(res.Events), res.Truncated, want.n, want.truncated)
		}
		if got := ids(res.Events); !slices.Equal(got, receiptIDs(chain[:want.n]...)) {
			t.Errorf("MaxDepth %d: not the chain's first %d events", depth, want.n)
		}
	}
	fan := []core.Receipt{mustAppend(t, s, mustCoord(t, "fan", "s"), kindA, `{}`)}
	for i := range 5 {
		fan = append(fan, react(t, s, fmt.Sprintf("fan:%d", i), fan[0], payloadN(i)))
	}
	for max, want := range map[int]struct {
		n         int
		truncated bool
	}{1: {1, true}, 3: {3, true}, 5: {5, true}, 6: {6, false}, 7: {6, false}} {
		res := mustDescendants(t, s, fan[0].ID, core.CausalLimits{MaxEvents: max})
		if got := ids(res.Events); !slices.Equal(got, receiptIDs(fan[:want.n]...)) || res.Truncated != want.truncated {
			t.Errorf("Descendants MaxEvents %d: %d events truncated %v; want the first %d, %v", max, len(got), res.Truncated, want.n, want.truncated)
		}
		res = mustCorrelation(t, s, fan[3].ID, core.CausalLimits{MaxEvents: max})
		if got := ids(res.Events); !slices.Equal(got, receiptIDs(fan[:want.n]...)) || res.Truncated != want.truncated {
			t.Errorf("Correlation MaxEvents %d: %d events truncated %v; want the first %d, %v", max, len(got), res.Truncated, want.n, want.truncated)
		}
	}
	// Zero limits are the defaults: a chain longer than the default depth
	// is cut there.
	long := []core.Receipt{mustAppend(t, s, mustCoord(t, "long", "s"), kindA, `{}`)}
	for i := 1; i <= core.DefaultCausalMaxDepth+1; i++ {
		long = append(long, react(t, s, "long", long[i-1], payloadN(i)))
	}
	res := mustDescendants(t, s, long[0].ID, core.CausalLimits{})
	if len(res.Events) != core.DefaultCausalMaxDepth+1 || !res.Truncated {
		t.Fatalf("default depth: %d events truncated %v; want %d, true", len(res.Events), res.Truncated, core.DefaultCausalMaxDepth+1)
	}
}

// Batches (PriorItem) and fences: a committed fence's events are linked, a
// cancelled fence's never appear.
func TestCausalBatchesAndFences(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	rs, err := s.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: mustCoord(t, "b:1", "s"), Kind: kindA, Payload: []byte(`{}`)},
		{Coordinate: mustCoord(t, "b:2", "s"), Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(0)},
		{Coordinate: mustCoord(t, "b:3", "s"), Kind: kindA, Payload: []byte(`{}`), Causation: core.PriorItem(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{true, false} {
		f, err := s.BeginFence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.SubmitReaction(ctx, mustCoord(t, "b:4", "s"), kindB, []byte(fmt.Sprintf(`{"commit":%v}`, commit)), rs[0].CorrelationID, rs[2].ID); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = f.Commit(ctx)
		} else {
			err = f.Cancel(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, res := range []core.CausalResult{mustDescendants(t, s, rs[0].ID, core.CausalLimits{}), mustCorrelation(t, s, rs[1].ID, core.CausalLimits{})} {
		if got := payloads(res.Events); len(got) != 4 || got[3] != `{"commit":true}` {
			t.Fatalf("with fences: %v; want the batch and the committed fence's event", got)
		}
		checkCausalOrder(t, "batch", res.Events)
	}
	s = reopen(t, s)
	if got := payloads(mustDescendants(t, s, rs[0].ID, core.CausalLimits{}).Events); len(got) != 4 || got[3] != `{"commit":true}` {
		t.Fatalf("after reopen: %v", got)
	}
}

// Every cold-start path (checkpoint, footers, scan) yields the same links.
func TestCausalAfterReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	smallSegments(&cfg)
	s := openWith(t, cfg)
	r := causalTree(t, s)
	rotate(t, s)
	// More of the tree in the segment after the rotation.
	r["c1"] = react(t, s, "mail:1", r["c"], `{"n":"c1"}`)
	if err := s.SealSegments(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := func(s *core.Store) {
		t.Helper()
		checkTreeWith(t, s, r, s.Diagnostics().Open.Path, "root a b a1 c b1 a2 b11 c1")
	}
	want(s)
	for _, path := range []string{"checkpoint", "footers", "scan"} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		switch path {
		case "footers":
			os.Remove(filepath.Join(dir, "index.ckpt"))
		case "scan":
			os.Remove(filepath.Join(dir, "index.ckpt"))
			idx, _ := filepath.Glob(filepath.Join(dir, "*.idx"))
			for _, f := range idx {
				os.Remove(f)
			}
		}
		s = openWith(t, cfg)
		if got := s.Diagnostics().Open.Path; got != path {
			t.Fatalf("Open took path %q; want %q", got, path)
		}
		want(s)
		if path != "scan" {
			// A read-only open takes the same path.
			ro, err := core.OpenReadOnly(cfg)
			if err != nil {
				t.Fatal(err)
			}
			want(ro)
			ro.Close()
		}
	}
}

func checkTreeWith(t *testing.T, s *core.Store, r map[string]core.Receipt, what, rootTree string) {
	t.Helper()
	res := mustDescendants(t, s, r["root"].ID, core.CausalLimits{})
	if got := names(r, res.Events); got != rootTree {
		t.Errorf("%s: Descendants(root) = %q; want %q", what, got, rootTree)
	}
	if got := names(r, mustDescendants(t, s, r["b"].ID, core.CausalLimits{}).Events); got != "b b1 b11" {
		t.Errorf("%s: Descendants(b) = %q", what, got)
	}
	if got := names(r, mustCorrelation(t, s, r["c1"].ID, core.CausalLimits{}).Events); got != rootTree {
		t.Errorf("%s: Correlation(c1) = %q; want %q", what, got, rootTree)
	}
	if got := names(r, mustCorrelation(t, s, r["other1"].ID, core.CausalLimits{}).Events); got != "other other1" {
		t.Errorf("%s: Correlation(other1) = %q", what, got)
	}
}

// Compaction removes b (and only b): it leaves every result, and what it
// caused is no longer reached through it — as Ancestors stops at it — but
// is still a tree of its own. Redaction keeps a in place without payload.
func TestCausalAfterCompactionAndRedaction(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t.TempDir())
	smallSegments(&cfg)
	s := openWith(t, cfg)
	r := causalTree(t, s)
	rotate(t, s)
	if err := s.Redact(ctx, r["a"].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(ctx, core.Retention(func(ev core.StoredEvent) bool { return ev.Header.ID != r["b"].ID })); err != nil {
		t.Fatal(err)
	}
	check := func(s *core.Store, what string) {
		t.Helper()
		res := mustDescendants(t, s, r["root"].ID, core.CausalLimits{})
		if got := names(r, res.Events); got != "root a a1 c a2" {
			t.Errorf("%s: Descendants(root) = %q; want %q", what, got, "root a a1 c a2")
		}
		for _, ev := range res.Events {
			if redacted := ev.Header.ID == r["a"].ID; ev.Redacted != redacted || (redacted && ev.Payload != nil) {
				t.Errorf("%s: %s Redacted=%v payload %s", what, ev.Header.ID, ev.Redacted, ev.Payload)
			}
		}
		if got := names(r, mustDescendants(t, s, r["b1"].ID, core.CausalLimits{}).Events); got != "b1 b11" {
			t.Errorf("%s: Descendants(b1) = %q", what, got)
		}
		anc, err := s.Ancestors(r["b11"].ID, 0)
		if err != nil || names(r, anc) != "b11 b1" {
			t.Errorf("%s: Ancestors(b11) = %q, %v; want it to stop at the removed b", what, names(r, anc), err)
		}
		if got := names(r, mustCorrelation(t, s, r["b11"].ID, core.CausalLimits{}).Events); got != "root a a1 c b1 a2 b11" {
			t.Errorf("%s: Correlation(b11) = %q", what, got)
		}
		if _, err := s.Descendants(r["b"].ID, core.CausalLimits{}); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("%s: Descendants(removed) = %v; want ErrNotFound", what, err)
		}
	}
	check(s, "live")
	s = reopen(t, s)
	check(s, "reopened")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(cfg.Dir, "index.ckpt"))
	s = openWith(t, cfg)
	if p := s.Diagnostics().Open.Path; p != "footers" {
		t.Fatalf("Open took path %q; want footers", p)
	}
	check(s, "reopened from footers")
}

// Readers walk while writers grow conversations: every result is a
// consistent prefix (global order, causes before effects).
func TestCausalConcurrentReaders(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	roots := make([]core.Receipt, 4)
	for i := range roots {
		roots[i] = mustAppend(t, s, mustCoord(t, fmt.Sprintf("conv:%d", i), "s"), kindA, `{}`)
	}
	const perWriter = 150
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range roots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := roots[w]
			for i := range perWriter {
				cause := last
				if i%3 == 0 {
					cause = roots[w]
				}
				r, err := s.AppendReaction(ctx, mustCoord(t, fmt.Sprintf("conv:%d", w), "s"), kindB, []byte(payloadN(i)), roots[w].ID, cause.ID)
				if err != nil {
					errs <- err
					return
				}
				last = r
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for rd := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				root := roots[(n+rd)%len(roots)]
				d, err := s.Descendants(root.ID, core.CausalLimits{MaxEvents: 1 << 20, MaxDepth: 1 << 20})
				if err != nil {
					errs <- err
					return
				}
				checkCausalOrder(t, "concurrent Descendants", d.Events)
				c, err := s.Correlation(root.ID, core.CausalLimits{MaxEvents: 1 << 20})
				if err != nil {
					errs <- err
					return
				}
				if len(c.Events) == 0 || c.Events[0].Header.ID != root.ID {
					errs <- fmt.Errorf("Correlation does not start at the root")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, root := range roots {
		d := mustDescendants(t, s, root.ID, core.CausalLimits{MaxEvents: 1 << 20, MaxDepth: 1 << 20})
		c := mustCorrelation(t, s, root.ID, core.CausalLimits{MaxEvents: 1 << 20})
		if len(d.Events) != perWriter+1 || !slices.Equal(ids(d.Events), ids(c.Events)) {
			t.Fatalf("after the writers: %d descendants, %d in the conversation; want %d each, the same", len(d.Events), len(c.Events), perWriter+1)
		}
	}
}

// Reopening from the checkpoint again and again keeps the same
// conversations and the same checkpoint: restoring an entry does not file
// it in a group of its own beside the group the checkpoint restores.
func TestCausalCheckpointReopenedTwice(t *testing.T) {
	s := openStore(t)
	r := causalTree(t, s)
	dir := s.Config().Dir
	var sizes []int64
	for i := range 3 {
		s = reopen(t, s)
		if p := s.Diagnostics().Open.Path; p != "checkpoint" {
			t.Fatalf("reopen %d: path %q, want checkpoint", i, p)
		}
		checkTree(t, s, r, fmt.Sprintf("reopen %d", i))
		st, err := os.Stat(filepath.Join(dir, checkpointFile))
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, st.Size())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, checkpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if sizes = append(sizes, st.Size()); slices.Min(sizes) != slices.Max(sizes) {
		t.Fatalf("checkpoint sizes across reopenings %v: the same index must give the same checkpoint", sizes)
	}
}

// An event that caused a great many events: Descendants with a small
// MaxEvents returns the earliest of them and holds memory for what it
// returns, not for every child.
func TestDescendantsWideFanOutMemory(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Batch.MaxSize = 4096 })
	ctx := context.Background()
	root := mustAppend(t, s, mustCoord(t, "order:1", "s"), kindA, `{}`)
	c := mustCoord(t, "pay:1", "s")
	items := make([]core.BatchItem, 4096)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: kindB, Payload: []byte(`{}`)}
	}
	var first core.Receipt
	for i := range 16 {
		rs, err := s.AppendReactionBatch(ctx, root.CorrelationID, root.ID, items)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = rs[0]
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, max := range []int{2, 10} {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		res := mustDescendants(t, s, root.ID, core.CausalLimits{MaxEvents: max})
		runtime.ReadMemStats(&m1)
		if len(res.Events) != max || !res.Truncated || res.Events[1].Header.ID != first.ID {
			t.Fatalf("MaxEvents %d: %d events, truncated %v; want the root and the earliest children", max, len(res.Events), res.Truncated)
		}
		checkCausalOrder(t, "wide fan-out", res.Events)
		// 65536 children: collecting them all takes over 256 KiB.
		if n := m1.TotalAlloc - m0.TotalAlloc; n > 64<<10 {
			t.Errorf("MaxEvents %d over 65536 children allocated %d bytes", max, n)
		}
	}
	if res := mustDescendants(t, s, root.ID, core.CausalLimits{MaxEvents: 1 << 17}); len(res.Events) != 1+16*4096 || res.Truncated {
		t.Fatalf("unbounded: %d events, truncated %v", len(res.Events), res.Truncated)
	}
}

// Readers walk while writers grow conversations and compactions and
// redactions run: every answer is in causal order, shows no removed event
// and no redacted payload, and a removed starting event is ErrNotFound.
func TestCausalReadersDuringCompactionAndRedaction(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t.TempDir())
	smallSegments(&cfg)
	s := openWith(t, cfg)
	roots := make([]core.Receipt, 3)
	for i := range roots {
		roots[i] = mustAppend(t, s, mustCoord(t, fmt.Sprintf("conv:%d", i), "s"), kindA, `{}`)
	}
	const perWriter = 90
	secret := `{"secret":"` + strings.Repeat("s", 1000) + `"}`
	var mu sync.Mutex
	var written []core.Receipt // events the maintenance goroutine may remove or redact
	removed := map[core.EventID]bool{}
	var wg, writers sync.WaitGroup
	errs := make(chan error, 32)
	for w := range roots {
		writers.Add(1)
		go func() {
			defer writers.Done()
			last := roots[w]
			for i := range perWriter {
				cause := last
				if i%4 == 0 {
					cause = roots[w]
				}
				r, err := s.AppendReaction(ctx, mustCoord(t, fmt.Sprintf("conv:%d", w), "s"), kindB, []byte(secret), roots[w].ID, cause.ID)
				if errors.Is(err, core.ErrNotFound) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				last = r
				mu.Lock()
				written = append(written, r)
				mu.Unlock()
			}
		}()
	}
	writing := make(chan struct{})
	go func() { writers.Wait(); close(writing) }()
	wg.Add(1)
	go func() { // maintenance
		defer wg.Done()
		for round := 0; round < 6; round++ {
			// Each round waits for its share of the writes.
			for {
				mu.Lock()
				n := len(written)
				mu.Unlock()
				if n >= (round+1)*len(roots)*perWriter/7 {
					break
				}
				select {
				case <-writing:
				case <-time.After(time.Millisecond):
					continue
				}
				break
			}
			mu.Lock()
			var redact, remove []core.EventID
			for i, r := range written {
				switch i % 7 {
				case 3:
					redact = append(redact, r.ID)
				case 5:
					remove = append(remove, r.ID)
				}
			}
			mu.Unlock()
			for _, id := range redact {
				if err := s.Redact(ctx, id); err != nil && !errors.Is(err, core.ErrNotFound) {
					errs <- err
					return
				}
			}
			drop := map[core.EventID]bool{}
			for _, id := range remove {
				drop[id] = true
			}
			if _, err := s.Compact(ctx, core.Retention(func(ev core.StoredEvent) bool { return !drop[ev.Header.ID] })); err != nil {
				errs <- err
				return
			}
			// Only sealed segments are compacted: an event still in the
			// active one stays.
			mu.Lock()
			for id := range drop {
				if _, err := s.Get(id); errors.Is(err, core.ErrNotFound) {
					removed[id] = true
				}
			}
			mu.Unlock()
		}
	}()
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for rd := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				start := roots[(n+rd)%len(roots)]
				if len(written) > 0 && n%2 == 1 {
					start = written[n%len(written)]
				}
				gone := maps.Clone(removed) // removed before the walk began
				mu.Unlock()
				for _, walk := range []func(core.EventID, core.CausalLimits) (core.CausalResult, error){s.Descendants, s.Correlation} {
					res, err := walk(start.ID, core.CausalLimits{MaxEvents: 1 << 20, MaxDepth: 1 << 20})
					if errors.Is(err, core.ErrNotFound) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					for i, ev := range res.Events {
						if gone[ev.Header.ID] {
							errs <- fmt.Errorf("a walk returned the removed event %s", ev.Header.ID)
							return
						}
						if ev.Redacted && ev.Payload != nil || !ev.Redacted && string(ev.Payload) != secret && ev.Header.Kind == kindB {
							errs <- fmt.Errorf("event %s: Redacted %v, payload %.40s", ev.Header.ID, ev.Redacted, ev.Payload)
							return
						}
						if i > 0 && ev.GlobalSequence <= res.Events[i-1].GlobalSequence {
							errs <- fmt.Errorf("not in global order")
							return
						}
					}
				}
			}
		}()
	}
	writers.Wait()
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The final answers are those of a reopened store.
	before := map[core.EventID][]core.EventID{}
	redacted := 0
	for _, r := range roots {
		res := mustDescendants(t, s, r.ID, core.CausalLimits{MaxEvents: 1 << 20, MaxDepth: 1 << 20})
		before[r.ID] = ids(res.Events)
		for _, ev := range res.Events {
			if ev.Redacted {
				redacted++
			}
		}
	}
	if len(removed) == 0 || redacted == 0 {
		t.Fatalf("%d events removed, %d redacted events reached: the maintenance did not overlap the walks", len(removed), redacted)
	}
	s = reopen(t, s)
	for _, r := range roots {
		if got := ids(mustDescendants(t, s, r.ID, core.CausalLimits{MaxEvents: 1 << 20, MaxDepth: 1 << 20}).Events); !slices.Equal(got, before[r.ID]) {
			t.Fatalf("Descendants(%s) after reopening: %d events, before %d", r.ID, len(got), len(before[r.ID]))
		}
	}
}
