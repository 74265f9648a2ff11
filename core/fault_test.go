package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

// Tests of the documented failure contracts (core/doc.go, "Durability"),
// with faults injected under a real store through the file-system seam:
// what a failing disk does, which killing the process cannot show.

var faultKind = core.MustKind(1, 1)

// openFaulty opens a store in a fresh directory on the real disk with every
// file operation going through an errorfs, and closes it when the test
// ends.
func openFaulty(t *testing.T, adjust ...func(*core.Config)) (*core.Store, *errorfs.FS, core.Config) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.Sync.EveryNEvents = 1
	for _, f := range adjust {
		f(&cfg)
	}
	efs := errorfs.Wrap(vfs.Default())
	s, err := core.OpenWithFS(cfg, efs)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, efs, cfg
}

// appendN appends n events to entity and returns their receipts.
func appendN(t *testing.T, s *core.Store, entity string, from, n int) []core.Receipt {
	t.Helper()
	c := mustCoord(t, entity, "s")
	var rs []core.Receipt
	for i := from; i < from+n; i++ {
		rs = append(rs, mustAppend(t, s, c, faultKind, payloadN(i)))
	}
	return rs
}

// holdsAll fails unless s serves every receipted event.
func holdsAll(t *testing.T, s *core.Store, rs []core.Receipt) {
	t.Helper()
	for _, r := range rs {
		if _, err := s.Get(r.ID); err != nil {
			t.Fatalf("acknowledged event %v (seq %d) lost: %v", r.ID, r.GlobalSequence, err)
		}
	}
}

// reopenPlain closes s and opens its directory on the plain disk.
func reopenPlain(t *testing.T, s *core.Store, cfg core.Config) *core.Store {
	t.Helper()
	_ = s.Close() // may report the writer's failure
	return openWith(t, cfg)
}

func TestFailedWriteOrSyncStopsWriterAndReopenRecovers(t *testing.T) {
	cases := []struct {
		name  string
		fault errorfs.Fault
		every int
	}{
		{"write EIO", errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Err: errorfs.EIO}, 1},
		{"short write ENOSPC", errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Err: errorfs.ENOSPC, Short: true}, 1},
		{"fdatasync EIO", errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Err: errorfs.EIO}, 1},
		{"background fdatasync EIO", errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Err: errorfs.EIO}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, efs, cfg := openFaulty(t, func(c *core.Config) { c.Sync.EveryNEvents = tc.every; c.Sync.Interval = 0 })
			acked := appendN(t, s, "e", 0, 10)
			if err := s.Stopped(); err != nil {
				t.Fatalf("Stopped before any failure = %v", err)
			}
			f := efs.Inject(tc.fault)
			c := mustCoord(t, "e", "s")
			var failure error
			for i := 10; i < 40 && failure == nil; i++ {
				r, err := s.Append(context.Background(), c, faultKind, []byte(payloadN(i)))
				if err == nil {
					acked = append(acked, r)
				}
				failure = err
			}
			if failure == nil || !errors.Is(failure, tc.fault.Err) {
				t.Fatalf("append with a failing disk: err %v, want %v", failure, tc.fault.Err)
			}
			// A background sync's failure reaches the appends after it;
			// a failed write or foreground sync is the append's own. Either
			// way the writer has stopped, and says so without a write.
			if stopped := s.Stopped(); !errors.Is(stopped, core.ErrWriterStopped) || !errors.Is(stopped, tc.fault.Err) {
				t.Fatalf("Stopped after the failure = %v, want ErrWriterStopped wrapping %v", stopped, tc.fault.Err)
			}
			if efs.Fired(f) != 1 {
				t.Fatalf("fault fired %d times, want 1", efs.Fired(f))
			}
			efs.Clear() // the disk is healthy again: the writer must stay stopped
			for i := range 3 {
				if _, err := s.Append(context.Background(), c, faultKind, []byte(payloadN(100+i))); !errors.Is(err, tc.fault.Err) || !errors.Is(err, core.ErrWriterStopped) {
					t.Fatalf("append %d after the failure: err %v, want ErrWriterStopped wrapping %v", i, err, tc.fault.Err)
				}
			}
			if _, err := s.AppendBatch(context.Background(), []core.BatchItem{{Coordinate: c, Kind: faultKind, Payload: []byte(`{}`)}}); !errors.Is(err, tc.fault.Err) {
				t.Fatalf("batch after the failure: err %v, want %v", err, tc.fault.Err)
			}
			holdsAll(t, s, acked) // reads keep working
			s2 := reopenPlain(t, s, cfg)
			holdsAll(t, s2, acked)
			// A write whose fsync failed may be on disk (core/doc.go): at
			// most the one event whose group failed is there unacknowledged.
			if got := len(mustQuery(t, s2, core.All())); got < len(acked) || got > len(acked)+1 {
				t.Fatalf("reopened store holds %d events, want the %d acknowledged (and at most the failed one)", got, len(acked))
			}
			mustAppend(t, s2, c, faultKind, `{"after":"reopen"}`)
			mustVerify(t, s2)
		})
	}
}

