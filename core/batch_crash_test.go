package core_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Batches and fences under a real SIGKILL (see crash_test.go for the
// single-event version and process_test.go for the helper processes).

const (
	crashEntities = 5
	crashSegMax   = 64 << 10
)

func crashConfig(dir string) core.Config {
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = crashSegMax // batches cross segments while being killed
	return cfg
}

func crashBatchID(round, g, k int) int { return round*1_000_000 + g*100_000 + k }

// crashBatchItems is batch b of n items, the same in the child that writes
// it and in the parent that checks it: items spread over crashEntities
// entities, chained by causation, every item keyed in even batches.
func crashBatchItems(b, n int) []core.BatchItem {
	items := make([]core.BatchItem, n)
	for i := range items {
		c, _ := core.NewCoordinate(fmt.Sprintf("bc:%d", (b+i)%crashEntities), "s")
		items[i] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: taggedPayload(b, i, n, 100+(b*7+i)%150)}
		if i%10 != 0 {
			items[i].Causation = core.PriorItem(i - 1)
		}
		if b%2 == 0 {
			items[i].Options.IdempotencyKey = fmt.Sprintf("bk-%d-%d", b, i)
		}
	}
	return items
}

// helperBatchCrash writes batches of 50-200 items from four goroutines and
// single appends from a fifth until killed — so that group commits hold
// several batches and singles when the kill lands — printing "ACKB batch n
// firstSeq id…" once a write is acknowledged (a single is a batch of one).
func helperBatchCrash(dir string) error { return groupCrashWriters(dir, false) }

