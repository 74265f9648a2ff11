package core_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Guaranteed cursors: Poll delivers every visible event of a
// region exactly once, in global order, never skipping and never
// repeating; a named cursor's committed position is kept in the store
// directory and survives Close, reopen and a SIGKILL.

func mustPoll(t testing.TB, c *core.Cursor, max int) []core.StoredEvent {
	t.Helper()
	evs, err := c.Poll(max)
	if err != nil {
		t.Fatalf("Poll(%d): %v", max, err)
	}
	return evs
}

// pollAll polls until the cursor has nothing more.
func pollAll(t testing.TB, c *core.Cursor, max int) []core.StoredEvent {
	t.Helper()
	var out []core.StoredEvent
	for {
		evs := mustPoll(t, c, max)
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
	}
}

func mustNamedCursor(t testing.TB, s *core.Store, name string, r core.Region) *core.Cursor {
	t.Helper()
	c, err := s.NamedCursor(name, r)
	if err != nil {
		t.Fatalf("NamedCursor(%q): %v", name, err)
	}
	return c
}

func TestCursorPollSizes(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "e:1", "s")
	var rs []core.Receipt
	for i := 0; i < 10; i++ {
		rs = append(rs, mustAppend(t, s, c, kindA, payloadN(i)))
	}
	cur := s.Cursor(core.All())
	if evs := mustPoll(t, cur, 0); len(evs) != 0 || cur.Position() != 0 {
		t.Fatalf("Poll(0) = %d events, position %d", len(evs), cur.Position())
	}
	var got []core.StoredEvent
	var sizes []int
	for _, m := range []int{3, 3, 100, 100} {
		evs := mustPoll(t, cur, m)
		sizes = append(sizes, len(evs))
		got = append(got, evs...)
	}
	if !slices.Equal(sizes, []int{3, 3, 4, 0}) {
		t.Fatalf("Poll sizes %v, want [3 3 4 0]", sizes)
	}
	if got[0].GlobalSequence != 0 {
		t.Fatalf("first event has global sequence %d, want 0", got[0].GlobalSequence)
	}
	sameEvents(t, "polled", got, mustQuery(t, s, core.All()))
	if cur.Position() != 10 {
		t.Fatalf("Position = %d, want 10", cur.Position())
	}
	// Later appends come on the next Poll, and only those.
	rs = append(rs, mustAppend(t, s, c, kindA, payloadN(10)), mustAppend(t, s, c, kindA, payloadN(11)))
	evs := mustPoll(t, cur, 100)
	if len(evs) != 2 || evs[0].Header.ID != rs[10].ID || evs[1].Header.ID != rs[11].ID {
		t.Fatalf("after two appends: %v", payloads(evs))
	}
	if evs := mustPoll(t, cur, 100); len(evs) != 0 {
		t.Fatalf("repeated: %v", payloads(evs))
	}
	// Commit and Rewind on an unnamed cursor: in memory only.
	if err := cur.Commit(); err != nil || cur.Committed() != 12 {
		t.Fatalf("Commit: %v, Committed %d", err, cur.Committed())
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "cursors")); err == nil {
		t.Fatalf("an unnamed cursor wrote to the store directory")
	}
	s.Close()
	if _, err := cur.Poll(10); !isErr(err, core.ErrClosed) {
		t.Fatalf("Poll after Close: %v, want ErrClosed", err)
	}
}

