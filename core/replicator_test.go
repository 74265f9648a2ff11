package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/zeebo/blake3"
)

// memLog is a replicated log in memory: writes taken by any replica are
// ordered in one channel and applied to every replica in that order, the
// way a raft state machine would; the taking replica's receipts answer
// the write.
type memLog struct {
	entries  chan memEntry
	replicas []*core.Store
	clock    int64
	done     chan struct{}
	fail     atomic.Pointer[error] // when set, the next entry is refused with it
}

type memEntry struct {
	batch bool
	items []core.BatchItem
	taker int
	done  func([]core.Receipt, error)
}

// memReplica is one replica's Replicator.
type memReplica struct {
	log *memLog
	i   int
}

func (r memReplica) Replicate(batch bool, items []core.BatchItem, done func([]core.Receipt, error)) {
	cp := make([]core.BatchItem, len(items))
	for i, it := range items {
		it.Payload = bytes.Clone(it.Payload)
		cp[i] = it
	}
	r.log.entries <- memEntry{batch: batch, items: cp, taker: r.i, done: done}
}

func (l *memLog) run(t *testing.T) {
	defer close(l.done)
	ctx := context.Background()
	for e := range l.entries {
		if p := l.fail.Swap(nil); p != nil {
			e.done(nil, *p)
			continue
		}
		l.clock += 10
		for i := range e.items {
			if e.items[i].Options.Timestamp == 0 {
				e.items[i].Options.Timestamp = l.clock
			}
		}
		var answer []core.Receipt
		var answerErr error
		for i, s := range l.replicas {
			var rs []core.Receipt
			var err error
			if e.batch {
				var bt *core.BatchTicket
				if bt, err = s.SubmitReplicatedBatch(ctx, e.items); err == nil {
					rs, err = bt.Wait(ctx)
				}
			} else {
				var tk *core.Ticket
				if tk, err = s.SubmitReplicated(ctx, e.items[0]); err == nil {
					var rc core.Receipt
					if rc, err = tk.Wait(ctx); err == nil {
						rs = []core.Receipt{rc}
					}
				}
			}
			if i == e.taker {
				answer, answerErr = rs, err
			}
		}
		e.done(answer, answerErr)
	}
}

// countingGate admits everything but entity "forbidden", counting asks.
type countingGate struct{ asked atomic.Int64 }

var errForbidden = errors.New("forbidden entity")

func (g *countingGate) Admit(_ context.Context, p *core.Proposal) error {
	g.asked.Add(1)
	if p.Coordinate.Entity == "forbidden" {
		return errForbidden
	}
	return nil
}

func openReplicas(t *testing.T, n int) (*memLog, []*core.Store, []*countingGate) {
	t.Helper()
	l := &memLog{entries: make(chan memEntry, 64), done: make(chan struct{})}
	gates := make([]*countingGate, n)
	for i := 0; i < n; i++ {
		gates[i] = &countingGate{}
		g, r := gates[i], memReplica{l, i}
		l.replicas = append(l.replicas, openStore(t, func(c *core.Config) {
			c.Admission = g
			c.Replicator = r
		}))
	}
	go l.run(t)
	t.Cleanup(func() { close(l.entries); <-l.done })
	return l, l.replicas, gates
}

