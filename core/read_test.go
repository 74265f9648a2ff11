package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
)

func TestGet(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "g", "s")
	r := mustAppendOpts(t, s, c, kindB, `{"x":[1,2]}`, core.AppendOptions{IdempotencyKey: "key", Flags: 3})
	ev, err := s.Get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Header.ID != r.ID || ev.Coordinate != c || ev.Header.Kind != kindB || ev.Header.Flags != 3 ||
		ev.IdempotencyKey != "key" || string(ev.Payload) != `{"x":[1,2]}` || ev.GlobalSequence != 0 || ev.Header.Clock != 0 {
		t.Errorf("Get returned %+v", ev)
	}
	if ev.Header.PrevHash != (core.Hash{}) || ev.Header.Hash == (core.Hash{}) || ev.Header.PayloadHash == (core.Hash{}) {
		t.Errorf("first event hashes: prev %s hash %s payload %s", ev.Header.PrevHash, ev.Header.Hash, ev.Header.PayloadHash)
	}
	r2 := mustAppend(t, s, c, kindB, `{}`)
	ev2, _ := s.Get(r2.ID)
	if ev2.Header.PrevHash != ev.Header.Hash {
		t.Errorf("second event's PrevHash %s is not the first event's Hash %s", ev2.Header.PrevHash, ev.Header.Hash)
	}
	for _, id := range []core.EventID{core.NewEventID(), {}} {
		_, err := s.Get(id)
		if !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Get(%s): got %v, want ErrNotFound", id, err)
		}
	}
	// The returned payload is the caller's copy.
	ev.Payload[0] = 'X'
	again, _ := s.Get(r.ID)
	if string(again.Payload) != `{"x":[1,2]}` {
		t.Errorf("changing a returned payload changed the store: %q", again.Payload)
	}
}

// model is what the test wrote, to compute expected query answers.
type model struct {
	entity, scope string
	kind          core.Kind
	clock, seq    uint64
	id            core.EventID
}

func buildQueryFixture(t *testing.T, s *core.Store) []model {
	t.Helper()
	entities := []string{"order:1", "order:2", "order:10", "orders", "user:1", "o"}
	scopes := []string{"a", "b"}
	kinds := []core.Kind{kindA, kindB, kindC}
	rng := rand.New(rand.NewSource(7))
	var out []model
	for i := 0; i < 240; i++ {
		e := entities[rng.Intn(len(entities))]
		sc := scopes[rng.Intn(len(scopes))]
		k := kinds[rng.Intn(len(kinds))]
		r := mustAppend(t, s, mustCoord(t, e, sc), k, payloadN(i))
		out = append(out, model{e, sc, k, r.Clock, r.GlobalSequence, r.ID})
	}
	return out
}

