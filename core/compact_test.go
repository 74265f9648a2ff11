package core_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Compaction: retention, tombstones and merging rewrite the sealed
// segments; what is kept reads back exactly as before, what is removed
// vanishes from every read path, and the log stays verifiable.

// seqProj folds an entity into the global sequences and payloads it saw;
// incremental, so a cached state is continued (and served when current).
type seqProj struct{ name string }

type seqState struct {
	Seqs     []uint64
	Payloads []string
}

func (p seqProj) Name() string              { return p.name }
func (p seqProj) SchemaVersion() uint32     { return 1 }
func (p seqProj) Kinds() []core.Kind        { return nil }
func (p seqProj) Init() seqState            { return seqState{} }
func (p seqProj) SupportsIncremental() bool { return true }
func (p seqProj) Apply(st seqState, ev core.StoredEvent) seqState {
	st.Seqs = append(st.Seqs[:len(st.Seqs):len(st.Seqs)], ev.GlobalSequence)
	st.Payloads = append(st.Payloads[:len(st.Payloads):len(st.Payloads)], string(ev.Payload))
	return st
}

// foldStream is seqProj over Stream, by hand.
func foldStream(t testing.TB, s *core.Store, entity string) seqState {
	t.Helper()
	evs, err := s.Stream(entity)
	if err != nil {
		t.Fatal(err)
	}
	var st seqState
	for _, ev := range evs {
		st = seqProj{}.Apply(st, ev)
	}
	return st
}

func checkProjections(t testing.TB, s *core.Store, what string, entities []string) {
	t.Helper()
	for _, e := range entities {
		got, _, err := core.Project(s, e, seqProj{name: "seqs"}, core.Consistent())
		if err != nil {
			t.Fatalf("%s: Project(%s): %v", what, e, err)
		}
		want := foldStream(t, s, e)
		if !slices.Equal(got.Seqs, want.Seqs) || !slices.Equal(got.Payloads, want.Payloads) {
			t.Fatalf("%s: projection of %s serves sequences %v, its stream holds %v", what, e, got.Seqs, want.Seqs)
		}
	}
}

var compactEntities = []string{"e:0", "e:1", "e:2", "e:3", "e:4", "e:5", "order:1", "order:2", "acct:ghost", "filler"}

type compactFixture struct {
	s      *core.Store
	clock  *fakeClock
	keys   map[core.EventID]string // idempotency keys of visible events
	active core.EventID            // the one event in the active segment
	old    time.Time               // the events before this are "old"
}

