package core_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

// TestReactRedeliveryKeepsTheFirstAnswer: a React function whose answer
// changes from one call to the next (a clock in the payload, one more
// reaction the second time) is redelivered a source after a transient
// failure: the reactions written the first time stand, none is written
// twice, and the worker goes on to the later sources instead of failing
// on the idempotency keys until its restart budget is spent.
func TestReactRedeliveryKeepsTheFirstAnswer(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := mustCoord(t, "order:1", "shop")
	for i := range 6 {
		mustAppend(t, s, src, core.MustKind(1, 1), payloadN(i))
	}
	out := mustCoord(t, "ship:1", "shop")
	var failed atomic.Bool
	var calls atomic.Int64
	budget := core.RestartBounded(3, time.Minute)
	w, err := s.React(ctx, core.All().WithKind(core.MustKind(1, 1)), core.WorkerConfig{Name: "shipper", Restart: &budget},
		func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			n := calls.Add(1)
			if ev.GlobalSequence == 3 && failed.CompareAndSwap(false, true) {
				return nil, errors.New("a network blip") // sources 0-2 are redelivered
			}
			rs := []core.Reaction{{Coordinate: out, Kind: core.MustKind(2, 1), Payload: fmt.Appendf(nil, `{"at":%d}`, time.Now().UnixNano())}}
			if n > 4 && ev.GlobalSequence == 1 {
				rs = append(rs, rs[0]) // more reactions than the first time
			}
			return rs, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Stop(); _ = w.Join() }()
	eventually(t, "a reaction to each of 6 sources", func() bool {
		return len(mustQuery(t, s, core.All().WithKind(core.MustKind(2, 1)))) >= 6
	})
	time.Sleep(50 * time.Millisecond) // a reaction written twice would show now
	select {
	case <-w.Done():
		t.Fatalf("the reactor ended: %v", w.Join())
	default:
	}
	per := map[core.EventID]int{}
	for _, r := range mustQuery(t, s, core.All().WithKind(core.MustKind(2, 1))) {
		per[r.Header.CausationID]++
	}
	srcs := mustQuery(t, s, core.All().WithKind(core.MustKind(1, 1)))
	for _, ev := range srcs {
		if per[ev.Header.ID] != 1 {
			t.Errorf("source %d has %d reactions, want 1", ev.GlobalSequence, per[ev.Header.ID])
		}
	}
	if w.Restarts() != 1 {
		t.Errorf("restarts: %d, want 1 (the blip)", w.Restarts())
	}
}

// TestReactCommitFollowsItsReactions: on a store that syncs every 1000
// events, a power loss just after a reactor committed its position keeps
// the reactions that position stands for: the commit makes the log
// durable up to what the reactor wrote, not only up to its sources.
func TestReactCommitFollowsItsReactions(t *testing.T) {
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.Interval = time.Hour }) // no timer syncs during the test
	s := openMem(t, cfg, mem)
	ctx := context.Background()
	src := mustCoord(t, "order:1", "shop")
	for i := range 5 {
		mustAppend(t, s, src, core.MustKind(1, 1), payloadN(i))
	}
	if err := s.Sync(ctx); err != nil { // the sources are durable, as an idle interval leaves them
		t.Fatal(err)
	}
	out := mustCoord(t, "ship:1", "shop")
	w, err := s.React(ctx, core.All().WithKind(core.MustKind(1, 1)), core.WorkerConfig{Name: "shipper"},
		func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			return []core.Reaction{{Coordinate: out, Kind: core.MustKind(2, 1), Payload: []byte(`{}`)}}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reactor's commit of 5 sources", func() bool {
		c, err := s.NamedCursor("shipper", core.All())
		return err == nil && c.Committed() == 5
	})
	w.Stop()
	_ = w.Join()

	after := afterPowerLoss(t, cfg, mem) // the power goes now
	c, err := after.NamedCursor("shipper", core.All())
	if err != nil {
		t.Fatal(err)
	}
	if rs := mustQuery(t, after, core.All().WithKind(core.MustKind(2, 1))); c.Committed() > 0 && len(rs) < int(c.Committed()) {
		t.Fatalf("after the power loss the reactor's position covers %d sources but %d reactions survived: the rest are lost for good", c.Committed(), len(rs))
	}
}

const reactChildEnv = "BATPAK_REACT_CHILD"

