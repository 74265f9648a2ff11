package core_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Projections: Project folds exactly the visible events of an
// entity, whatever cache sits in front of it, and agrees with a plain fold
// of Stream and with a model of what was written; caches are keyed by
// entity, name and schema version, a damaged cache file is a miss, an
// incremental projection continues from the cached state.

// ledgerState is what the ledger projection folds to.
type ledgerState struct {
	Balance int
	Seqs    []uint64 // global sequences applied, in order
	Leaked  int      // events marked "leak" (written under a cancelled fence)
}

// ledger adds deposits (kindA) and subtracts withdrawals (kindB), times
// factor; kindC events (notes) are not among its kinds. applied, when set,
// counts Apply calls.
type ledger struct {
	name        string
	version     uint32
	factor      int
	incremental bool
	allKinds    bool
	applied     *atomic.Int64
}

type ledgerPayload struct {
	Amt  int  `json:"amt"`
	Leak bool `json:"leak,omitempty"`
}

func (p ledger) Name() string          { return p.name }
func (p ledger) SchemaVersion() uint32 { return p.version }
func (p ledger) Init() ledgerState     { return ledgerState{} }

func (p ledger) Kinds() []core.Kind {
	if p.allKinds {
		return nil
	}
	return []core.Kind{kindA, kindB}
}

func (p ledger) SupportsIncremental() bool { return p.incremental }

func (p ledger) Apply(st ledgerState, ev core.StoredEvent) ledgerState {
	if p.applied != nil {
		p.applied.Add(1)
	}
	var pl ledgerPayload
	if err := json.Unmarshal(ev.Payload, &pl); err != nil {
		panic(fmt.Sprintf("ledger: payload %s: %v", ev.Payload, err))
	}
	switch ev.Header.Kind {
	case kindA:
		st.Balance += p.factor * pl.Amt
	case kindB:
		st.Balance -= p.factor * pl.Amt
	}
	if pl.Leak {
		st.Leaked++
	}
	st.Seqs = append(st.Seqs[:len(st.Seqs):len(st.Seqs)], ev.GlobalSequence)
	return st
}

// batchLedger is the ledger folding through ApplyBatch (as a plugin
// projection does); it fails the Project call on an empty batch, which
// Project must never pass.
type batchLedger struct{ ledger }

func (p batchLedger) ApplyBatch(st ledgerState, evs []core.StoredEvent) (ledgerState, error) {
	if len(evs) == 0 || len(evs) > core.ProjectBatchSize {
		return st, fmt.Errorf("ApplyBatch with %d events", len(evs))
	}
	for _, ev := range evs {
		st = p.ledger.Apply(st, ev)
	}
	return st, nil
}

func newLedger(incremental bool) ledger {
	return ledger{name: "ledger", version: 1, factor: 1, incremental: incremental}
}

// ledgerModel is what the test knows it wrote: the visible events of each
// entity, by global sequence.
type ledgerModel struct {
	events map[string][]modelEvent
	rng    *rand.Rand
}

type modelEvent struct {
	seq  uint64
	kind core.Kind
	amt  int
}

// ledgerEntities are the entities the workload writes to. "acct:notes"
// only ever gets kindC events, "acct:ghost" only events of a cancelled
// fence: neither has anything the ledger folds.
var ledgerEntities = []string{"acct:1", "acct:2", "acct:3", "acct:notes", "acct:ghost", "misc:1"}

func newLedgerModel() *ledgerModel {
	return &ledgerModel{events: map[string][]modelEvent{}, rng: rand.New(rand.NewSource(4))}
}

func (m *ledgerModel) add(entity string, k core.Kind, amt int, seq uint64) {
	m.events[entity] = append(m.events[entity], modelEvent{seq: seq, kind: k, amt: amt})
}

// expect is the state the projection must produce for entity.
func (m *ledgerModel) expect(p ledger, entity string) (ledgerState, bool) {
	evs := slices.Clone(m.events[entity])
	slices.SortFunc(evs, func(a, b modelEvent) int { return int(a.seq) - int(b.seq) })
	var st ledgerState
	found := false
	for _, e := range evs {
		if !p.allKinds && e.kind != kindA && e.kind != kindB {
			continue
		}
		switch e.kind {
		case kindA:
			st.Balance += p.factor * e.amt
		case kindB:
			st.Balance -= p.factor * e.amt
		}
		st.Seqs = append(st.Seqs, e.seq)
		found = true
	}
	return st, found
}

// pick returns a random entity of the folded ones and a kind for it.
func (m *ledgerModel) pick() (string, core.Kind) {
	switch r := m.rng.Intn(10); {
	case r < 7:
		return fmt.Sprintf("acct:%d", 1+m.rng.Intn(3)), []core.Kind{kindA, kindA, kindB, kindC}[m.rng.Intn(4)]
	case r < 9:
		return "acct:notes", kindC
	default:
		return "misc:1", []core.Kind{kindA, kindB}[m.rng.Intn(2)]
	}
}

func ledgerJSON(amt int, leak bool) []byte {
	b, _ := json.Marshal(ledgerPayload{Amt: amt, Leak: leak})
	return b
}