func TestFailedDirectorySyncAfterRotationIsReported(t *testing.T) {
	s, efs, cfg := openFaulty(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	f := efs.Inject(errorfs.Fault{Op: errorfs.OpSyncDir, Pattern: filepath.Base(cfg.Dir)})
	c := mustCoord(t, "e", "s")
	payload := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 1000))
	var acked []core.Receipt
	var failure error
	for i := 0; i < 200 && failure == nil; i++ {
		r, err := s.Append(context.Background(), c, faultKind, []byte(payload))
		if err == nil {
			acked = append(acked, r)
		}
		failure = err
	}
	if efs.Fired(f) == 0 {
		t.Fatal("no directory sync after rotating the segment")
	}
	if !errors.Is(failure, errorfs.EIO) {
		t.Fatalf("append that rotated with a failing directory sync: err %v, want EIO", failure)
	}
	holdsAll(t, s, acked)
	s2 := reopenPlain(t, s, cfg)
	holdsAll(t, s2, acked)
	mustVerify(t, s2)
}

// fillSegments writes about n KiB of events in 64 KiB segments.
func fillSegments(t *testing.T, s *core.Store, n int) []core.Receipt {
	t.Helper()
	var rs []core.Receipt
	for i := range n {
		c := mustCoord(t, fmt.Sprintf("e%d", i%7), "s")
		p := fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("y", 900))
		rs = append(rs, mustAppend(t, s, c, faultKind, p))
	}
	return rs
}