// cursorFixture writes interleaved events over entities, scopes and kinds.
func cursorFixture(t *testing.T, s *core.Store, rng *rand.Rand, n int) {
	t.Helper()
	ents := []string{"a:1", "a:2", "a:10", "b:1", "ab"}
	scopes := []string{"s1", "s2"}
	kinds := []core.Kind{kindA, kindB, kindC}
	for i := 0; i < n; i++ {
		c := mustCoord(t, ents[rng.Intn(len(ents))], scopes[rng.Intn(len(scopes))])
		if rng.Intn(8) == 0 {
			items := []core.BatchItem{
				{Coordinate: c, Kind: kinds[rng.Intn(3)], Payload: []byte(payloadN(i))},
				{Coordinate: mustCoord(t, ents[rng.Intn(len(ents))], "s2"), Kind: kinds[rng.Intn(3)], Payload: []byte(payloadN(i))},
			}
			if _, err := s.AppendBatch(context.Background(), items); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mustAppend(t, s, c, kinds[rng.Intn(3)], payloadN(i))
	}
}

var cursorRegions = []core.Region{
	core.All(),
	core.Entity("a:"),
	core.Entity("a:1"),
	core.Entity("zz"),
	core.Scope("s1"),
	core.Scope("nowhere"),
	core.All().WithKind(kindB),
	core.Scope("s2").WithKind(kindA),
	core.Entity("a").WithScope("s1"),
	core.Entity("b:").WithKind(kindC),
	core.All().WithCategory(2),
	core.Entity("a:").WithClockRange(2, 5),
}

func TestCursorRegions(t *testing.T) {
	s := openStore(t)
	rng := rand.New(rand.NewSource(1))
	cursorFixture(t, s, rng, 40) // some before the cursors exist
	curs := make([]*core.Cursor, len(cursorRegions))
	got := make([][]core.StoredEvent, len(cursorRegions))
	for i, r := range cursorRegions {
		curs[i] = s.Cursor(r)
	}
	for round := 0; round < 30; round++ {
		for i := range curs {
			got[i] = append(got[i], mustPoll(t, curs[i], 1+rng.Intn(7))...)
		}
		cursorFixture(t, s, rng, rng.Intn(6))
	}
	for i, r := range cursorRegions {
		got[i] = append(got[i], pollAll(t, curs[i], 1+rng.Intn(7))...)
		sameEvents(t, fmt.Sprintf("cursor over %v", r), got[i], mustQuery(t, s, r))
	}
	// A scope that did not exist when the cursor passed over its place.
	cur := s.Cursor(core.Scope("late"))
	if evs := pollAll(t, cur, 5); len(evs) != 0 {
		t.Fatalf("scope late: %d events", len(evs))
	}
	r := mustAppend(t, s, mustCoord(t, "a:1", "late"), kindA, `{}`)
	if evs := pollAll(t, cur, 5); len(evs) != 1 || evs[0].Header.ID != r.ID {
		t.Fatalf("scope late after an append: %v", ids(evs))
	}
}

// TestCursorConcurrentPolls: one cursor polled from several goroutines
// while writers append: every event is delivered to exactly one poller.
func TestCursorConcurrentPolls(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	for _, r := range []core.Region{core.All(), core.All().WithKind(kindA), core.Entity("c:1")} {
		cur := s.Cursor(r)
		var mu sync.Mutex
		seen := map[uint64]int{}
		stop := make(chan struct{})
		var pollers sync.WaitGroup
		poll := func() int {
			evs, err := cur.Poll(3)
			if err != nil {
				t.Error(err)
				return 0
			}
			mu.Lock()
			for _, ev := range evs {
				seen[ev.GlobalSequence]++
			}
			mu.Unlock()
			return len(evs)
		}
		for g := 0; g < 3; g++ {
			pollers.Add(1)
			go func() {
				defer pollers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if poll() == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
		}
		var writers sync.WaitGroup
		for g := 0; g < 2; g++ {
			writers.Add(1)
			go func(g int) {
				defer writers.Done()
				c, _ := core.NewCoordinate(fmt.Sprintf("c:%d", g), "s")
				for i := 0; i < 100; i++ {
					if _, err := s.Append(ctx, c, []core.Kind{kindA, kindB}[i%2], []byte(payloadN(i))); err != nil {
						t.Error(err)
						return
					}
				}
			}(g)
		}
		writers.Wait()
		close(stop)
		pollers.Wait()
		for poll() > 0 {
		}
		want := mustQuery(t, s, r)
		if len(seen) != len(want) {
			t.Fatalf("region %v: %d distinct events delivered, want %d", r, len(seen), len(want))
		}
		for _, ev := range want {
			if seen[ev.GlobalSequence] != 1 {
				t.Fatalf("region %v: event %d delivered %d times", r, ev.GlobalSequence, seen[ev.GlobalSequence])
			}
		}
	}
}

func TestCursorFences(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "f:1", "s")
	cur := s.Cursor(core.All())
	kindCur := s.Cursor(core.All().WithKind(kindB))
	a := mustAppend(t, s, c, kindA, `{}`)
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mid := s.Cursor(core.All()) // made while the fence is open
	var want []core.EventID
	var tks []*core.Ticket
	for i := 0; i < 3; i++ {
		tk, err := f.Submit(ctx, c, kindB, []byte(payloadN(i)))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
		if evs := mustPoll(t, cur, 10); len(evs) > 1 || len(evs) == 1 && evs[0].Header.ID != a.ID {
			t.Fatalf("fence open: polled %v", payloads(evs))
		}
	}
	bt, err := f.SubmitBatch(ctx, []core.BatchItem{{Coordinate: c, Kind: kindB, Payload: []byte(`{"b":1}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := mustPoll(t, kindCur, 10); len(evs) != 0 {
		t.Fatalf("fence open: kind cursor polled %v", payloads(evs))
	}
	if evs := mustPoll(t, mid, 10); len(evs) != 1 || evs[0].Header.ID != a.ID {
		t.Fatalf("fence open: new cursor polled %v", payloads(evs))
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tk := range tks {
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.ID)
	}
	rs, err := bt.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, rs[0].ID)
	for _, cu := range []*core.Cursor{cur, kindCur, mid} {
		if got := ids(pollAll(t, cu, 2)); !slices.Equal(got, want) {
			t.Fatalf("after the commit: polled %v, want %v", got, want)
		}
	}
	// A cancelled fence: nothing, ever; the next ordinary event is next.
	writeLeakingFence(t, s, c, kindB, 3)
	after := mustAppend(t, s, c, kindB, `{}`)
	for _, cu := range []*core.Cursor{cur, kindCur, mid, s.Cursor(core.All().WithKind(kindB))} {
		evs := pollAll(t, cu, 100)
		if len(evs) == 0 || evs[len(evs)-1].Header.ID != after.ID {
			t.Fatalf("after a cancelled fence: polled %v", payloads(evs))
		}
		for _, ev := range evs {
			if strings.Contains(string(ev.Payload), "leak") {
				t.Fatalf("an event of a cancelled fence was delivered: %s", ev.Payload)
			}
		}
	}
	s = reopen(t, s)
	for _, ev := range pollAll(t, s.Cursor(core.All()), 3) {
		if strings.Contains(string(ev.Payload), "leak") {
			t.Fatalf("after reopen, an event of a cancelled fence was delivered: %s", ev.Payload)
		}
	}
}

func TestNamedCursorPersists(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "n:1", "s")
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
		mustAppend(t, s, mustCoord(t, "other", "s"), kindA, payloadN(i))
	}
	all := mustQuery(t, s, core.Entity("n:"))
	cur := mustNamedCursor(t, s, "billing", core.Entity("n:"))
	other := mustNamedCursor(t, s, "audit-2.v1", core.Entity("n:"))
	if cur.Position() != 0 || cur.Committed() != 0 {
		t.Fatalf("new named cursor at %d/%d", cur.Position(), cur.Committed())
	}
	first := mustPoll(t, cur, 4)
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	committed := cur.Committed()
	if committed != cur.Position() || committed != first[3].GlobalSequence+1 {
		t.Fatalf("Committed %d, Position %d, last polled %d", committed, cur.Position(), first[3].GlobalSequence)
	}
	mustPoll(t, cur, 3) // not committed
	// Rewind goes back to the committed position.
	cur.Rewind()
	if cur.Position() != committed {
		t.Fatalf("Rewind: position %d, want %d", cur.Position(), committed)
	}
	again := mustPoll(t, cur, 3)
	sameEvents(t, "after Rewind", again, all[4:7])
	mustPoll(t, other, 1)
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}

	for round := 0; round < 2; round++ {
		s = reopen(t, s)
		cur = mustNamedCursor(t, s, "billing", core.Entity("n:"))
		if cur.Position() != committed || cur.Committed() != committed {
			t.Fatalf("reopened: position %d, committed %d, want %d", cur.Position(), cur.Committed(), committed)
		}
		other = mustNamedCursor(t, s, "audit-2.v1", core.Entity("n:"))
		if other.Committed() != all[0].GlobalSequence+1 {
			t.Fatalf("the other name: committed %d", other.Committed())
		}
	}
	rest := pollAll(t, cur, 2)
	sameEvents(t, "resumed", rest, all[4:])
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	final := cur.Committed()
	c2 := mustNamedCursor(t, s, "billing", core.Entity("n:")) // another handle, same process
	if c2.Position() != cur.Committed() {
		t.Fatalf("second handle at %d, want %d", c2.Position(), cur.Committed())
	}
	r := mustAppend(t, s, c, kindA, `{}`)
	if evs := mustPoll(t, c2, 10); len(evs) != 1 || evs[0].Header.ID != r.ID {
		t.Fatalf("after resuming at the end: %v", payloads(evs))
	}

	// A read-only store reads positions but cannot commit them.
	cfg := s.Config()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rc := mustNamedCursor(t, ro, "billing", core.Entity("n:"))
	if rc.Committed() != final {
		t.Fatalf("read-only: committed %d, want %d", rc.Committed(), final)
	}
	mustPoll(t, rc, 1)
	if err := rc.Commit(); !isErr(err, core.ErrReadOnly) {
		t.Fatalf("Commit on a read-only store: %v, want ErrReadOnly", err)
	}
}

func TestNamedCursorNames(t *testing.T) {
	s := openStore(t)
	bad := []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", "-x", "_x", "with space", "é", "a\x00", "x:y", strings.Repeat("a", 129)}
	for _, name := range bad {
		c, err := s.NamedCursor(name, core.All())
		if !isErr(err, core.ErrInvalidCursorName) || c != nil {
			t.Fatalf("NamedCursor(%q) = %v, %v; want ErrInvalidCursorName", name, c, err)
		}
	}
	good := []string{"a", "0", "A.b_c-9", strings.Repeat("z", 128)}
	for _, name := range good {
		c := mustNamedCursor(t, s, name, core.All())
		if err := c.Commit(); err != nil {
			t.Fatalf("Commit of %q: %v", name, err)
		}
	}
	// Nothing escaped the store directory.
	ents, err := os.ReadDir(filepath.Dir(s.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("the store's parent directory holds %d entries", len(ents))
	}
}

// cursorFile finds the file holding a named cursor's position.
func cursorFile(t *testing.T, dir, name string) string {
	t.Helper()
	var found []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), name+".") {
			found = append(found, p)
		}
		return nil
	})
	if len(found) != 1 {
		t.Fatalf("files for cursor %q: %v", name, found)
	}
	return found[0]
}

func TestNamedCursorDamagedFile(t *testing.T) {
	s := openStore(t)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, mustCoord(t, "d:1", "s"), kindA, payloadN(i))
	}
	cur := mustNamedCursor(t, s, "damaged", core.All())
	mustPoll(t, cur, 3)
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	path := cursorFile(t, s.Dir(), "damaged")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damages := map[string][]byte{
		"bit flip":  func() []byte { b := slices.Clone(orig); b[9] ^= 1; return b }(),
		"checksum":  func() []byte { b := slices.Clone(orig); b[len(b)-1] ^= 0x80; return b }(),
		"truncated": orig[:len(orig)-1],
		"empty":     {},
		"longer":    append(slices.Clone(orig), 0),
		"garbage":   []byte(strings.Repeat("x", len(orig))),
	}
	for name, b := range damages {
		writeFile(t, path, b)
		c, err := s.NamedCursor("damaged", core.All())
		var ce *core.CorruptionError
		if !errors.As(err, &ce) || !isErr(err, core.ErrCorrupt) || c != nil {
			t.Fatalf("%s: NamedCursor = %v, %v; want a *CorruptionError", name, c, err)
		}
		if ce.File != path {
			t.Fatalf("%s: CorruptionError names %q, want %q", name, ce.File, path)
		}
	}
	writeFile(t, path, orig)
	if c := mustNamedCursor(t, s, "damaged", core.All()); c.Committed() != 3 {
		t.Fatalf("restored file: committed %d, want 3", c.Committed())
	}
	// ResetCursor overwrites a damaged position: the cursor starts again
	// at the log's beginning.
	writeFile(t, path, damages["garbage"])
	if err := s.ResetCursor("damaged"); err != nil {
		t.Fatalf("ResetCursor of a damaged position: %v", err)
	}
	c := mustNamedCursor(t, s, "damaged", core.All())
	if evs := pollAll(t, c, 10); c.Committed() != 0 || len(evs) != 5 {
		t.Fatalf("after ResetCursor: committed %d, %d events polled; want 0 and all 5", c.Committed(), len(evs))
	}
	if err := s.ResetCursor("../x"); !isErr(err, core.ErrInvalidCursorName) {
		t.Fatalf("ResetCursor of a bad name: %v", err)
	}
}

// helperCursor (BATPAK_HELPER=cursor) appends, polls a named cursor and
// commits in a loop until killed, printing "COMMITTED pos first n" after
// each commit (first is the first polled sequence, or -1 for none).
func helperCursor(dir string) error {
	s, err := core.Open(testConfig(dir))
	if err != nil {
		return err
	}
	cur, err := s.NamedCursor("killed", core.All())
	if err != nil {
		return err
	}
	fmt.Printf("START %d\n", cur.Committed())
	c, err := core.NewCoordinate("k:1", "s")
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		for j := 0; j < 3; j++ {
			if _, err := s.Append(context.Background(), c, kindA, []byte(payloadN(i))); err != nil {
				return err
			}
		}
		evs, err := cur.Poll(1 + i%5)
		if err != nil {
			return err
		}
		if err := cur.Commit(); err != nil {
			return err
		}
		first := int64(-1)
		if len(evs) > 0 {
			first = int64(evs[0].GlobalSequence)
		}
		line := fmt.Sprintf("COMMITTED %d %d %d\n", cur.Committed(), first, len(evs))
		if _, err := os.Stdout.Write([]byte(line)); err != nil {
			return err
		}
	}
}

func TestNamedCursorSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	prev := uint64(0)
	for round := 0; round < 2; round++ {
		ch := startHelper(t, "cursor", dir)
		ln, ok := ch.line()
		if !ok || ln != fmt.Sprintf("START %d", prev) {
			t.Fatalf("child started with %q, want START %d; stderr:\n%s", ln, prev, ch.stderr)
		}
		target := 20 + rng.Intn(40)
		last := prev
		killed := false
		for n := 0; ; n++ {
			if n == target && !killed {
				if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
			ln, ok := ch.line()
			if !ok {
				break
			}
			f := strings.Fields(ln)
			if len(f) != 4 || f[0] != "COMMITTED" {
				t.Fatalf("child said %q; stderr:\n%s", ln, ch.stderr)
			}
			pos, _ := strconv.ParseUint(f[1], 10, 64)
			first, _ := strconv.ParseInt(f[2], 10, 64)
			cnt, _ := strconv.ParseUint(f[3], 10, 64)
			// Each poll starts where the last commit left off and moves the
			// position past exactly what it delivered: nothing skipped.
			if cnt > 0 && uint64(first) != last || pos != last+cnt {
				t.Fatalf("child committed %d after delivering %d events from %d; the last commit was %d", pos, cnt, first, last)
			}
			last = pos
		}
		if !killed {
			t.Fatalf("child ended before it was killed; stderr:\n%s", ch.stderr)
		}
		_ = ch.cmd.Wait()

		s, err := core.Open(testConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		cur, err := s.NamedCursor("killed", core.All())
		if err != nil {
			s.Close()
			t.Fatalf("reopen after the kill: %v", err)
		}
		got := cur.Committed()
		total := s.Stats().GlobalSequence
		// The kill may land between a commit and its line: then the position
		// is one poll (at most 5 events) past the last one printed.
		if got < last || got > last+5 || got > total {
			s.Close()
			t.Fatalf("round %d: committed position %d after the kill; last printed %d, %d events", round, got, last, total)
		}
		evs := pollAll(t, cur, 7)
		for i, ev := range evs {
			if ev.GlobalSequence != got+uint64(i) {
				s.Close()
				t.Fatalf("resumed cursor delivered sequence %d at %d, want %d", ev.GlobalSequence, i, got+uint64(i))
			}
		}
		if got+uint64(len(evs)) != total {
			s.Close()
			t.Fatalf("resumed at %d and delivered %d events; the store holds %d", got, len(evs), total)
		}
		prev = got
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNamedCursorCommitAfterClose: a closed store takes no more writes,
// cursor positions included.
func TestNamedCursorCommitAfterClose(t *testing.T) {
	s := openStore(t)
	appendEvents(t, s, "c:1", 5)
	cur := mustNamedCursor(t, s, "late", core.All())
	mustPoll(t, cur, 2)
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, cur, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(); !isErr(err, core.ErrClosed) {
		t.Fatalf("Commit after Close: %v, want ErrClosed", err)
	}
	s = openWith(t, s.Config())
	if c := mustNamedCursor(t, s, "late", core.All()); c.Committed() != 2 {
		t.Fatalf("reopened: committed %d, want 2", c.Committed())
	}
}

// A cursor bounded with ExamineAtMost reads every event of its region
// all the same, over polls that each examine at most the bound, some
// returning no events with more set; an unbounded one is unchanged.
func TestCursorExamineAtMost(t *testing.T) {
	s := openStore(t)
	rng := rand.New(rand.NewSource(7))
	cursorFixture(t, s, rng, 300)
	for _, r := range cursorRegions {
		cur := s.Cursor(r)
		cur.ExamineAtMost(7)
		var got []core.StoredEvent
		empty := 0
		for polls := 0; ; polls++ {
			if polls > 10000 {
				t.Fatalf("%v: no end after %d polls", r, polls)
			}
			before := cur.Examined()
			evs, more, err := cur.PollBytes(1+rng.Intn(5), 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := cur.Examined() - before; d > 7 {
				t.Fatalf("%v: a poll examined %d entries, bound 7", r, d)
			}
			if len(evs) == 0 && more {
				empty++
			}
			got = append(got, evs...)
			if len(evs) == 0 && !more {
				break
			}
		}
		sameEvents(t, fmt.Sprintf("bounded cursor over %v", r), got, mustQuery(t, s, r))
		t.Logf("%v: %d events, %d polls found none and went on", r, len(got), empty)
	}
}
