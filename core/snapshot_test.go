package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Online snapshots: a consistent copy of the store, taken while writes go
// on, that opens as a store of its own.

// openCopy opens a snapshot (writable, 64 KiB segments).
func openCopy(t *testing.T, dir string) *core.Store {
	t.Helper()
	cfg := testConfig(dir)
	smallSegments(&cfg)
	return openWith(t, cfg)
}

// checkSnapshotPrefix checks that the snapshot in dir shows exactly the first n
// sequences of the source's history all (no hidden events in it).
func checkSnapshotPrefix(t *testing.T, dir string, rep core.SnapshotReport, all []core.StoredEvent) {
	t.Helper()
	c := openCopy(t, dir)
	got := mustQuery(t, c, core.All())
	n := int(rep.GlobalSequence)
	if len(got) != n {
		t.Fatalf("snapshot %s: %d events, report says %d", dir, len(got), n)
	}
	for i, ev := range got {
		if ev.GlobalSequence != uint64(i) {
			t.Fatalf("snapshot %s: event %d has sequence %d", dir, i, ev.GlobalSequence)
		}
	}
	sameEvents(t, "snapshot vs the source's prefix", got, all[:n])
	// A position the consumer committed after the snapshot point must not
	// skip events the copy will get.
	if f := mustNamedCursor(t, c, "follower", core.All()); f.Committed() > rep.GlobalSequence {
		t.Fatalf("snapshot %s: cursor at %d, past the copy's %d sequences", dir, f.Committed(), rep.GlobalSequence)
	}
	if st := c.Stats(); st.GlobalSequence != rep.GlobalSequence || st.Events != uint64(n) {
		t.Fatalf("snapshot stats %+v, report %+v", st, rep)
	}
	mustVerify(t, c)
	r := mustAppend(t, c, mustCoord(t, "snap:after", "s"), kindA, `{}`)
	if r.GlobalSequence != rep.GlobalSequence {
		t.Fatalf("the copy's next event got sequence %d, want %d", r.GlobalSequence, rep.GlobalSequence)
	}
	mustVerify(t, c)
}

func TestSnapshotUnderConcurrentWrites(t *testing.T) {
	for _, withCompaction := range []bool{false, true} {
		t.Run(fmt.Sprintf("compacting=%v", withCompaction), func(t *testing.T) {
			testSnapshotUnderWrites(t, withCompaction)
		})
	}
}

func testSnapshotUnderWrites(t *testing.T, withCompaction bool) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	for i := 0; i < 100; i++ {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("pre:%d", i%3), "s"), kindA, fmt.Sprintf(`{"pre":%d,"pad":"%s"}`, i, strings.Repeat("p", 400)))
	}
	var stop atomic.Bool
	var failed atomic.Value
	var wg sync.WaitGroup
	writer := func(fn func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if err := fn(i); err != nil {
					failed.CompareAndSwap(nil, err.Error())
					return
				}
			}
		}()
	}
	for g := 0; g < 2; g++ {
		writer(func(i int) error {
			_, err := s.AppendWithOptions(ctx, mustCoord(t, fmt.Sprintf("w:%d", g), "s"), kindA,
				[]byte(fmt.Sprintf(`{"g":%d,"i":%d,"pad":"%s"}`, g, i, strings.Repeat("w", 100+i%300))),
				core.AppendOptions{IdempotencyKey: fmt.Sprintf("w%d-%d", g, i)})
			return err
		})
	}
	writer(func(i int) error {
		items := make([]core.BatchItem, 2+i%4)
		for k := range items {
			items[k] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("b:%d", k%2), "s"), Kind: kindB,
				Payload: []byte(fmt.Sprintf(`{"batch":%d,"item":%d,"pad":"%s"}`, i, k, strings.Repeat("b", 300)))}
		}
		_, err := s.AppendBatch(ctx, items)
		return err
	})
	follower := mustNamedCursor(t, s, "follower", core.All())
	writer(func(int) error { // a consumer committing as it goes
		if _, err := follower.Poll(50); err != nil {
			return err
		}
		return follower.Commit()
	})
	if withCompaction {
		writer(func(int) error {
			_, err := s.Compact(ctx, core.Merge())
			time.Sleep(2 * time.Millisecond)
			return err
		})
	}
	type snap struct {
		dir string
		rep core.SnapshotReport
	}
	var snaps []snap
	for k := 0; k < 4; k++ {
		time.Sleep(40 * time.Millisecond)
		dest := filepath.Join(t.TempDir(), fmt.Sprintf("snap%d", k))
		rep, err := s.Snapshot(ctx, dest)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("Snapshot: %v", err)
		}
		if rep.Dest != dest || rep.Segments < 1 || rep.Bytes <= 0 {
			t.Fatalf("report %+v", rep)
		}
		snaps = append(snaps, snap{dest, rep})
	}
	stop.Store(true)
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	all := mustQuery(t, s, core.All())
	for i, ev := range all {
		if ev.GlobalSequence != uint64(i) {
			t.Fatalf("source: event %d has sequence %d", i, ev.GlobalSequence)
		}
	}
	for _, sn := range snaps {
		checkSnapshotPrefix(t, sn.dir, sn.rep, all)
	}
	last := snaps[len(snaps)-1].rep
	t.Logf("%d events in the source; last snapshot %+v", len(all), last)
	if last.GlobalSequence <= snaps[0].rep.GlobalSequence || last.Segments < 2 {
		t.Fatalf("writes did not go on during the snapshots: %+v, %+v", snaps[0].rep, last)
	}
}