func TestQueryRegions(t *testing.T) {
	s := openStore(t)
	all := buildQueryFixture(t, s)
	// The same entity appears under both scopes (the fixture guarantees it).
	seen := map[string]bool{}
	for _, m := range all {
		seen[m.entity+"@"+m.scope] = true
	}
	if !seen["order:1@a"] || !seen["order:1@b"] {
		t.Fatal("fixture lacks order:1 in both scopes")
	}

	type rc struct {
		name   string
		r      core.Region
		filter func(m model) bool
	}
	cases := []rc{
		{"all", core.All(), func(model) bool { return true }},
		{"entity prefix order:", core.Entity("order:"), func(m model) bool { return strings.HasPrefix(m.entity, "order:") }},
		{"entity order:1 (also order:10)", core.Entity("order:1"), func(m model) bool { return m.entity == "order:1" || m.entity == "order:10" }},
		{"entity order:10 exact", core.Entity("order:10"), func(m model) bool { return m.entity == "order:10" }},
		{"entity o (all o-prefixed)", core.Entity("o"), func(m model) bool { return strings.HasPrefix(m.entity, "o") }},
		{"entity unknown", core.Entity("zzz"), func(model) bool { return false }},
		{"entity empty prefix", core.Entity(""), func(model) bool { return true }},
		{"scope a", core.Scope("a"), func(m model) bool { return m.scope == "a" }},
		{"scope b", core.Scope("b"), func(m model) bool { return m.scope == "b" }},
		{"scope unknown", core.Scope("c"), func(model) bool { return false }},
		{"scope prefix is not a prefix match", core.Scope(""), func(model) bool { return false }},
		{"entity order:1 scope b", core.Entity("order:1").WithScope("b"), func(m model) bool {
			return (m.entity == "order:1" || m.entity == "order:10") && m.scope == "b"
		}},
		{"kind A", core.All().WithKind(kindA), func(m model) bool { return m.kind == kindA }},
		{"kind unused", core.All().WithKind(core.MustKind(9, 9)), func(model) bool { return false }},
		{"category 1", core.All().WithCategory(1), func(m model) bool { return m.kind.Category() == 1 }},
		{"category 2", core.All().WithCategory(2), func(m model) bool { return m.kind.Category() == 2 }},
		{"category 3", core.All().WithCategory(3), func(model) bool { return false }},
		{"clock [1,3]", core.All().WithClockRange(1, 3), func(m model) bool { return m.clock >= 1 && m.clock <= 3 }},
		{"clock [0,0]", core.All().WithClockRange(0, 0), func(m model) bool { return m.clock == 0 }},
		{"clock [5,5]", core.All().WithClockRange(5, 5), func(m model) bool { return m.clock == 5 }},
		{"clock [4,2] empty", core.All().WithClockRange(4, 2), func(model) bool { return false }},
		{"clock [10,max]", core.All().WithClockRange(10, ^uint64(0)), func(m model) bool { return m.clock >= 10 }},
		{"kind+category mismatch", core.All().WithKind(kindC).WithCategory(1), func(model) bool { return false }},
		{"kind B scope a", core.Scope("a").WithKind(kindB), func(m model) bool { return m.kind == kindB && m.scope == "a" }},
		{"everything", core.Entity("order:").WithScope("a").WithCategory(1).WithClockRange(1, 4), func(m model) bool {
			return strings.HasPrefix(m.entity, "order:") && m.scope == "a" && m.kind.Category() == 1 && m.clock >= 1 && m.clock <= 4
		}},
		{"entity user:1 kind C clock [0,2]", core.Entity("user:1").WithKind(kindC).WithClockRange(0, 2), func(m model) bool {
			return m.entity == "user:1" && m.kind == kindC && m.clock <= 2
		}},
	}
	check := func(s *core.Store, when string) {
		for _, c := range cases {
			var want []core.EventID
			for _, m := range all {
				if c.filter(m) {
					want = append(want, m.id)
				}
				if got := c.r.Matches(core.Coordinate{Entity: m.entity, Scope: m.scope}, m.kind, m.clock); got != c.filter(m) {
					t.Errorf("%s: Region.Matches(%s@%s) = %v", c.name, m.entity, m.scope, got)
				}
			}
			evs := mustQuery(t, s, c.r)
			if got := ids(evs); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("%s %s (%v): %d events, want %d (or order differs)", when, c.name, c.r, len(got), len(want))
			}
			for i := 1; i < len(evs); i++ {
				if evs[i].GlobalSequence <= evs[i-1].GlobalSequence {
					t.Errorf("%s %s: results not in global sequence order", when, c.name)
					break
				}
			}
		}
	}
	check(s, "live")
	if t.Failed() {
		return
	}
	check(reopen(t, s), "reopened")
}

