package core_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Cursor workers and React: a worker feeds a region's events to
// its handler in batches and commits after each; a failing handler
// (error or panic) is restarted from the last committed position within
// its budget; Stop, ctx and Close end it, and Join says why. React derives
// events with the right correlation and causation, atomically and without
// duplicates on redelivery.

// deliveryLog records what a handler was given.
type deliveryLog struct {
	mu    sync.Mutex
	count map[uint64]int
	order []uint64
}

func newDeliveryLog() *deliveryLog { return &deliveryLog{count: map[uint64]int{}} }

func (d *deliveryLog) add(batch []core.StoredEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ev := range batch {
		d.count[ev.GlobalSequence]++
		d.order = append(d.order, ev.GlobalSequence)
	}
}

func (d *deliveryLog) snapshot() (map[uint64]int, []uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.count), slices.Clone(d.order)
}

func (d *deliveryLog) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.count)
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// joinWithin joins w, failing the test if it does not end soon.
func joinWithin(t *testing.T, w *core.Worker) error {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("worker did not end")
	}
	return w.Join()
}

func mustWorker(t *testing.T, s *core.Store, ctx context.Context, r core.Region, cfg core.WorkerConfig, h core.Handler) *core.Worker {
	t.Helper()
	w, err := s.CursorWorker(ctx, r, cfg, h)
	if err != nil {
		t.Fatalf("CursorWorker: %v", err)
	}
	t.Cleanup(func() { w.Stop(); <-w.Done() })
	return w
}

func appendEvents(t *testing.T, s *core.Store, entity string, n int) []core.Receipt {
	t.Helper()
	c := mustCoord(t, entity, "s")
	var rs []core.Receipt
	for i := 0; i < n; i++ {
		rs = append(rs, mustAppend(t, s, c, kindA, payloadN(i)))
	}
	return rs
}

func restartPolicy(p core.RestartPolicy) *core.RestartPolicy { return &p }

var errHandlerFailed = errors.New("handler failed")

func TestWorkerAtLeastOnce(t *testing.T) {
	for _, how := range []string{"panic", "error"} {
		t.Run(how, func(t *testing.T) {
			s := openStore(t)
			appendEvents(t, s, "w:1", 5)
			d := newDeliveryLog()
			failed := false
			w := mustWorker(t, s, context.Background(), core.Entity("w:"), core.WorkerConfig{BatchSize: 1},
				func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
					if len(b) != 1 {
						return core.Stop, fmt.Errorf("batch of %d", len(b))
					}
					d.add(b)
					switch seq := b[0].GlobalSequence; {
					case seq == 1 && !failed:
						failed = true
						if how == "panic" {
							panic("boom")
						}
						return core.Continue, errHandlerFailed
					case seq == 2:
						return core.Stop, nil
					}
					return core.Continue, nil
				})
			if err := joinWithin(t, w); err != nil {
				t.Fatalf("Join: %v", err)
			}
			count, order := d.snapshot()
			if fmt.Sprint(count) != "map[0:1 1:2 2:1]" || !slices.Equal(order, []uint64{0, 1, 1, 2}) {
				t.Fatalf("deliveries %v in order %v, want map[0:1 1:2 2:1]", count, order)
			}
			if w.Restarts() != 1 {
				t.Fatalf("Restarts = %d, want 1", w.Restarts())
			}
		})
	}
}

// TestWorkerRestartsFromCommitted: a failure redelivers the batch that
// failed, not the batches committed before it.
func TestWorkerRestartsFromCommitted(t *testing.T) {
	s := openStore(t)
	appendEvents(t, s, "w:1", 10)
	d := newDeliveryLog()
	var calls []uint64 // first sequence of each call
	w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{BatchSize: 3, Restart: restartPolicy(core.RestartBounded(5, time.Hour))},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			calls = append(calls, b[0].GlobalSequence)
			d.add(b)
			if b[0].GlobalSequence == 6 && len(calls) < 6 {
				return core.Continue, errHandlerFailed
			}
			if b[len(b)-1].GlobalSequence == 9 {
				return core.Stop, nil
			}
			return core.Continue, nil
		})
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{0, 3, 6, 6, 6, 6, 9}; !slices.Equal(calls, want) {
		t.Fatalf("batches started at %v, want %v", calls, want)
	}
	if w.Restarts() != 3 {
		t.Fatalf("Restarts = %d, want 3", w.Restarts())
	}
}