// writeLedgerPhase writes one phase of the workload: phase 0 single appends
// and a batch; phase 1 a committed fence (singles and a batch) and a
// cancelled one; phase 2 more singles, a batch and a fence abandoned by
// Close.
func writeLedgerPhase(t *testing.T, s *core.Store, m *ledgerModel, phase int) {
	t.Helper()
	ctx := context.Background()
	singles := func(n int) {
		for i := 0; i < n; i++ {
			e, k := m.pick()
			amt := 1 + m.rng.Intn(50)
			r := mustAppend(t, s, mustCoord(t, e, "bank"), k, string(ledgerJSON(amt, false)))
			m.add(e, k, amt, r.GlobalSequence)
		}
	}
	batch := func(n int) {
		var items []core.BatchItem
		var amts []int
		for i := 0; i < n; i++ {
			e, k := m.pick()
			amt := 1 + m.rng.Intn(50)
			items = append(items, core.BatchItem{Coordinate: mustCoord(t, e, "bank"), Kind: k, Payload: ledgerJSON(amt, false)})
			amts = append(amts, amt)
		}
		rs, err := s.AppendBatch(ctx, items)
		if err != nil {
			t.Fatalf("AppendBatch: %v", err)
		}
		for i, r := range rs {
			m.add(items[i].Coordinate.Entity, items[i].Kind, amts[i], r.GlobalSequence)
		}
	}
	switch phase {
	case 0:
		singles(25)
		batch(6)
		singles(5)
	case 1:
		f, err := s.BeginFence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		type fw struct {
			entity string
			kind   core.Kind
			amt    int
			t      *core.Ticket
		}
		var fws []fw
		for i := 0; i < 6; i++ {
			e, k := m.pick()
			amt := 1 + m.rng.Intn(50)
			tk, err := f.Submit(ctx, mustCoord(t, e, "bank"), k, ledgerJSON(amt, false))
			if err != nil {
				t.Fatal(err)
			}
			fws = append(fws, fw{e, k, amt, tk})
		}
		items := []core.BatchItem{
			{Coordinate: mustCoord(t, "acct:1", "bank"), Kind: kindA, Payload: ledgerJSON(7, false)},
			{Coordinate: mustCoord(t, "acct:2", "bank"), Kind: kindB, Payload: ledgerJSON(3, false)},
		}
		bt, err := f.SubmitBatch(ctx, items)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Commit(ctx); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		for _, w := range fws {
			r, err := w.t.Wait(ctx)
			if err != nil {
				t.Fatalf("fenced write: %v", err)
			}
			m.add(w.entity, w.kind, w.amt, r.GlobalSequence)
		}
		rs, err := bt.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.add("acct:1", kindA, 7, rs[0].GlobalSequence)
		m.add("acct:2", kindB, 3, rs[1].GlobalSequence)
		singles(3)
		writeCancelledFence(t, s, false)
		singles(3)
	case 2:
		singles(10)
		batch(4)
		writeCancelledFence(t, s, true)
		singles(5)
	}
}