func TestRegionIsAValue(t *testing.T) {
	base := core.Entity("order:")
	narrowed := base.WithScope("a").WithKind(kindA)
	c := core.Coordinate{Entity: "order:1", Scope: "b"}
	if !base.Matches(c, kindB, 0) {
		t.Error("narrowing a Region changed the original")
	}
	if narrowed.Matches(c, kindB, 0) {
		t.Error("narrowed Region matches outside its scope and kind")
	}
	if core.All().String() == base.String() || !strings.Contains(narrowed.String(), "scope=a") {
		t.Errorf("Region.String: all %q, base %q, narrowed %q", core.All(), base, narrowed)
	}
}

func TestStreamByScopeByFact(t *testing.T) {
	s := openStore(t)
	all := buildQueryFixture(t, s)
	check := func(s *core.Store) {
		for _, ent := range []string{"order:1", "order:10", "orders", "user:1", "o"} {
			evs, err := s.Stream(ent)
			if err != nil {
				t.Fatal(err)
			}
			var want []core.EventID
			for _, m := range all {
				if m.entity == ent {
					want = append(want, m.id)
				}
			}
			if !reflect.DeepEqual(ids(evs), want) {
				t.Errorf("Stream(%q): %d events, want exactly that entity's %d", ent, len(evs), len(want))
			}
			for i, e := range evs {
				if e.Header.Clock != uint64(i) || e.Coordinate.Entity != ent {
					t.Fatalf("Stream(%q)[%d]: clock %d entity %q", ent, i, e.Header.Clock, e.Coordinate.Entity)
				}
			}
		}
		for _, ent := range []string{"order:", "", "nobody"} {
			if evs, err := s.Stream(ent); err != nil || len(evs) != 0 {
				t.Errorf("Stream(%q) = %d events, %v; want none (Stream is exact)", ent, len(evs), err)
			}
		}
		for _, sc := range []string{"a", "b", "zz"} {
			evs, err := s.ByScope(sc)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := ids(evs), ids(mustQuery(t, s, core.Scope(sc))); !reflect.DeepEqual(got, want) {
				t.Errorf("ByScope(%q) differs from Query(Scope)", sc)
			}
			for _, e := range evs {
				if e.Coordinate.Scope != sc {
					t.Fatalf("ByScope(%q) returned an event of scope %q", sc, e.Coordinate.Scope)
				}
			}
		}
		for _, k := range []core.Kind{kindA, kindB, kindC, core.MustKind(5, 5)} {
			evs, err := s.ByFact(k)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, m := range all {
				if m.kind == k {
					n++
				}
			}
			if len(evs) != n {
				t.Errorf("ByFact(%v): %d events, want %d", k, len(evs), n)
			}
			for i, e := range evs {
				if e.Header.Kind != k || (i > 0 && e.GlobalSequence <= evs[i-1].GlobalSequence) {
					t.Fatalf("ByFact(%v): wrong kind or order at %d", k, i)
				}
			}
		}
	}
	check(s)
	check(reopen(t, s))
}

// The same entity written under two scopes: each scope sees only its own events.
func TestScopeIsolationSameEntity(t *testing.T) {
	s := openStore(t)
	a := mustCoord(t, "acct:1", "a")
	b := mustCoord(t, "acct:1", "b")
	ra := mustAppend(t, s, a, kindA, `"in a"`)
	rb := mustAppend(t, s, b, kindA, `"in b"`)
	if rb.Clock != 1 {
		t.Errorf("the entity's clock is shared across scopes: got %d, want 1", rb.Clock)
	}
	for _, q := range []core.Region{core.Scope("b"), core.Entity("acct:1").WithScope("b"), core.Scope("b").WithKind(kindA)} {
		evs := mustQuery(t, s, q)
		if len(evs) != 1 || evs[0].Header.ID != rb.ID {
			t.Errorf("Query(%v) = %v, want only the scope-b event", q, payloads(evs))
		}
	}
	if evs := mustQuery(t, s, core.Scope("a")); len(evs) != 1 || evs[0].Header.ID != ra.ID {
		t.Errorf("Query(Scope(a)) = %v", payloads(evs))
	}
	if evs, _ := s.Stream("acct:1"); len(evs) != 2 {
		t.Errorf("Stream spans scopes: got %d events, want 2", len(evs))
	}
}