// failingWorker runs a worker whose handler fails (by error or panic, as
// fail says) on every delivery of sequence 1 until it has failed
// failures times, and stops at sequence 3. It returns the deliveries of
// sequence 1, the worker and Join's error.
func failingWorker(t *testing.T, p *core.RestartPolicy, failures int, fail func(n int) error) (int, *core.Worker, error) {
	t.Helper()
	s := openStore(t)
	appendEvents(t, s, "w:1", 5)
	n := 0
	w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{BatchSize: 1, Restart: p},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			switch b[0].GlobalSequence {
			case 1:
				n++
				if n <= failures {
					return core.Continue, fail(n)
				}
			case 3:
				return core.Stop, nil
			}
			return core.Continue, nil
		})
	err := joinWithin(t, w)
	// the store stays writable whatever the handler did
	mustAppend(t, s, mustCoord(t, "after", "s"), kindA, `{}`)
	return n, w, err
}

func failingWith(err error) func(int) error { return func(int) error { return err } }

func panickingHandler(int) error { panic("handler panic") }

func expectWorkerError(t *testing.T, err error, restarts int, cause error) {
	t.Helper()
	var we *core.WorkerError
	if !errors.As(err, &we) {
		t.Fatalf("Join = %v, want a *WorkerError", err)
	}
	if we.Restarts != restarts {
		t.Fatalf("WorkerError.Restarts = %d, want %d", we.Restarts, restarts)
	}
	if !errors.Is(err, cause) {
		t.Fatalf("Join = %v, want it to wrap %v", err, cause)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(restarts)) {
		t.Fatalf("message %q does not give the restart count", err)
	}
}

func TestWorkerRestartBudgets(t *testing.T) {
	t.Run("once by default", func(t *testing.T) {
		n, w, err := failingWorker(t, nil, 100, failingWith(errHandlerFailed))
		expectWorkerError(t, err, 1, errHandlerFailed)
		if n != 2 || w.Restarts() != 1 {
			t.Fatalf("%d deliveries, %d restarts; want 2, 1", n, w.Restarts())
		}
	})
	t.Run("once recovers", func(t *testing.T) {
		n, _, err := failingWorker(t, restartPolicy(core.RestartOnce()), 1, failingWith(errHandlerFailed))
		if err != nil || n != 2 {
			t.Fatalf("Join = %v after %d deliveries", err, n)
		}
	})
	t.Run("once, panics", func(t *testing.T) {
		n, _, err := failingWorker(t, restartPolicy(core.RestartOnce()), 100, panickingHandler)
		expectWorkerError(t, err, 1, core.ErrHandlerPanic)
		if !strings.Contains(err.Error(), "handler panic") {
			t.Fatalf("message %q does not carry the panic value", err)
		}
		if n != 2 {
			t.Fatalf("%d deliveries, want 2", n)
		}
	})
	t.Run("never", func(t *testing.T) {
		n, w, err := failingWorker(t, restartPolicy(core.RestartNever()), 100, panickingHandler)
		expectWorkerError(t, err, 0, core.ErrHandlerPanic)
		if n != 1 || w.Restarts() != 0 {
			t.Fatalf("%d deliveries, %d restarts; want 1, 0", n, w.Restarts())
		}
	})
	t.Run("bounded allows max", func(t *testing.T) {
		// error, panic, error: three failures, three restarts, then it works.
		n, w, err := failingWorker(t, restartPolicy(core.RestartBounded(3, time.Hour)), 3, func(n int) error {
			if n == 2 {
				panic("second failure panics")
			}
			return errHandlerFailed
		})
		if err != nil || n != 4 || w.Restarts() != 3 {
			t.Fatalf("Join = %v after %d deliveries and %d restarts; want nil, 4, 3", err, n, w.Restarts())
		}
	})
	t.Run("bounded exhausted", func(t *testing.T) {
		n, w, err := failingWorker(t, restartPolicy(core.RestartBounded(3, time.Hour)), 100, failingWith(errHandlerFailed))
		expectWorkerError(t, err, 3, errHandlerFailed)
		if n != 4 || w.Restarts() != 3 {
			t.Fatalf("%d deliveries, %d restarts; want 4, 3", n, w.Restarts())
		}
	})
	t.Run("bounded window", func(t *testing.T) {
		// One restart per 20 ms, failures 40 ms apart: never exhausted.
		n, w, err := failingWorker(t, restartPolicy(core.RestartBounded(1, 20*time.Millisecond)), 4, func(int) error {
			time.Sleep(40 * time.Millisecond)
			return errHandlerFailed
		})
		if err != nil || n != 5 || w.Restarts() != 4 {
			t.Fatalf("Join = %v after %d deliveries and %d restarts; want nil, 5, 4", err, n, w.Restarts())
		}
	})
	t.Run("bounded window exhausted", func(t *testing.T) {
		_, _, err := failingWorker(t, restartPolicy(core.RestartBounded(1, time.Hour)), 100, func(int) error {
			time.Sleep(time.Millisecond)
			return errHandlerFailed
		})
		expectWorkerError(t, err, 1, errHandlerFailed)
	})
}