// writeCancelledFence writes leaking events (to folded and unfolded
// entities, singles and a batch) under a fence that is then cancelled, or
// abandoned through Fence.Close.
func writeCancelledFence(t *testing.T, s *core.Store, viaClose bool) {
	t.Helper()
	ctx := context.Background()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tks []*core.Ticket
	for i, e := range []string{"acct:1", "acct:ghost", "acct:2", "acct:ghost"} {
		tk, err := f.Submit(ctx, mustCoord(t, e, "bank"), []core.Kind{kindA, kindB}[i%2], ledgerJSON(1000, true))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	bt, err := f.SubmitBatch(ctx, []core.BatchItem{
		{Coordinate: mustCoord(t, "acct:3", "bank"), Kind: kindA, Payload: ledgerJSON(1000, true)},
		{Coordinate: mustCoord(t, "acct:ghost", "bank"), Kind: kindA, Payload: ledgerJSON(1000, true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if viaClose {
		err = f.Close()
	} else {
		err = f.Cancel(ctx)
	}
	if err != nil {
		t.Fatalf("cancel fence: %v", err)
	}
	for _, tk := range tks {
		if _, err := tk.Wait(ctx); !isErr(err, core.ErrFenceCancelled) {
			t.Fatalf("write under a cancelled fence: got %v, want ErrFenceCancelled", err)
		}
	}
	if _, err := bt.Wait(ctx); !isErr(err, core.ErrFenceCancelled) {
		t.Fatalf("batch under a cancelled fence: got %v, want ErrFenceCancelled", err)
	}
}

// streamFold folds Stream(entity) through p by hand, filtering kinds.
func streamFold(t *testing.T, s *core.Store, entity string, p ledger) (ledgerState, bool) {
	t.Helper()
	evs, err := s.Stream(entity)
	if err != nil {
		t.Fatalf("Stream(%s): %v", entity, err)
	}
	st, found := p.Init(), false
	for _, ev := range evs {
		if k := p.Kinds(); len(k) > 0 && !slices.Contains(k, ev.Header.Kind) {
			continue
		}
		st = p.Apply(st, ev)
		found = true
	}
	return st, found
}

// checkLedger compares Project (consistent, then possibly stale right
// after, which must agree since nothing was written in between) with the
// Stream fold and the model for every entity and an unknown one.
func checkLedger(t *testing.T, s *core.Store, m *ledgerModel, p ledger, when string) {
	t.Helper()
	for _, e := range append(slices.Clone(ledgerEntities), "acct:unknown") {
		want, wantFound := m.expect(p, e)
		ref, refFound := streamFold(t, s, e, p)
		if !reflect.DeepEqual(ref, want) || refFound != wantFound {
			t.Fatalf("%s: Stream fold of %s = %+v (found %v), model says %+v (found %v)", when, e, ref, refFound, want, wantFound)
		}
		bp := p
		bp.name += "-batch"
		for _, fresh := range []core.Freshness{core.Consistent(), core.MaybeStale(time.Hour)} {
			for _, proj := range []core.Projection[ledgerState]{p, batchLedger{bp}} {
				st, found, err := core.Project(s, e, proj, fresh)
				if err != nil {
					t.Fatalf("%s: Project(%s, %s): %v", when, e, proj.Name(), err)
				}
				if !reflect.DeepEqual(st, want) || found != wantFound {
					t.Fatalf("%s: Project(%s, %s, %+v) = %+v (found %v), want %+v (found %v)", when, e, proj.Name(), fresh, st, found, want, wantFound)
				}
				if st.Leaked != 0 {
					t.Fatalf("%s: Project(%s) folded %d events of a cancelled fence", when, e, st.Leaked)
				}
			}
		}
	}
}

func TestProjectionParity(t *testing.T) {
	caches := []struct {
		name string
		make func(dir string) core.ProjectionCache // dir: for the file cache
	}{
		{"none", func(string) core.ProjectionCache { return nil }},
		{"lru", func(string) core.ProjectionCache { return core.NewLRUCache(64) }},
		{"lru-1", func(string) core.ProjectionCache { return core.NewLRUCache(1) }}, // evicts all the time
		{"file", func(dir string) core.ProjectionCache { return core.NewFileCache(dir) }},
	}
	for _, c := range caches {
		for _, inc := range []bool{false, true} {
			t.Run(fmt.Sprintf("cache=%s/incremental=%v", c.name, inc), func(t *testing.T) {
				t.Parallel()
				cacheDir := t.TempDir()
				s := openStore(t, func(cfg *core.Config) { cfg.ProjectionCache = c.make(cacheDir) })
				m := newLedgerModel()
				p := newLedger(inc)
				all := p
				all.allKinds, all.name = true, "ledger-all"
				gens := map[string]uint64{}
				for phase := 0; phase < 3; phase++ {
					writeLedgerPhase(t, s, m, phase)
					checkLedger(t, s, m, p, fmt.Sprintf("phase %d", phase))
					checkLedger(t, s, m, all, fmt.Sprintf("phase %d, all kinds", phase))
					checkGenerations(t, s, m, gens)
				}
				s = reopen(t, s)
				checkLedger(t, s, m, p, "after reopen")
				checkLedger(t, s, m, all, "after reopen, all kinds")
				checkGenerations(t, s, m, gens)
				// A new cache (for the file cache: a new FileCache on the same
				// directory, holding what the old one wrote) agrees too.
				cfg := s.Config()
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				cfg.ProjectionCache = c.make(cacheDir)
				s = openWith(t, cfg)
				checkLedger(t, s, m, p, "after reopen with a new cache")
				writeLedgerPhase(t, s, m, 0)
				checkLedger(t, s, m, p, "after reopen and more writes")
				checkGenerations(t, s, m, gens)
			})
		}
	}
}

// checkGenerations checks EntityGeneration against the model (one past
// the entity's latest visible event, 0 without one) and that it never
// went back since the last check.
func checkGenerations(t *testing.T, s *core.Store, m *ledgerModel, last map[string]uint64) {
	t.Helper()
	for _, e := range append(slices.Clone(ledgerEntities), "acct:unknown") {
		want := uint64(0)
		for _, ev := range m.events[e] {
			want = max(want, ev.seq+1)
		}
		g := s.EntityGeneration(e)
		if g != want {
			t.Fatalf("EntityGeneration(%s) = %d, want %d", e, g, want)
		}
		if g < last[e] {
			t.Fatalf("EntityGeneration(%s) went back from %d to %d", e, last[e], g)
		}
		last[e] = g
	}
}

// stateFiles lists the state files of a file cache directory.
func stateFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*", "*.state")) // a directory per entity
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestProjectIncrementalAppliesOnlyNewEvents(t *testing.T) {
	for _, name := range []string{"lru", "file"} {
		t.Run(name, func(t *testing.T) {
			cacheDir := t.TempDir()
			cache := core.ProjectionCache(core.NewLRUCache(8))
			if name == "file" {
				cache = core.NewFileCache(cacheDir)
			}
			s := openStore(t, func(c *core.Config) { c.ProjectionCache = cache })
			c := mustCoord(t, "acct:1", "bank")
			var n atomic.Int64
			inc := ledger{name: "inc", version: 1, factor: 1, incremental: true, applied: &n}
			full := ledger{name: "full", version: 1, factor: 1, applied: &n}
			for i := 0; i < 10; i++ {
				mustAppend(t, s, c, kindA, `{"amt":1}`)
			}
			mustAppend(t, s, c, kindC, `{"amt":100}`)
			project := func(p ledger, fresh core.Freshness) ledgerState {
				t.Helper()
				n.Store(0)
				st, found, err := core.Project(s, "acct:1", p, fresh)
				if err != nil || !found {
					t.Fatalf("Project: %v, found %v", err, found)
				}
				return st
			}
			if st := project(inc, core.Consistent()); st.Balance != 10 || n.Load() != 10 {
				t.Fatalf("cold incremental: balance %d, %d applies; want 10, 10", st.Balance, n.Load())
			}
			if st := project(inc, core.Consistent()); st.Balance != 10 || n.Load() != 0 {
				t.Fatalf("nothing new: balance %d, %d applies; want 10, 0", st.Balance, n.Load())
			}
			mustAppend(t, s, c, kindA, `{"amt":5}`)
			mustAppend(t, s, c, kindC, `{"amt":100}`) // not folded
			mustAppend(t, s, c, kindB, `{"amt":2}`)
			mustAppend(t, s, mustCoord(t, "acct:2", "bank"), kindA, `{"amt":1}`) // another entity
			if st := project(inc, core.Consistent()); st.Balance != 13 || n.Load() != 2 {
				t.Fatalf("two new events: balance %d, %d applies; want 13, 2", st.Balance, n.Load())
			}
			if st := project(full, core.Consistent()); st.Balance != 13 || n.Load() != 12 {
				t.Fatalf("non-incremental: balance %d, %d applies; want 13, 12", st.Balance, n.Load())
			}
			if st := project(full, core.Consistent()); st.Balance != 13 || n.Load() != 12 {
				t.Fatalf("non-incremental refolds: balance %d, %d applies; want 13, 12", st.Balance, n.Load())
			}
			if name == "file" {
				// The watermark survives a restart with the file cache.
				s = reopen(t, s)
				if st := project(inc, core.Consistent()); st.Balance != 13 || n.Load() != 0 {
					t.Fatalf("after reopen: balance %d, %d applies; want 13, 0", st.Balance, n.Load())
				}
				mustAppend(t, s, c, kindA, `{"amt":1}`)
				if st := project(inc, core.Consistent()); st.Balance != 14 || n.Load() != 1 {
					t.Fatalf("after reopen, one new: balance %d, %d applies; want 14, 1", st.Balance, n.Load())
				}
				if tmp, _ := filepath.Glob(filepath.Join(cacheDir, "*", "*tmp*")); len(tmp) > 0 {
					t.Fatalf("file cache left temporary files: %v", tmp)
				}
			}
		})
	}
}

func TestProjectCacheKeyedBySchemaVersionAndName(t *testing.T) {
	for _, name := range []string{"lru", "file"} {
		t.Run(name, func(t *testing.T) {
			cache := core.ProjectionCache(core.NewLRUCache(8))
			if name == "file" {
				cache = core.NewFileCache(t.TempDir())
			}
			s := openStore(t, func(c *core.Config) { c.ProjectionCache = cache })
			c := mustCoord(t, "acct:1", "bank")
			mustAppend(t, s, c, kindA, `{"amt":3}`)
			mustAppend(t, s, c, kindA, `{"amt":4}`)
			v1 := ledger{name: "ledger", version: 1, factor: 1, incremental: true}
			v2 := ledger{name: "ledger", version: 2, factor: 10, incremental: true}
			other := ledger{name: "ledger-x10", version: 1, factor: 10, incremental: true}
			get := func(p ledger, fresh core.Freshness) int {
				t.Helper()
				st, found, err := core.Project(s, "acct:1", p, fresh)
				if err != nil || !found {
					t.Fatalf("Project(%s v%d): %v, found %v", p.name, p.version, err, found)
				}
				return st.Balance
			}
			if b := get(v1, core.Consistent()); b != 7 {
				t.Fatalf("v1 = %d, want 7", b)
			}
			// v2 must not see v1's cached state, stale or as a base to continue from.
			if b := get(v2, core.MaybeStale(time.Hour)); b != 70 {
				t.Fatalf("v2 (may be stale) = %d, want 70: the v1 cache was used", b)
			}
			mustAppend(t, s, c, kindA, `{"amt":1}`)
			if b := get(v1, core.MaybeStale(time.Hour)); b != 7 {
				t.Fatalf("v1 (may be stale) = %d, want its cached 7", b)
			}
			if b := get(v2, core.Consistent()); b != 80 {
				t.Fatalf("v2 = %d, want 80", b)
			}
			if b := get(other, core.MaybeStale(time.Hour)); b != 80 {
				t.Fatalf("another name = %d, want 80", b)
			}
			if b := get(v1, core.Consistent()); b != 8 {
				t.Fatalf("v1 = %d, want 8", b)
			}
			// Another entity with the same projection has its own entry.
			mustAppend(t, s, mustCoord(t, "acct:2", "bank"), kindB, `{"amt":1}`)
			st, _, err := core.Project(s, "acct:2", v1, core.MaybeStale(time.Hour))
			if err != nil || st.Balance != -1 {
				t.Fatalf("acct:2 = %+v, %v; want balance -1", st, err)
			}
		})
	}
}

func TestProjectFileCacheDamageIsAMiss(t *testing.T) {
	cacheDir := t.TempDir()
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewFileCache(cacheDir) })
	for i := 1; i <= 2; i++ {
		c := mustCoord(t, fmt.Sprintf("acct:%d", i), "bank")
		for j := 0; j < 5*i; j++ {
			mustAppend(t, s, c, kindA, `{"amt":1}`)
		}
	}
	want := map[string]int{"acct:1": 5, "acct:2": 10}
	for _, inc := range []bool{false, true} {
		p := newLedger(inc)
		project := func(e string, fresh core.Freshness) {
			t.Helper()
			st, found, err := core.Project(s, e, p, fresh)
			if err != nil || !found || st.Balance != want[e] || len(st.Seqs) != want[e] {
				t.Fatalf("Project(%s, incremental %v, %+v) = %+v, %v, %v; want balance %d", e, inc, fresh, st, found, err, want[e])
			}
		}
		project("acct:1", core.Consistent())
		project("acct:2", core.Consistent())
		files := stateFiles(t, cacheDir)
		if len(files) != 2 {
			t.Fatalf("file cache holds %v, want 2 state files", files)
		}
		orig := map[string][]byte{}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			orig[f] = b
		}
		// Which file is whose: the first entity's holds "Balance":5.
		f1, f2 := files[0], files[1]
		if !bytes.Contains(orig[f1], []byte(`"Balance":5,`)) {
			f1, f2 = f2, f1
		}
		damages := map[string]func(b []byte) []byte{
			// A different (valid JSON) state without a matching checksum:
			// used, it would show as a balance of 6.
			"state byte": func(b []byte) []byte {
				b = bytes.Clone(b)
				i := bytes.Index(b, []byte(`"Balance":5,`))
				b[i+len(`"Balance":`)] = '6'
				return b
			},
			"checksum":  func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 0xff; return b },
			"truncated": func(b []byte) []byte { return b[:len(b)-7] },
			"short":     func(b []byte) []byte { return b[:20] },
			"empty":     func([]byte) []byte { return nil },
			"magic":     func(b []byte) []byte { b = bytes.Clone(b); b[0] = 'X'; return b },
			"garbage":   func(b []byte) []byte { return bytes.Repeat([]byte{0xA5}, len(b)) },
			// The other entity's (intact) file under this entity's name: the
			// key it holds does not match.
			"other key": func([]byte) []byte { return orig[f2] },
		}
		for name, damage := range damages {
			bad := damage(orig[f1])
			writeFile(t, f1, bad)
			// Stale reads are the ones that would return a cached state as is.
			project("acct:1", core.MaybeStale(time.Hour))
			// The miss was recomputed and stored again, whole.
			if b, err := os.ReadFile(f1); err != nil || bytes.Equal(b, bad) || !bytes.Contains(b, []byte(`"Balance":5,`)) {
				t.Fatalf("%s: the damaged state file was not replaced: %q, %v", name, b, err)
			}
			writeFile(t, f1, bad)
			project("acct:1", core.Consistent())
			project("acct:2", core.MaybeStale(time.Hour))
			project("acct:1", core.MaybeStale(time.Hour))
		}
		// A directory where a state file should be: a miss, and Put fails
		// quietly.
		if err := os.Remove(f1); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(f1, 0o755); err != nil {
			t.Fatal(err)
		}
		project("acct:1", core.MaybeStale(time.Hour))
		project("acct:1", core.Consistent())
		if err := os.Remove(f1); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProjectMaybeStale(t *testing.T) {
	for _, name := range []string{"none", "lru", "file"} {
		for _, inc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/incremental=%v", name, inc), func(t *testing.T) {
				var cache core.ProjectionCache
				switch name {
				case "lru":
					cache = core.NewLRUCache(4)
				case "file":
					cache = core.NewFileCache(t.TempDir())
				}
				s := openStore(t, func(c *core.Config) { c.ProjectionCache = cache })
				c := mustCoord(t, "acct:1", "bank")
				p := newLedger(inc)
				balance := func(fresh core.Freshness) int {
					t.Helper()
					st, _, err := core.Project(s, "acct:1", p, fresh)
					if err != nil {
						t.Fatal(err)
					}
					return st.Balance
				}
				mustAppend(t, s, c, kindA, `{"amt":1}`)
				if b := balance(core.Consistent()); b != 1 {
					t.Fatalf("balance %d, want 1", b)
				}
				mustAppend(t, s, c, kindA, `{"amt":2}`)
				wantStale := 1
				if cache == nil {
					wantStale = 3 // nothing cached: always computed
				}
				if b := balance(core.MaybeStale(time.Hour)); b != wantStale {
					t.Fatalf("MaybeStale(1h) = %d, want %d", b, wantStale)
				}
				if b := balance(core.Consistent()); b != 3 {
					t.Fatalf("Consistent = %d, want 3 (never a stale state)", b)
				}
				if b := balance(core.MaybeStale(time.Hour)); b != 3 {
					t.Fatalf("MaybeStale after Consistent = %d, want 3", b)
				}
				mustAppend(t, s, c, kindA, `{"amt":4}`)
				time.Sleep(5 * time.Millisecond)
				if b := balance(core.MaybeStale(time.Millisecond)); b != 7 {
					t.Fatalf("MaybeStale(1ms) of a 5 ms old state = %d, want 7", b)
				}
				mustAppend(t, s, c, kindA, `{"amt":8}`)
				for i := 0; i < 3; i++ {
					if b := balance(core.Consistent()); b != 15 {
						t.Fatalf("Consistent = %d, want 15", b)
					}
				}
			})
		}
	}
}