func TestAncestors(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	order := mustCoord(t, "order:1", "shop")
	pay := mustCoord(t, "payment:1", "shop")
	ship := mustCoord(t, "shipment:1", "shop")

	root := mustAppend(t, s, order, kindA, `"placed"`)
	mustAppend(t, s, order, kindB, `"unrelated same-entity event"`)
	r1, err := s.AppendReaction(ctx, pay, kindA, []byte(`"charged"`), root.ID, root.ID)
	if err != nil {
		t.Fatal(err)
	}
	r2, _ := s.AppendReaction(ctx, ship, kindA, []byte(`"packed"`), root.ID, r1.ID)
	r3, _ := s.AppendReaction(ctx, ship, kindB, []byte(`"sent"`), root.ID, r2.ID)
	mustAppendReaction(t, s, pay, kindB, `"sibling"`, root.ID, r1.ID)

	check := func(s *core.Store) {
		got, err := s.Ancestors(r3.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := []core.EventID{r3.ID, r2.ID, r1.ID, root.ID}; !reflect.DeepEqual(ids(got), want) {
			t.Errorf("Ancestors(r3) = %v, want %v", payloads(got), []string{"sent", "packed", "charged", "placed"})
		}
		for limit, want := range map[int][]core.EventID{
			1: {r3.ID}, 2: {r3.ID, r2.ID}, 3: {r3.ID, r2.ID, r1.ID}, 4: {r3.ID, r2.ID, r1.ID, root.ID}, 100: {r3.ID, r2.ID, r1.ID, root.ID},
		} {
			got, err := s.Ancestors(r3.ID, limit)
			if err != nil || !reflect.DeepEqual(ids(got), want) {
				t.Errorf("Ancestors(r3, %d) = %v, %v", limit, payloads(got), err)
			}
		}
		if got, err := s.Ancestors(root.ID, 0); err != nil || !reflect.DeepEqual(ids(got), []core.EventID{root.ID}) {
			t.Errorf("Ancestors(root) = %v, %v; want just the root", payloads(got), err)
		}
		if _, err := s.Ancestors(core.NewEventID(), 0); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Ancestors(unknown): got %v, want ErrNotFound", err)
		}
	}
	check(s)

	// A cause that is not in the store ends the walk after the event.
	foreign := core.NewEventID()
	rf := mustAppendReaction(t, s, ship, kindA, `"from elsewhere"`, foreign, foreign)
	if got, err := s.Ancestors(rf.ID, 0); err != nil || !reflect.DeepEqual(ids(got), []core.EventID{rf.ID}) {
		t.Errorf("Ancestors with a foreign cause = %v, %v", payloads(got), err)
	}
	// A self-cause does not loop.
	self := mustAppend(t, s, ship, kindA, `"x"`)
	loop := mustAppendReaction(t, s, ship, kindA, `"loop"`, self.ID, self.ID)
	if got, err := s.Ancestors(loop.ID, 0); err != nil || len(got) != 2 {
		t.Errorf("Ancestors(loop) = %v, %v", payloads(got), err)
	}
	check(reopen(t, s))
}

// rotationFixture writes n events of about 1 KiB each to a store whose
// segments rotate at 64 KiB, across a few entities and scopes.
func rotationFixture(t *testing.T, n int, adjust ...func(*core.Config)) (*core.Store, []core.Receipt) {
	t.Helper()
	s := openStore(t, append([]func(*core.Config){func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 }}, adjust...)...)
	ctx := context.Background()
	rs := make([]core.Receipt, n)
	pad := strings.Repeat("z", 1000)
	var tks []*core.Ticket
	for i := 0; i < n; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("rot:%d", i%7), fmt.Sprintf("sc%d", i%3))
		tk, err := s.Submit(ctx, c, kindA, []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad)))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	for i, tk := range tks {
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	return s, rs
}