// TestReplicatorTakesEveryWrite: with a Replicator, appends, batches,
// reactions and imports taken by any replica are admitted once, by the
// replica that took them, and applied alike on every replica: the same
// events, ids, timestamps, clocks, refusals and hash chains.
func TestReplicatorTakesEveryWrite(t *testing.T) {
	_, rs, gates := openReplicas(t, 2)
	a, b := rs[0], rs[1]
	ctx := context.Background()
	c1, c2 := mustCoord(t, "acct-1", "s"), mustCoord(t, "acct-2", "s")

	r1 := mustAppendOpts(t, a, c1, kindA, `{"n":1}`, core.AppendOptions{ExpectedClock: core.ExpectNoEvents(), IdempotencyKey: "k1"})
	// A compare-and-set miss is the replicas' refusal, answered to the taker.
	var ce *core.ConflictError
	if _, err := b.AppendWithOptions(ctx, c1, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}); !errors.As(err, &ce) {
		t.Fatalf("CAS miss taken by the other replica: %v, want a *ConflictError", err)
	}
	// An idempotent retry taken by the other replica returns the original.
	rr, err := b.AppendWithOptions(ctx, c1, kindA, []byte(`{"n":1}`), core.AppendOptions{IdempotencyKey: "k1"})
	if err != nil || !rr.Deduplicated || rr.ID != r1.ID {
		t.Fatalf("retry: %+v, %v; want the original %s deduplicated", rr, err, r1.ID)
	}
	tk, err := b.Submit(ctx, c2, kindB, []byte(`{"n":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	prior := core.BatchItem{Coordinate: c2, Kind: kindB, Payload: []byte(`{"n":4}`), Causation: core.PriorItem(0)}
	brs, err := a.AppendBatch(ctx, []core.BatchItem{{Coordinate: c1, Kind: kindA, Payload: []byte(`{"n":3}`)}, prior})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AppendReaction(ctx, c2, kindA, []byte(`{"r":1}`), brs[0].CorrelationID, brs[1].ID); err != nil {
		t.Fatal(err)
	}
	// A refused batch writes nothing anywhere.
	if _, err := b.AppendBatch(ctx, []core.BatchItem{
		{Coordinate: c2, Kind: kindA, Payload: []byte(`{}`)},
		{Coordinate: c1, Kind: kindA, Payload: []byte(`{}`), Options: core.AppendOptions{ExpectedClock: core.ExpectClock(0)}},
	}); !errors.As(err, &ce) {
		t.Fatalf("batch with a CAS miss: %v", err)
	}
	// The gate's refusal is the taker's: nothing is proposed.
	asked := gates[0].asked.Load() + gates[1].asked.Load()
	if _, err := a.Append(ctx, mustCoord(t, "forbidden", "s"), kindA, []byte(`{}`)); !errors.Is(err, errForbidden) {
		t.Fatalf("gate refusal: %v", err)
	}
	// An import is taken like a batch.
	var exp bytes.Buffer
	src := openStore(t)
	mustAppend(t, src, mustCoord(t, "imported", "s"), kindC, `{"i":1}`)
	if _, err := src.Export(&exp, core.All(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Import(ctx, &exp, nil); err != nil {
		t.Fatal(err)
	}
	// Every write was asked about once, on its taker: the applies ask nothing.
	// (AppendBatch asks per item; the import's one item.)
	if got := gates[0].asked.Load() + gates[1].asked.Load(); got != asked+2 {
		t.Fatalf("gates asked %d times after the refusal, want %d (the refusal and the import)", got, asked+2)
	}

	ea, eb := mustQuery(t, a, core.All()), mustQuery(t, b, core.All())
	if len(ea) != 6 {
		t.Fatalf("replica a holds %d events, want 6: %v", len(ea), payloads(ea))
	}
	sameEvents(t, "replicas", ea, eb)
	for i := range ea {
		if ea[i].Header != eb[i].Header {
			t.Fatalf("event %d: headers differ:\n%+v\n%+v", i, ea[i].Header, eb[i].Header)
		}
	}
	mustVerify(t, a)
	mustVerify(t, b)
}

// TestReplicatorRefusals: what a replicated store does not do locally, and
// a replicated log's refusal reaching the writer.
func TestReplicatorRefusals(t *testing.T) {
	l, rs, _ := openReplicas(t, 1)
	s := rs[0]
	ctx := context.Background()
	c := mustCoord(t, "e", "s")
	r := mustAppend(t, s, c, kindA, `{}`)
	if _, err := s.BeginFence(ctx); !errors.Is(err, core.ErrReplicated) {
		t.Fatalf("BeginFence: %v, want ErrReplicated", err)
	}
	if err := s.Redact(ctx, r.ID); !errors.Is(err, core.ErrReplicated) {
		t.Fatalf("Redact: %v, want ErrReplicated", err)
	}
	if _, err := s.EraseEntity(ctx, "e"); !errors.Is(err, core.ErrReplicated) {
		t.Fatalf("EraseEntity: %v, want ErrReplicated", err)
	}
	if _, err := s.Compact(ctx, core.CompactConfig{}); !errors.Is(err, core.ErrReplicated) {
		t.Fatalf("Compact: %v, want ErrReplicated", err)
	}
	lost := errors.New("leadership lost: outcome unknown")
	l.fail.Store(&lost)
	if _, err := s.Append(ctx, c, kindA, []byte(`{}`)); !errors.Is(err, lost) {
		t.Fatalf("Append with the log refusing: %v, want its error", err)
	}
	l.fail.Store(&lost)
	if _, err := s.AppendBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}}); !errors.Is(err, lost) {
		t.Fatalf("AppendBatch with the log refusing: %v, want its error", err)
	}
	// An apply without its id is refused, as is one on a store without a Replicator.
	if _, err := s.SubmitReplicated(ctx, core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}); !errors.Is(err, core.ErrInvalidOptions) {
		t.Fatalf("SubmitReplicated without an id: %v", err)
	}
	plain := openStore(t)
	it := core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`), Options: core.AppendOptions{ID: core.NewEventID()}}
	if _, err := plain.SubmitReplicated(ctx, it); !errors.Is(err, core.ErrNotReplicated) {
		t.Fatalf("SubmitReplicated on a plain store: %v, want ErrNotReplicated", err)
	}
	if got := len(mustQuery(t, s, core.All())); got != 1 {
		t.Fatalf("store holds %d events, want 1", got)
	}
}

