package core_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

// The durability table of core/doc.go, row by row, on a strict in-memory
// file system: CrashClone keeps only what was synced (file contents and
// directory entries), as a power loss would. A SIGKILL keeps the page
// cache, so only this can tell a skipped fsync.

const memStoreDir = "/data/store" // its parent is not synced by the test

func memConfig(adjust func(*core.Config)) core.Config {
	cfg := testConfig(memStoreDir)
	cfg.SegmentMaxBytes = 64 << 10
	cfg.SingleAppendMaxBytes = 4 << 10
	adjust(&cfg)
	return cfg
}

func openMem(t *testing.T, cfg core.Config, fsys vfs.FS) *core.Store {
	t.Helper()
	s, err := core.OpenWithFS(cfg, fsys)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// afterPowerLoss opens what a power loss at this instant would leave of
// mem (the store on mem stays open and untouched).
func afterPowerLoss(t *testing.T, cfg core.Config, mem *vfs.MemFS) *core.Store {
	t.Helper()
	return openMem(t, cfg, mem.CrashClone())
}

// survivors returns how many of rs the store holds and fails unless they
// are a prefix of rs (a power loss loses the newest events only).
func survivors(t *testing.T, s *core.Store, rs []core.Receipt) int {
	t.Helper()
	n := 0
	for i, r := range rs {
		_, err := s.Get(r.ID)
		switch {
		case err == nil && n < i:
			t.Fatalf("event %d survived the power loss but event %d before it did not", i, n)
		case err == nil:
			n++
		case !errors.Is(err, core.ErrNotFound):
			t.Fatalf("Get: %v", err)
		}
	}
	return n
}

func TestPowerLossEveryEventSyncedLosesNothingAcknowledged(t *testing.T) {
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	s := openMem(t, cfg, mem)
	var acked []core.Receipt
	// Enough to rotate segments (and have the sealer write footers).
	for i := range 16 {
		acked = append(acked, appendN(t, s, "e", i*10, 10)...)
		acked = append(acked, mustAppend(t, s, mustCoord(t, "big", "s"), faultKind, `{"pad":"`+strings.Repeat("z", 3000)+`"}`))
		acked = append(acked, mustAppend(t, s, mustCoord(t, "big", "s"), faultKind, `{"pad":"`+strings.Repeat("z", 3000)+`"}`))
		if got := survivors(t, afterPowerLoss(t, cfg, mem), acked); got != len(acked) {
			t.Fatalf("after %d acknowledged events a power loss kept %d", len(acked), got)
		}
		c := mustCoord(t, "b", "s")
		rs, err := s.AppendBatch(context.Background(), []core.BatchItem{
			{Coordinate: c, Kind: faultKind, Payload: []byte(`{"pad":"x"}`)},
			{Coordinate: c, Kind: faultKind, Payload: []byte(`{}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, rs...)
	}
	if st := s.Stats(); st.Segments < 2 {
		t.Fatalf("the test wrote %d segments, want a rotation", st.Segments)
	}
	got := afterPowerLoss(t, cfg, mem)
	if n := survivors(t, got, acked); n != len(acked) {
		t.Fatalf("a power loss kept %d of %d acknowledged events", n, len(acked))
	}
	mustVerify(t, got)
}

func TestPowerLossEveryNEventsLosesAtMostTwoN(t *testing.T) {
	const n = 8
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = n; c.Sync.Interval = 0 })
	s := openMem(t, cfg, mem)
	var acked []core.Receipt
	for i := range 100 {
		acked = append(acked, appendN(t, s, "e", i, 1)...)
		kept := survivors(t, afterPowerLoss(t, cfg, mem), acked)
		if lost := len(acked) - kept; lost > 2*n {
			t.Fatalf("EveryNEvents=%d: a power loss after %d events lost %d, more than 2N", n, len(acked), lost)
		}
	}
}

// openHoldingFirstSync opens a store with cfg on a strict in-memory file
// system whose first segment sync after Open is held inside the call:
// held is closed when it starts, and it goes on once release is closed.
func openHoldingFirstSync(t *testing.T, cfg core.Config) (s *core.Store, mem *vfs.MemFS, held, release chan struct{}) {
	t.Helper()
	mem = vfs.NewStrictMem()
	efs := errorfs.Wrap(mem)
	s = openMem(t, cfg, efs)
	held, release = make(chan struct{}), make(chan struct{})
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Pass: true, Hook: func() {
		close(held)
		<-release
	}})
	return s, mem, held, release
}

// While a background sync runs (held here inside its fdatasync), the
// writer goes on answering appends until the events not yet on stable
// storage reach 2N: the N of the running sync and N more. It waits for the
// running sync only before it writes beyond that, and a power loss at that
// moment loses no more than 2N acknowledged events.
func TestPowerLossWhileABackgroundSyncRuns(t *testing.T) {
	const n = 8
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = n; c.Sync.Interval = 0 })
	s, mem, held, release := openHoldingFirstSync(t, cfg)
	var mu sync.Mutex
	var acked []core.Receipt
	ackedSoFar := func() []core.Receipt {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(acked)
	}
	done := make(chan error, 1)
	c := mustCoord(t, "e", "s")
	go func() {
		for i := range 4 * n {
			r, err := s.Append(context.Background(), c, faultKind, []byte(`{"i":`+strings.Repeat("1", i+1)+`}`))
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			acked = append(acked, r)
			mu.Unlock()
		}
		done <- nil
	}()
	<-held
	deadline := time.Now().Add(10 * time.Second)
	for len(ackedSoFar()) < 2*n {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("with a sync of %d events running, %d appends were answered; want %d before the writer waits", n, len(ackedSoFar()), 2*n)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	stalled := ackedSoFar()
	if len(stalled) != 2*n {
		close(release)
		t.Fatalf("with a sync of %d events running, %d appends were answered; want the writer to wait at %d", n, len(stalled), 2*n)
	}
	if lost := len(stalled) - survivors(t, afterPowerLoss(t, cfg, mem), stalled); lost > 2*n {
		t.Fatalf("a power loss during the sync lost %d acknowledged events, more than 2N", lost)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Append after the sync returned: %v", err)
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if kept := survivors(t, afterPowerLoss(t, cfg, mem), ackedSoFar()); kept != 4*n {
		t.Fatalf("after Sync a power loss kept %d of %d events", kept, 4*n)
	}
}

// Groups larger than 2N are not answered while the sync before them
// runs: a group whose events, with those of the running sync, would put
// more than 2N acknowledged events at risk waits for it, so a power loss
// then loses the running sync's group only.
func TestPowerLossWhileABackgroundSyncRunsUnderLargeGroups(t *testing.T) {
	const n, group = 8, 24
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = n; c.Sync.Interval = 0 })
	s, mem, held, release := openHoldingFirstSync(t, cfg)
	var mu sync.Mutex
	var acked []core.Receipt
	done := make(chan error, 1)
	c := mustCoord(t, "e", "s")
	go func() {
		for range 3 {
			items := make([]core.BatchItem, group)
			for i := range items {
				items[i] = core.BatchItem{Coordinate: c, Kind: faultKind, Payload: []byte(`{}`)}
			}
			rs, err := s.AppendBatch(context.Background(), items)
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			acked = append(acked, rs...)
			mu.Unlock()
		}
		done <- nil
	}()
	<-held
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	stalled := slices.Clone(acked)
	mu.Unlock()
	if len(stalled) != group {
		close(release)
		t.Fatalf("with the sync of a %d-event batch running, %d events were acknowledged; want that batch's only", group, len(stalled))
	}
	if lost := len(stalled) - survivors(t, afterPowerLoss(t, cfg, mem), stalled); lost > group {
		t.Fatalf("a power loss during the sync lost %d acknowledged events, more than the group being synced", lost)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("AppendBatch after the sync returned: %v", err)
	}
}

func TestPowerLossIntervalLosesOnlyTheLastInterval(t *testing.T) {
	const d = 20 * time.Millisecond
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = 0; c.Sync.Interval = d })
	s := openMem(t, cfg, mem)
	acked := appendN(t, s, "e", 0, 20)
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(5 * d) // well past the interval
		kept := survivors(t, afterPowerLoss(t, cfg, mem), acked)
		if kept == len(acked) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Interval=%v: %d of %d events acknowledged long before the power loss were lost", d, len(acked)-kept, len(acked))
		}
	}
}

func TestPowerLossSyncAndCloseLoseNothingWrittenBefore(t *testing.T) {
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = 0; c.Sync.Interval = 0 })
	s := openMem(t, cfg, mem)
	acked := appendN(t, s, "e", 0, 30)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	more := appendN(t, s, "e", 30, 5) // unsynced: may be lost
	if kept := survivors(t, afterPowerLoss(t, cfg, mem), append(acked, more...)); kept < len(acked) {
		t.Fatalf("a power loss after Sync kept %d of the %d events written before it", kept, len(acked))
	}
	acked = append(acked, more...)
	acked = append(acked, appendN(t, s, "e", 35, 5)...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got := afterPowerLoss(t, cfg, mem)
	if kept := survivors(t, got, acked); kept != len(acked) {
		t.Fatalf("a power loss after Close kept %d of the %d events written before it", kept, len(acked))
	}
	mustVerify(t, got)
}

func TestPowerLossCursorNeverAheadOfItsEvents(t *testing.T) {
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents = 0; c.Sync.Interval = 0 })
	s := openMem(t, cfg, mem)
	cur, err := s.NamedCursor("c1", core.All())
	if err != nil {
		t.Fatal(err)
	}
	var acked []core.Receipt
	for round := range 3 {
		acked = append(acked, appendN(t, s, "e", round*10, 10)...) // unsynced
		if evs, err := cur.Poll(100); err != nil || len(evs) != 10 {
			t.Fatalf("Poll: %d, %v", len(evs), err)
		}
		if err := cur.Commit(); err != nil {
			t.Fatal(err)
		}
		got := afterPowerLoss(t, cfg, mem) // fails with *CursorAheadError if ahead
		kept := survivors(t, got, acked)
		c2, err := got.NamedCursor("c1", core.All())
		if err != nil {
			t.Fatal(err)
		}
		// The commit's position and every event before it are durable.
		if c2.Committed() != uint64(len(acked)) || kept != len(acked) {
			t.Fatalf("after a commit at %d and a power loss: cursor at %d, %d events kept", len(acked), c2.Committed(), kept)
		}
	}
}
