package index

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// model is what a test inserted, to check the index against.
type model struct {
	ix     *Index
	events []modelEvent // by sequence; gaps are Removed
}

type modelEvent struct {
	e             Entry
	entity, scope string
	idem          string
}

func (m *modelEvent) visible() bool { return m.e.Visible() }

func testID(rng *rand.Rand) [16]byte {
	var id [16]byte
	binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
	return id
}

// insert adds one event at seq (>= Len) the way the writer does.
func (m *model) insert(seq uint32, id [16]byte, entity, scope string, kind uint16, flags uint8, idem string) {
	en := m.ix.EntityFor([]byte(entity))
	sc := m.ix.ScopeFor([]byte(scope))
	es := m.ix.Entity(en)
	clock := uint64(0)
	if es.Head.Exists {
		clock = es.Head.Clock + 1
	}
	es.Head = Head{Exists: true, Clock: clock}
	e := Entry{ID: id, Seg: seq / 100, Off: seq * 7, Entity: en, Scope: sc, Clock: clock, Kind: kind, Flags: flags}
	m.ix.Lock()
	m.ix.InsertLocked(seq, e, idem, Links{})
	m.ix.Unlock()
	for uint32(len(m.events)) < seq {
		m.events = append(m.events, modelEvent{e: Entry{Flags: Removed}})
	}
	m.events = append(m.events, modelEvent{e: e, entity: entity, scope: scope, idem: idem})
}

// randomModel fills an index with n events over a few entities, scopes
// and kinds; some hidden, some gaps.
func randomModel(t testing.TB, seed int64, n int) *model {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	m := &model{ix: New()}
	seq := uint32(0)
	for range n {
		if rng.Intn(50) == 0 {
			seq += uint32(1 + rng.Intn(3)) // a batch that never committed
		}
		var flags uint8
		if rng.Intn(40) == 0 {
			flags = Hidden
		}
		entity := fmt.Sprintf("%s:%d", []string{"order", "user", "ord"}[rng.Intn(3)], rng.Intn(40))
		scope := []string{"eu", "us", "apac"}[rng.Intn(3)]
		kind := uint16(rng.Intn(3))<<12 | uint16(1+rng.Intn(3))
		idem := ""
		if rng.Intn(4) == 0 {
			idem = fmt.Sprintf("key-%d", seq)
		}
		m.insert(seq, testID(rng), entity, scope, kind, flags, idem)
		seq++
	}
	return m
}

// checkLookup checks that the index finds event seq by its id when it is
// visible, and not when it is hidden or removed. Caller holds RLock.
func (m *model) checkLookup(t testing.TB, seq int) {
	t.Helper()
	ev := m.events[seq]
	got, ok := m.ix.Lookup(ev.e.ID)
	switch {
	case ev.visible() && (!ok || got != uint32(seq)):
		t.Fatalf("Lookup(event %d) = %d, %v", seq, got, ok)
	case !ev.visible() && ok && ev.e.ID != [16]byte{}:
		t.Fatalf("Lookup found the hidden or removed event %d", seq)
	}
}

// checkIDTable checks that the id table holds the sequence of every
// visible entry exactly once and nothing else, and that its count of used
// slots says so. Lookups alone would miss a sequence placed twice (a grow
// that re-placed entries not yet inserted, which insert then placed
// again): each copy answers the lookup, while the table fills up past the
// load its count admits. Caller holds a lock.
func checkIDTable(t testing.TB, ix *Index) {
	t.Helper()
	seen := map[uint32]bool{}
	for _, s := range ix.ids.slots {
		if s == 0 {
			continue
		}
		seq := s - 1
		if seq >= ix.n || !ix.At(seq).Visible() {
			t.Fatalf("the id table holds sequence %d, which is not a visible entry (Len %d)", seq, ix.n)
		}
		if seen[seq] {
			t.Fatalf("the id table holds sequence %d twice", seq)
		}
		seen[seq] = true
	}
	visible := 0
	for seq := range ix.n {
		if ix.At(seq).Visible() {
			visible++
		}
	}
	if len(seen) != visible || ix.ids.used != visible {
		t.Fatalf("the id table holds %d sequences and counts %d used, for %d visible entries", len(seen), ix.ids.used, visible)
	}
}