// TestSnapshotOpenFence: writes under a fence open at the snapshot point
// are hidden in the copy (the fence stays open there, so it is cancelled
// when the copy opens), whatever becomes of them in the source.
func TestSnapshotOpenFence(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, smallSegments)
	for i := 0; i < 20; i++ {
		mustAppend(t, s, mustCoord(t, "f:1", "s"), kindA, payloadN(i))
	}
	before := mustQuery(t, s, core.All())
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tks []*core.Ticket
	for i := 0; i < 5; i++ {
		tk, err := f.Submit(ctx, mustCoord(t, "f:1", "s"), kindB, ledgerJSON(i, true))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	bt, err := f.SubmitBatch(ctx, []core.BatchItem{
		{Coordinate: mustCoord(t, "f:2", "s"), Kind: kindA, Payload: ledgerJSON(7, true)},
		{Coordinate: mustCoord(t, "f:2", "s"), Kind: kindA, Payload: ledgerJSON(8, true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "snap")
	rep, err := s.Snapshot(ctx, dest)
	if err != nil {
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
	if _, err := bt.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(mustQuery(t, s, core.All())); n != 27 {
		t.Fatalf("source: %d events after the commit", n)
	}
	if rep.GlobalSequence != 20 {
		t.Fatalf("report %+v: GlobalSequence counts the visible prefix", rep)
	}

	ro, err := core.OpenReadOnly(testConfig(dest))
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "read-only snapshot", mustQuery(t, ro, core.All()), before)
	ro.Close()
	c := openCopy(t, dest)
	got := mustQuery(t, c, core.All())
	sameEvents(t, "snapshot with a fence open", got, before)
	noLeak(t, "snapshot", got)
	if d := c.Diagnostics().Open; d.Hidden != 7 {
		t.Fatalf("snapshot open report %+v, want 7 hidden events", d)
	}
	// The hidden events keep their sequences and clocks.
	r := mustAppend(t, c, mustCoord(t, "f:1", "s"), kindA, `{}`)
	if r.GlobalSequence != 27 || r.Clock != 25 {
		t.Fatalf("next write in the copy: %+v, want sequence 27 clock 25", r)
	}
	mustVerify(t, c)
	c = reopen(t, c)
	noLeak(t, "snapshot reopened", mustQuery(t, c, core.All()))
}

// TestSnapshotCopiesCursorsAndErasures: durable cursor positions and the
// erasure epoch travel with the copy; a redaction after the snapshot does
// not reach it, one before does.
func TestSnapshotCopiesCursorsAndErasures(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	var rs []core.Receipt
	for i := 0; i < 30; i++ {
		rs = append(rs, mustAppend(t, s, mustCoord(t, "cur:1", "s"), kindA, secretPayload(fmt.Sprintf("x%d", i))))
	}
	a := mustNamedCursor(t, s, "alpha", core.All())
	mustPoll(t, a, 7)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	b := mustNamedCursor(t, s, "beta.2", core.Entity("cur:"))
	mustPoll(t, b, 19)
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Redact(ctx, rs[0].ID); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "nested", "snap")
	if _, err := s.Snapshot(ctx, dest); err != nil {
		t.Fatal(err)
	}
	if err := s.Redact(ctx, rs[1].ID); err != nil {
		t.Fatal(err)
	}
	mustPoll(t, a, 5)
	if err := a.Commit(); err != nil { // after the snapshot: not in it
		t.Fatal(err)
	}

	c := openWith(t, testConfig(dest))
	if ca := mustNamedCursor(t, c, "alpha", core.All()); ca.Committed() != 7 {
		t.Fatalf("cursor alpha in the copy at %d, want 7", ca.Committed())
	}
	if cb := mustNamedCursor(t, c, "beta.2", core.Entity("cur:")); cb.Committed() != 19 {
		t.Fatalf("cursor beta.2 in the copy at %d, want 19", cb.Committed())
	}
	e0, _ := c.Get(rs[0].ID)
	e1, _ := c.Get(rs[1].ID)
	if !e0.Redacted || e1.Redacted || !strings.Contains(string(e1.Payload), "x1") {
		t.Fatalf("redactions in the copy: %+v %+v", e0, e1)
	}
	if _, err := os.Stat(filepath.Join(dest, "erasures")); err != nil {
		t.Fatalf("erasure epoch not copied: %v", err)
	}
	mustVerify(t, c)
}

func TestSnapshotDestination(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	mustAppend(t, s, mustCoord(t, "d:1", "s"), kindA, `{}`)
	base := t.TempDir()

	nonEmpty := filepath.Join(base, "nonempty")
	if err := os.Mkdir(nonEmpty, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(nonEmpty, "x"), nil)
	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	emptyTarget := filepath.Join(base, "target")
	if err := os.Mkdir(emptyTarget, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(emptyTarget, link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(base, "dangling")
	if err := os.Symlink(filepath.Join(base, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	writeFile(t, file, []byte("x"))

	for _, d := range []string{nonEmpty, link, dangling, file, s.Dir()} {
		if _, err := s.Snapshot(ctx, d); !isErr(err, core.ErrSnapshotDest) {
			t.Fatalf("Snapshot to %s: %v, want ErrSnapshotDest", d, err)
		}
	}
	if ents, _ := os.ReadDir(emptyTarget); len(ents) != 0 {
		t.Fatal("a refused snapshot wrote through the symbolic link")
	}
	if _, err := os.Stat(filepath.Join(base, "nowhere")); err == nil {
		t.Fatal("a refused snapshot created the link's target")
	}
	if rep, err := s.Snapshot(ctx, empty); err != nil || rep.GlobalSequence != 1 {
		t.Fatalf("Snapshot to an empty directory: %+v, %v", rep, err)
	}
	if _, err := s.Snapshot(ctx, empty); !isErr(err, core.ErrSnapshotDest) {
		t.Fatalf("a second snapshot into the same directory: %v", err)
	}

	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ro.Snapshot(ctx, filepath.Join(base, "ro")); !isErr(err, core.ErrReadOnly) {
		t.Fatalf("Snapshot of a read-only store: %v, want ErrReadOnly", err)
	}
	ro.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(ctx, filepath.Join(base, "closed")); !isErr(err, core.ErrClosed) {
		t.Fatalf("Snapshot of a closed store: %v, want ErrClosed", err)
	}
}

// TestCopyFiles: a closed store's files copied with CopyFiles open as the
// same store (every event, Verify passing), without the writer's lock
// file; the copy refuses an existing destination.
func TestCopyFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, func(c *core.Config) { c.Dir = filepath.Join(dir, "src") })
	for i := 0; i < 20; i++ {
		mustAppend(t, s, mustCoord(t, "e:1", "s"), kindA, `{"n":1}`)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "nested", "copy")
	if err := core.CopyFiles(filepath.Join(dir, "src"), dest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "LOCK")); !os.IsNotExist(err) {
		t.Fatalf("the copy holds the writer's lock file (%v)", err)
	}
	c, err := core.Open(core.DefaultConfig(dest))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if evs, err := c.Query(core.All()); err != nil || len(evs) != 20 {
		t.Fatalf("the copy holds %d events (%v), want 20", len(evs), err)
	}
	if _, err := c.Verify(); err != nil {
		t.Fatal(err)
	}
	if err := core.CopyFiles(filepath.Join(dir, "src"), dest); err == nil {
		t.Fatal("a copy over an existing directory succeeded")
	}
}

// TestSnapshotLinksSealedSegments: SnapshotOptions.LinkSealed shares the
// sealed segments' files (and footers) with the copy and copies only the
// active segment up to the snapshot point; the copy stays the store as
// of the point while the store writes on, rotates and seals more, and
// opens with exactly those events. A store that can Redact refuses it.
func TestSnapshotLinksSealedSegments(t *testing.T) {
	ctx := context.Background()
	plain := openStore(t)
	dest := filepath.Join(t.TempDir(), "snap")
	if _, err := plain.SnapshotWithOptions(ctx, dest, core.SnapshotOptions{LinkSealed: true}); !errors.Is(err, core.ErrSnapshotLinks) {
		t.Fatalf("LinkSealed on a store without a Replicator: %v, want ErrSnapshotLinks", err)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("a refused snapshot left %s (%v)", dest, err)
	}

	dir := t.TempDir()
	s, _, _ := replicatedStore(t, dir)
	acked := fillSegments(t, s, 150)
	if err := s.SealSegments(ctx); err != nil { // footers of the sealed segments
		t.Fatal(err)
	}
	for _, nosync := range []bool{true, false} {
		dest := filepath.Join(t.TempDir(), "snap")
		rep, err := s.SnapshotWithOptions(ctx, dest, core.SnapshotOptions{LinkSealed: true, NoSync: nosync})
		if err != nil {
			t.Fatal(err)
		}
		if rep.GlobalSequence != uint64(len(acked)) || rep.Segments < 3 {
			t.Fatalf("report %+v, want %d events over several segments", rep, len(acked))
		}
		ents, err := os.ReadDir(dest)
		if err != nil {
			t.Fatal(err)
		}
		var segs []string
		footers, linkedFooters := 0, 0
		for _, e := range ents {
			switch {
			case strings.HasSuffix(e.Name(), ".seg"):
				segs = append(segs, e.Name())
			case strings.HasSuffix(e.Name(), ".idx"): // a footer
				footers++
				if sameFile(t, filepath.Join(dir, e.Name()), filepath.Join(dest, e.Name())) {
					linkedFooters++
				}
			}
		}
		for i, name := range segs { // in name order: the last is the active segment
			linked := sameFile(t, filepath.Join(dir, name), filepath.Join(dest, name))
			if active := i == len(segs)-1; linked == active {
				t.Fatalf("nosync=%v: segment %s linked=%v, want sealed ones linked and the active one copied", nosync, name, linked)
			}
		}
		if footers == 0 || linkedFooters != footers {
			t.Fatalf("nosync=%v: %d of %d footers linked, want all", nosync, linkedFooters, footers)
		}
	}
	dest = filepath.Join(t.TempDir(), "snap")
	if _, err := s.SnapshotWithOptions(ctx, dest, core.SnapshotOptions{LinkSealed: true, NoSync: true}); err != nil {
		t.Fatal(err)
	}
	more := fillSegments(t, s, 150) // the store rotates, seals and footers on
	if err := s.SealSegments(ctx); err != nil {
		t.Fatal(err)
	}
	cp := openWith(t, testConfig(dest))
	holdsAll(t, cp, acked)
	if st := cp.Stats(); st.Events != uint64(len(acked)) {
		t.Fatalf("the copy holds %d events, want the %d of the snapshot point (the store has %d)", st.Events, len(acked), len(acked)+len(more))
	}
	mustVerify(t, cp)
}

// replicatedStore opens a store in dir whose writes go through an
// in-memory replicated log (so it refuses Redact), in 64 KiB segments,
// and returns it, its config and the log, of which it is replica 0. The
// store closes with the test, then the log.
func replicatedStore(t *testing.T, dir string) (*core.Store, core.Config, *memLog) {
	t.Helper()
	l := &memLog{entries: make(chan memEntry, 64), done: make(chan struct{})}
	cfg := testConfig(dir)
	cfg.Replicator = memReplica{l, 0}
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.replicas = []*core.Store{s}
	go l.run(t)
	t.Cleanup(func() { close(l.entries); <-l.done })
	t.Cleanup(func() { s.Close() })
	return s, cfg, l
}

// sameFile reports whether paths a and b are the same file (hard links).
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fa, fb)
}

// TestCopyFilesLinkedStaysTheClosedStore: a copy of a closed store made
// by CopyFilesLinked shares all but the newest segment with it, and stays
// the store as it was closed while the store is reopened and written to.
func TestCopyFilesLinkedStaysTheClosedStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, cfg, l := replicatedStore(t, dir)
	acked := fillSegments(t, s, 150)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "copy")
	if err := core.CopyFilesLinked(dir, dest); err != nil {
		t.Fatal(err)
	}
	var segs []string
	ents, _ := os.ReadDir(dest)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg") {
			segs = append(segs, e.Name())
		}
	}
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	for i, name := range segs {
		if linked := sameFile(t, filepath.Join(dir, name), filepath.Join(dest, name)); linked == (i == len(segs)-1) {
			t.Fatalf("segment %s linked=%v, want all but the newest linked", name, linked)
		}
	}
	s, err := core.Open(cfg) // reopened: the copy must not change
	if err != nil {
		t.Fatal(err)
	}
	l.replicas[0] = s
	defer s.Close()
	fillSegments(t, s, 100)
	if err := s.SealSegments(ctx); err != nil {
		t.Fatal(err)
	}
	cp := openWith(t, testConfig(dest))
	holdsAll(t, cp, acked)
	if st := cp.Stats(); st.Events != uint64(len(acked)) {
		t.Fatalf("the copy holds %d events, want the %d the store held when closed", st.Events, len(acked))
	}
	mustVerify(t, cp)
}