func TestSegmentRotation(t *testing.T) {
	const n = 400 // ~420 KB: at least 6 segments of 64 KiB
	s, rs := rotationFixture(t, n)
	st := s.Stats()
	if st.Segments < 6 {
		t.Fatalf("Stats().Segments = %d, want >= 6 for %d bytes at 64 KiB per segment", st.Segments, st.Bytes)
	}
	if got := len(segmentFiles(t, s.Dir())); got != st.Segments {
		t.Errorf("Stats().Segments = %d, directory holds %d", st.Segments, got)
	}
	check := func(s *core.Store, when string) []core.StoredEvent {
		t.Helper()
		evs := mustQuery(t, s, core.All())
		if len(evs) != n {
			t.Fatalf("%s: Query(All) = %d events, want %d", when, len(evs), n)
		}
		for i, e := range evs {
			if e.Header.ID != rs[i].ID || e.GlobalSequence != uint64(i) || !strings.HasPrefix(string(e.Payload), fmt.Sprintf(`{"i":%d,`, i)) {
				t.Fatalf("%s: event %d wrong: seq %d payload %.20s", when, i, e.GlobalSequence, e.Payload)
			}
		}
		for i := 0; i < n; i += 37 {
			ev, err := s.Get(rs[i].ID)
			if err != nil || ev.GlobalSequence != uint64(i) {
				t.Fatalf("%s: Get(%d): %v", when, i, err)
			}
		}
		st, err := s.Stream("rot:3")
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range st {
			if e.Header.Clock != uint64(i) {
				t.Fatalf("%s: stream across segments out of clock order", when)
			}
		}
		if len(st) != (n+3)/7 {
			t.Fatalf("%s: Stream(rot:3) = %d events", when, len(st))
		}
		rep := mustVerify(t, s)
		if rep.Events != n || rep.Segments != s.Stats().Segments || rep.Entities != 7 {
			t.Fatalf("%s: Verify report %+v", when, rep)
		}
		return evs
	}
	before := check(s, "live")
	for _, f := range segmentFiles(t, s.Dir())[:st.Segments-1] {
		if sz := fileSize(t, f); sz > 64<<10 {
			t.Errorf("sealed segment %s is %d bytes, over SegmentMaxBytes", f, sz)
		}
	}
	s = reopen(t, s)
	after := check(s, "reopened")
	sameEvents(t, "reopen", before, after)
	// Writing continues in order after reopen.
	r := mustAppend(t, s, mustCoord(t, "rot:3", "sc0"), kindA, `{}`)
	if r.GlobalSequence != n || r.Clock != uint64((n+3)/7) {
		t.Errorf("after reopen: seq %d clock %d", r.GlobalSequence, r.Clock)
	}
}

func TestSmallFDBudgetReadsEverything(t *testing.T) {
	const n = 500
	s, rs := rotationFixture(t, n)
	cfg := s.Config()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.FDBudget = 2
	s = openWith(t, cfg)
	if segs := s.Stats().Segments; segs < 6 {
		t.Fatalf("only %d segments", segs)
	}
	if evs := mustQuery(t, s, core.All()); len(evs) != n {
		t.Fatalf("Query(All) with FDBudget 2: %d events", len(evs))
	}
	// Random-order Gets from several goroutines force the cache to evict
	// mappings that other readers may hold.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			for _, i := range rng.Perm(n) {
				ev, err := s.Get(rs[i].ID)
				if err != nil {
					errs <- err
					return
				}
				if !strings.HasPrefix(string(ev.Payload), fmt.Sprintf(`{"i":%d,`, i)) {
					errs <- fmt.Errorf("Get(%d) returned payload %.20s", i, ev.Payload)
					return
				}
			}
			for k := 0; k < 7; k++ {
				if _, err := s.Stream(fmt.Sprintf("rot:%d", k)); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// And it keeps writing with rotation under the small budget.
	for i := 0; i < 150; i++ {
		mustAppend(t, s, mustCoord(t, "more", "s"), kindA, fmt.Sprintf(`{"pad":%q}`, strings.Repeat("y", 1000)))
	}
	if evs := mustQuery(t, s, core.All()); len(evs) != n+150 {
		t.Fatalf("after more writes: %d events", len(evs))
	}
	mustVerify(t, s)
}