func (m *model) want(f Filter) []Loc {
	var out []Loc
	for seq, ev := range m.events {
		if ev.visible() && f.Matches(ev.entity, ev.scope, ev.e.Kind, ev.e.Clock) {
			out = append(out, Loc{Seq: uint32(seq), Seg: ev.e.Seg, Off: ev.e.Off})
		}
	}
	return out
}

// The writer warms the id table for each group before inserting it: the
// table grows then, if the group would make it, never during the group's
// inserts (whose slots the warm-up read), and every id is found after.
func TestWarmIDsGrowsBeforeTheGroup(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	m := &model{ix: New()}
	seq := uint32(0)
	for _, n := range []int{1, 700, 20, 2000, 5, 3000, 1, 9000} {
		ids := make([][16]byte, n)
		for i := range ids {
			ids[i] = testID(rng)
		}
		m.ix.Lock()
		m.ix.WarmIDsLocked(n, slices.Values(ids))
		size := len(m.ix.ids.slots)
		m.ix.Unlock()
		for _, id := range ids {
			m.insert(seq, id, fmt.Sprintf("e%d", seq%7), "s", 1, 0, "")
			seq++
		}
		if got := len(m.ix.ids.slots); got != size {
			t.Fatalf("group of %d: the table grew from %d to %d slots during its inserts", n, size, got)
		}
		if u := m.ix.ids.used; u*10 > size*7 {
			t.Fatalf("group of %d: %d ids in %d slots, over 70 %%", n, u, size)
		}
	}
	m.ix.RLock()
	defer m.ix.RUnlock()
	for s := range m.events {
		m.checkLookup(t, s)
	}
}

func TestLookupFindsEveryVisibleEventAcrossGrowth(t *testing.T) {
	// 70000 entries cross the first chunk (256), a full chunk (65536) and
	// several id-table growths (1024 slots at first, grown at 70 % load).
	rng := rand.New(rand.NewSource(1))
	m := &model{ix: New()}
	for seq := range uint32(70000) {
		var flags uint8
		if seq%97 == 0 {
			flags = Hidden
		}
		m.insert(seq, testID(rng), fmt.Sprintf("e%d", seq%13), "s", 1, flags, "")
	}
	m.insert(70005, testID(rng), "late", "s", 1, 0, "") // sequences 70000..70004 become gaps
	ix := m.ix
	ix.RLock()
	defer ix.RUnlock()
	if got := ix.Len(); got != 70006 {
		t.Fatalf("Len = %d, want 70006", got)
	}
	visible := 0
	for seq, ev := range m.events {
		m.checkLookup(t, seq)
		if ev.visible() {
			visible++
		}
		if at := ix.At(uint32(seq)); *at != ev.e {
			t.Fatalf("At(%d) = %+v, want %+v", seq, *at, ev.e)
		}
	}
	if ix.Events() != visible {
		t.Fatalf("Events = %d, want %d", ix.Events(), visible)
	}
	checkIDTable(t, ix)
	if _, ok := ix.Lookup(testID(rand.New(rand.NewSource(99)))); ok {
		t.Fatal("Lookup found an id never inserted")
	}
	for seq := uint32(70000); seq < 70005; seq++ {
		if ix.At(seq).Flags != Removed {
			t.Fatalf("gap %d has flags %#x, want Removed", seq, ix.At(seq).Flags)
		}
	}
	if ix.LiveEntities() != 14 {
		t.Fatalf("LiveEntities = %d, want 14", ix.LiveEntities())
	}
}

func randomFilter(rng *rand.Rand) Filter {
	var f Filter
	if rng.Intn(2) == 0 {
		f.HasEntity = true
		f.EntityPrefix = []string{"order:", "ord", "user:1", "order:7", "nobody", "", "user:39"}[rng.Intn(7)]
		// Exactly: one entity ("user:1" is also a prefix of user:10…),
		// or none.
		f.EntityExact = rng.Intn(3) == 0
	}
	if rng.Intn(3) == 0 {
		f.HasScope = true
		f.Scope = []string{"eu", "us", "apac", "mars"}[rng.Intn(4)]
	}
	if rng.Intn(3) == 0 {
		f.HasKind = true
		f.Kind = uint16(rng.Intn(3))<<12 | uint16(1+rng.Intn(3))
	}
	if rng.Intn(4) == 0 {
		f.HasCategory = true
		f.Category = uint16(rng.Intn(4))
	}
	if rng.Intn(4) == 0 {
		f.HasClock = true
		f.ClockMin = uint64(rng.Intn(40))
		f.ClockMax = f.ClockMin + uint64(rng.Intn(40))
	}
	return f
}