// groupCrashWriters runs the writers of helperBatchCrash; with doomed, the
// fourth batch writer's batches instead end with an item expecting a clock
// no entity has, so each is placed (often across a segment rotation) and
// then cut out of its group, and an acknowledged doomed batch stops the
// child with an error.
func groupCrashWriters(dir string, doomed bool) error {
	cfg := crashConfig(dir)
	var err error
	if cfg.Sync.EveryNEvents, err = strconv.Atoi(os.Getenv("BATPAK_EVERYN")); err != nil {
		return err
	}
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	seed, _ := strconv.ParseInt(os.Getenv("BATPAK_SEED"), 10, 64)
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	const singles = 4
	var mu sync.Mutex
	errs := make(chan error, singles+1)
	for g := 0; g <= singles; g++ {
		go func(g int) {
			ctx := context.Background()
			rng := rand.New(rand.NewSource(seed + int64(g)))
			for k := 0; ; k++ {
				b, n := crashBatchID(round, g, k), 50+rng.Intn(151)
				var rs []core.Receipt
				var err error
				switch {
				case g == singles:
					it := crashBatchItems(b, 1)[0]
					var r core.Receipt
					r, err = s.AppendWithOptions(ctx, it.Coordinate, it.Kind, it.Payload, it.Options)
					rs = []core.Receipt{r}
				case doomed && g == doomedWriter:
					items := crashBatchItems(b, n)
					items[n-1].Options.ExpectedClock = core.ExpectClock(1 << 40)
					var ce *core.ConflictError
					if _, err := s.AppendBatch(ctx, items); !errors.As(err, &ce) {
						errs <- fmt.Errorf("doomed batch %d: %v, want a conflict", b, err)
						return
					}
					continue
				default:
					rs, err = s.AppendBatch(ctx, crashBatchItems(b, n))
				}
				if err == nil {
					err = printAck(&mu, b, rs)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	return <-errs
}

// printAck prints "ACKB batch n firstSeq id…" for an acknowledged write
// (a single is a batch of one); the parent ignores a line cut by the kill.
func printAck(mu *sync.Mutex, b int, rs []core.Receipt) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "ACKB %d %d %d", b, len(rs), rs[0].GlobalSequence)
	for _, r := range rs {
		sb.WriteString(" " + r.ID.String())
	}
	sb.WriteString("\n")
	mu.Lock()
	defer mu.Unlock()
	_, err := os.Stdout.WriteString(sb.String())
	return err
}

// doomedWriter is the batch writer whose batches fail when
// groupCrashWriters is asked for them (crashBatchID's g).
const doomedWriter = 3

type ackedBatch struct {
	b, n     int
	firstSeq uint64
	ids      []core.EventID
}

func parseAckedBatch(t *testing.T, ln string) ackedBatch {
	t.Helper()
	f := strings.Fields(ln)
	if len(f) < 4 || f[0] != "ACKB" {
		t.Fatalf("unexpected helper output %.100q", ln)
	}
	var a ackedBatch
	a.b, _ = strconv.Atoi(f[1])
	a.n, _ = strconv.Atoi(f[2])
	a.firstSeq, _ = strconv.ParseUint(f[3], 10, 64)
	for _, s := range f[4:] {
		id, err := core.ParseEventID(s)
		if err != nil {
			t.Fatalf("bad id in %.100q: %v", ln, err)
		}
		a.ids = append(a.ids, id)
	}
	if len(a.ids) != a.n {
		t.Fatalf("ACKB line for batch %d has %d ids, want %d", a.b, len(a.ids), a.n)
	}
	return a
}

// checkBatchesWhole reads every visible event and groups them by batch:
// each batch is complete, in order, at consecutive sequences. It returns
// the batches found.
func checkBatchesWhole(t *testing.T, s *core.Store) map[int][]core.StoredEvent {
	t.Helper()
	evs := mustQuery(t, s, core.All())
	groups := map[int][]core.StoredEvent{}
	for i, e := range evs {
		if e.GlobalSequence != uint64(i) {
			t.Fatalf("event %d has sequence %d", i, e.GlobalSequence)
		}
		tag := tagOf(t, e)
		groups[tag.B] = append(groups[tag.B], e)
	}
	for b, g := range groups {
		n := tagOf(t, g[0]).N
		if len(g) != n {
			t.Fatalf("batch %d: %d of its %d items survived", b, len(g), n)
		}
		for i, e := range g {
			if tag := tagOf(t, e); tag.I != i || tag.N != n || e.GlobalSequence != g[0].GlobalSequence+uint64(i) {
				t.Fatalf("batch %d item %d: tag %+v at sequence %d", b, i, tag, e.GlobalSequence)
			}
		}
	}
	return groups
}

// checkAfterBatchCrash reopens dir and checks it; it returns what recovery
// logged.
func checkAfterBatchCrash(t *testing.T, dir string, round int, acked []ackedBatch) string {
	t.Helper()
	ctx := context.Background()
	cfg := crashConfig(dir)
	// A read-only open, which repairs nothing, sees the same whole batches.
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatalf("read-only open after SIGKILL: %v", err)
	}
	roBatches := len(checkBatchesWhole(t, ro))
	roRep, err := ro.Verify()
	if err != nil {
		t.Fatalf("read-only Verify after SIGKILL: %v", err)
	}
	ro.Close()
	var log strings.Builder
	cfg.Logger = slog.New(slog.NewTextHandler(&log, nil))
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open after SIGKILL: %v", err)
	}
	defer s.Close()
	groups := checkBatchesWhole(t, s)
	if len(groups) != roBatches {
		t.Fatalf("%d batches after Open, %d read-only", len(groups), roBatches)
	}
	var lastKeyed *ackedBatch
	for i, a := range acked {
		g := groups[a.b]
		if len(g) != a.n {
			t.Fatalf("acknowledged batch %d (%d items) lost: %d items found", a.b, a.n, len(g))
		}
		for k, e := range g {
			if e.Header.ID != a.ids[k] || e.GlobalSequence != a.firstSeq+uint64(k) {
				t.Fatalf("acknowledged batch %d item %d read back as %s at %d", a.b, k, e.Header.ID, e.GlobalSequence)
			}
		}
		if a.b%2 == 0 {
			lastKeyed = &acked[i]
		}
	}
	rep, err := s.Verify()
	if err != nil {
		t.Fatalf("Verify after SIGKILL: %v", err)
	}
	if st := s.Stats(); rep.Hidden != 0 || uint64(rep.Events) != st.Events || st.GlobalSequence != st.Events || rep.Events != roRep.Events {
		t.Fatalf("Verify %+v (read-only %+v), Stats %+v", rep, roRep, st)
	}
	// An acknowledged keyed batch, retried, is answered from the store.
	if lastKeyed != nil {
		rs, err := s.AppendBatch(ctx, crashBatchItems(lastKeyed.b, lastKeyed.n))
		if err != nil {
			t.Fatalf("retry of acknowledged batch %d: %v", lastKeyed.b, err)
		}
		for k, r := range rs {
			if !r.Deduplicated || r.ID != lastKeyed.ids[k] {
				t.Fatalf("retry of acknowledged batch %d item %d: %+v", lastKeyed.b, k, r)
			}
		}
	}
	// Writable: a batch over every entity continues sequences and clocks.
	next := s.Stats().GlobalSequence
	clocks := make([]uint64, crashEntities)
	for e := range clocks {
		st, err := s.Stream(fmt.Sprintf("bc:%d", e))
		if err != nil {
			t.Fatal(err)
		}
		clocks[e] = uint64(len(st))
	}
	b := crashBatchID(round, 9, 0)
	rs := mustBatch(t, s, crashBatchItems(b, crashEntities))
	for i, r := range rs {
		if e := (b + i) % crashEntities; r.GlobalSequence != next+uint64(i) || r.Clock != clocks[e] {
			t.Fatalf("batch after the crash, item %d: %+v; want sequence %d clock %d", i, r, next+uint64(i), clocks[e])
		}
	}
	if _, err := s.Verify(); err != nil {
		t.Fatalf("Verify after writing on the recovered store: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return log.String()
}

// logEndsInsideBatch reports whether the log in dir, as a kill left it,
// ends inside a batch: its last batch record is a begin record with no
// commit record after it (the items after it, if any, cut short).
func logEndsInsideBatch(t *testing.T, dir string) bool {
	t.Helper()
	var last byte
	for _, p := range segmentFiles(t, dir) {
		data, fs := readFrames(t, p)
		for _, f := range fs {
			if typ := data[f.recStart()]; typ == 2 || typ == 3 { // batch begin, batch commit
				last = typ
			}
		}
	}
	return last == 2
}

// Rounds of TestKill9Batches: at least kill9BatchRounds, and more until
// kill9BatchMinCut kills have landed inside a batch, up to
// kill9BatchMaxRounds.
const (
	kill9BatchRounds    = 20
	kill9BatchMinCut    = 5
	kill9BatchMaxRounds = 50
)

// A child writing large batches from four goroutines and singles from a
// fifth (so group commits hold several batches when it dies) is killed at
// random points, at least 20 times, on one store: after each reopen every
// batch is whole or absent, every acknowledged batch is there, Verify
// passes and the store writes on. The rounds go on until several kills have cut a batch on disk (the
// case the test is about), failing if that never happens.
func TestKill9Batches(t *testing.T) {
	rng := crashRNG(t)
	var dir string
	var all []ackedBatch
	cut := 0
	round := 0
	for ; round < kill9BatchRounds || cut < kill9BatchMinCut; round++ {
		if round == kill9BatchMaxRounds {
			t.Fatalf("only %d of %d kills landed inside a batch; want at least %d", cut, round, kill9BatchMinCut)
		}
		if round%5 == 0 { // a fresh store every five rounds keeps the checks short
			dir, all = t.TempDir(), nil
		}
		start := time.Now()
		everyN := []int{1, 1000}[round%2]
		target := 1 + rng.Intn(6)
		delay := time.Duration(rng.Intn(3000)) * time.Microsecond
		c := startHelper(t, "batchcrash", dir, "BATPAK_EVERYN="+strconv.Itoa(everyN),
			"BATPAK_ROUND="+strconv.Itoa(round), "BATPAK_SEED="+strconv.FormatInt(rng.Int63(), 10))
		acks := 0
		lines := c.killWhen(t, func(string) bool { acks++; return acks >= target }, delay)
		for _, ln := range lines {
			all = append(all, parseAckedBatch(t, ln))
		}
		inside := logEndsInsideBatch(t, dir)
		if inside {
			cut++
		}
		log := checkAfterBatchCrash(t, dir, round, all)
		if inside && !strings.Contains(log, "discarded batches") {
			t.Fatalf("round %d: the log ended inside a batch, and Open did not say it discarded one; log:\n%s", round, log)
		}
		t.Logf("round %d: killed %v after acknowledgement %d (%d read), %v; inside a batch: %v",
			round, delay, target, len(lines), time.Since(start).Round(time.Millisecond), inside)
	}
	t.Logf("the kill cut a batch in %d of %d rounds", cut, round)
}

// helperFenceCrash appends BATPAK_EVENTS events (printing "PRE id"), opens
// a fence and writes through it until killed — singles and batches over
// three entities — printing "FENCED n" each time a Sync has made the first
// n fenced events durable.
func helperFenceCrash(dir string) error {
	ctx := context.Background()
	s, err := core.Open(crashConfig(dir))
	if err != nil {
		return err
	}
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	pre, _ := strconv.Atoi(os.Getenv("BATPAK_EVENTS"))
	coord := func(i int) core.Coordinate {
		c, _ := core.NewCoordinate(fmt.Sprintf("fc:%d", i%3), "s")
		return c
	}
	for i := 0; i < pre; i++ {
		r, err := s.Append(ctx, coord(i), kindA, taggedPayload(round, i, pre, 50))
		if err != nil {
			return err
		}
		fmt.Printf("PRE %s\n", r.ID)
	}
	f, err := s.BeginFence(ctx)
	if err != nil {
		return err
	}
	written := 0
	for k := 0; ; k++ {
		if k%4 == 3 {
			items := make([]core.BatchItem, 20)
			for i := range items {
				items[i] = core.BatchItem{Coordinate: coord(k + i), Kind: kindB, Payload: taggedPayload(-1, i, 20, 300)}
			}
			if _, err := f.SubmitBatch(ctx, items); err != nil {
				return err
			}
			written += len(items)
		} else {
			if _, err := f.Submit(ctx, coord(k), kindB, taggedPayload(-1, k, 0, 300)); err != nil {
				return err
			}
			written++
		}
		if k%8 == 7 {
			if err := s.Sync(ctx); err != nil {
				return err
			}
			fmt.Printf("FENCED %d\n", written)
		}
	}
}

// A child killed while a fence is open, after its fenced writes were made
// durable: after reopen (and in read-only opens before and after) they are
// hidden, the entities' clocks continue past them and Verify counts them.
func TestKill9DuringFence(t *testing.T) {
	rng := crashRNG(t)
	dir := t.TempDir()
	var visible []core.EventID
	hiddenBefore := 0
	for round := 0; round < 3; round++ {
		target := 30 + rng.Intn(200)
		delay := time.Duration(rng.Intn(2000)) * time.Microsecond
		c := startHelper(t, "fencecrash", dir, "BATPAK_ROUND="+strconv.Itoa(round), "BATPAK_EVENTS=7")
		lines := c.killWhen(t, func(ln string) bool {
			var n int
			_, err := fmt.Sscanf(ln, "FENCED %d", &n)
			return err == nil && n >= target
		}, delay)
		fenced := 0
		for _, ln := range lines {
			if id, ok := strings.CutPrefix(ln, "PRE "); ok {
				ev, err := core.ParseEventID(id)
				if err != nil {
					t.Fatal(err)
				}
				visible = append(visible, ev)
			} else if _, err := fmt.Sscanf(ln, "FENCED %d", &fenced); err != nil {
				t.Fatalf("unexpected helper output %q", ln)
			}
		}
		minHidden := hiddenBefore + fenced
		check := func(s *core.Store, when string) core.VerifyReport {
			t.Helper()
			evs := mustQuery(t, s, core.All())
			got := ids(evs)
			want := append([]core.EventID(nil), visible...)
			sort.Slice(want, func(i, j int) bool { return string(want[i][:]) < string(want[j][:]) })
			sort.Slice(got, func(i, j int) bool { return string(got[i][:]) < string(got[j][:]) })
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s: %d events visible, want the %d written before the fences", when, len(got), len(want))
			}
			rep, err := s.Verify()
			if err != nil {
				t.Fatalf("%s: Verify: %v", when, err)
			}
			if rep.Hidden < minHidden || rep.Events != len(visible)+rep.Hidden {
				t.Fatalf("%s: Verify %+v; %d visible, at least %d hidden", when, rep, len(visible), minHidden)
			}
			if n := nothingFenced(t, s); n < rep.Hidden {
				t.Fatalf("%s: %d events on disk not visible, %d hidden", when, n, rep.Hidden)
			}
			return rep
		}
		ro, err := core.OpenReadOnly(crashConfig(dir))
		if err != nil {
			t.Fatalf("read-only open after SIGKILL: %v", err)
		}
		repRO := check(ro, "read-only after the crash")
		ro.Close()
		s, err := core.Open(crashConfig(dir))
		if err != nil {
			t.Fatalf("Open after SIGKILL: %v", err)
		}
		rep := check(s, "reopened")
		// (A segment the kill left incomplete is skipped read-only and
		// recreated by Open: only Segments may differ.)
		if repRO.Segments = rep.Segments; rep != repRO {
			t.Fatalf("Verify: %+v reopened, %+v read-only", rep, repRO)
		}
		// Every entity continues after its hidden events: the new clocks
		// exceed the visible counts by exactly the hidden ones.
		var extra uint64
		for e := 0; e < 3; e++ {
			name := fmt.Sprintf("fc:%d", e)
			st, err := s.Stream(name)
			if err != nil {
				t.Fatal(err)
			}
			r := mustAppend(t, s, mustCoord(t, name, "s"), kindC, `{"after":"crash"}`)
			visible = append(visible, r.ID)
			extra += r.Clock - uint64(len(st))
		}
		if extra != uint64(rep.Hidden) {
			t.Fatalf("clocks continue %d past the visible events, %d are hidden", extra, rep.Hidden)
		}
		hiddenBefore = rep.Hidden
		rep = mustVerify(t, s)
		if rep.Hidden != hiddenBefore {
			t.Fatalf("Verify after writing on: %+v", rep)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		ro, err = core.OpenReadOnly(crashConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		if rep2 := check(ro, "read-only after reopen"); rep2 != rep {
			t.Fatalf("read-only Verify %+v, want %+v", rep2, rep)
		}
		ro.Close()
		t.Logf("round %d: killed %v after %d durable fenced events; %d hidden in all", round, delay, fenced, rep.Hidden)
	}
}

// A crash while a new segment was being created leaves it shorter than its
// header. Open repairs it; a read-only open (which repairs nothing) must
// still read and verify the store, as after TestKill9DuringFence's kills.
func TestReadOnlyAfterCrashDuringSegmentCreation(t *testing.T) {
	for name, content := range map[string][]byte{"empty": nil, "short header": []byte("BPAKSE")} {
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			c := mustCoord(t, "rc", "s")
			mustBatch(t, s, []core.BatchItem{bi(c, `1`), bi(c, `2`)})
			f := mustBeginFence(t, s)
			if _, err := f.Submit(context.Background(), c, kindA, []byte(`"f0"`)); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			rep := mustVerify(t, s)
			cfg := s.Config()
			// Copy the files as a crash would leave them (the fence open),
			// plus the next segment's file, just created.
			dir := t.TempDir()
			for _, p := range segmentFiles(t, cfg.Dir) {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, filepath.Base(p)), data)
			}
			writeFile(t, filepath.Join(dir, fmt.Sprintf("%020d.seg", 2)), content)
			cfg.Dir = dir
			ro, err := core.OpenReadOnly(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if got := ro.Stats().Events; got != 2 {
				t.Fatalf("read-only: %d events", got)
			}
			if got := mustVerify(t, ro); got != rep || got.Hidden != 1 {
				t.Fatalf("read-only Verify %+v, live %+v", got, rep)
			}
		})
	}
}