// newCompactFixture writes, with 64 KiB segments: old events (an hour
// before the rest), new ones, batches, a committed and a cancelled fence,
// a redaction and named cursor positions; then fills the segment so that
// the active one holds a single filler event.
func newCompactFixture(t *testing.T, adjust ...func(*core.Config)) *compactFixture {
	t.Helper()
	ctx := context.Background()
	f := &compactFixture{clock: newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)), keys: map[core.EventID]string{}}
	f.s = openStore(t, append([]func(*core.Config){smallSegments, func(c *core.Config) {
		c.Now = f.clock.now
		c.ProjectionCache = core.NewLRUCache(100)
	}}, adjust...)...)
	s := f.s
	pad := strings.Repeat("x", 250)
	write := func(phase string, n int) {
		for i := 0; i < n; i++ {
			e := fmt.Sprintf("e:%d", i%6)
			o := core.AppendOptions{Flags: uint16(i % 4)}
			if i%3 == 0 {
				o.IdempotencyKey = fmt.Sprintf("%s-%d", phase, i)
			}
			r := mustAppendOpts(t, s, mustCoord(t, e, []string{"eu", "us"}[i%2]), []core.Kind{kindA, kindB, kindC}[i%3],
				fmt.Sprintf(`{"phase":%q,"i":%d,"pad":%q}`, phase, i, pad), o)
			if o.IdempotencyKey != "" {
				f.keys[r.ID] = o.IdempotencyKey
			}
			if i%40 == 39 {
				rs, err := s.AppendBatch(ctx, []core.BatchItem{
					{Coordinate: mustCoord(t, "order:1", "eu"), Kind: kindA, Payload: []byte(fmt.Sprintf(`{"phase":%q,"b":%d}`, phase, i))},
					{Coordinate: mustCoord(t, "order:2", "eu"), Kind: kindB, Payload: []byte(fmt.Sprintf(`{"phase":%q,"b":%d}`, phase, i)),
						Options: core.AppendOptions{IdempotencyKey: fmt.Sprintf("%s-b%d", phase, i)}},
				})
				if err != nil {
					t.Fatal(err)
				}
				f.keys[rs[1].ID] = fmt.Sprintf("%s-b%d", phase, i)
			}
		}
	}
	write("old", 240)
	writeCancelledFence(t, s, false)
	redacted := mustAppend(t, s, mustCoord(t, "e:4", "eu"), kindA, `{"secret":"old"}`)
	if err := s.Redact(ctx, redacted.ID); err != nil {
		t.Fatal(err)
	}
	f.clock.add(time.Hour)
	f.old = f.clock.now().Add(-30 * time.Minute)
	write("new", 200)
	fc, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Submit(ctx, mustCoord(t, "e:5", "eu"), kindA, []byte(`{"phase":"new","fenced":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := fc.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	writeCancelledFence(t, s, true)
	write("new2", 60)
	cur := mustNamedCursor(t, s, "audit", core.All())
	mustPoll(t, cur, 123)
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	cur2 := mustNamedCursor(t, s, "tail", core.Entity("e:"))
	pollAll(t, cur2, 1000)
	if err := cur2.Commit(); err != nil {
		t.Fatal(err)
	}
	fill := rotate(t, s)
	f.active = fill[len(fill)-1].ID
	if n := len(segmentFiles(t, s.Dir())); n < 5 {
		t.Fatalf("fixture has %d segments, want several sealed ones", n)
	}
	// Cache a projection of every entity before compacting.
	checkProjections(t, s, "before compaction", compactEntities)
	return f
}

// expectCompaction applies cfg to the events before (as the store would)
// and returns what must remain, what is removed and how many events are
// newly tombstoned.
func (f *compactFixture) expectCompaction(cfg core.CompactConfig, before []core.StoredEvent) (kept []core.StoredEvent, removed []core.StoredEvent, tomb int) {
	rank := map[core.EventID]int{}
	count := map[string]int{}
	for i := len(before) - 1; i >= 0; i-- {
		e := before[i]
		rank[e.Header.ID] = count[e.Coordinate.Entity]
		count[e.Coordinate.Entity]++
	}
	now := f.clock.now()
	for _, e := range before {
		// The active segment, and the store's own records (unless
		// StoreRecords), stay whole.
		if e.Header.ID == f.active || (!cfg.StoreRecords && strings.HasPrefix(e.Coordinate.Entity, core.ReservedEntityPrefix)) {
			kept = append(kept, e)
			continue
		}
		switch {
		case cfg.MaxAge > 0 && e.Header.Timestamp < now.Add(-cfg.MaxAge).UnixMicro(),
			cfg.MaxPerEntity > 0 && rank[e.Header.ID] >= cfg.MaxPerEntity,
			cfg.Keep != nil && !cfg.Keep(e):
			removed = append(removed, e)
			continue
		case cfg.Tombstone != nil && cfg.Tombstone(e):
			if !e.Redacted {
				tomb++
			}
			e.Redacted, e.Payload = true, nil
		}
		kept = append(kept, e)
	}
	return kept, removed, tomb
}

func sameEventsRedacted(t testing.TB, what string, a, b []core.StoredEvent) {
	t.Helper()
	sameEvents(t, what, a, b)
	for i := range a {
		if a[i].Redacted != b[i].Redacted {
			t.Fatalf("%s: event %d (seq %d): Redacted %v vs %v", what, i, a[i].GlobalSequence, a[i].Redacted, b[i].Redacted)
		}
	}
}

func readDirFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

var genName = regexp.MustCompile(`^(\d{20})(?:\.(\d+))?\.seg$`)

func TestCompact(t *testing.T) {
	e2c := func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "e:2" && ev.Header.Kind == kindC }
	cases := []struct {
		name string
		cfg  core.CompactConfig
	}{
		{"retention by predicate", core.Retention(func(ev core.StoredEvent) bool {
			return ev.Coordinate.Entity != "e:1" && !e2c(ev) && ev.Coordinate.Entity != "order:2"
		})},
		{"max age", core.CompactConfig{MaxAge: 30 * time.Minute}},
		{"max per entity", core.CompactConfig{MaxPerEntity: 7}},
		{"tombstones", core.TombstoneWhere(func(ev core.StoredEvent) bool {
			return ev.Coordinate.Entity == "e:3" || ev.Coordinate.Entity == "order:2" || ev.Coordinate.Entity == "e:4"
		})},
		{"merge", core.Merge()},
		{"merge, retention, tombstones, age and count", core.CompactConfig{
			Merge:        true,
			Keep:         func(ev core.StoredEvent) bool { return !e2c(ev) },
			Tombstone:    func(ev core.StoredEvent) bool { return ev.Header.Kind == kindB },
			MaxAge:       50 * time.Minute,
			MaxPerEntity: 60,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testCompaction(t, tc.cfg)
		})
	}
}

func testCompaction(t *testing.T, cfg core.CompactConfig) {
	ctx := context.Background()
	f := newCompactFixture(t)
	s := f.s
	dir := s.Dir()
	before := mustQuery(t, s, core.All())
	verBefore := mustVerify(t, s)
	stBefore := s.Stats()
	segsBefore := segmentFiles(t, dir)
	activeName := filepath.Base(segsBefore[len(segsBefore)-1])
	activeBytes, _ := os.ReadFile(segsBefore[len(segsBefore)-1])
	cursorsBefore := readDirFiles(t, filepath.Join(dir, "cursors"))
	// The same history without the compaction: how writes must continue.
	ref := filepath.Join(t.TempDir(), "ref")
	copyTree(t, dir, ref, nil)

	kept, removed, tomb := f.expectCompaction(cfg, before)
	rep, err := s.Compact(ctx, cfg)
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	t.Logf("%+v: %d kept, %d removed", rep, len(kept), len(removed))
	if rep.EventsRemoved != len(removed) || rep.EventsTombstoned != tomb || rep.SegmentsRewritten != len(segsBefore)-1 {
		t.Fatalf("report %+v; want %d removed, %d tombstoned, %d segments rewritten", rep, len(removed), tomb, len(segsBefore)-1)
	}
	if cfg.Merge && len(removed)+tomb > 0 && rep.SegmentsRemoved <= 0 {
		// Full segments cannot merge; once events are gone they can, in
		// the same pass.
		t.Fatalf("merge removed no file: %+v", rep)
	}
	ver := mustVerify(t, s)
	wantEvents := verBefore.Events
	if rep.EventsRemoved+rep.EventsTombstoned > 0 {
		wantEvents++ // the compaction's audit record
	}
	if ver.Events != wantEvents || ver.Hidden != verBefore.Hidden {
		t.Fatalf("Verify after compaction: %+v, before %+v (stubs and hidden events stay in the chain)", ver, verBefore)
	}

	checkCompacted(t, s, f, kept, removed)
	st := s.Stats()
	audit := wantEvents - verBefore.Events // 0 or 1
	if st.GlobalSequence != stBefore.GlobalSequence+uint64(audit) || st.Events != uint64(len(kept)+audit) {
		t.Fatalf("stats after %+v, before %+v, %d kept and %d audit records", st, stBefore, len(kept), audit)
	}
	if len(removed)+tomb > 0 || cfg.Merge {
		// The audit record (a few hundred bytes, appended to the active
		// segment) is all that was added.
		added := int64(st.Bytes) - int64(stBefore.Bytes) + int64(rep.BytesReclaimed)
		if st.Bytes >= stBefore.Bytes || (audit == 0 && added != 0) || (audit == 1 && (added <= 0 || added > 8192)) {
			t.Fatalf("bytes %d → %d, report says %d reclaimed, with %d audit records", stBefore.Bytes, st.Bytes, rep.BytesReclaimed, audit)
		}
	}

	// The active segment is never rewritten; rewritten ones get new names.
	segs := segmentFiles(t, dir)
	if got := filepath.Base(segs[len(segs)-1]); got != activeName {
		t.Fatalf("active segment %s became %s", activeName, got)
	}
	// It only grew (by the audit record, written into its preallocated
	// zeros).
	if b, _ := os.ReadFile(segs[len(segs)-1]); len(b) < len(activeBytes) {
		t.Fatal("the active segment was rewritten")
	} else {
		for i, c := range activeBytes {
			if c != 0 && b[i] != c {
				t.Fatalf("the active segment was rewritten at offset %d", i)
			}
		}
	}
	for _, p := range segs[:len(segs)-1] {
		if m := genName.FindStringSubmatch(filepath.Base(p)); m == nil || m[2] != "1" {
			t.Fatalf("rewritten segment named %s, want generation 1", filepath.Base(p))
		}
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
	// Durable cursor positions are untouched.
	for name, b := range readDirFiles(t, filepath.Join(dir, "cursors")) {
		if !bytes.Equal(b, cursorsBefore[name]) {
			t.Fatalf("cursor file %s changed", name)
		}
	}
	if c := mustNamedCursor(t, s, "audit", core.All()); c.Committed() != before[122].GlobalSequence+1 {
		t.Fatalf("named cursor at %d after compaction", c.Committed())
	}

	// A second compaction rewrites the sealed segments again: generation 2.
	rep2, err := s.Compact(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.EventsRemoved != 0 || rep2.EventsTombstoned != 0 {
		t.Fatalf("second compaction found more to do: %+v", rep2)
	}
	for _, p := range segmentFiles(t, dir)[:len(segmentFiles(t, dir))-1] {
		if m := genName.FindStringSubmatch(filepath.Base(p)); m == nil || m[2] != "2" {
			t.Fatalf("after a second compaction: %s, want generation 2", filepath.Base(p))
		}
	}
	mustVerify(t, s)
	checkCompacted(t, s, f, kept, removed)
	after := captureState(t, s)

	// Reopen: the checkpoint written at Close, then a scan without it.
	s = reopen(t, s)
	if p := s.Diagnostics().Open.Path; p != "checkpoint" {
		t.Fatalf("reopen after compaction: path %q", p)
	}
	sameState(t, "reopened (checkpoint) after compaction", captureState(t, s), after)
	checkCompacted(t, s, f, kept, removed)
	cfgS := s.Config()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, checkpointFile)); err != nil {
		t.Fatal(err)
	}
	s, rep3 := openPath(t, cfgS)
	// Compaction wrote a footer for each segment it wrote, Close one for
	// the segment being written: Open replays them and scans nothing.
	if rep3.Path != "footers" || rep3.Footers != rep3.Segments || rep3.SegmentsScanned != 0 || rep3.Hidden != 12 {
		t.Fatalf("reopen without checkpoint: %+v", rep3)
	}
	f.s = s
	sameState(t, "reopened (scan) after compaction", captureState(t, s), after)
	checkCompacted(t, s, f, kept, removed)

	// Writes continue with the clocks and sequences of the uncompacted log.
	refCfg := cfgS
	refCfg.Dir = ref
	rs := openWith(t, refCfg)
	for i := 0; i < audit; i++ { // the audit record's sequence
		mustAppend(t, rs, mustCoord(t, "ref:pad", "pad"), kindC, `{}`)
	}
	sameStrings(t, "writes after compaction", continueWrites(t, s, compactEntities...), continueWrites(t, rs, compactEntities...))
	mustVerify(t, s)
}

// checkCompacted checks every read path against what must remain.
func checkCompacted(t *testing.T, s *core.Store, f *compactFixture, kept, removed []core.StoredEvent) {
	t.Helper()
	// Beside the kept events the log holds the compaction's audit record.
	all := mustQuery(t, s, core.All())
	if n := len(all) - len(withoutNewAudit(all, kept)); n > 1 {
		t.Errorf("%d audit records after one compaction", n)
	}
	sameEventsRedacted(t, "Query(All) after compaction", withoutNewAudit(all, kept), kept)
	noLeak(t, "after compaction", kept)
	var iterated []core.StoredEvent
	for ev, err := range s.Events(core.All()) {
		if err != nil {
			t.Fatal(err)
		}
		iterated = append(iterated, ev)
	}
	sameEventsRedacted(t, "Events(All)", withoutNewAudit(iterated, kept), kept)
	sameEventsRedacted(t, "Cursor(All)", withoutNewAudit(pollAll(t, s.Cursor(core.All()), 37), kept), kept)
	for _, e := range compactEntities {
		var want []core.StoredEvent
		for _, ev := range kept {
			if ev.Coordinate.Entity == e {
				want = append(want, ev)
			}
		}
		got, err := s.Stream(e)
		if err != nil {
			t.Fatal(err)
		}
		sameEventsRedacted(t, "Stream("+e+")", got, want)
	}
	for _, k := range []core.Kind{kindA, kindB, kindC} {
		got, err := s.ByFact(k)
		if err != nil {
			t.Fatal(err)
		}
		var want []core.StoredEvent
		for _, ev := range kept {
			if ev.Header.Kind == k {
				want = append(want, ev)
			}
		}
		sameEventsRedacted(t, "ByFact", got, want)
	}
	got, err := s.ByScope("us")
	if err != nil {
		t.Fatal(err)
	}
	var want []core.StoredEvent
	for _, ev := range kept {
		if ev.Coordinate.Scope == "us" {
			want = append(want, ev)
		}
	}
	sameEventsRedacted(t, "ByScope", got, want)
	for _, ev := range removed {
		if _, err := s.Get(ev.Header.ID); !isErr(err, core.ErrNotFound) {
			t.Fatalf("Get of a removed event %s: %v, want ErrNotFound", ev.Header.ID, err)
		}
	}
	allGettable(t, s, kept)
	for _, ev := range kept {
		if g, _ := s.Get(ev.Header.ID); g.Redacted != ev.Redacted || (ev.Redacted && g.Payload != nil) {
			t.Fatalf("Get(%s): Redacted %v payload %s", ev.Header.ID, g.Redacted, g.Payload)
		}
	}
	// Projections, including the states cached before the compaction.
	checkProjections(t, s, "after compaction", compactEntities)
	// A named cursor resumes at its position and delivers only what remains.
	c := mustNamedCursor(t, s, "audit", core.All())
	var rest []core.StoredEvent
	for _, ev := range kept {
		if ev.GlobalSequence >= c.Committed() {
			rest = append(rest, ev)
		}
	}
	sameEventsRedacted(t, "named cursor after compaction", withoutNewAudit(pollAll(t, c, 50), kept), rest)
}

// TestCompactIdempotencyKeys documents what becomes of idempotency keys:
// the key of a removed event is forgotten (a retry writes a new event);
// the key of a tombstoned event still dedupes, returning the original
// receipt; kept events' keys are untouched.
func TestCompactIdempotencyKeys(t *testing.T) {
	ctx := context.Background()
	f := newCompactFixture(t)
	s := f.s
	before := mustQuery(t, s, core.All())
	byKey := map[string]core.StoredEvent{}
	for _, ev := range before {
		if ev.IdempotencyKey != "" {
			byKey[ev.IdempotencyKey] = ev
		}
	}
	if _, err := s.Compact(ctx, core.CompactConfig{
		Keep:      func(ev core.StoredEvent) bool { return ev.Coordinate.Entity != "e:0" },
		Tombstone: func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "e:3" },
	}); err != nil {
		t.Fatal(err)
	}
	retry := func(s *core.Store, ev core.StoredEvent, payload []byte) core.Receipt {
		t.Helper()
		r, err := s.AppendWithOptions(ctx, ev.Coordinate, ev.Header.Kind, payload, core.AppendOptions{IdempotencyKey: ev.IdempotencyKey})
		if err != nil {
			t.Fatalf("retry of %s: %v", ev.IdempotencyKey, err)
		}
		return r
	}
	var removedKey, tombKey, keptKey core.StoredEvent
	for _, ev := range byKey {
		switch ev.Coordinate.Entity {
		case "e:0":
			removedKey = ev
		case "e:3":
			tombKey = ev
		case "order:2":
			keptKey = ev
		}
	}
	for round := 0; round < 2; round++ {
		if r := retry(s, keptKey, keptKey.Payload); !r.Deduplicated || r.ID != keptKey.Header.ID {
			t.Fatalf("round %d: kept event's key: %+v", round, r)
		}
		if r := retry(s, tombKey, tombKey.Payload); !r.Deduplicated || r.ID != tombKey.Header.ID || r.GlobalSequence != tombKey.GlobalSequence {
			t.Fatalf("round %d: tombstoned event's key: %+v", round, r)
		}
		if _, err := s.AppendWithOptions(ctx, tombKey.Coordinate, tombKey.Header.Kind, []byte(`{"other":1}`),
			core.AppendOptions{IdempotencyKey: tombKey.IdempotencyKey}); !errors.As(err, new(*core.IdempotencyError)) {
			t.Fatalf("round %d: tombstoned key reused for another payload: %v", round, err)
		}
		if round == 0 {
			r := retry(s, removedKey, removedKey.Payload)
			if r.Deduplicated || r.ID == removedKey.Header.ID || r.GlobalSequence < uint64(len(before)) {
				t.Fatalf("removed event's key still dedupes: %+v", r)
			}
			removedKey.Header.ID = r.ID // the new event owns the key now
		} else if r := retry(s, removedKey, removedKey.Payload); !r.Deduplicated || r.ID != removedKey.Header.ID {
			t.Fatalf("the rewritten key after reopen: %+v", r)
		}
		s = reopen(t, s)
	}
}

// TestCompactMerge: segments a retention pass left small are merged by a
// later Merge into as few files as SegmentMaxBytes allows, content intact.
func TestCompactMerge(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	for i := 0; i < 200; i++ {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("m:%d", i%4), "s"), []core.Kind{kindA, kindB, kindC}[i%3],
			fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("m", 3000)))
	}
	rotate(t, s)
	if _, err := s.Compact(ctx, core.Retention(func(ev core.StoredEvent) bool { return ev.Header.Kind == kindA })); err != nil {
		t.Fatal(err)
	}
	before := captureState(t, s)
	n := len(segmentFiles(t, s.Dir()))
	rep, err := s.Compact(ctx, core.Merge())
	if err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, s.Dir())
	if len(segs) >= n || rep.SegmentsRemoved != n-len(segs) || rep.EventsRemoved != 0 {
		t.Fatalf("merge: %d files → %d, %+v", n, len(segs), rep)
	}
	var total int64
	for _, p := range segs[:len(segs)-1] {
		total += fileSize(t, p)
		if fileSize(t, p) > s.Config().SegmentMaxBytes {
			t.Fatalf("%s is %d bytes, over SegmentMaxBytes", p, fileSize(t, p))
		}
	}
	if min := (total + s.Config().SegmentMaxBytes - 1) / s.Config().SegmentMaxBytes; int64(len(segs)-1) > min+1 {
		t.Fatalf("%d merged files for %d bytes", len(segs)-1, total)
	}
	after := captureState(t, s)
	before.stats.Segments, before.stats.Bytes = after.stats.Segments, after.stats.Bytes
	sameState(t, "after merge", after, before)
	mustVerify(t, s)
	checkProjections(t, s, "after merge", []string{"m:0", "m:1", "m:2", "m:3", "filler"})
	s = reopen(t, s)
	sameState(t, "reopened after merge", captureState(t, s), after)
}

// TestCompactMaxPerEntityCountsActiveSegment: events in the segment being
// written count towards MaxPerEntity, though they are never removed.
func TestCompactMaxPerEntityCountsActiveSegment(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	c := mustCoord(t, "m:1", "s")
	var sealed []core.Receipt
	for i := 0; i < 5; i++ {
		sealed = append(sealed, mustAppend(t, s, c, kindA, payloadN(i)))
	}
	rotate(t, s)
	var active []core.Receipt
	for i := 5; i < 8; i++ {
		active = append(active, mustAppend(t, s, c, kindA, payloadN(i)))
	}
	rep, err := s.Compact(ctx, core.CompactConfig{MaxPerEntity: 4})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Stream("m:1")
	if err != nil {
		t.Fatal(err)
	}
	want := []core.EventID{sealed[4].ID, active[0].ID, active[1].ID, active[2].ID}
	if !slices.Equal(ids(evs), want) {
		t.Fatalf("MaxPerEntity 4 kept %v (%+v), want the sealed segment's newest and the 3 active ones", payloads(evs), rep)
	}
	// Fewer events than the limit in the sealed segments, more in the
	// active one: the active ones are never removed, even past the limit.
	rep, err = s.Compact(ctx, core.CompactConfig{MaxPerEntity: 2})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ = s.Stream("m:1")
	if !slices.Equal(ids(evs), want[1:]) {
		t.Fatalf("MaxPerEntity 2 kept %v (%+v), want the 3 active ones", payloads(evs), rep)
	}
	mustVerify(t, s)
}

// TestCompactNothingSealed: a store whose only segment is the active one
// has nothing to compact.
func TestCompactNothingSealed(t *testing.T) {
	s := openStore(t)
	mustAppend(t, s, mustCoord(t, "x", "s"), kindA, `{}`)
	rep, err := s.Compact(context.Background(), core.CompactConfig{Merge: true, MaxPerEntity: 1, Keep: func(core.StoredEvent) bool { return false }})
	if err != nil || rep.SegmentsRewritten != 0 || rep.EventsRemoved != 0 {
		t.Fatalf("%+v, %v", rep, err)
	}
	if st := s.Stats(); st.Events != 1 {
		t.Fatal(st)
	}
	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Compact(context.Background(), core.Merge()); !isErr(err, core.ErrReadOnly) {
		t.Fatalf("Compact on a read-only store: %v", err)
	}
}

// TestCompactWithFenceOpen: events written under a fence that is still
// open when the compaction starts, in segments that are sealed by then,
// read back once the fence commits.
func TestCompactWithFenceOpen(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	mustAppend(t, s, mustCoord(t, "before", "s"), kindA, `{}`)
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tks []*core.Ticket
	for i := 0; len(segmentFiles(t, s.Dir())) < 4; i++ {
		tk, err := f.Submit(ctx, mustCoord(t, "fenced", "s"), kindA, []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("z", 1000))))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
		if i%20 == 19 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Compact(ctx, core.CompactConfig{Merge: true, Tombstone: func(core.StoredEvent) bool { return true }}); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tk := range tks {
		if _, err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Stream("fenced")
	if err != nil {
		t.Fatalf("reading the fence's events after a compaction: %v", err)
	}
	if len(evs) != len(tks) {
		t.Fatalf("%d fenced events, %d written", len(evs), len(tks))
	}
	mustVerify(t, s)
	if _, err := s.Compact(ctx, core.Merge()); err != nil {
		t.Fatal(err)
	}
	after := captureState(t, s)
	s = reopen(t, s)
	sameState(t, "reopened", captureState(t, s), after)
}

// TestCompactConcurrent: compactions run while writers append (singles,
// batches, idempotency keys) and readers read through every path; readers
// may be re-planned but never see wrong data or an error.
func TestCompactConcurrent(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments, func(c *core.Config) { c.ProjectionCache = core.NewLRUCache(64) })
	for i := 0; i < 300; i++ {
		mustAppend(t, s, mustCoord(t, "tomb:1", "s"), kindA, fmt.Sprintf(`{"t":%d,"pad":"%s"}`, i, strings.Repeat("t", 300)))
		mustAppend(t, s, mustCoord(t, "gone:1", "s"), kindA, fmt.Sprintf(`{"g":%d,"pad":"%s"}`, i, strings.Repeat("g", 300)))
	}
	var (
		mu       sync.Mutex
		written  = map[core.EventID]string{} // id → payload, of the kept entities
		idList   []core.EventID
		stop     atomic.Bool
		failed   atomic.Value
		compacts atomic.Int64
		wg       sync.WaitGroup
	)
	fail := func(format string, args ...any) {
		failed.CompareAndSwap(nil, fmt.Sprintf(format, args...))
		stop.Store(true)
	}
	record := func(r core.Receipt, p string) {
		mu.Lock()
		written[r.ID] = p
		idList = append(idList, r.ID)
		mu.Unlock()
	}
	expect := func(id core.EventID) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		p, ok := written[id]
		return p, ok
	}
	checkEv := func(where string, ev core.StoredEvent) {
		switch e := ev.Coordinate.Entity; {
		case strings.HasPrefix(e, "w:"):
			if p, ok := expect(ev.Header.ID); ok && p != string(ev.Payload) {
				fail("%s: %s read back %s, written %s", where, ev.Header.ID, ev.Payload, p)
			}
		case e == "tomb:1":
			if !ev.Redacted && !strings.HasPrefix(string(ev.Payload), `{"t":`) {
				fail("%s: tombstone candidate reads %s", where, ev.Payload)
			}
		}
	}
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c := mustCoord(t, fmt.Sprintf("w:%d", g), "s")
			gone := mustCoord(t, "gone:1", "s")
			for i := 0; !stop.Load(); i++ {
				p := fmt.Sprintf(`{"g":%d,"i":%d,"pad":"%s"}`, g, i, strings.Repeat("w", 100+i%200))
				if i%25 == 24 {
					items := []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(p)}, {Coordinate: gone, Kind: kindA, Payload: []byte(`{"gone":1}`)}}
					rs, err := s.AppendBatch(ctx, items)
					if err != nil {
						fail("AppendBatch: %v", err)
						return
					}
					record(rs[0], p)
					continue
				}
				r, err := s.AppendWithOptions(ctx, c, kindA, []byte(p), core.AppendOptions{IdempotencyKey: fmt.Sprintf("w%d-%d", g, i)})
				if err != nil {
					fail("Append: %v", err)
					return
				}
				record(r, p)
				if i%3 == 0 {
					if _, err := s.AppendWithOptions(ctx, gone, kindB, []byte(`{"gone":2}`), core.AppendOptions{IdempotencyKey: fmt.Sprintf("gone%d-%d", g, i)}); err != nil {
						fail("Append gone: %v", err)
						return
					}
				}
				if i%10 == 0 { // a retry: dedupes while the key's event is kept
					d, err := s.AppendWithOptions(ctx, c, kindA, []byte(p), core.AppendOptions{IdempotencyKey: fmt.Sprintf("w%d-%d", g, i)})
					if err != nil || !d.Deduplicated || d.ID != r.ID {
						fail("retry: %+v, %v", d, err)
						return
					}
				}
			}
		}(g)
	}
	readers := []func(rng *rand.Rand){
		func(rng *rand.Rand) { // Get
			mu.Lock()
			var id core.EventID
			if len(idList) > 0 {
				id = idList[rng.Intn(len(idList))]
			}
			mu.Unlock()
			if id.IsZero() {
				return
			}
			ev, err := s.Get(id)
			if err != nil {
				fail("Get: %v", err)
				return
			}
			checkEv("Get", ev)
		},
		func(rng *rand.Rand) { // Query and Stream
			evs, err := s.Query(core.Entity("w:"))
			if err != nil {
				fail("Query: %v", err)
				return
			}
			for i, ev := range evs {
				checkEv("Query", ev)
				if i > 0 && ev.GlobalSequence <= evs[i-1].GlobalSequence {
					fail("Query out of order")
				}
			}
			st, err := s.Stream(fmt.Sprintf("w:%d", rng.Intn(2)))
			if err != nil {
				fail("Stream: %v", err)
				return
			}
			for i, ev := range st {
				checkEv("Stream", ev)
				if ev.Header.Clock != uint64(i) {
					fail("Stream: clock %d at %d", ev.Header.Clock, i)
				}
			}
			tb, err := s.Stream("tomb:1")
			if err != nil || len(tb) != 300 {
				fail("Stream(tomb:1): %d events, %v", len(tb), err)
			}
			for _, ev := range tb {
				checkEv("Stream tomb", ev)
			}
		},
		func(*rand.Rand) { // Events iterator
			n := 0
			var last uint64
			for ev, err := range s.Events(core.All()) {
				if err != nil {
					fail("Events: %v", err)
					return
				}
				if n > 0 && ev.GlobalSequence <= last {
					fail("Events out of order")
				}
				last = ev.GlobalSequence
				checkEv("Events", ev)
				if n++; n > 2000 {
					break
				}
			}
		},
		func(*rand.Rand) { // Verify: never a missing file or a damaged frame
			if _, err := s.Verify(); err != nil {
				fail("Verify: %v", err)
			}
			time.Sleep(2 * time.Millisecond)
		},
		func(rng *rand.Rand) { // projection: what it folds is a prefix of the stream
			e := fmt.Sprintf("w:%d", rng.Intn(2))
			got, _, err := core.Project(s, e, seqProj{name: "p"}, core.Consistent())
			if err != nil {
				fail("Project: %v", err)
				return
			}
			st, err := s.Stream(e)
			if err != nil {
				fail("Stream: %v", err)
				return
			}
			if len(got.Seqs) > len(st) {
				fail("projection holds %d events, stream %d", len(got.Seqs), len(st))
				return
			}
			for i := range got.Seqs {
				if got.Seqs[i] != st[i].GlobalSequence || got.Payloads[i] != string(st[i].Payload) {
					fail("projection of %s differs from its stream at %d", e, i)
					return
				}
			}
		},
	}
	for r, read := range readers {
		wg.Add(1)
		go func(r int, read func(*rand.Rand)) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(r)))
			for !stop.Load() {
				read(rng)
				time.Sleep(100 * time.Microsecond) // leave the writers some CPU
			}
		}(r, read)
	}
	wg.Add(1)
	go func() { // a cursor following everything
		defer wg.Done()
		c := s.Cursor(core.Entity("w:"))
		var last uint64
		seen := 0
		for !stop.Load() {
			evs, err := c.Poll(100)
			if err != nil {
				fail("Poll: %v", err)
				return
			}
			if len(evs) == 0 {
				time.Sleep(200 * time.Microsecond)
			}
			for _, ev := range evs {
				if seen > 0 && ev.GlobalSequence <= last {
					fail("cursor repeated or went back")
				}
				last = ev.GlobalSequence
				seen++
				checkEv("Cursor", ev)
			}
		}
	}()
	cfg := core.CompactConfig{
		Merge:     true,
		Keep:      func(ev core.StoredEvent) bool { return ev.Coordinate.Entity != "gone:1" },
		Tombstone: func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "tomb:1" },
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	for (compacts.Load() < 6 || time.Now().Before(deadline)) && !stop.Load() {
		if _, err := s.Compact(ctx, cfg); err != nil {
			fail("Compact: %v", err)
			break
		}
		compacts.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	mu.Lock()
	t.Logf("%d compactions, %d events written by the writers, %d segments", compacts.Load(), len(idList), len(segmentFiles(t, s.Dir())))
	mu.Unlock()
	mustVerify(t, s)
	for id, p := range written {
		ev, err := s.Get(id)
		if err != nil || string(ev.Payload) != p {
			t.Fatalf("%s: %s, %v", id, ev.Payload, err)
		}
	}
	after := captureState(t, s)
	s = reopen(t, s)
	sameState(t, "reopened after concurrent compactions", captureState(t, s), after)
	mustVerify(t, s)
}