// TestReactChildProcess is the child of TestReactSurvivesKills: it opens
// the store at $BATPAK_REACT_CHILD and runs a reactor whose payloads
// carry a clock reading; with BATPAK_REACT_MODE=write it also appends
// sources until it is killed, with "drain" it exits once the reactor has
// caught up (or ended: it prints why). It does nothing without the
// variable.
func TestReactChildProcess(t *testing.T) {
	dir := os.Getenv(reactChildEnv)
	if dir == "" {
		return
	}
	s, err := core.Open(testConfig(dir))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	ctx := context.Background()
	out, _ := core.NewCoordinate("ship:1", "shop")
	w, err := s.React(ctx, core.All().WithKind(core.MustKind(1, 1)), core.WorkerConfig{Name: "shipper", BatchSize: 16},
		func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			return []core.Reaction{{Coordinate: out, Kind: core.MustKind(2, 1), Payload: fmt.Appendf(nil, `{"at":%d}`, time.Now().UnixNano())}}, nil
		})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	fmt.Println("READY")
	if os.Getenv("BATPAK_REACT_MODE") == "drain" {
		deadline := time.After(30 * time.Second)
		for {
			select {
			case <-w.Done():
				fmt.Println("ENDED", strings.ReplaceAll(fmt.Sprint(w.Join()), "\n", " "))
				os.Exit(0)
			case <-deadline:
				fmt.Println("BEHIND")
				os.Exit(0)
			case <-time.After(20 * time.Millisecond):
				srcs, err := s.Query(core.All().WithKind(core.MustKind(1, 1)))
				c, _ := s.NamedCursor("shipper", core.All())
				if err == nil && len(srcs) > 0 && c.Committed() > srcs[len(srcs)-1].GlobalSequence {
					fmt.Println("CAUGHT-UP")
					_ = s.Close()
					os.Exit(0)
				}
			}
		}
	}
	src, _ := core.NewCoordinate("order:1", "shop")
	for {
		items := make([]core.BatchItem, 8)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: src, Kind: core.MustKind(1, 1), Payload: []byte(`{}`)}
		}
		if _, err := s.AppendBatch(ctx, items); err != nil {
			fmt.Println("ERR", err)
			os.Exit(3)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReactSurvivesKills: a reactor whose answers carry a clock reading,
// its process killed with SIGKILL six times at random moments while
// sources arrive (a kill between a source's reactions and the commit of
// its position redelivers it): afterwards it catches up, and every
// source has exactly one reaction.
func TestReactSurvivesKills(t *testing.T) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	start := func(mode string) (*exec.Cmd, *bufio.Scanner) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReactChildProcess$")
		cmd.Env = append(os.Environ(), reactChildEnv+"="+dir, "BATPAK_REACT_MODE="+mode)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || sc.Text() != "READY" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("child (seed %d): %q", seed, sc.Text())
		}
		return cmd, sc
	}
	for range 6 {
		cmd, _ := start("write")
		time.Sleep(time.Duration(50+rng.IntN(250)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
	}
	cmd, sc := start("drain")
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	_ = cmd.Wait()
	if last != "CAUGHT-UP" {
		t.Fatalf("seed %d: the reactor did not catch up after the kills: %s", seed, last)
	}
	s := openWith(t, testConfig(dir))
	srcs := mustQuery(t, s, core.All().WithKind(core.MustKind(1, 1)))
	per := map[core.EventID]int{}
	for _, r := range mustQuery(t, s, core.All().WithKind(core.MustKind(2, 1))) {
		per[r.Header.CausationID]++
	}
	for _, ev := range srcs {
		if per[ev.Header.ID] != 1 {
			t.Errorf("seed %d: source %d has %d reactions, want 1", seed, ev.GlobalSequence, per[ev.Header.ID])
		}
	}
	t.Logf("%d sources, each reacted to once, across 6 kills", len(srcs))
}

// TestReactorsSharingKeysStillFail: two unnamed reactors share one key
// space; the second one's reactions, for another place, are not taken for
// the first one's answer redelivered: it fails loudly (an
// *IdempotencyError naming the place) rather than write nothing.
func TestReactorsSharingKeysStillFail(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := mustCoord(t, "order:1", "shop")
	for i := range 3 {
		mustAppend(t, s, src, core.MustKind(1, 1), payloadN(i))
	}
	reactor := func(out core.Coordinate) func(context.Context, core.StoredEvent) ([]core.Reaction, error) {
		return func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			return []core.Reaction{{Coordinate: out, Kind: core.MustKind(2, 1), Payload: []byte(`{}`)}}, nil
		}
	}
	region := core.All().WithKind(core.MustKind(1, 1))
	w1, err := s.React(ctx, region, core.WorkerConfig{}, reactor(mustCoord(t, "invoice:1", "shop")))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the invoices", func() bool { return len(mustQuery(t, s, core.All().WithEntity("invoice:1"))) == 3 })
	w1.Stop()
	_ = w1.Join()
	none := core.RestartNever()
	w2, err := s.React(ctx, region, core.WorkerConfig{Restart: &none}, reactor(mustCoord(t, "shipment:1", "shop")))
	if err != nil {
		t.Fatal(err)
	}
	var ie *core.IdempotencyError
	if err := joinWithin(t, w2); !errors.As(err, &ie) {
		t.Fatalf("the second unnamed reactor ended with %v, want an *IdempotencyError", err)
	}
}