// TestRedactKeepsLinkedCopiesApart: a LinkSealed copy shares its sealed
// segments' files with the store; Redact on either side (the copy opened
// as a store of its own; the store reopened without a Replicator)
// rewrites a shared segment into a file of its own, so the other side
// keeps the payload, and both still verify.
func TestRedactKeepsLinkedCopiesApart(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the store makes hard links on Unix only")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s, _, _ := replicatedStore(t, dir)
	acked := fillSegments(t, s, 150)
	first, second := acked[0].ID, acked[1].ID // both in the first, sealed segment
	copies := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
	for _, dest := range copies {
		if _, err := s.SnapshotWithOptions(ctx, dest, core.SnapshotOptions{LinkSealed: true, NoSync: true}); err != nil {
			t.Fatal(err)
		}
	}
	seg1 := filepath.Join(copies[0], "00000000000000000001.seg")
	if !sameFile(t, filepath.Join(dir, "00000000000000000001.seg"), seg1) {
		t.Fatal("the first segment was not linked")
	}
	holds := func(st *core.Store, id core.EventID, want bool, who string) {
		t.Helper()
		ev, err := st.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if got := !ev.Redacted && len(ev.Payload) > 0; got != want {
			t.Fatalf("%s: event %s redacted=%v payload %d bytes; want the payload held: %v", who, id, ev.Redacted, len(ev.Payload), want)
		}
	}

	// The copy, opened as a store of its own, redacts.
	cp := openWith(t, testConfig(copies[0]))
	if err := cp.Redact(ctx, first); err != nil {
		t.Fatal(err)
	}
	holds(cp, first, false, "the copy that redacted")
	holds(s, first, true, "the store the copy shares files with")
	mustVerify(t, cp)
	mustVerify(t, s)

	// The store, reopened without a Replicator, redacts.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	plain := testConfig(dir)
	plain.SegmentMaxBytes = 64 << 10
	s2 := openWith(t, plain)
	if err := s2.Redact(ctx, second); err != nil {
		t.Fatal(err)
	}
	holds(s2, second, false, "the store that redacted")
	other := openWith(t, testConfig(copies[1]))
	holds(other, second, true, "a copy taken before")
	holds(other, first, true, "a copy taken before")
	mustVerify(t, s2)
	mustVerify(t, other)
}
