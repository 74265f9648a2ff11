package follow_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
)

var (
	kindA = core.MustKind(1, 1)
	kindB = core.MustKind(2, 1)
)

func openStore(t testing.TB, dir string, adjust ...func(*core.Config)) *core.Store {
	t.Helper()
	cfg := core.DefaultConfig(dir)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, f := range adjust {
		f(&cfg)
	}
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// counter is an Encode that counts its calls: each frame is
// "<seq> <entity> <payload>".
type counter struct{ n atomic.Int64 }

func (c *counter) encode(ev core.StoredEvent) []byte {
	c.n.Add(1)
	return fmt.Appendf(nil, "%d %s %s", ev.GlobalSequence, ev.Coordinate.Entity, ev.Payload)
}

func newHub(t testing.TB, s *core.Store, o follow.Options) *follow.Hub {
	t.Helper()
	h, err := follow.New(s, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func coord(t testing.TB, entity, scope string) core.Coordinate {
	t.Helper()
	c, err := core.NewCoordinate(entity, scope)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func appendN(t testing.TB, s *core.Store, entity string, n int) []uint64 {
	t.Helper()
	c := coord(t, entity, "s")
	var seqs []uint64
	for i := 0; i < n; i++ {
		r, err := s.Append(context.Background(), c, kindA, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.GlobalSequence)
	}
	return seqs
}

func seqsOf(evs []core.StoredEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i := range evs {
		out[i] = evs[i].GlobalSequence
	}
	return out
}

func query(t testing.TB, s *core.Store, r core.Region) []uint64 {
	t.Helper()
	evs, err := s.Query(r)
	if err != nil {
		t.Fatal(err)
	}
	return seqsOf(evs)
}

// next calls Next with a deadline.
func next(sub *follow.Subscription, d time.Duration) ([]follow.Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return sub.Next(ctx)
}

func frameSeqs(fs []follow.Frame) []uint64 {
	out := make([]uint64, len(fs))
	for i, f := range fs {
		out[i] = f.Seq
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Subscribers on several regions are disconnected at random (Close, or a
// slow-consumer cutoff) and resume from their position while single
// appends, batches and fences (committed and cancelled) run concurrently:
// each ends with exactly the visible events of its region, in order.
func TestResumeNoGapNoDuplicateUnderConcurrentWrites(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	// A small ring and backlog bound: subscribers fall behind the ring
	// (and read the store), and live ones get cut off, as well as being
	// closed at random.
	hub := newHub(t, s, follow.Options{Encode: enc.encode, RingEvents: 32, MaxBacklogEvents: 40})
	ctx := context.Background()

	var writers sync.WaitGroup
	stop := time.Now().Add(1500 * time.Millisecond)
	retry := func(err error) bool {
		if errors.Is(err, core.ErrFenceActive) {
			time.Sleep(100 * time.Microsecond)
			return true
		}
		return false
	}
	writers.Add(3)
	go func() { // single appends
		defer writers.Done()
		for i := 0; time.Now().Before(stop); i++ {
			scope := []string{"s1", "s2"}[i%2]
			kind := []core.Kind{kindA, kindB}[i%3%2]
			_, err := s.Append(ctx, coord(t, fmt.Sprintf("e:%02d", i%10), scope), kind, []byte(`{"w":"single"}`))
			if err != nil && !retry(err) {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // atomic batches
		defer writers.Done()
		for i := 0; time.Now().Before(stop); i++ {
			items := make([]core.BatchItem, 5)
			for j := range items {
				items[j] = core.BatchItem{Coordinate: coord(t, fmt.Sprintf("e:%02d", (i+j)%10), "s2"), Kind: kindB, Payload: []byte(`{"w":"batch"}`)}
			}
			if _, err := s.AppendBatch(ctx, items); err != nil && !retry(err) {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // fences, committed and cancelled in turn
		defer writers.Done()
		for i := 0; time.Now().Before(stop); i++ {
			f, err := s.BeginFence(ctx)
			if retry(err) {
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			commit := i%2 == 0
			payload := `{"w":"fence-committed"}`
			if !commit {
				payload = `{"w":"fence-cancelled"}`
			}
			for j := 0; j < 3; j++ {
				if _, err := f.Submit(ctx, coord(t, fmt.Sprintf("e:%02d", j), "s1"), kindA, []byte(payload)); err != nil {
					t.Error(err)
				}
			}
			time.Sleep(time.Millisecond)
			if commit {
				err = f.Commit(ctx)
			} else {
				err = f.Cancel(ctx)
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()

	regions := []core.Region{core.All(), core.All(), core.Entity("e:03"), core.Scope("s2"), core.All().WithKind(kindA), core.Entity("e:0").WithScope("s1")}
	var writing atomic.Bool
	writing.Store(true)
	finals := make([][]uint64, len(regions))
	var final sync.WaitGroup
	final.Add(1)
	got := make([][]uint64, len(regions))
	var resumes, cutoffs atomic.Int64
	var readers sync.WaitGroup
	for i, r := range regions {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			start := follow.FromBeginning()
			for {
				sub, err := hub.Subscribe(r, start)
				if err != nil {
					t.Error(err)
					return
				}
				for k := rng.IntN(6); ; k-- {
					if !writing.Load() {
						final.Wait()
						if len(got[i]) >= len(finals[i]) {
							sub.Close()
							return
						}
					}
					if k == 0 {
						break // forced disconnect
					}
					if rng.IntN(4) == 0 {
						time.Sleep(5 * time.Millisecond) // be slow now and then
					}
					frames, err := next(sub, 50*time.Millisecond)
					var end *follow.EndError
					if errors.As(err, &end) {
						if !errors.Is(err, follow.ErrSlowConsumer) {
							t.Error(err)
							sub.Close()
							return
						}
						cutoffs.Add(1)
						break
					}
					if err != nil && !errors.Is(err, context.DeadlineExceeded) {
						t.Error(err)
						sub.Close()
						return
					}
					for _, f := range frames {
						if !strings.HasPrefix(string(f.Data), fmt.Sprintf("%d ", f.Seq)) {
							t.Errorf("frame %d carries %q", f.Seq, f.Data)
						}
						if strings.Contains(string(f.Data), "fence-cancelled") {
							t.Errorf("a cancelled fence's event was delivered: %q", f.Data)
						}
						got[i] = append(got[i], f.Seq)
					}
				}
				start = sub.Position()
				sub.Close()
				resumes.Add(1)
			}
		}()
	}
	writers.Wait()
	for i, r := range regions {
		finals[i] = query(t, s, r)
	}
	writing.Store(false)
	final.Done()
	readers.Wait()
	for i, r := range regions {
		if !equalSeqs(got[i], finals[i]) {
			t.Errorf("region %v: got %d events, want %d (first difference at %d)", r, len(got[i]), len(finals[i]), firstDiff(got[i], finals[i]))
		}
	}
	committed := 0
	evs, _ := s.Query(core.All())
	for _, ev := range evs {
		if strings.Contains(string(ev.Payload), "fence-committed") {
			committed++
		}
	}
	if committed == 0 || resumes.Load() < int64(len(regions)) {
		t.Fatalf("the run did not exercise fences and resumes: %d fenced events, %d resumes", committed, resumes.Load())
	}
	t.Logf("%d events, %d committed fenced, %d resumes, %d cut-offs, %d encodes", len(evs), committed, resumes.Load(), cutoffs.Load(), enc.n.Load())
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// A live subscriber sees a fence's events only when it commits, and a
// cancelled fence's never.
func TestFencedEventsArriveAtCommitOnly(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode})
	sub, err := hub.Subscribe(core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx := context.Background()
	fenced := func(payload string) *core.Fence {
		f, err := s.BeginFence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := f.Submit(ctx, coord(t, "f:1", "s"), kindA, []byte(payload)); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}
	f := fenced(`{"f":1}`)
	if fs, err := next(sub, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("before commit: got %d frames, err %v; want nothing", len(fs), err)
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	fs, err := next(sub, 5*time.Second)
	if err != nil || len(fs) != 3 {
		t.Fatalf("after commit: %d frames, %v; want 3", len(fs), err)
	}
	f = fenced(`{"f":"cancelled"}`)
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	want := appendN(t, s, "after", 1)
	fs, err = next(sub, 5*time.Second)
	if err != nil || !equalSeqs(frameSeqs(fs), want) {
		t.Fatalf("after a cancelled fence: %v, %v; want only %v", frameSeqs(fs), err, want)
	}
}

// A live subscriber whose backlog is exactly MaxBacklogEvents gets it all;
// one more and it is cut off with the position after the last event it
// got, from which a new subscription continues.
func TestSlowConsumerCutOffAtEventBound(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode, MaxBacklogEvents: 100, RingEvents: 1024})
	sub, err := hub.Subscribe(core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	appendN(t, s, "x", 1)
	if fs, err := next(sub, 5*time.Second); err != nil || len(fs) != 1 {
		t.Fatalf("%d frames, %v", len(fs), err)
	}
	exact := appendN(t, s, "x", 100)
	waitInRing(t, hub, 101)
	fs, err := next(sub, 5*time.Second)
	if err != nil || !equalSeqs(frameSeqs(fs), exact) {
		t.Fatalf("a backlog of exactly the bound: %d frames, %v; want all 100", len(fs), err)
	}
	over := appendN(t, s, "x", 101)
	waitInRing(t, hub, 202)
	_, err = next(sub, 5*time.Second)
	var end *follow.EndError
	if !errors.As(err, &end) || !errors.Is(err, follow.ErrSlowConsumer) {
		t.Fatalf("a backlog of one more than the bound: %v; want an EndError with ErrSlowConsumer", err)
	}
	if seq, ok := end.Resume.After(); !ok || seq != exact[len(exact)-1] {
		t.Fatalf("resume %v; want after %d", end.Resume, exact[len(exact)-1])
	}
	if _, err := sub.Next(context.Background()); !errors.Is(err, follow.ErrSlowConsumer) {
		t.Fatalf("Next after the cutoff: %v; want the same ending", err)
	}
	if st := hub.Stats(); st.CutOff != 1 {
		t.Fatalf("Stats.CutOff = %d; want 1", st.CutOff)
	}
	// Resuming is catching up: read at its own pace, the bound per Next.
	again, err := hub.Subscribe(core.All(), end.Resume)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var got []uint64
	for len(got) < len(over) {
		fs, err := next(again, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) > 100 {
			t.Fatalf("one Next returned %d frames; the bound is 100", len(fs))
		}
		got = append(got, frameSeqs(fs)...)
	}
	if !equalSeqs(got, over) {
		t.Fatalf("after resuming: %v; want %v", got, over)
	}
}

// waitEncoded waits until the hub has encoded n events (so they are in
// its ring before the subscriber looks).
// waitInRing waits until the hub's ring holds n frames: published to its
// subscribers, not only encoded (the hub encodes a run before it adds it
// to the ring).
func waitInRing(t *testing.T, h *follow.Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().RingFrames < n {
		if time.Now().After(deadline) {
			t.Fatalf("the hub's ring holds %d frames; want %d", h.Stats().RingFrames, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitPublished waits until the hub has published every event before
// seq.
func waitPublished(t *testing.T, h *follow.Hub, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.Stats().Published < seq {
		if time.Now().After(deadline) {
			t.Fatalf("the hub published up to %d; want %d", h.Stats().Published, seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// The byte bound: frames of 100 bytes, bound 1 KiB: ten pending are
// delivered, eleven cut the subscriber off.
func TestSlowConsumerCutOffAtByteBound(t *testing.T) {
	s := openStore(t, t.TempDir())
	var n atomic.Int64
	enc := func(ev core.StoredEvent) []byte {
		n.Add(1)
		b := make([]byte, 100)
		copy(b, fmt.Sprint(ev.GlobalSequence))
		return b
	}
	hub := newHub(t, s, follow.Options{Encode: enc, MaxBacklogBytes: 1024})
	sub, err := hub.Subscribe(core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := next(sub, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err) // now live, at the end of an empty log
	}
	ten := appendN(t, s, "x", 10)
	waitInRing(t, hub, 10)
	if fs, err := next(sub, 5*time.Second); err != nil || !equalSeqs(frameSeqs(fs), ten) {
		t.Fatalf("1000 bytes pending, bound 1024: %v, %v; want all", frameSeqs(fs), err)
	}
	appendN(t, s, "x", 11)
	waitInRing(t, hub, 21)
	_, err = next(sub, 5*time.Second)
	var end *follow.EndError
	if !errors.As(err, &end) || !errors.Is(err, follow.ErrSlowConsumer) {
		t.Fatalf("1100 bytes pending, bound 1024: %v; want ErrSlowConsumer", err)
	}
	if seq, _ := end.Resume.After(); seq != ten[9] {
		t.Fatalf("resume %v; want after %d", end.Resume, ten[9])
	}
}

func waitEncodedN(t *testing.T, n *atomic.Int64, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("encoded %d; want %d", n.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// A subscriber of a narrow region that falls behind the ring is still
// judged by its own region's backlog: within the bound it reads the store
// and continues; past it, it is cut off.
func TestSlowConsumerBehindTheRing(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode, RingEvents: 16, MaxBacklogEvents: 10})
	sub, err := hub.Subscribe(core.Entity("a"), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := next(sub, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	round := func(mine int) []uint64 {
		var want, others []uint64
		for i := 0; i < mine; i++ {
			want = append(want, appendN(t, s, "a", 1)...)
			others = appendN(t, s, "b", 10)
		}
		// Published, not only encoded (the hub encodes a run before it
		// adds it to the ring): the subscriber must see the whole round.
		waitPublished(t, hub, others[len(others)-1]+1)
		return want
	}
	want := round(10) // 10 of its own among 110: the ring holds 16
	fs, err := next(sub, 5*time.Second)
	if err != nil || !equalSeqs(frameSeqs(fs), want) {
		t.Fatalf("behind the ring, backlog at the bound: %v, %v; want %v", frameSeqs(fs), err, want)
	}
	round(11)
	if _, err := next(sub, 5*time.Second); !errors.Is(err, follow.ErrSlowConsumer) {
		t.Fatalf("behind the ring, backlog past the bound: %v; want ErrSlowConsumer", err)
	}
}

// Closing the store ends every subscription with the position after the
// last event delivered; a subscription on the reopened store continues
// from it with no gap and no repeat.
func TestStoreCloseEndsWithResumePosition(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode})
	sub, err := hub.Subscribe(core.Entity("k"), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	first := appendN(t, s, "k", 3)
	var got []uint64
	for len(got) < 3 {
		fs, err := next(sub, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, frameSeqs(fs)...)
	}
	appendN(t, s, "other", 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = next(sub, 5*time.Second)
	var end *follow.EndError
	if !errors.As(err, &end) || !errors.Is(err, follow.ErrStoreClosed) {
		t.Fatalf("after the store closed: %v; want ErrStoreClosed", err)
	}
	if seq, _ := end.Resume.After(); seq != first[2] {
		t.Fatalf("resume %v; want after %d", end.Resume, first[2])
	}
	if _, err := hub.Subscribe(core.All(), follow.FromBeginning()); !errors.Is(err, follow.ErrStoreClosed) {
		t.Fatalf("Subscribe on a closed store: %v", err)
	}
	s2 := openStore(t, dir)
	hub2 := newHub(t, s2, follow.Options{Encode: enc.encode})
	more := appendN(t, s2, "k", 2)
	sub2, err := hub2.Subscribe(core.Entity("k"), end.Resume)
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	fs, err := next(sub2, 5*time.Second)
	if err != nil || !equalSeqs(frameSeqs(fs), more) {
		t.Fatalf("resumed on the reopened store: %v, %v; want %v", frameSeqs(fs), err, more)
	}
}

// Hub.Close (and Set.Close) end every subscription with ErrHubClosed and
// a resume position; later subscriptions are refused.
func TestHubCloseEndsSubscriptions(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	set, err := follow.NewSet(follow.Options{Encode: enc.encode})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := set.Subscribe(s, core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seqs := appendN(t, s, "x", 2)
	var got []uint64
	for len(got) < 2 {
		fs, err := next(sub, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, frameSeqs(fs)...)
	}
	blocked := make(chan error, 1)
	go func() { _, err := sub.Next(context.Background()); blocked <- err }()
	time.Sleep(20 * time.Millisecond)
	set.Close()
	err = <-blocked
	var end *follow.EndError
	if !errors.As(err, &end) || !errors.Is(err, follow.ErrHubClosed) {
		t.Fatalf("a Next blocked at Close: %v; want ErrHubClosed", err)
	}
	if seq, _ := end.Resume.After(); seq != seqs[1] {
		t.Fatalf("resume %v; want after %d", end.Resume, seqs[1])
	}
	if _, err := set.Subscribe(s, core.All(), follow.FromBeginning()); !errors.Is(err, follow.ErrHubClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
}

// With its last subscriber gone a hub stops following the store (the Set
// forgets it), and starts again at the next subscription.
func TestHubStopsWhenIdle(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	set, err := follow.NewSet(follow.Options{Encode: enc.encode})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	a, _ := set.Subscribe(s, core.All(), follow.FromBeginning())
	b, _ := set.Subscribe(s, core.Entity("x"), follow.FromBeginning())
	if st, hubs := set.Stats(); !st.Running || st.Subscribers != 2 || hubs != 1 {
		t.Fatalf("two subscribers on one store: %+v, %d hubs", st, hubs)
	}
	a.Close()
	a.Close() // idempotent
	if st, hubs := set.Stats(); !st.Running || st.Subscribers != 1 || hubs != 1 {
		t.Fatalf("one left: %+v, %d hubs", st, hubs)
	}
	b.Close()
	if st, hubs := set.Stats(); st.Running || st.Subscribers != 0 || hubs != 0 {
		t.Fatalf("none left: %+v, %d hubs", st, hubs)
	}
	if _, err := b.Next(context.Background()); !errors.Is(err, follow.ErrSubscriptionClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	want := appendN(t, s, "x", 1)
	c, err := set.Subscribe(s, core.Entity("x"), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if fs, err := next(c, 5*time.Second); err != nil || !equalSeqs(frameSeqs(fs), want) {
		t.Fatalf("a new subscription after idle: %v, %v", frameSeqs(fs), err)
	}
}

// A start is accepted up to the end of the log and refused past it.
func TestSubscribeStartBounds(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode})
	if _, err := hub.Subscribe(core.All(), follow.After(0)); !errors.Is(err, follow.ErrStartAhead) {
		t.Fatalf("after 0 on an empty log: %v; want ErrStartAhead", err)
	}
	seqs := appendN(t, s, "x", 3)
	sub, err := hub.Subscribe(core.All(), follow.After(seqs[2]))
	if err != nil {
		t.Fatalf("after the last event: %v", err)
	}
	sub.Close()
	_, err = hub.Subscribe(core.All(), follow.After(seqs[2]+1))
	if !errors.Is(err, follow.ErrStartAhead) || !strings.Contains(err.Error(), "after 3") {
		t.Fatalf("after one past the last event: %v; want ErrStartAhead naming it", err)
	}
	if _, err := hub.Subscribe(core.All(), follow.After(^uint64(0))); !errors.Is(err, follow.ErrStartAhead) {
		t.Fatalf("after the largest sequence: %v", err)
	}
	sub, err = hub.Subscribe(core.All(), follow.After(seqs[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if fs, err := next(sub, 5*time.Second); err != nil || !equalSeqs(frameSeqs(fs), seqs[1:]) {
		t.Fatalf("after %d: %v, %v", seqs[0], frameSeqs(fs), err)
	}
}

// Every option is accepted at both ends of its range and refused one
// past either, with an error naming it.
func TestOptionRanges(t *testing.T) {
	enc := func(core.StoredEvent) []byte { return nil }
	if _, err := follow.NewSet(follow.Options{}); err == nil || !strings.Contains(err.Error(), "Encode") {
		t.Fatalf("no Encode: %v", err)
	}
	fields := []struct {
		name   string
		lo, hi int64
		set    func(*follow.Options, int64)
	}{
		{"MaxBacklogEvents", 1, 1 << 20, func(o *follow.Options, v int64) { o.MaxBacklogEvents = int(v) }},
		{"MaxBacklogBytes", 1 << 10, 1 << 30, func(o *follow.Options, v int64) { o.MaxBacklogBytes = v }},
		{"RingEvents", 16, 1 << 20, func(o *follow.Options, v int64) { o.RingEvents = int(v) }},
		{"RingBytes", 64 << 10, 4 << 30, func(o *follow.Options, v int64) { o.RingBytes = v }},
		{"PollEvents", 1, 1 << 16, func(o *follow.Options, v int64) { o.PollEvents = int(v) }},
	}
	for _, f := range fields {
		for _, c := range []struct {
			v  int64
			ok bool
		}{{f.lo, true}, {f.hi, true}, {f.lo - 1, f.lo-1 == 0}, {f.hi + 1, false}} {
			o := follow.Options{Encode: enc}
			f.set(&o, c.v)
			_, err := follow.NewSet(o)
			if c.ok && err != nil {
				t.Errorf("%s = %d: %v", f.name, c.v, err)
			}
			if !c.ok && (err == nil || !strings.Contains(err.Error(), f.name)) {
				t.Errorf("%s = %d: %v; want an error naming it", f.name, c.v, err)
			}
		}
	}
}

// A subscriber that stops reading costs no memory beyond the hub's ring:
// 12 MiB of frames pass while it stalls, the ring stays within RingBytes,
// the heap does not grow by what passed, and the stalled subscriber is
// cut off with the position after the last event it got.
func TestStalledSubscriberMemoryBounded(t *testing.T) {
	s := openStore(t, t.TempDir())
	var encodes atomic.Int64
	enc := func(ev core.StoredEvent) []byte {
		encodes.Add(1)
		b := make([]byte, 4096)
		copy(b, fmt.Sprint(ev.GlobalSequence))
		return b
	}
	const ringBytes = 256 << 10
	hub := newHub(t, s, follow.Options{Encode: enc, RingBytes: ringBytes, MaxBacklogEvents: 1000})
	stalled, err := hub.Subscribe(core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	first := appendN(t, s, "x", 1)
	if fs, err := next(stalled, 5*time.Second); err != nil || len(fs) != 1 {
		t.Fatalf("%d frames, %v", len(fs), err)
	}
	before := heapInUse()
	const n = 3000 // × 4 KiB frames = 12 MiB
	ctx := context.Background()
	c := coord(t, "x", "s")
	items := make([]core.BatchItem, 100)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: kindA, Payload: []byte(`{}`)}
	}
	maxRing := int64(0)
	for i := 0; i < n/100; i++ {
		if _, err := s.AppendBatch(ctx, items); err != nil {
			t.Fatal(err)
		}
		maxRing = max(maxRing, hub.Stats().RingBytes)
	}
	waitEncodedN(t, &encodes, n+1)
	st := hub.Stats()
	after := heapInUse()
	if maxRing > ringBytes || st.RingBytes > ringBytes {
		t.Fatalf("ring held %d bytes (at most %d seen); bound %d", st.RingBytes, maxRing, ringBytes)
	}
	if grew := after - before; grew > 4<<20 {
		t.Fatalf("heap grew by %d bytes while 12 MiB of frames passed a stalled subscriber", grew)
	}
	_, err = next(stalled, 5*time.Second)
	var end *follow.EndError
	if !errors.As(err, &end) || !errors.Is(err, follow.ErrSlowConsumer) {
		t.Fatalf("the stalled subscriber: %v; want ErrSlowConsumer", err)
	}
	if seq, _ := end.Resume.After(); seq != first[0] {
		t.Fatalf("resume %v; want after %d", end.Resume, first[0])
	}
}

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// A live subscriber that fell behind the ring reads its backlog from the
// store a step (about 1 MiB of frames) at a time, not MaxBacklogBytes at
// once: one that stops reading there holds one step. It gets every event
// of its region in order; past MaxBacklogBytes read that way before it is
// back at the ring, it is a slow consumer.
func TestBehindTheRingReadsInSteps(t *testing.T) {
	s := openStore(t, t.TempDir())
	enc := func(ev core.StoredEvent) []byte { return append([]byte(nil), ev.Payload...) }
	hub := newHub(t, s, follow.Options{Encode: enc, RingBytes: 64 << 10, MaxBacklogBytes: 6 << 20})
	sub, err := hub.Subscribe(core.Entity("mine"), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := next(sub, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err) // live now, with nothing of its own yet
	}
	big := []byte(`"` + strings.Repeat("x", 256<<10-2) + `"`)
	round := func(events int) []uint64 {
		var want []uint64
		for i := 0; i < events; i++ {
			r, err := s.Append(context.Background(), coord(t, "mine", "s"), kindA, big)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, r.GlobalSequence)
		}
		others := appendN(t, s, "other", 100) // past the ring's 64 KiB
		waitPublished(t, hub, others[len(others)-1]+1)
		return want
	}
	want := round(20) // 5 MiB behind the ring: within the bound
	var got []uint64
	for len(got) < len(want) {
		fs, err := next(sub, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(got), len(want), err)
		}
		var bytes int
		for _, f := range fs {
			bytes += len(f.Data)
		}
		if bytes > 1<<20+len(big) {
			t.Fatalf("one Next returned %d bytes of frames; want one step, about 1 MiB", bytes)
		}
		got = append(got, frameSeqs(fs)...)
	}
	if !equalSeqs(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	round(28) // 7 MiB behind: past the bound
	for {
		if _, err := next(sub, 5*time.Second); err != nil {
			if !errors.Is(err, follow.ErrSlowConsumer) {
				t.Fatalf("7 MiB behind the ring with a bound of 6: %v; want ErrSlowConsumer", err)
			}
			return
		}
	}
}

// What subscriptions read from the store and hold (until their next
// Next) is bounded (Options.StoreReadBytes): a store's subscriptions at
// most a quarter of it, so subscribers that stop reading make the next
// reader of their store wait (within its context, the subscription
// still usable), not take memory without bound — and not a reader of
// another store. A Next or Close gives the room back.
func TestStoreReadsBounded(t *testing.T) {
	set := smallReadBudgetSet(t)
	a, b := openStore(t, t.TempDir()), openStore(t, t.TempDir())
	big := []byte(`"` + strings.Repeat("x", 512<<10-2) + `"`)
	for _, s := range []*core.Store{a, b} {
		for range 6 {
			if _, err := s.Append(context.Background(), coord(t, "e", "s"), kindA, big); err != nil {
				t.Fatal(err)
			}
		}
	}
	stalled, waiting, other := subscribeAll(t, set, a), subscribeAll(t, set, a), subscribeAll(t, set, b)
	if fs, err := next(stalled, 5*time.Second); err != nil || len(fs) == 0 {
		t.Fatalf("the first reader: %d frames, %v", len(fs), err)
	} // and now it stops reading: its frames hold a's share
	if _, err := next(waiting, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second reader of the same store while the first holds its share: %v; want to wait", err)
	}
	if fs, err := next(other, 5*time.Second); err != nil || len(fs) == 0 {
		t.Fatalf("a reader of another store: %d frames, %v", len(fs), err)
	}
	stalled.Close()
	var got []uint64
	for len(got) < 6 {
		fs, err := next(waiting, 5*time.Second)
		if err != nil {
			t.Fatalf("after the stalled reader closed, with %d of 6: %v", len(got), err)
		}
		got = append(got, frameSeqs(fs)...)
	}
	if !equalSeqs(got, []uint64{0, 1, 2, 3, 4, 5}) {
		t.Fatalf("the reader that waited got %v", got)
	}
}

// One event larger than a store's share of StoreReadBytes is still
// delivered: a subscription's charge stops at the share.
func TestStoreReadLargerThanTheShare(t *testing.T) {
	set := smallReadBudgetSet(t)
	s := openStore(t, t.TempDir())
	huge := []byte(`"` + strings.Repeat("x", 3<<20) + `"`)
	r, err := s.Append(context.Background(), coord(t, "e", "s"), kindA, huge)
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribeAll(t, set, s)
	if fs, err := next(sub, 5*time.Second); err != nil || len(fs) != 1 || fs[0].Seq != r.GlobalSequence {
		t.Fatalf("a 3 MiB event with a 2 MiB share: %d frames, %v", len(fs), err)
	}
}

// smallReadBudgetSet is a Set whose frames are the payloads, with a
// store-read budget of 8 MiB: 2 MiB a store, one step's charge.
func smallReadBudgetSet(t *testing.T) *follow.Set {
	t.Helper()
	set, err := follow.NewSet(follow.Options{Encode: func(ev core.StoredEvent) []byte { return append([]byte(nil), ev.Payload...) },
		StoreReadBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return set
}

// subscribeAll subscribes to all of s's events from the beginning,
// closed when the test ends.
func subscribeAll(t *testing.T, set *follow.Set, s *core.Store) *follow.Subscription {
	t.Helper()
	sub, err := set.Subscribe(s, core.All(), follow.FromBeginning())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// A Next finding no room in the whole store-read budget (other stores'
// subscribers stopped reading) calls Options.Starved before it waits;
// what the starved-upon subscriptions hold comes back as they close (as
// the server closes a stream it cuts off), and the waiting reader goes
// on.
func TestStoreReadsStarvedCallsBack(t *testing.T) {
	var stalled []*follow.Subscription
	var mu sync.Mutex
	var calls atomic.Int32
	set, err := follow.NewSet(follow.Options{Encode: func(ev core.StoredEvent) []byte { return append([]byte(nil), ev.Payload...) },
		StoreReadBytes: 8 << 20, Starved: func() {
			calls.Add(1)
			mu.Lock()
			defer mu.Unlock()
			for _, s := range stalled {
				go s.Close()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	big := []byte(`"` + strings.Repeat("x", 512<<10-2) + `"`)
	stores := make([]*core.Store, 5)
	for i := range stores {
		stores[i] = openStore(t, t.TempDir())
		for range 6 {
			if _, err := stores[i].Append(context.Background(), coord(t, "e", "s"), kindA, big); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range stores[:4] { // each holds its store's share: the whole budget
		sub := subscribeAll(t, set, s)
		if fs, err := next(sub, 5*time.Second); err != nil || len(fs) == 0 {
			t.Fatalf("a reader that then stops: %d frames, %v", len(fs), err)
		}
		mu.Lock()
		stalled = append(stalled, sub)
		mu.Unlock()
	}
	if calls.Load() != 0 {
		t.Fatalf("Starved called %d times while the budget had room", calls.Load())
	}
	waiting := subscribeAll(t, set, stores[4])
	var got []uint64
	for len(got) < 6 {
		fs, err := next(waiting, 5*time.Second)
		if err != nil {
			t.Fatalf("the fifth store's reader, with %d of 6: %v (Starved called %d times)", len(got), err, calls.Load())
		}
		got = append(got, frameSeqs(fs)...)
	}
	if calls.Load() == 0 {
		t.Fatal("the fifth store's reader found room without Starved being called")
	}
}