func TestWorkerStopAndContext(t *testing.T) {
	s := openStore(t)
	appendEvents(t, s, "w:1", 3)
	idle := func(context.Context, []core.StoredEvent) (core.WorkerAction, error) { return core.Continue, nil }

	t.Run("Stop", func(t *testing.T) {
		w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{}, idle)
		time.Sleep(20 * time.Millisecond)
		select {
		case <-w.Done():
			t.Fatal("worker ended by itself")
		default:
		}
		w.Stop()
		w.Stop()
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join after Stop: %v", err)
		}
		if err := w.Join(); err != nil {
			t.Fatalf("second Join: %v", err)
		}
	})
	t.Run("ctx", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		w := mustWorker(t, s, ctx, core.All(), core.WorkerConfig{IdleSleep: time.Hour}, idle)
		time.Sleep(20 * time.Millisecond)
		cancel()
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join after cancel: %v", err)
		}
	})
	t.Run("Stop during a handler that honours ctx", func(t *testing.T) {
		// The handler's ctx error is the worker being stopped, not a failure.
		started := make(chan struct{})
		var once sync.Once
		w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{Restart: restartPolicy(core.RestartNever())},
			func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
				once.Do(func() { close(started) })
				<-ctx.Done()
				return core.Continue, ctx.Err()
			})
		<-started
		w.Stop()
		if err := joinWithin(t, w); err != nil {
			t.Fatalf("Join after Stop during the handler: %v", err)
		}
	})
	t.Run("handler Stop commits", func(t *testing.T) {
		d := newDeliveryLog()
		cfg := core.WorkerConfig{Name: "stopper", BatchSize: 2}
		h := func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			d.add(b)
			return core.Stop, nil
		}
		w := mustWorker(t, s, context.Background(), core.All(), cfg, h)
		if err := joinWithin(t, w); err != nil {
			t.Fatal(err)
		}
		w = mustWorker(t, s, context.Background(), core.All(), cfg, h)
		if err := joinWithin(t, w); err != nil {
			t.Fatal(err)
		}
		if _, order := d.snapshot(); !slices.Equal(order, []uint64{0, 1, 2}) {
			t.Fatalf("two Stop batches delivered %v, want [0 1 2]", order)
		}
	})
	t.Run("invalid name", func(t *testing.T) {
		if _, err := s.CursorWorker(context.Background(), core.All(), core.WorkerConfig{Name: "../x"}, idle); !isErr(err, core.ErrInvalidCursorName) {
			t.Fatalf("CursorWorker with a bad name: %v", err)
		}
	})
}

func TestWorkerFollowsAppends(t *testing.T) {
	s := openStore(t)
	d := newDeliveryLog()
	// IdleSleep is long: the worker must wake on the publication itself.
	w := mustWorker(t, s, context.Background(), core.Entity("src:"), core.WorkerConfig{IdleSleep: time.Hour},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			d.add(b)
			return core.Continue, nil
		})
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, mustCoord(t, "src:1", "s"), kindA, payloadN(i))
		mustAppend(t, s, mustCoord(t, "other", "s"), kindA, payloadN(i))
		want := i + 1
		eventually(t, fmt.Sprintf("delivery %d", want), func() bool { return d.len() == want })
	}
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	count, _ := d.snapshot()
	for seq, n := range count {
		if n != 1 {
			t.Fatalf("sequence %d delivered %d times", seq, n)
		}
	}
}