func TestProjectNotFound(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(8) })
	ctx := context.Background()
	mustAppend(t, s, mustCoord(t, "acct:notes", "bank"), kindC, `{"amt":1}`)
	// "acct:ghost" exists only under a cancelled fence.
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Submit(ctx, mustCoord(t, "acct:ghost", "bank"), kindA, ledgerJSON(5, true)); err != nil {
		t.Fatal(err)
	}
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	for _, inc := range []bool{false, true} {
		p := newLedger(inc)
		for _, e := range []string{"nobody", "acct:notes", "acct:ghost", "acct"} {
			for i := 0; i < 2; i++ { // cold, then cached
				st, found, err := core.Project(s, e, p, core.Consistent())
				if err != nil || found || !reflect.DeepEqual(st, p.Init()) {
					t.Fatalf("Project(%s) = %+v, found %v, %v; want the initial state, not found", e, st, found, err)
				}
			}
		}
		all := p
		all.allKinds, all.name = true, "all"
		st, found, err := core.Project(s, "acct:notes", all, core.Consistent())
		if err != nil || !found || len(st.Seqs) != 1 {
			t.Fatalf("all kinds: Project(acct:notes) = %+v, found %v, %v", st, found, err)
		}
	}
	if g := s.EntityGeneration("acct:ghost"); g != 0 {
		t.Fatalf("generation of an entity with only hidden events = %d, want 0", g)
	}
	if g := s.EntityGeneration("nobody"); g != 0 {
		t.Fatalf("generation of an unknown entity = %d, want 0", g)
	}
	s.Close()
	if _, _, err := core.Project(s, "acct:notes", newLedger(false), core.Consistent()); !isErr(err, core.ErrClosed) {
		t.Fatalf("Project after Close: %v, want ErrClosed", err)
	}
}