// TestReplicatorConcurrentWriters: many writers on two replicas at once;
// the replicas end identical and every acknowledged write is on both.
func TestReplicatorConcurrentWriters(t *testing.T) {
	_, rs, _ := openReplicas(t, 2)
	ctx := context.Background()
	var wg sync.WaitGroup
	var acked sync.Map
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			s := rs[w%2]
			c := core.Coordinate{Entity: "e", Scope: "s"}
			for i := 0; i < 50; i++ {
				var err error
				var ids []core.EventID
				if i%5 == 0 {
					var brs []core.Receipt
					brs, err = s.AppendBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}, {Coordinate: c, Kind: kindB, Payload: []byte(`{}`)}})
					for _, r := range brs {
						ids = append(ids, r.ID)
					}
				} else {
					var r core.Receipt
					r, err = s.Append(ctx, c, kindA, []byte(`{"w":1}`))
					ids = append(ids, r.ID)
				}
				if err != nil {
					t.Error(err)
					return
				}
				for _, id := range ids {
					acked.Store(id, true)
				}
			}
		}(w)
	}
	wg.Wait()
	ea, eb := mustQuery(t, rs[0], core.All()), mustQuery(t, rs[1], core.All())
	sameEvents(t, "replicas", ea, eb)
	n := 0
	acked.Range(func(k, _ any) bool { n++; return true })
	if n != len(ea) {
		t.Fatalf("%d writes acknowledged, replicas hold %d events", n, len(ea))
	}
	mustVerify(t, rs[0])
	mustVerify(t, rs[1])
}

// applyOnly is a Replicator for a store that is only ever applied to
// (SubmitReplicated*): it takes no writes of its own.
type applyOnly struct{}

func (applyOnly) Replicate(bool, []core.BatchItem, func([]core.Receipt, error)) {}

// Replicated applies queued together — singles whose payload digest is
// left to the writer's seal, keyed singles and their repeats (the same
// payload deduplicated, another refused), batches and their repeats —
// store the right payload digests and verify.
func TestReplicatedAppliesStoreTheirDigests(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Replicator = applyOnly{}
	s := openWith(t, cfg)
	ctx := context.Background()
	item := func(ent, p, key string) core.BatchItem {
		return core.BatchItem{Coordinate: core.Coordinate{Entity: ent, Scope: "s"}, Kind: kindA, Payload: []byte(p),
			Options: core.AppendOptions{ID: core.NewEventID(), IdempotencyKey: key}}
	}
	var ts []*core.Ticket
	var bts []*core.BatchTicket
	var want []string
	for i := 0; i < 300; i++ {
		p := fmt.Sprintf(`{"i":%d}`, i)
		tk, err := s.SubmitReplicated(ctx, item(fmt.Sprint("e", i%7), p, ""))
		if err != nil {
			t.Fatal(err)
		}
		ts, want = append(ts, tk), append(want, "new")
		if i%5 == 0 {
			k := fmt.Sprint("k", i)
			for r, q := range []string{p, p, p + " "} {
				tk, err := s.SubmitReplicated(ctx, item(fmt.Sprint("e", i%7), q, k))
				if err != nil {
					t.Fatal(err)
				}
				ts, want = append(ts, tk), append(want, []string{"new", "dedup", "mismatch"}[r])
			}
			b := []core.BatchItem{item("b", p, "bk"+k), item("c", p, "ck"+k)}
			bt1, err1 := s.SubmitReplicatedBatch(ctx, b)
			b2 := []core.BatchItem{item("b", p, "bk"+k), item("c", p, "ck"+k)}
			bt2, err2 := s.SubmitReplicatedBatch(ctx, b2)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			bts = append(bts, bt1, bt2)
		}
	}
	for i, tk := range ts {
		rc, err := tk.Wait(ctx)
		got := "new"
		switch {
		case err != nil:
			got = "mismatch"
		case rc.Deduplicated:
			got = "dedup"
		}
		if got != want[i] {
			t.Errorf("single %d: %s (%v), want %s", i, got, err, want[i])
		}
	}
	for i, bt := range bts {
		rs, err := bt.Wait(ctx)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if i%2 == 1 && !rs[0].Deduplicated {
			t.Errorf("batch %d: repeat not deduplicated", i)
		}
	}
	for _, ev := range mustQuery(t, s, core.All()) {
		if ev.Header.PayloadHash != blake3.Sum256(ev.Payload) {
			t.Fatalf("event %d: stored digest %x of %q", ev.GlobalSequence, ev.Header.PayloadHash, ev.Payload)
		}
	}
	if _, err := s.Verify(); err != nil {
		t.Fatal(err)
	}
}