func TestWorkerHandlerWritesAndStoreStaysWritable(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	release := make(chan struct{})
	var blocked atomic.Bool
	w := mustWorker(t, s, ctx, core.Entity("src:"), core.WorkerConfig{BatchSize: 4},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			for _, ev := range b {
				if string(ev.Payload) == `{"block":true}` {
					blocked.Store(true)
					<-release
				}
				dst := mustCoord(t, "dst:"+strings.TrimPrefix(ev.Coordinate.Entity, "src:"), "s")
				if _, err := s.AppendReaction(ctx, dst, kindB, ev.Payload, ev.Header.CorrelationID, ev.Header.ID); err != nil {
					return core.Continue, err
				}
			}
			return core.Continue, nil
		})
	src := mustCoord(t, "src:1", "s")
	for i := 0; i < 30; i++ {
		mustAppend(t, s, src, kindA, payloadN(i))
	}
	eventually(t, "30 derived events", func() bool { return len(mustQuery(t, s, core.Entity("dst:"))) == 30 })
	// While the handler is stuck, others write freely.
	mustAppend(t, s, src, kindA, `{"block":true}`)
	eventually(t, "the handler to block", blocked.Load)
	for i := 0; i < 50; i++ {
		mustAppend(t, s, mustCoord(t, "free", "s"), kindA, payloadN(i))
	}
	close(release)
	eventually(t, "31 derived events", func() bool { return len(mustQuery(t, s, core.Entity("dst:"))) == 31 })
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	for _, ev := range mustQuery(t, s, core.Entity("dst:")) {
		src, err := s.Get(ev.Header.CausationID)
		if err != nil || string(src.Payload) != string(ev.Payload) {
			t.Fatalf("derived %s: cause %v, %v", ev.Payload, src.Payload, err)
		}
	}
}

func TestWorkerStoreClose(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		s := openStore(t)
		appendEvents(t, s, "w:1", 3)
		d := newDeliveryLog()
		w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{IdleSleep: time.Hour},
			func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
				d.add(b)
				return core.Continue, nil
			})
		eventually(t, "3 deliveries", func() bool { return d.len() == 3 })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := joinWithin(t, w); !isErr(err, core.ErrClosed) {
			t.Fatalf("Join after the store closed: %v, want ErrClosed", err)
		}
	})
	t.Run("in the handler", func(t *testing.T) {
		for _, p := range []core.RestartPolicy{core.RestartNever(), core.RestartOnce(), core.RestartBounded(100, time.Hour)} {
			s := openStore(t)
			appendEvents(t, s, "w:1", 3)
			inHandler := make(chan struct{})
			var once sync.Once
			w := mustWorker(t, s, context.Background(), core.All(), core.WorkerConfig{Restart: &p},
				func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
					once.Do(func() { close(inHandler) })
					time.Sleep(20 * time.Millisecond)
					_, err := s.Append(ctx, mustCoord(t, "out", "s"), kindB, []byte(`{}`))
					return core.Continue, err
				})
			<-inHandler
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// The handler failed because the store closed: that is not the
			// handler failing (no *WorkerError, whatever the budget).
			err := joinWithin(t, w)
			var we *core.WorkerError
			if err != nil && (!isErr(err, core.ErrClosed) || errors.As(err, &we)) {
				t.Fatalf("policy %+v: Join after the store closed under the handler: %v, want ErrClosed or nil", p, err)
			}
		}
	})
}