// An event bigger than SegmentMaxBytes gets a segment of its own.
func TestEventLargerThanSegment(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	c := mustCoord(t, "big", "s")
	mustAppend(t, s, c, kindA, `"small"`)
	big := jsonString(200 << 10)
	rb := mustAppend(t, s, c, kindA, big)
	mustAppend(t, s, c, kindA, `"after"`)
	check := func(s *core.Store) {
		ev, err := s.Get(rb.ID)
		if err != nil || string(ev.Payload) != big {
			t.Fatalf("big event: %v", err)
		}
		if got := payloads(mustQuery(t, s, core.All())); len(got) != 3 || got[0] != `"small"` || got[2] != `"after"` {
			t.Fatalf("events around the big one: %d", len(got))
		}
		mustVerify(t, s)
	}
	check(s)
	if segs := s.Stats().Segments; segs < 2 {
		t.Errorf("a 200 KiB event shares a 64 KiB segment: %d segments", segs)
	}
	check(reopen(t, s))
}

// Entity-prefix queries over many entities (the index keeps a sorted name
// list, rebuilt in bulk or updated one by one) answer exactly the model.
func TestQueryManyEntities(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	var all []model
	write := func(ent, scope string, k core.Kind) {
		r, err := s.Append(ctx, mustCoord(t, ent, scope), k, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, model{ent, scope, k, r.Clock, r.GlobalSequence, r.ID})
	}
	check := func(when string) {
		t.Helper()
		for _, q := range []struct {
			prefix string
			scope  string
		}{{"acct:", ""}, {"acct:1", ""}, {"acct:05", ""}, {"acct:299", ""}, {"acct:3", ""}, {"b", ""},
			{"acct:", "even"}, {"acct:1", "odd"}, {"zz", ""}, {"acct:0", "even"}} {
			r := core.Entity(q.prefix)
			if q.scope != "" {
				r = r.WithScope(q.scope)
			}
			var want []core.EventID
			for _, m := range all {
				if strings.HasPrefix(m.entity, q.prefix) && (q.scope == "" || m.scope == q.scope) {
					want = append(want, m.id)
				}
			}
			if got := ids(mustQuery(t, s, r)); !reflect.DeepEqual(got, want) && len(got)+len(want) > 0 {
				t.Fatalf("%s: Query(%v) = %d events, want %d in global order", when, r, len(got), len(want))
			}
		}
	}
	// Round-robin over 300 entities, twice, so that per-entity streams
	// interleave in the global order.
	for pass := 0; pass < 2; pass++ {
		for i := 0; i < 300; i++ {
			scope := "even"
			if i%2 == 1 {
				scope = "odd"
			}
			write(fmt.Sprintf("acct:%03d", i), scope, kindA)
		}
		check(fmt.Sprintf("pass %d", pass))
	}
	// A few more entities, added one by one between queries.
	for i := 0; i < 5; i++ {
		write(fmt.Sprintf("acct:1%03d", i), "odd", kindB)
		write(fmt.Sprintf("b%d", i), "even", kindB)
		check(fmt.Sprintf("added %d", i))
	}
	s = reopen(t, s)
	check("reopened")
}