// TestENOSPCDuringMaintenanceIsRetryable: a full disk during compaction,
// packing, snapshot, checkpoint or a cursor commit fails that operation
// only; the store stays readable and writable and the operation succeeds
// once there is room again.
func TestENOSPCDuringMaintenanceIsRetryable(t *testing.T) {
	full := func(pattern string) errorfs.Fault {
		return errorfs.Fault{Op: errorfs.OpWrite, Pattern: pattern, Err: errorfs.ENOSPC, Persist: true, Short: true}
	}
	ctx := context.Background()
	check := func(t *testing.T, s *core.Store, acked []core.Receipt) {
		t.Helper()
		holdsAll(t, s, acked)
		mustAppend(t, s, mustCoord(t, "after", "s"), faultKind, `{}`)
	}

	t.Run("compaction", func(t *testing.T) {
		s, efs, cfg := openFaulty(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10; c.Sync.EveryNEvents = 0 })
		acked := fillSegments(t, s, 300)
		efs.Inject(full("*.tmp"))
		if _, err := s.Compact(ctx, core.Merge()); !errors.Is(err, errorfs.ENOSPC) {
			t.Fatalf("Compact on a full disk: %v, want ENOSPC", err)
		}
		check(t, s, acked)
		efs.Clear()
		if _, err := s.Compact(ctx, core.Merge()); err != nil {
			t.Fatalf("Compact once there is room: %v", err)
		}
		check(t, s, acked)
		s2 := reopenPlain(t, s, cfg)
		holdsAll(t, s2, acked)
		mustVerify(t, s2)
	})

	t.Run("packing", func(t *testing.T) {
		s, efs, cfg := openFaulty(t, func(c *core.Config) {
			c.SegmentMaxBytes = 64 << 10
			c.Sync.EveryNEvents = 0
			c.Compression = core.CompressionS2
		})
		efs.Inject(full("*.tmp"))
		acked := fillSegments(t, s, 300)
		if err := s.SealSegments(ctx); !errors.Is(err, errorfs.ENOSPC) {
			t.Fatalf("SealSegments on a full disk: %v, want ENOSPC", err)
		}
		check(t, s, acked)
		efs.Clear()
		if err := s.SealSegments(ctx); err != nil {
			t.Fatalf("SealSegments once there is room: %v", err)
		}
		check(t, s, acked)
		s2 := reopenPlain(t, s, cfg)
		holdsAll(t, s2, acked)
		mustVerify(t, s2)
	})

	t.Run("snapshot", func(t *testing.T) {
		s, efs, _ := openFaulty(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
		acked := fillSegments(t, s, 150)
		dest := filepath.Join(t.TempDir(), "snap")
		efs.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Nth: 2, Err: errorfs.ENOSPC, Persist: true})
		if _, err := s.Snapshot(ctx, dest); !errors.Is(err, errorfs.ENOSPC) {
			t.Fatalf("Snapshot on a full disk: %v, want ENOSPC", err)
		}
		efs.Clear()
		check(t, s, acked)
		if _, err := s.Snapshot(ctx, dest); err != nil {
			t.Fatalf("Snapshot into the same directory once there is room: %v", err)
		}
		cp := openWith(t, testConfig(dest))
		holdsAll(t, cp, acked)
	})

	t.Run("checkpoint", func(t *testing.T) {
		s, efs, cfg := openFaulty(t)
		acked := appendN(t, s, "e", 0, 50)
		efs.Inject(full("index.ckpt*"))
		if err := s.Close(); err != nil {
			t.Fatalf("Close with a checkpoint that cannot be written: %v (it costs the next Open a scan only)", err)
		}
		efs.Clear()
		s2, err := core.OpenWithFS(cfg, efs)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		t.Cleanup(func() { _ = s2.Close() })
		if p := s2.Diagnostics().Open.Path; p == "checkpoint" {
			t.Fatalf("reopened from a checkpoint that could not be written")
		}
		check(t, s2, acked)
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		s3 := openWith(t, cfg)
		if p := s3.Diagnostics().Open.Path; p != "checkpoint" {
			t.Fatalf("after a Close with room, Open went by %q, want checkpoint", p)
		}
		holdsAll(t, s3, acked)
	})

	t.Run("cursor commit", func(t *testing.T) {
		s, efs, cfg := openFaulty(t)
		acked := appendN(t, s, "e", 0, 20)
		cur, err := s.NamedCursor("c1", core.All())
		if err != nil {
			t.Fatal(err)
		}
		if evs, err := cur.Poll(5); err != nil || len(evs) != 5 {
			t.Fatalf("Poll: %d, %v", len(evs), err)
		}
		if err := cur.Commit(); err != nil {
			t.Fatal(err)
		}
		if evs, err := cur.Poll(5); err != nil || len(evs) != 5 {
			t.Fatalf("Poll: %d, %v", len(evs), err)
		}
		efs.Inject(full("c1.pos.tmp*"))
		if err := cur.Commit(); !errors.Is(err, errorfs.ENOSPC) {
			t.Fatalf("Commit on a full disk: %v, want ENOSPC", err)
		}
		if got := cur.Committed(); got != 5 {
			t.Fatalf("Committed after a failed commit = %d, want 5", got)
		}
		check(t, s, acked)
		efs.Clear()
		if err := cur.Commit(); err != nil {
			t.Fatalf("Commit once there is room: %v", err)
		}
		s2 := reopenPlain(t, s, cfg)
		cur2, err := s2.NamedCursor("c1", core.All())
		if err != nil {
			t.Fatal(err)
		}
		if got := cur2.Committed(); got != 10 {
			t.Fatalf("cursor reopened at %d, want 10", got)
		}
	})
}