func TestPlanMatchesEveryFilter(t *testing.T) {
	m := randomModel(t, 2, 10000)
	rng := rand.New(rand.NewSource(3))
	for i := range 300 {
		f := randomFilter(rng)
		want := m.want(f)
		if got := m.ix.Plan(f); !slices.Equal(got, want) {
			t.Fatalf("filter %d %+v: Plan gave %d locations, want %d", i, f, len(got), len(want))
		}
		// PlanFrom in pages of random size gives the same, in order.
		var paged []Loc
		end := uint64(m.ix.Published())
		for from := uint64(0); from < end; {
			page, next := m.ix.PlanFrom(f, from, 1+rng.Intn(500))
			if next <= from {
				t.Fatalf("filter %d %+v: PlanFrom(%d) did not move on (next %d)", i, f, from, next)
			}
			paged = append(paged, page...)
			from = next
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("filter %d %+v: PlanFrom pages gave %d locations, want %d", i, f, len(paged), len(want))
		}
		// PlanFromWithin, examining at most a few entries a call, gives
		// the same too: a call cut at its bound says so, and one that is
		// not has decided everything up to the end or its max.
		paged = paged[:0]
		for from := uint64(0); from < end; {
			max, examine := 1+rng.Intn(50), 1+rng.Intn(40)
			page, next, examined, cut := m.ix.PlanFromWithin(f, from, max, examine)
			if next <= from || examined > examine || len(page) > max {
				t.Fatalf("filter %d %+v: PlanFromWithin(%d, %d, %d) = %d locations, next %d, %d examined", i, f, from, max, examine, len(page), next, examined)
			}
			if !cut && len(page) < max && next != end {
				t.Fatalf("filter %d %+v: PlanFromWithin(%d, %d, %d) stopped at %d, before the end %d, uncut with %d locations", i, f, from, max, examine, next, end, len(page))
			}
			if cut && examined != examine {
				t.Fatalf("filter %d %+v: PlanFromWithin cut after %d entries, its bound %d", i, f, examined, examine)
			}
			paged = append(paged, page...)
			from = next
		}
		if !slices.Equal(paged, want) {
			t.Fatalf("filter %d %+v: PlanFromWithin pages gave %d locations, want %d", i, f, len(paged), len(want))
		}
		lo := uint64(rng.Intn(len(m.events)))
		hi := lo + uint64(rng.Intn(len(m.events)))
		var n uint64
		for _, l := range want {
			if uint64(l.Seq) >= lo && uint64(l.Seq) < hi {
				n++
			}
		}
		if got := m.ix.CountMatching(f, lo, hi); got != n {
			t.Fatalf("filter %d %+v: CountMatching(%d, %d) = %d, want %d", i, f, lo, hi, got, n)
		}
	}
}

func TestPlanFromResumesAfterWhatItExamined(t *testing.T) {
	m := randomModel(t, 4, 1000)
	end := uint64(m.ix.Published())
	if got, next := m.ix.PlanFrom(Filter{}, end, 10); got != nil || next != end {
		t.Fatalf("PlanFrom at the end = %d locations, next %d; want none, %d", len(got), next, end)
	}
	page, next := m.ix.PlanFrom(Filter{}, 0, 5)
	if len(page) != 5 || next != uint64(page[4].Seq)+1 {
		t.Fatalf("PlanFrom(0, 5) = %d locations, next %d", len(page), next)
	}
	if got, next := m.ix.PlanFrom(Filter{HasScope: true, Scope: "mars"}, 0, 10); got != nil || next != end {
		t.Fatalf("PlanFrom for an unknown scope = %d locations, next %d; want none, %d", len(got), next, end)
	}
}