func TestProjectIfChangedAndEntityGeneration(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(8) })
	ctx := context.Background()
	c1, c2 := mustCoord(t, "acct:1", "bank"), mustCoord(t, "acct:2", "bank")
	p := newLedger(true)
	lastGen := uint64(0)
	check := func(what string, wantChanged bool, wantBalance int) {
		t.Helper()
		before := s.EntityGeneration("acct:1")
		gen, st, changed, err := core.ProjectIfChanged(s, "acct:1", p, lastGen, core.Consistent())
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if changed != wantChanged {
			t.Fatalf("%s: changed = %v, want %v", what, changed, wantChanged)
		}
		if gen != before {
			t.Fatalf("%s: generation %d, EntityGeneration said %d", what, gen, before)
		}
		if changed {
			if gen <= lastGen {
				t.Fatalf("%s: generation went from %d to %d", what, lastGen, gen)
			}
			if st.Balance != wantBalance {
				t.Fatalf("%s: balance %d, want %d", what, st.Balance, wantBalance)
			}
		} else if !reflect.DeepEqual(st, ledgerState{}) || gen != lastGen {
			t.Fatalf("%s: unchanged but got state %+v, generation %d (last %d)", what, st, gen, lastGen)
		}
		lastGen = gen
	}
	check("no events", false, 0)
	r := mustAppend(t, s, c1, kindA, `{"amt":2}`)
	if g := s.EntityGeneration("acct:1"); g != r.GlobalSequence+1 {
		t.Fatalf("generation %d, want %d", g, r.GlobalSequence+1)
	}
	check("first event", true, 2)
	check("nothing new", false, 0)
	mustAppend(t, s, c2, kindA, `{"amt":2}`)
	check("another entity's event", false, 0)
	mustAppend(t, s, c1, kindC, `{"amt":2}`)
	check("an unfolded kind (the generation moves)", true, 2)
	mustAppend(t, s, c1, kindB, `{"amt":1}`)
	check("a withdrawal", true, 1)

	// A fence: nothing changes while it is open, nor when it is cancelled;
	// the commit is one change.
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Submit(ctx, c1, kindA, ledgerJSON(100, true)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check("fence open", false, 0)
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	check("fence cancelled", false, 0)
	f, err = s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := f.Submit(ctx, c1, kindA, ledgerJSON(10, false))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check("second fence open", false, 0)
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r, err = tk.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("fence committed", true, 11)
	if lastGen != r.GlobalSequence+1 {
		t.Fatalf("generation after the commit = %d, want %d", lastGen, r.GlobalSequence+1)
	}
	// A lastGen that never was (say, from another store) is a change.
	gen, st, changed, err := core.ProjectIfChanged(s, "acct:1", p, lastGen+100, core.Consistent())
	if err != nil || !changed || gen != lastGen || st.Balance != 11 {
		t.Fatalf("ProjectIfChanged with a foreign generation = %d, %+v, %v, %v", gen, st, changed, err)
	}
}