// A snapshot taken with SnapshotOptions.NoSync syncs none of the copy's
// files or directories (a staging copy that is read back at once), yet
// holds every event; a plain Snapshot syncs them, so the same failing
// syncs fail it and leave nothing behind.
func TestSnapshotWithoutSyncs(t *testing.T) {
	ctx := context.Background()
	s, efs, _ := openFaulty(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	acked := fillSegments(t, s, 150)
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Persist: true})
	efs.Inject(errorfs.Fault{Op: errorfs.OpSyncDir, Persist: true})
	syncs := efs.Count(errorfs.OpSync) + efs.Count(errorfs.OpSyncDir)
	staged := filepath.Join(t.TempDir(), "staged")
	rep, err := s.SnapshotWithOptions(ctx, staged, core.SnapshotOptions{NoSync: true})
	if err != nil {
		t.Fatalf("SnapshotWithOptions(NoSync) while every sync fails: %v", err)
	}
	if n := efs.Count(errorfs.OpSync) + efs.Count(errorfs.OpSyncDir) - syncs; n != 0 {
		t.Fatalf("SnapshotWithOptions(NoSync) synced %d times", n)
	}
	if rep.GlobalSequence != uint64(len(acked)) || rep.Segments < 2 {
		t.Fatalf("NoSync snapshot report %+v, want %d events over several segments", rep, len(acked))
	}
	synced := filepath.Join(t.TempDir(), "synced")
	if _, err := s.Snapshot(ctx, synced); !errors.Is(err, errorfs.EIO) {
		t.Fatalf("Snapshot while every sync fails: %v, want EIO (its copies are synced)", err)
	}
	if _, err := os.Stat(synced); !os.IsNotExist(err) {
		t.Fatalf("a failed Snapshot left %s behind (%v)", synced, err)
	}
	efs.Clear()
	holdsAll(t, s, acked)
	mustAppend(t, s, mustCoord(t, "after", "s"), faultKind, `{}`) // the store's own syncs were not touched
	cp := openWith(t, testConfig(staged))
	holdsAll(t, cp, acked)
	mustVerify(t, cp)
}

// A store syncing every group adds a group's index entries while its
// fdatasync runs, and must still show no reader an event before that sync
// has returned: a reader started during the sync sees the group only once
// the sync is over.
func TestNoEventVisibleBeforeItsSync(t *testing.T) {
	s, efs, _ := openFaulty(t)
	acked := appendN(t, s, "e", 0, 3)
	c := mustCoord(t, "e", "s")
	var hookDone atomic.Bool
	type seen struct {
		n      int
		before bool // the read returned before the sync did
		err    error
	}
	reads := make(chan seen, 1)
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Pass: true, Hook: func() {
		// The writer adds the group's entries meanwhile; the reader
		// starts after that and runs while the sync is held.
		time.Sleep(20 * time.Millisecond)
		go func() {
			evs, err := s.Query(core.All())
			reads <- seen{n: len(evs), before: !hookDone.Load(), err: err}
		}()
		time.Sleep(30 * time.Millisecond)
		hookDone.Store(true)
	}})
	items := syncedWhilePublished(c)
	if _, err := s.AppendBatch(context.Background(), items); err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	r := <-reads
	if r.err != nil {
		t.Fatalf("Query during the sync: %v", r.err)
	}
	if r.n != len(acked) && r.before {
		t.Fatalf("a read that returned during the batch's sync saw %d events, want the %d synced before it", r.n, len(acked))
	}
	if got := len(mustQuery(t, s, core.All())); got != len(acked)+len(items) {
		t.Fatalf("after the batch: %d events, want %d", got, len(acked)+len(items))
	}
}