func TestWorkerFences(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	d := newDeliveryLog()
	var leaked atomic.Int32
	w := mustWorker(t, s, ctx, core.All(), core.WorkerConfig{BatchSize: 2},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
			for _, ev := range b {
				if strings.Contains(string(ev.Payload), "leak") {
					leaked.Add(1)
				}
			}
			d.add(b)
			return core.Continue, nil
		})
	c := mustCoord(t, "f:1", "s")
	mustAppend(t, s, c, kindA, `{}`)
	eventually(t, "the first event", func() bool { return d.len() == 1 })
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := f.Submit(ctx, c, kindA, []byte(payloadN(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	if n := d.len(); n != 1 {
		t.Fatalf("%d events delivered while the fence is open, want 1", n)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the committed events", func() bool { return d.len() == 5 })
	writeLeakingFence(t, s, c, kindA, 4)
	mustAppend(t, s, c, kindA, `{"last":true}`)
	eventually(t, "the last event", func() bool { return d.len() == 6 })
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	count, _ := d.snapshot()
	var want []uint64
	for _, ev := range mustQuery(t, s, core.All()) {
		want = append(want, ev.GlobalSequence)
	}
	if got := slices.Sorted(maps.Keys(count)); !slices.Equal(got, want) || leaked.Load() != 0 {
		t.Fatalf("delivered %v (%d leaked), want %v", got, leaked.Load(), want)
	}
	for seq, n := range count {
		if n != 1 {
			t.Fatalf("sequence %d delivered %d times", seq, n)
		}
	}
}

func TestNamedWorkerResumesAfterReopen(t *testing.T) {
	s := openStore(t)
	appendEvents(t, s, "w:1", 20)
	d := newDeliveryLog()
	cfg := core.WorkerConfig{Name: "resumer", BatchSize: 4}
	// First run: stop after the batch that reaches sequence 9 (8..11).
	w := mustWorker(t, s, context.Background(), core.All(), cfg, func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
		d.add(b)
		if b[len(b)-1].GlobalSequence >= 9 {
			return core.Stop, nil
		}
		return core.Continue, nil
	})
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	_, first := d.snapshot()
	if want := []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}; !slices.Equal(first, want) {
		t.Fatalf("first run delivered %v", first)
	}

	// Second run after a restart: from 12 on, with one failure that
	// redelivers only the failed batch.
	s = reopen(t, s)
	appendEvents(t, s, "w:2", 5)
	d2 := newDeliveryLog()
	failed := false
	w = mustWorker(t, s, context.Background(), core.All(), cfg, func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
		d2.add(b)
		if b[0].GlobalSequence == 16 && !failed {
			failed = true
			return core.Continue, errHandlerFailed
		}
		return core.Continue, nil
	})
	eventually(t, "the rest", func() bool { return d2.len() == 13 })
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	_, second := d2.snapshot()
	want := []uint64{12, 13, 14, 15, 16, 17, 18, 19, 16, 17, 18, 19, 20, 21, 22, 23, 24}
	if !slices.Equal(second, want) {
		t.Fatalf("second run delivered %v, want %v", second, want)
	}

	// Third run: everything was committed; nothing is delivered again, new
	// events are.
	s = reopen(t, s)
	d3 := newDeliveryLog()
	w = mustWorker(t, s, context.Background(), core.All(), cfg, func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) {
		d3.add(b)
		return core.Continue, nil
	})
	r := mustAppend(t, s, mustCoord(t, "w:3", "s"), kindA, `{}`)
	eventually(t, "the new event", func() bool { return d3.len() == 1 })
	time.Sleep(20 * time.Millisecond)
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	if _, third := d3.snapshot(); !slices.Equal(third, []uint64{r.GlobalSequence}) {
		t.Fatalf("third run delivered %v, want only %d", third, r.GlobalSequence)
	}
}

// ---- React ----

// reactCount counts the derived events per source id in region r.
func reactCount(t *testing.T, s *core.Store, r core.Region) map[core.EventID][]core.StoredEvent {
	t.Helper()
	out := map[core.EventID][]core.StoredEvent{}
	for _, ev := range mustQuery(t, s, r) {
		out[ev.Header.CausationID] = append(out[ev.Header.CausationID], ev)
	}
	return out
}

func mustReact(t *testing.T, s *core.Store, r core.Region, cfg core.WorkerConfig, fn func(context.Context, core.StoredEvent) ([]core.Reaction, error)) *core.Worker {
	t.Helper()
	w, err := s.React(context.Background(), r, cfg, fn)
	if err != nil {
		t.Fatalf("React: %v", err)
	}
	t.Cleanup(func() { w.Stop(); <-w.Done() })
	return w
}

// invoiceAndMail reacts to each order with an invoice and a mail.
func invoiceAndMail(t *testing.T) func(context.Context, core.StoredEvent) ([]core.Reaction, error) {
	return func(_ context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
		n := strings.TrimPrefix(ev.Coordinate.Entity, "order:")
		return []core.Reaction{
			{Coordinate: mustCoord(t, "invoice:"+n, "s"), Kind: kindB, Payload: ev.Payload},
			{Coordinate: mustCoord(t, "mail:"+n, "s"), Kind: kindC, Payload: []byte(`{"to":"` + n + `"}`)},
		}, nil
	}
}