func TestWatchProjection(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "acct:1", "bank")
	w := core.WatchProjection(s, "acct:1", newLedger(false))
	next := func(d time.Duration) (ledgerState, error) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return w.Next(cctx)
	}
	// No events yet: Next waits.
	if _, err := next(30 * time.Millisecond); !isErr(err, context.DeadlineExceeded) {
		t.Fatalf("Next without events: %v, want DeadlineExceeded", err)
	}
	mustAppend(t, s, c, kindA, `{"amt":2}`)
	if st, err := next(5 * time.Second); err != nil || st.Balance != 2 {
		t.Fatalf("Next = %+v, %v; want balance 2", st, err)
	}
	if w.Generation() != s.EntityGeneration("acct:1") {
		t.Fatalf("Generation %d, EntityGeneration %d", w.Generation(), s.EntityGeneration("acct:1"))
	}
	// Nothing new: Next waits; an event of another entity does not wake it
	// with a result.
	mustAppend(t, s, mustCoord(t, "acct:2", "bank"), kindA, `{"amt":2}`)
	if _, err := next(30 * time.Millisecond); !isErr(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing new: %v, want DeadlineExceeded", err)
	}
	// A blocked Next returns as soon as the entity changes.
	type res struct {
		st  ledgerState
		err error
	}
	waitNext := func() chan res {
		ch := make(chan res, 1)
		go func() {
			st, err := next(10 * time.Second)
			ch <- res{st, err}
		}()
		return ch
	}
	ch := waitNext()
	time.Sleep(10 * time.Millisecond)
	mustAppend(t, s, c, kindA, `{"amt":3}`)
	if r := <-ch; r.err != nil || r.st.Balance != 5 {
		t.Fatalf("Next = %+v, %v; want balance 5", r.st, r.err)
	}
	// Fenced writes wake nobody with a new state; a cancelled fence never
	// shows, a committed one shows at its commit.
	ch = waitNext()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Submit(ctx, c, kindA, ledgerJSON(100, true)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	f, err = s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Submit(ctx, c, kindA, ledgerJSON(10, false)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Fatalf("Next returned %+v, %v while only fenced writes happened", r.st, r.err)
	case <-time.After(30 * time.Millisecond):
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; r.err != nil || r.st.Balance != 15 || r.st.Leaked != 0 {
		t.Fatalf("Next after the commit = %+v, %v; want balance 15, nothing leaked", r.st, r.err)
	}
	// Close ends a waiting Next with ErrClosed, and later ones too.
	ch = waitNext()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if r := <-ch; !isErr(r.err, core.ErrClosed) {
		t.Fatalf("Next across Close: %v, want ErrClosed", r.err)
	}
	if _, err := next(time.Second); !isErr(err, core.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestLRUCache(t *testing.T) {
	c := core.NewLRUCache(2)
	st := func(n uint64) core.CachedState {
		return core.CachedState{State: []byte(fmt.Sprint(n)), UpTo: n, Found: true}
	}
	c.Put("a", st(1))
	c.Put("b", st(2))
	if _, ok := c.Get("a"); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c.Put("c", st(3)) // evicts b
	if _, ok := c.Get("b"); ok || c.Len() != 2 {
		t.Fatalf("b still cached (len %d)", c.Len())
	}
	c.Put("a", st(4)) // update in place
	if got, ok := c.Get("a"); !ok || got.UpTo != 4 || string(got.State) != "4" || c.Len() != 2 {
		t.Fatalf("a = %+v, %v (len %d)", got, ok, c.Len())
	}
	if got, ok := c.Get("c"); !ok || got.UpTo != 3 {
		t.Fatalf("c = %+v, %v", got, ok)
	}
	one := core.NewLRUCache(0) // at least one
	one.Put("x", st(1))
	one.Put("y", st(2))
	if _, ok := one.Get("y"); !ok || one.Len() != 1 {
		t.Fatalf("NewLRUCache(0): len %d", one.Len())
	}
	fc := core.NewFileCache(filepath.Join(t.TempDir(), "not", "yet"))
	if _, ok := fc.Get("x"); ok {
		t.Fatal("empty file cache hit")
	}
	at := time.Now().Round(0)
	fc.Put("x", core.CachedState{State: []byte(`{"a":1}`), UpTo: 7, Found: true, At: at})
	if got, ok := fc.Get("x"); !ok || got.UpTo != 7 || !got.Found || !got.At.Equal(at) || string(got.State) != `{"a":1}` {
		t.Fatalf("file cache round trip: %+v, %v", got, ok)
	}
}

// TestProjectConcurrent: projections racing with writers and with each
// other through a shared cache always return a state that is a prefix of
// the entity's history, and the final one is all of it.
func TestProjectConcurrent(t *testing.T) {
	for _, name := range []string{"lru", "file"} {
		t.Run(name, func(t *testing.T) {
			cache := core.ProjectionCache(core.NewLRUCache(4))
			if name == "file" {
				cache = core.NewFileCache(t.TempDir())
			}
			s := openStore(t, func(c *core.Config) { c.ProjectionCache = cache })
			ctx := context.Background()
			c := mustCoord(t, "acct:1", "bank")
			done := make(chan struct{})
			var states []ledgerState
			var mu sync.Mutex
			var readers sync.WaitGroup
			for g := 0; g < 3; g++ {
				readers.Add(1)
				go func(g int) {
					defer readers.Done()
					p := newLedger(g != 0)
					for {
						select {
						case <-done:
							return
						default:
						}
						fresh := core.Consistent()
						if g == 2 {
							fresh = core.MaybeStale(time.Millisecond)
						}
						st, _, err := core.Project(s, "acct:1", p, fresh)
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						states = append(states, st)
						mu.Unlock()
					}
				}(g)
			}
			for i := 0; i < 200; i++ {
				k := []core.Kind{kindA, kindB, kindC}[i%3]
				if _, err := s.Append(ctx, c, k, ledgerJSON(i, false)); err != nil {
					t.Fatal(err)
				}
			}
			close(done)
			readers.Wait()
			var full []uint64
			balance := map[int]int{0: 0}
			for i, ev := range mustQuery(t, s, core.Entity("acct:1").WithCategory(1)) {
				full = append(full, ev.GlobalSequence)
				var pl ledgerPayload
				_ = json.Unmarshal(ev.Payload, &pl)
				b := balance[i]
				if ev.Header.Kind == kindA {
					b += pl.Amt
				} else {
					b -= pl.Amt
				}
				balance[i+1] = b
			}
			for _, st := range states {
				if len(st.Seqs) > len(full) || !slices.Equal(st.Seqs, full[:len(st.Seqs)]) || st.Balance != balance[len(st.Seqs)] {
					t.Fatalf("a projected state is not a prefix of the history: %+v", st)
				}
			}
			for _, inc := range []bool{false, true} {
				st, _, err := core.Project(s, "acct:1", newLedger(inc), core.Consistent())
				if err != nil || !slices.Equal(st.Seqs, full) || st.Balance != balance[len(full)] {
					t.Fatalf("final state %+v, %v", st, err)
				}
			}
		})
	}
}

// TestProjectBatchApplier: a BatchApplier gets the events in order, in
// batches of at most ProjectBatchSize, incrementally after a cached state.
func TestProjectBatchApplier(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(4) })
	ctx := context.Background()
	c := mustCoord(t, "big", "s")
	n := 2*core.ProjectBatchSize + 17
	for i := 0; i < n; i++ {
		if _, err := s.Submit(ctx, c, []core.Kind{kindA, kindC}[i%2], ledgerJSON(1, false)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int64
	p := batchLedger{ledger{name: "big", version: 1, factor: 1, incremental: true, allKinds: true, applied: &applied}}
	st, found, err := core.Project(s, "big", p, core.Consistent())
	if err != nil || !found || len(st.Seqs) != n || st.Balance != (n+1)/2 || applied.Load() != int64(n) {
		t.Fatalf("Project = %d events, balance %d, %v, %v; %d applied", len(st.Seqs), st.Balance, found, err, applied.Load())
	}
	for i, seq := range st.Seqs {
		if seq != uint64(i) {
			t.Fatalf("event %d has sequence %d", i, seq)
		}
	}
	mustAppend(t, s, c, kindA, `{"amt":5}`)
	applied.Store(0)
	st, _, err = core.Project(s, "big", p, core.Consistent())
	if err != nil || len(st.Seqs) != n+1 || applied.Load() != 1 {
		t.Fatalf("incremental: %d events, %v; %d applied", len(st.Seqs), err, applied.Load())
	}
}

// sizedLedger records the batches Project hands it.
type sizedLedger struct {
	batchLedger
	batches *[][2]int // events, payload bytes
}

func (p sizedLedger) ApplyBatch(st ledgerState, evs []core.StoredEvent) (ledgerState, error) {
	n := 0
	for _, ev := range evs {
		n += len(ev.Payload)
	}
	*p.batches = append(*p.batches, [2]int{len(evs), n})
	return p.batchLedger.ApplyBatch(st, evs)
}

// TestProjectBatchesBoundedInBytes: an entity of large events is handed
// to a BatchApplier in batches that end once their payloads reach
// ProjectBatchBytes (each at least one event), never all at once, and
// the fold is the same.
func TestProjectBatchesBoundedInBytes(t *testing.T) {
	s := openWith(t, core.DefaultConfig(t.TempDir()))
	defer s.Close()
	c := mustCoord(t, "acct:big", "s")
	pad := strings.Repeat("x", 1<<20)
	const n = 10
	for range n {
		mustAppend(t, s, c, kindA, `{"amt":1,"pad":"`+pad+`"}`)
	}
	var batches [][2]int
	p := sizedLedger{batchLedger{newLedger(false)}, &batches}
	st, found, err := core.Project[ledgerState](s, "acct:big", p, core.Consistent())
	if err != nil || !found || st.Balance != n {
		t.Fatalf("Project: %+v %v %v", st, found, err)
	}
	total := 0
	for _, b := range batches {
		if b[0] < 1 || b[1]-(1<<20+20) >= core.ProjectBatchBytes {
			t.Fatalf("a batch of %d events, %d bytes: want at least one, ending once past %d bytes (%v)", b[0], b[1], core.ProjectBatchBytes, batches)
		}
		total += b[0]
	}
	if total != n || len(batches) < 3 {
		t.Fatalf("batches %v: want %d events in at least 3", batches, n)
	}
}

// admittedLedger is an incremental ledger whose folds take a turn
// (core.FoldAdmitter): it counts the turns, checks each is released
// before the next and that no event is applied outside one, and refuses
// a turn while refuse is set.
type admittedLedger struct {
	ledger
	turns, released *atomic.Int64
	refuse          *atomic.Bool
	t               *testing.T
}

func (p admittedLedger) AdmitFold() (func(), error) {
	if p.refuse.Load() {
		return nil, errors.New("no turn")
	}
	if p.turns.Load() != p.released.Load() {
		p.t.Error("a turn taken while the last is held")
	}
	p.turns.Add(1)
	return func() { p.released.Add(1) }, nil
}

func (p admittedLedger) Apply(st ledgerState, ev core.StoredEvent) ledgerState {
	if p.turns.Load() != p.released.Load()+1 {
		p.t.Error("an event applied outside the fold's turn")
	}
	return p.ledger.Apply(st, ev)
}

// TestProjectFoldAdmitter: a fold with events to read takes one turn,
// before it applies any and released once it ends; a read answered by a
// current cached state, or of an entity with no events, takes none; a
// refused turn fails the projection, nothing applied.
func TestProjectFoldAdmitter(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(8) })
	c := mustCoord(t, "acct:1", "bank")
	var applied, turns, released atomic.Int64
	var refuse atomic.Bool
	p := admittedLedger{ledger: ledger{name: "adm", version: 1, factor: 1, incremental: true, applied: &applied},
		turns: &turns, released: &released, refuse: &refuse, t: t}
	for range 3 {
		mustAppend(t, s, c, kindA, `{"amt":1}`)
	}
	project := func(entity string) (ledgerState, error) {
		st, _, err := core.Project(s, entity, p, core.Consistent())
		return st, err
	}
	if st, err := project("acct:1"); err != nil || st.Balance != 3 || turns.Load() != 1 || released.Load() != 1 {
		t.Fatalf("first fold: balance %d, %v; %d turns, %d released; want 3, one turn released", st.Balance, err, turns.Load(), released.Load())
	}
	if st, err := project("acct:1"); err != nil || st.Balance != 3 || turns.Load() != 1 {
		t.Fatalf("cached state: balance %d, %v; %d turns, want still 1", st.Balance, err, turns.Load())
	}
	if _, err := project("acct:none"); err != nil || turns.Load() != 1 {
		t.Fatalf("entity with no events: %v; %d turns, want still 1", err, turns.Load())
	}
	mustAppend(t, s, c, kindA, `{"amt":1}`)
	refuse.Store(true)
	applied.Store(0)
	if _, err := project("acct:1"); err == nil || err.Error() != "no turn" || applied.Load() != 0 {
		t.Fatalf("refused turn: %v with %d events applied; want the admitter's error, none applied", err, applied.Load())
	}
	refuse.Store(false)
	if st, err := project("acct:1"); err != nil || st.Balance != 4 || turns.Load() != 2 || released.Load() != 2 {
		t.Fatalf("after the refusal: balance %d, %v; %d turns, %d released; want 4, two turns released", st.Balance, err, turns.Load(), released.Load())
	}
}

// TestFileCacheForgetsAnEntityAlone: FileCache keeps each entity's states
// in a directory of its own; forgetting an entity removes its states and
// leaves the others', and the state files an earlier version kept at the
// top of the directory (which no Get reads) are removed at the first use.
func TestFileCacheForgetsAnEntityAlone(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, "0123456789abcdef0123456789abcdef.state")
	if err := os.WriteFile(legacy, []byte("BPSTATE2 an old erased payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := core.NewFileCache(dir)
	put := func(entity, name string) string {
		key := entity + "\x00" + name + "\x001"
		c.Put(key, core.CachedState{State: []byte(`{"of":"` + entity + `"}`), UpTo: 1, Found: true})
		if _, ok := c.Get(key); !ok {
			t.Fatalf("state of %s/%s not kept", entity, name)
		}
		return key
	}
	a1, a2, b := put("user:1", "p1"), put("user:1", "p2"), put("user:2", "p1")
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Fatalf("the top-level state file of an earlier version is still there: %v", err)
	}
	c.ForgetEntities(map[string]bool{"user:1": true})
	for _, k := range []string{a1, a2} {
		if _, ok := c.Get(k); ok {
			t.Fatalf("state %q still cached after its entity was forgotten", k)
		}
	}
	if _, ok := c.Get(b); !ok {
		t.Fatal("another entity's state went with the forgotten one")
	}
	if n := len(stateFiles(t, dir)); n != 1 {
		t.Fatalf("%d state files left, want the other entity's one", n)
	}
}