// A filter no index list narrows (a category alone) examines at most
// its bound a call, and an entity's clock range is sought, not walked:
// a page from a late clock of a long stream examines about the page.
func TestPlanFromWithinBoundsTheWalk(t *testing.T) {
	m := &model{ix: New()}
	rng := rand.New(rand.NewSource(9))
	for seq := range uint32(5000) {
		m.insert(seq, testID(rng), "order:1", "s", 1<<12|1, 0, "")
	}
	m.insert(5000, testID(rng), "order:2", "s", 15<<12|1, 0, "")
	cat := Filter{HasCategory: true, Category: 15}
	got, next, examined, cut := m.ix.PlanFromWithin(cat, 0, 100, 1000)
	if len(got) != 0 || next != 1000 || examined != 1000 || !cut {
		t.Fatalf("category 15 from 0, bound 1000: %d locations, next %d, %d examined, cut %v; want none, 1000, 1000, cut", len(got), next, examined, cut)
	}
	got, next, _, cut = m.ix.PlanFromWithin(cat, 4500, 100, 1000)
	if len(got) != 1 || got[0].Seq != 5000 || next != 5001 || cut {
		t.Fatalf("category 15 from 4500: %v, next %d, cut %v; want the event at 5000", got, next, cut)
	}
	late := Filter{HasEntity: true, EntityExact: true, EntityPrefix: "order:1", HasClock: true, ClockMin: 4990, ClockMax: 4994}
	got, next, examined, cut = m.ix.PlanFromWithin(late, 0, 100, 0)
	if len(got) != 5 || got[0].Seq != 4990 || examined != 5 || next != 5001 || cut {
		t.Fatalf("clocks 4990..4994 of order:1: %d locations from %v, %d examined, next %d, cut %v; want 5 from 4990, 5 examined", len(got), got, examined, next, cut)
	}
}

func TestStreamAndEntityEventsFollowTheEntity(t *testing.T) {
	m := randomModel(t, 5, 5000)
	for n := range uint32(m.ix.NumEntities()) {
		name := m.ix.Entity(n).Name
		var want []Loc
		for seq, ev := range m.events {
			if ev.visible() && ev.entity == name {
				want = append(want, Loc{Seq: uint32(seq), Seg: ev.e.Seg, Off: ev.e.Off})
			}
		}
		if got := m.ix.Stream(name); !slices.Equal(got, want) {
			t.Fatalf("Stream(%q) = %d locations, want %d", name, len(got), len(want))
		}
		got, gen := EntityEvents[uint16](m.ix, name, nil, 0)
		if !slices.Equal(got, want) || gen != uint64(want[len(want)-1].Seq)+1 {
			t.Fatalf("EntityEvents(%q) = %d locations, generation %d", name, len(got), gen)
		}
		from := uint64(want[len(want)/2].Seq)
		kinds := []uint16{m.events[want[0].Seq].e.Kind}
		var wantK []Loc
		for _, l := range want {
			if uint64(l.Seq) >= from && m.events[l.Seq].e.Kind == kinds[0] {
				wantK = append(wantK, l)
			}
		}
		if got, _ := EntityEvents(m.ix, name, kinds, from); !slices.Equal(got, wantK) {
			t.Fatalf("EntityEvents(%q, kind %#x, from %d) = %d locations, want %d", name, kinds[0], from, len(got), len(wantK))
		}
	}
	if got := m.ix.Stream("nobody"); got != nil {
		t.Fatalf("Stream of an unknown entity = %v", got)
	}
	if got, gen := EntityEvents[uint16](m.ix, "nobody", nil, 0); got != nil || gen != 0 {
		t.Fatalf("EntityEvents of an unknown entity = %v, %d", got, gen)
	}
}

func TestEntitiesWithPrefixStaysSortedAsEntitiesArrive(t *testing.T) {
	ix := New()
	rng := rand.New(rand.NewSource(6))
	var names []string
	check := func() {
		t.Helper()
		for _, p := range []string{"", "a", "b:", "b:1", "c:22", "zz", "b:19"} {
			var want []string
			for _, n := range names {
				if strings.HasPrefix(n, p) {
					want = append(want, n)
				}
			}
			slices.Sort(want)
			ix.RLock()
			var got []string
			for _, n := range ix.entitiesWithPrefix(p, 0) {
				got = append(got, ix.Entity(n).Name)
			}
			ix.RUnlock()
			if !slices.Equal(got, want) {
				t.Fatalf("prefix %q: %v, want %v", p, got, want)
			}
		}
	}
	// Batches of new entities at or below 64 are inserted one by one, larger
	// ones appended and sorted: exercise both, in random name order.
	for _, batch := range []int{1, 5, 64, 65, 300, 2, 1000} {
		for range batch {
			n := fmt.Sprintf("%c:%d", 'a'+rng.Intn(3), rng.Intn(100000))
			if _, ok := ix.EntityNamed(n); ok {
				continue
			}
			ix.EntityFor([]byte(n))
			names = append(names, n)
		}
		check()
	}
}