func checkReactions(t *testing.T, s *core.Store, sources []core.StoredEvent) {
	t.Helper()
	derived := reactCount(t, s, core.Entity("invoice:"))
	mails := reactCount(t, s, core.Entity("mail:"))
	if len(derived) != len(sources) || len(mails) != len(sources) {
		t.Fatalf("%d sources, reactions to %d and %d", len(sources), len(derived), len(mails))
	}
	for _, src := range sources {
		inv, mail := derived[src.Header.ID], mails[src.Header.ID]
		if len(inv) != 1 || len(mail) != 1 {
			t.Fatalf("source %d: %d invoices, %d mails; want one each", src.GlobalSequence, len(inv), len(mail))
		}
		for _, ev := range []core.StoredEvent{inv[0], mail[0]} {
			if ev.Header.CorrelationID != src.Header.CorrelationID || ev.Header.CausationID != src.Header.ID {
				t.Fatalf("reaction %s: correlation %s causation %s; want %s and %s", ev.Coordinate, ev.Header.CorrelationID, ev.Header.CausationID, src.Header.CorrelationID, src.Header.ID)
			}
			if ev.IdempotencyKey == "" {
				t.Fatalf("reaction %s carries no idempotency key", ev.Coordinate)
			}
		}
		// One atomic batch: the two are adjacent in the log.
		if mail[0].GlobalSequence != inv[0].GlobalSequence+1 {
			t.Fatalf("source %d: reactions at %d and %d, not one batch", src.GlobalSequence, inv[0].GlobalSequence, mail[0].GlobalSequence)
		}
		if anc, err := s.Ancestors(mail[0].Header.ID, 0); err != nil || len(anc) != 2 || anc[1].Header.ID != src.Header.ID {
			t.Fatalf("Ancestors of a reaction: %v, %v", ids(anc), err)
		}
	}
}

func appendOrders(t *testing.T, s *core.Store, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		o := core.AppendOptions{}
		if i%2 == 1 {
			o.CorrelationID = core.NewEventID() // a conversation started elsewhere
		}
		mustAppendOpts(t, s, mustCoord(t, fmt.Sprintf("order:%d", i), "s"), kindA, payloadN(i), o)
	}
}

func TestReact(t *testing.T) {
	s := openStore(t)
	appendOrders(t, s, 0, 6)
	w := mustReact(t, s, core.Entity("order:"), core.WorkerConfig{BatchSize: 4}, invoiceAndMail(t))
	appendOrders(t, s, 6, 4)
	eventually(t, "20 reactions", func() bool { return len(mustQuery(t, s, core.Entity("mail:"))) == 10 })
	checkReactions(t, s, mustQuery(t, s, core.Entity("order:")))
	// No reaction: nothing written. A reaction with its own key keeps it.
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
	mustReact(t, s, core.Entity("note:"), core.WorkerConfig{}, func(_ context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
		if string(ev.Payload) == `{"skip":true}` {
			return nil, nil
		}
		return []core.Reaction{{Coordinate: mustCoord(t, "echo", "s"), Kind: kindB, Payload: ev.Payload,
			Options: core.AppendOptions{IdempotencyKey: "mine:" + ev.Header.ID.String(), CausationID: core.NewEventID()}}}, nil
	})
	src := mustAppend(t, s, mustCoord(t, "note:1", "s"), kindA, `{"skip":true}`)
	src2 := mustAppend(t, s, mustCoord(t, "note:1", "s"), kindA, `{"echo":true}`)
	eventually(t, "the echo", func() bool { return len(mustQuery(t, s, core.Entity("echo"))) == 1 })
	echo := mustQuery(t, s, core.Entity("echo"))[0]
	if echo.IdempotencyKey != "mine:"+src2.ID.String() || echo.Header.CausationID != src2.ID {
		t.Fatalf("echo: key %q, causation %s", echo.IdempotencyKey, echo.Header.CausationID)
	}
	if _, ok := reactCount(t, s, core.All())[src.ID]; ok {
		t.Fatal("a source with no reactions got one")
	}
}

// TestReactBatchIsAtomic: a reaction batch that fails half-way is not
// written at all; the worker restarts, redelivers and writes it whole.
func TestReactBatchIsAtomic(t *testing.T) {
	s := openStore(t)
	appendOrders(t, s, 0, 3)
	var faults atomic.Int32
	core.SetBatchFault(s, func(p core.FaultPoint, item int) error {
		if p == core.FaultAfterItem && item == 0 && faults.Add(1) == 1 {
			return errors.New("injected fault after the first reaction")
		}
		return nil
	})
	defer core.SetBatchFault(s, nil)
	w := mustReact(t, s, core.Entity("order:"), core.WorkerConfig{BatchSize: 1}, invoiceAndMail(t))
	eventually(t, "6 reactions", func() bool { return len(mustQuery(t, s, core.Entity("mail:"))) == 3 })
	checkReactions(t, s, mustQuery(t, s, core.Entity("order:")))
	if w.Restarts() != 1 || faults.Load() < 2 {
		t.Fatalf("%d restarts, %d faults; want 1 restart", w.Restarts(), faults.Load())
	}
}