func TestAncestorsDefaultLimit(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "chain", "s")
	prev := mustAppend(t, s, c, kindA, `0`)
	root := prev.ID
	for i := 1; i < core.DefaultAncestorLimit+10; i++ {
		prev = mustAppendReaction(t, s, c, kindA, fmt.Sprint(i), root, prev.ID)
	}
	for _, limit := range []int{0, -1} {
		got, err := s.Ancestors(prev.ID, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != core.DefaultAncestorLimit {
			t.Fatalf("Ancestors(limit %d) = %d events, want DefaultAncestorLimit (%d)", limit, len(got), core.DefaultAncestorLimit)
		}
		if got[0].Header.ID != prev.ID || string(got[1].Payload) != fmt.Sprint(core.DefaultAncestorLimit+8) {
			t.Fatalf("Ancestors does not walk back from the event")
		}
	}
	if got, _ := s.Ancestors(prev.ID, 5000); len(got) != core.DefaultAncestorLimit+10 || got[len(got)-1].Header.ID != root {
		t.Fatalf("Ancestors(5000) = %d events, want the whole chain to the root", len(got))
	}
}

// More events than one index chunk (65536) and a reopen of that store.
func TestManyEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("large store: skipped with -short")
	}
	const n = 70000
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 4 << 20 })
	ctx := context.Background()
	tks := make([]*core.Ticket, 0, 1024)
	var rs []core.Receipt
	for i := 0; i < n; i++ {
		c, _ := core.NewCoordinate(fmt.Sprintf("m:%d", i%50), "s")
		tk, err := s.Submit(ctx, c, kindA, []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
		if len(tks) == cap(tks) || i == n-1 {
			for _, tk := range tks {
				r, err := tk.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, r)
			}
			tks = tks[:0]
		}
	}
	check := func(s *core.Store) {
		t.Helper()
		if st := s.Stats(); st.Events != n || st.GlobalSequence != n {
			t.Fatalf("Stats %+v", st)
		}
		for _, i := range []int{0, 1, 65535, 65536, 65537, n - 1} {
			ev, err := s.Get(rs[i].ID)
			if err != nil || string(ev.Payload) != strconv.Itoa(i) || ev.GlobalSequence != uint64(i) {
				t.Fatalf("Get(%d): %s, %v", i, ev.Payload, err)
			}
		}
		evs := mustQuery(t, s, core.All().WithClockRange(1300, 1350))
		if len(evs) != 50*51 {
			t.Fatalf("clock range query over %d events: %d results", n, len(evs))
		}
		st, err := s.Stream("m:7")
		if err != nil || len(st) != n/50 || st[len(st)-1].Header.Clock != n/50-1 {
			t.Fatalf("Stream(m:7) = %d events, %v", len(st), err)
		}
	}
	check(s)
	check(reopen(t, s))
}

// Events yields what Query returns, in the same order, and stops reading
// as soon as the loop stops.
func TestEventsIterator(t *testing.T) {
	s := openStore(t)
	for i := 0; i < 50; i++ {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("it:%d", i%5), "s"), kindA, fmt.Sprintf(`{"i":%d}`, i))
	}
	r := core.Entity("it:").WithClockRange(2, 7)
	want, err := s.Query(r)
	if err != nil {
		t.Fatal(err)
	}
	var got []core.StoredEvent
	for ev, err := range s.Events(r) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if len(got) != len(want) || len(got) != 30 {
		t.Fatalf("Events gave %d events, Query %d, want 30", len(got), len(want))
	}
	for i := range got {
		if got[i].Header.ID != want[i].Header.ID || string(got[i].Payload) != string(want[i].Payload) {
			t.Fatalf("event %d differs: %v vs %v", i, got[i].Header.ID, want[i].Header.ID)
		}
	}
	n := 0
	for range s.Events(core.All()) {
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Fatalf("early stop: visited %d", n)
	}
	s.Close()
	for _, err := range s.Events(core.All()) {
		if !errors.Is(err, core.ErrClosed) {
			t.Fatalf("Events after Close: %v, want ErrClosed", err)
		}
	}
}