func TestRemoveLockedTakesEventsOutOfEveryLookup(t *testing.T) {
	m := randomModel(t, 7, 3000)
	ix := m.ix
	removed := map[uint32]bool{}
	for seq, ev := range m.events {
		if ev.visible() && (seq%3 == 0 || ev.entity == "user:5") {
			removed[uint32(seq)] = true
		}
	}
	ix.Lock()
	ix.RemoveLocked(removed)
	ix.Unlock()
	for seq := range removed {
		m.events[seq].e.Flags |= Removed
	}
	rng := rand.New(rand.NewSource(8))
	for range 100 {
		f := randomFilter(rng)
		if got, want := ix.Plan(f), m.want(f); !slices.Equal(got, want) {
			t.Fatalf("after removal, filter %+v: Plan gave %d locations, want %d", f, len(got), len(want))
		}
	}
	ix.RLock()
	defer ix.RUnlock()
	live := map[string]bool{}
	events := 0
	for seq, ev := range m.events {
		_, found := ix.Lookup(ev.e.ID)
		if ev.visible() != found && ev.e.ID != [16]byte{} {
			t.Fatalf("event %d: visible %v but Lookup found %v", seq, ev.visible(), found)
		}
		if ev.idem != "" {
			got, ok := ix.Idem(ev.idem)
			if ok != ev.visible() || (ok && got != uint32(seq)) {
				t.Fatalf("idempotency key %q: %d, %v; event visible %v", ev.idem, got, ok, ev.visible())
			}
		}
		if ev.visible() {
			live[ev.entity] = true
			events++
		}
	}
	if live["user:5"] || ix.LiveEntities() != len(live) || ix.Events() != events {
		t.Fatalf("LiveEntities %d, Events %d; want %d, %d", ix.LiveEntities(), ix.Events(), len(live), events)
	}
	checkIDTable(t, ix) // rebuilt, growing from empty along the way
}

func TestMemoryBytesTracksTheHeap(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := randomModel(t, 9, 100000)
	m.events = nil // only the index stays reachable
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	est := m.ix.MemoryBytes()
	t.Logf("estimate %d bytes, heap grew %d bytes", est, heap)
	if est < heap/2 || est > heap*2 {
		t.Fatalf("MemoryBytes = %d, the heap grew by %d: off by more than a factor of 2", est, heap)
	}
	small := New()
	if small.MemoryBytes() != 0 {
		t.Fatalf("an empty index estimates %d bytes", small.MemoryBytes())
	}
	runtime.KeepAlive(m.ix)
}

func TestFilterMatches(t *testing.T) {
	cases := []struct {
		f             Filter
		entity, scope string
		kind          uint16
		clock         uint64
		want          bool
	}{
		{Filter{}, "a", "s", 0x1001, 5, true},
		{Filter{HasEntity: true, EntityPrefix: "ord"}, "order:1", "s", 1, 0, true},
		{Filter{HasEntity: true, EntityPrefix: "order:"}, "ord", "s", 1, 0, false},
		{Filter{HasScope: true, Scope: "eu"}, "a", "eu", 1, 0, true},
		{Filter{HasScope: true, Scope: "eu"}, "a", "eu2", 1, 0, false},
		{Filter{HasKind: true, Kind: 0x1002}, "a", "s", 0x1002, 0, true},
		{Filter{HasKind: true, Kind: 0x1002}, "a", "s", 0x2002, 0, false},
		{Filter{HasCategory: true, Category: 0x2}, "a", "s", 0x2fff, 0, true},
		{Filter{HasCategory: true, Category: 0x2}, "a", "s", 0x1002, 0, false},
		{Filter{HasClock: true, ClockMin: 3, ClockMax: 5}, "a", "s", 1, 3, true},
		{Filter{HasClock: true, ClockMin: 3, ClockMax: 5}, "a", "s", 1, 5, true},
		{Filter{HasClock: true, ClockMin: 3, ClockMax: 5}, "a", "s", 1, 6, false},
		{Filter{HasClock: true, ClockMin: 3, ClockMax: 5}, "a", "s", 1, 2, false},
	}
	for _, c := range cases {
		if got := c.f.Matches(c.entity, c.scope, c.kind, c.clock); got != c.want {
			t.Errorf("%+v.Matches(%q, %q, %#x, %d) = %v, want %v", c.f, c.entity, c.scope, c.kind, c.clock, got, c.want)
		}
	}
}