// TestWorkerWritingNothingAddsNoSync: on a store that syncs every 1000
// events, a named worker whose handler writes nothing commits positions
// already durable without syncing the rest of the log (other writers'
// events past its position), however often it commits.
func TestWorkerWritingNothingAddsNoSync(t *testing.T) {
	efs := errorfs.Wrap(vfs.Default())
	cfg := testConfig(t.TempDir())
	cfg.Sync.EveryNEvents, cfg.Sync.Interval = 1000, time.Hour
	s, err := core.OpenWithFS(cfg, efs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	mine, theirs := mustCoord(t, "order:1", "shop"), mustCoord(t, "audit:1", "ops")
	for i := range 100 {
		mustAppend(t, s, mine, core.MustKind(1, 1), payloadN(i))
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustAppend(t, s, theirs, core.MustKind(3, 1), payloadN(i)) // not yet durable
	}
	var segSyncs atomic.Int64
	efs.Inject(errorfs.Fault{Op: errorfs.OpSync, Pattern: "*.seg", Persist: true, Pass: true, Hook: func() { segSyncs.Add(1) }})
	w, err := s.CursorWorker(ctx, core.All().WithEntity("order:1"), core.WorkerConfig{Name: "reader", BatchSize: 10},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) { return core.Continue, nil })
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reader's commit of its 100 events", func() bool {
		c, err := s.NamedCursor("reader", core.All())
		return err == nil && c.Committed() >= 100
	})
	w.Stop()
	_ = w.Join()
	if n := segSyncs.Load(); n != 0 {
		t.Fatalf("a worker writing nothing synced the log %d times for its 10 commits", n)
	}
}

// TestReactKeptReactionsDurableBeforeTheCommit: a named reactor writes
// source 1's reaction, fails once on source 2 (the batch is redelivered),
// answers source 1 otherwise the second time (its reaction is kept) and
// source 2 with nothing: the position committed past both is made
// durable only after the kept reaction, so a power loss never keeps the
// position and loses the reaction.
func TestReactKeptReactionsDurableBeforeTheCommit(t *testing.T) {
	mem := vfs.NewStrictMem()
	cfg := memConfig(func(c *core.Config) { c.Sync.EveryNEvents, c.Sync.Interval = 1000, time.Hour })
	s := openMem(t, cfg, mem)
	ctx := context.Background()
	src := mustCoord(t, "order:1", "shop")
	for i := range 12 {
		mustAppend(t, s, src, core.MustKind(1, 1), fmt.Sprintf(`{"n":%d}`, i))
	}
	block := make(chan struct{})
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	var ev2fails atomic.Bool
	ev2fails.Store(true)
	out := mustCoord(t, "invoice:1", "shop")
	pol := core.RestartBounded(5, time.Minute)
	w, err := s.React(ctx, core.All().WithKind(core.MustKind(1, 1)), core.WorkerConfig{Name: "r", BatchSize: 2, Restart: &pol},
		func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			n := calls.Add(1)
			if ev.Header.Clock == 0 {
				return []core.Reaction{{Coordinate: out, Kind: core.MustKind(2, 1), Payload: []byte(fmt.Sprintf(`{"call":%d}`, n))}}, nil
			}
			if ev.Header.Clock >= 2 {
				<-block
				return nil, nil
			}
			if ev2fails.Swap(false) {
				return nil, errors.New("transient")
			}
			return nil, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the commit past both sources", func() bool {
		c, err := s.NamedCursor("r", core.All())
		return err == nil && c.Committed() >= 2
	})
	time.Sleep(50 * time.Millisecond)
	after := afterPowerLoss(t, cfg, mem)
	c, err := after.NamedCursor("r", core.All())
	if err != nil {
		t.Fatal(err)
	}
	inv := mustQuery(t, after, core.All().WithEntity("invoice:1"))
	close(block)
	w.Stop()
	_ = w.Join()
	if c.Committed() >= 1 && len(inv) == 0 {
		t.Fatalf("power loss kept the reactor's position past ev1 (%d) but lost ev1's reaction", c.Committed())
	}
}