// TestReactRedeliveryDoesNotDuplicate: a failure after some reactions of a
// batch were written redelivers the batch; the written ones are not
// written again, in this process or after a restart.
func TestReactRedeliveryDoesNotDuplicate(t *testing.T) {
	s := openStore(t)
	appendOrders(t, s, 0, 4)
	var calls sync.Map // source id → deliveries
	failOn := func(seq uint64) func(context.Context, core.StoredEvent) ([]core.Reaction, error) {
		fn := invoiceAndMail(t)
		failed := false
		return func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			n, _ := calls.LoadOrStore(ev.Header.ID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			if ev.GlobalSequence == seq && !failed {
				failed = true
				return nil, errHandlerFailed // after the batch's earlier sources reacted
			}
			return fn(ctx, ev)
		}
	}
	w := mustReact(t, s, core.Entity("order:"), core.WorkerConfig{BatchSize: 4}, failOn(2))
	eventually(t, "4 mails", func() bool { return len(mustQuery(t, s, core.Entity("mail:"))) == 4 })
	checkReactions(t, s, mustQuery(t, s, core.Entity("order:")))
	if w.Restarts() != 1 {
		t.Fatalf("%d restarts, want 1", w.Restarts())
	}
	first := mustQuery(t, s, core.Entity("order:"))[0]
	if n, _ := calls.Load(first.Header.ID); n.(*atomic.Int32).Load() != 2 {
		t.Fatalf("first source delivered %d times, want 2 (a redelivery)", n.(*atomic.Int32).Load())
	}
}