// A group whose fdatasync fails is never shown: its entries, added to the
// index while the sync ran, are taken out again before any reader can
// look, in every place a query finds events (all, entity stream, scope,
// kind) and in the store's counts.
func TestFailedSyncShowsNothingOfItsGroup(t *testing.T) {
	s, efs, _ := openFaulty(t)
	acked := appendN(t, s, "e", 0, 3)
	c := mustCoord(t, "e", "s")
	f := efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Err: errorfs.EIO})
	items := syncedWhilePublished(c)
	for i := range items {
		items[i].Options.IdempotencyKey = fmt.Sprintf("k%d", i)
	}
	if _, err := s.AppendBatch(context.Background(), items); !errors.Is(err, errorfs.EIO) {
		t.Fatalf("AppendBatch with a failing fdatasync: err %v, want EIO", err)
	}
	if efs.Fired(f) != 1 {
		t.Fatalf("fault fired %d times, want 1", efs.Fired(f))
	}
	for name, q := range map[string]core.Region{"all": core.All(), "entity": core.All().WithExactEntity("e"), "scope": core.Scope("s"), "kind": core.All().WithKind(faultKind)} {
		if got := len(mustQuery(t, s, q)); got != len(acked) {
			t.Fatalf("%s after the failed sync: %d events, want the %d acknowledged", name, got, len(acked))
		}
	}
	if st := s.Stats(); st.Events != uint64(len(acked)) || st.GlobalSequence != uint64(len(acked)) {
		t.Fatalf("Stats() after the failed sync: %d events, global sequence %d; want %d and %d", st.Events, st.GlobalSequence, len(acked), len(acked))
	}
	holdsAll(t, s, acked)
}

// A slow fdatasync holds up writes, never reads: while a large group's
// sync takes 400 ms, a Get of an event written before it answers at once,
// and the group is published (whole) once its sync returns.
func TestSlowSyncDoesNotBlockReads(t *testing.T) {
	s, efs, _ := openFaulty(t)
	acked := appendN(t, s, "e", 0, 3)
	c := mustCoord(t, "e", "s")
	type read struct {
		took time.Duration
		n    int
		err  error
	}
	reads := make(chan read, 1)
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Pass: true, Hook: func() {
		time.Sleep(20 * time.Millisecond) // the writer has inserted and waits
		go func() {
			start := time.Now()
			_, err := s.Get(acked[0].ID)
			n := 0
			if err == nil {
				var evs []core.StoredEvent
				evs, err = s.Query(core.All())
				n = len(evs)
			}
			reads <- read{took: time.Since(start), n: n, err: err}
		}()
		time.Sleep(400 * time.Millisecond)
	}})
	items := syncedWhilePublished(c)
	if _, err := s.AppendBatch(context.Background(), items); err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	r := <-reads
	if r.err != nil {
		t.Fatalf("reads during the slow sync: %v", r.err)
	}
	if r.took > 200*time.Millisecond {
		t.Fatalf("a Get and a Query during a 400 ms fdatasync took %v: reads waited for the sync", r.took)
	}
	if r.n != len(acked) {
		t.Fatalf("a Query during the sync saw %d events, want the %d synced before it", r.n, len(acked))
	}
	if got := len(mustQuery(t, s, core.All())); got != len(acked)+len(items) {
		t.Fatalf("after the slow sync: %d events, want %d", got, len(acked)+len(items))
	}
}

// syncedWhilePublished is a batch of 40 events to c: a group large enough
// to be inserted into the index while its fsync runs.
func syncedWhilePublished(c core.Coordinate) []core.BatchItem {
	items := make([]core.BatchItem, 40)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: faultKind, Payload: []byte(payloadN(10 + i))}
	}
	return items
}