// TestReactRedeliveryAfterReopen: a named reactor whose position was not
// committed when the store closed (its reactions to part of a batch were
// written) reacts to the whole batch again after reopening, without
// duplicates.
func TestReactRedeliveryAfterReopen(t *testing.T) {
	s := openStore(t)
	appendOrders(t, s, 0, 6)
	release := make(chan struct{})
	var reached atomic.Bool
	var firstCalls atomic.Int32
	fn := invoiceAndMail(t)
	cfg := core.WorkerConfig{Name: "mailer", BatchSize: 8, Restart: restartPolicy(core.RestartNever())}
	w := mustReact(t, s, core.Entity("order:"), cfg, func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
		if ev.GlobalSequence == 0 {
			firstCalls.Add(1)
		}
		if ev.GlobalSequence == 4 && !reached.Load() {
			reached.Store(true)
			<-release
		}
		return fn(ctx, ev)
	})
	eventually(t, "the reactor to reach the fifth order", reached.Load)
	if n := len(mustQuery(t, s, core.Entity("mail:"))); n != 4 {
		t.Fatalf("%d mails before the fifth order, want 4", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := joinWithin(t, w); !isErr(err, core.ErrClosed) {
		t.Fatalf("Join after Close: %v, want ErrClosed", err)
	}

	s = openWith(t, s.Config())
	w = mustReact(t, s, core.Entity("order:"), cfg, func(ctx context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
		if ev.GlobalSequence == 0 {
			firstCalls.Add(1)
		}
		return fn(ctx, ev)
	})
	eventually(t, "6 mails", func() bool { return len(mustQuery(t, s, core.Entity("mail:"))) == 6 })
	time.Sleep(20 * time.Millisecond)
	checkReactions(t, s, mustQuery(t, s, core.Entity("order:")))
	if n := firstCalls.Load(); n != 2 {
		t.Fatalf("the first order was delivered %d times, want 2", n)
	}
	w.Stop()
	if err := joinWithin(t, w); err != nil {
		t.Fatal(err)
	}
}

// TestReactorsDoNotCollide: two reactors over the same events each write
// their own reactions.
func TestReactorsDoNotCollide(t *testing.T) {
	s := openStore(t)
	appendOrders(t, s, 0, 3)
	mk := func(out string) func(context.Context, core.StoredEvent) ([]core.Reaction, error) {
		return func(_ context.Context, ev core.StoredEvent) ([]core.Reaction, error) {
			return []core.Reaction{{Coordinate: mustCoord(t, out+":"+ev.Coordinate.Entity, "s"), Kind: kindB, Payload: []byte(`{"by":"` + out + `"}`)}}, nil
		}
	}
	w1 := mustReact(t, s, core.Entity("order:"), core.WorkerConfig{Name: "billing"}, mk("bill"))
	w2 := mustReact(t, s, core.Entity("order:"), core.WorkerConfig{Name: "shipping"}, mk("ship"))
	eventually(t, "both reactors", func() bool {
		return len(mustQuery(t, s, core.Entity("bill:"))) == 3 && len(mustQuery(t, s, core.Entity("ship:"))) == 3 ||
			workerDone(w1) || workerDone(w2)
	})
	for _, w := range []*core.Worker{w1, w2} {
		if workerDone(w) {
			t.Fatalf("a reactor stopped: %v", w.Join())
		}
	}
}

func workerDone(w *core.Worker) bool {
	select {
	case <-w.Done():
		return true
	default:
		return false
	}
}

// TestWorkerTurn: workers given a shared Turn run their handlers one at a
// time, a worker waiting for its turn has not read its batch (its cursor
// has not moved), an idle worker takes no turn, a handler failure gives
// its turn back, and a worker whose ctx ends while it waits stops.
func TestWorkerTurn(t *testing.T) {
	turns := make(chan struct{}, 1)
	var taken atomic.Int64
	turn := func(ctx context.Context) (func(), error) {
		select {
		case turns <- struct{}{}:
			taken.Add(1)
			return func() { <-turns }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a, b := openStore(t), openStore(t)

	// An idle worker takes no turn, also while events outside its region
	// are written.
	appendEvents(t, a, "other:1", 3)
	idle := mustWorker(t, a, context.Background(), core.Entity("w:"), core.WorkerConfig{Turn: turn, IdleSleep: time.Millisecond},
		func(ctx context.Context, b []core.StoredEvent) (core.WorkerAction, error) { return core.Continue, nil })
	time.Sleep(25 * time.Millisecond)
	appendEvents(t, a, "other:1", 2)
	time.Sleep(25 * time.Millisecond)
	if n := taken.Load(); n != 0 {
		t.Fatalf("an idle worker took %d turns", n)
	}
	idle.Stop()
	<-idle.Done()

	// While b's worker holds the only turn, a's worker waits without
	// reading: an event appended meanwhile is in its first batch.
	appendEvents(t, a, "w:1", 3)
	appendEvents(t, b, "w:1", 3)
	inB, releaseB := make(chan struct{}), make(chan struct{})
	var running atomic.Int64
	var overlap atomic.Bool
	var firstBatch atomic.Int64
	handler := func(hold bool) core.Handler {
		first := true
		return func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
			if running.Add(1) > 1 {
				overlap.Store(true)
			}
			defer running.Add(-1)
			if first && !hold {
				firstBatch.CompareAndSwap(0, int64(len(batch)))
			}
			if hold && first {
				first = false
				close(inB)
				<-releaseB
				return core.Continue, errHandlerFailed // a failure gives the turn back too
			}
			first = false
			return core.Continue, nil
		}
	}
	wb := mustWorker(t, b, context.Background(), core.Entity("w:"), core.WorkerConfig{Name: "wb", Turn: turn}, handler(true))
	<-inB
	mustWorker(t, a, context.Background(), core.Entity("w:"), core.WorkerConfig{Name: "wa", Turn: turn}, handler(false))
	time.Sleep(50 * time.Millisecond)
	appendEvents(t, a, "w:1", 1)
	close(releaseB)
	eventually(t, "both workers through their events", func() bool {
		ca, _ := a.NamedCursor("wa", core.Entity("w:"))
		cb, _ := b.NamedCursor("wb", core.Entity("w:"))
		return ca.Position() == 9 && cb.Position() == 3 // a holds five events of other:1 before
	})
	if n := firstBatch.Load(); n != 4 {
		t.Fatalf("a's first batch held %d events, want the 4 there when its turn came", n)
	}
	if overlap.Load() {
		t.Fatal("two handlers ran at once with one turn")
	}
	if wb.Restarts() != 1 {
		t.Fatalf("b's worker restarted %d times, want 1", wb.Restarts())
	}

	// A worker whose ctx ends while it waits for its turn stops.
	turns <- struct{}{}
	appendEvents(t, a, "w:2", 1)
	ctx, cancel := context.WithCancel(context.Background())
	wc := mustWorker(t, a, ctx, core.Entity("w:2"), core.WorkerConfig{Turn: turn}, handler(false))
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := joinWithin(t, wc); err != nil {
		t.Fatalf("Join of a worker stopped while waiting for its turn: %v", err)
	}
	<-turns
}
