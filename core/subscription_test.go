package core_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Lossy subscriptions: notifications of the events published in
// a region from the moment of subscribing, composable with Filter, Map,
// Take and Scan; a subscriber that falls behind loses notifications and
// counts exactly the ones of its region it lost; the writer never waits
// for one; closing the subscription or the store ends it.

// notificationOf is the notification a subscriber should get for ev.
func notificationOf(ev core.StoredEvent) core.Notification {
	return core.Notification{
		ID:             ev.Header.ID,
		CorrelationID:  ev.Header.CorrelationID,
		CausationID:    ev.Header.CausationID,
		Coordinate:     ev.Coordinate,
		Kind:           ev.Header.Kind,
		Clock:          ev.Header.Clock,
		GlobalSequence: ev.GlobalSequence,
	}
}

// recvN receives n notifications, failing the test if they do not come
// within a few seconds.
func recvN(t *testing.T, sub *core.Subscription, n int) []core.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []core.Notification
	for len(out) < n {
		nt, err := sub.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv after %d of %d notifications: %v", len(out), n, err)
		}
		out = append(out, nt)
	}
	return out
}

// drainSub takes every notification that is ready.
func drainSub(t *testing.T, sub *core.Subscription) []core.Notification {
	t.Helper()
	var out []core.Notification
	for {
		nt, ok, err := sub.TryRecv()
		if err != nil {
			t.Fatalf("TryRecv: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, nt)
	}
}

func expectNoNotification(t *testing.T, sub *core.Subscription, what string) {
	t.Helper()
	if got := drainSub(t, sub); len(got) > 0 {
		t.Fatalf("%s: unexpected notifications %+v", what, got)
	}
}

func TestSubscriptionRegionsAndFields(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	// Written before anyone subscribes: never announced.
	early := mustAppend(t, s, mustCoord(t, "a:1", "s1"), kindA, `{}`)
	regions := []core.Region{
		core.All(),
		core.Entity("a:"),
		core.Entity("a:1"),
		core.Scope("s2"),
		core.All().WithKind(kindB),
		core.Entity("a:").WithScope("s1").WithKind(kindA),
		core.All().WithCategory(2),
		core.Entity("a:").WithClockRange(1, 2),
		core.Entity("zzz"),
	}
	subs := make([]*core.Subscription, len(regions))
	for i, r := range regions {
		subs[i] = s.SubscribeLossy(r)
		defer subs[i].Close()
	}
	coords := []core.Coordinate{
		mustCoord(t, "a:1", "s1"), mustCoord(t, "a:2", "s2"), mustCoord(t, "b:1", "s1"),
		mustCoord(t, "a:10", "s1"), mustCoord(t, "b:2", "s2"),
	}
	kinds := []core.Kind{kindA, kindB, kindC}
	var last core.Receipt = early
	for i := 0; i < 40; i++ {
		o := core.AppendOptions{}
		if i%3 == 1 { // a reaction to the previous event
			o.CorrelationID, o.CausationID = last.CorrelationID, last.ID
		}
		last = mustAppendOpts(t, s, coords[i%len(coords)], kinds[(i/2)%3], payloadN(i), o)
		if i%10 == 9 {
			items := []core.BatchItem{
				{Coordinate: coords[(i+1)%len(coords)], Kind: kindB, Payload: []byte(`{"batch":0}`)},
				{Coordinate: coords[(i+2)%len(coords)], Kind: kindC, Payload: []byte(`{"batch":1}`), Causation: core.PriorItem(0)},
			}
			if _, err := s.AppendBatch(ctx, items); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, r := range regions {
		var want []core.Notification
		for _, ev := range mustQuery(t, s, r) {
			if ev.GlobalSequence != early.GlobalSequence {
				want = append(want, notificationOf(ev))
			}
		}
		got := recvN(t, subs[i], len(want))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("region %v:\n got %+v\nwant %+v", r, got, want)
		}
		expectNoNotification(t, subs[i], fmt.Sprintf("region %v", r))
		if d := subs[i].Dropped(); d != 0 {
			t.Fatalf("region %v: Dropped = %d, want 0", r, d)
		}
	}
}

func TestSubscriptionCombinators(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := s.SubscribeLossy(core.Entity("n:"))
	defer sub.Close()
	c := mustCoord(t, "n:1", "s")
	for i := 0; i < 12; i++ {
		k := kindA
		if i%3 == 2 {
			k = kindB
		}
		mustAppend(t, s, c, k, payloadN(i))
		mustAppend(t, s, mustCoord(t, "other", "s"), kindA, `{}`) // not in the region
	}
	// kindA clocks are 0,1,3,4,6,7,…: running sums of the first four.
	clocks := core.Map(core.Filter(sub.All(ctx), func(n core.Notification) bool { return n.Kind == kindA }),
		func(n core.Notification) uint64 { return n.Clock })
	var sums []uint64
	for v := range core.Take(core.Scan(clocks, uint64(100), func(acc, c uint64) uint64 { return acc + c }), 4) {
		sums = append(sums, v)
	}
	if want := []uint64{100, 101, 104, 108}; !slices.Equal(sums, want) {
		t.Fatalf("running sums %v, want %v", sums, want)
	}
	// Take stopped without pulling a notification past the ones it needed:
	// the next one (clock 5, a kindB) is still there.
	nt, ok, err := sub.TryRecv()
	if err != nil || !ok || nt.Clock != 5 || nt.Kind != kindB {
		t.Fatalf("after Take: %+v, %v, %v; want clock 5 of kind B", nt, ok, err)
	}
	// Take(0) yields nothing and reads nothing.
	for range core.Take(sub.All(ctx), 0) {
		t.Fatal("Take(0) yielded")
	}
	n := 0
	for range core.Take(sub.All(ctx), 6) { // clocks 6..11
		n++
	}
	if n != 6 {
		t.Fatalf("Take(6) yielded %d", n)
	}
	expectNoNotification(t, sub, "after reading everything")

	// The combinators on plain sequences, stopping early at every level.
	nums := slices.Values([]int{1, 2, 3, 4, 5, 6, 7, 8})
	even := core.Filter(nums, func(v int) bool { return v%2 == 0 })
	strs := core.Map(even, func(v int) string { return fmt.Sprint(v) })
	cat := core.Scan(strs, "", func(acc, s string) string { return acc + s })
	if got := slices.Collect(cat); !slices.Equal(got, []string{"2", "24", "246", "2468"}) {
		t.Fatalf("Scan(Map(Filter)) = %v", got)
	}
	if got := slices.Collect(core.Take(cat, 2)); !slices.Equal(got, []string{"2", "24"}) {
		t.Fatalf("Take(2) = %v", got)
	}
	if got := slices.Collect(core.Take(cat, 10)); len(got) != 4 {
		t.Fatalf("Take(10) of 4 = %v", got)
	}
	for v := range core.Map(core.Filter(nums, func(int) bool { return true }), func(v int) int { return -v }) {
		if v == -3 {
			break // early exit through two layers must not panic
		}
	}
	for acc := range core.Scan(nums, 0, func(a, v int) int { return a + v }) {
		if acc > 5 {
			break
		}
	}
	var pulled []int
	counting := iter.Seq[int](func(yield func(int) bool) {
		for i := 0; ; i++ {
			pulled = append(pulled, i)
			if !yield(i) {
				return
			}
		}
	})
	if got := slices.Collect(core.Take(counting, 3)); !slices.Equal(got, []int{0, 1, 2}) || len(pulled) != 3 {
		t.Fatalf("Take(3) of an endless sequence = %v after pulling %v", got, pulled)
	}
}

func TestSubscriptionClosing(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	c := mustCoord(t, "c:1", "s")

	// TryRecv with nothing ready, Recv that times out.
	sub := s.SubscribeLossy(core.All())
	if _, ok, err := sub.TryRecv(); ok || err != nil {
		t.Fatalf("TryRecv with nothing published: %v, %v", ok, err)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := sub.Recv(tctx); !isErr(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with nothing published: %v, want DeadlineExceeded", err)
	}
	cancel()
	r := mustAppend(t, s, c, kindA, `{}`)
	if nt, ok, err := sub.TryRecv(); !ok || err != nil || nt.ID != r.ID {
		t.Fatalf("TryRecv = %+v, %v, %v; want the appended event", nt, ok, err)
	}

	// RecvBatch takes what is ready, up to the buffer's length.
	for i := 0; i < 5; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	buf := make([]core.Notification, 3)
	if n, err := sub.RecvBatch(ctx, buf); n != 3 || err != nil || buf[0].Clock != 1 {
		t.Fatalf("RecvBatch = %d, %v (first clock %d); want 3 from clock 1", n, err, buf[0].Clock)
	}
	if n, err := sub.RecvBatch(ctx, buf); n != 2 || err != nil || buf[1].Clock != 5 {
		t.Fatalf("RecvBatch = %d, %v; want the last 2", n, err)
	}
	tctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := sub.RecvBatch(tctx, buf); !isErr(err, context.DeadlineExceeded) {
		t.Fatalf("RecvBatch with nothing published: %v, want DeadlineExceeded", err)
	}
	cancel()

	// Close unblocks a waiting Recv and ends All; it is idempotent.
	recvErr := make(chan error, 1)
	go func() {
		_, err := sub.Recv(ctx)
		recvErr <- err
	}()
	allDone := make(chan int, 1)
	go func() {
		n := 0
		for range sub.All(ctx) {
			n++
		}
		allDone <- n
	}()
	time.Sleep(20 * time.Millisecond)
	sub.Close()
	sub.Close()
	select {
	case err := <-recvErr:
		if !isErr(err, core.ErrSubscriptionClosed) {
			t.Fatalf("Recv across Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked after Close")
	}
	select {
	case <-allDone:
	case <-time.After(5 * time.Second):
		t.Fatal("All still running after Close")
	}
	mustAppend(t, s, c, kindA, `{}`)
	if _, _, err := sub.TryRecv(); !isErr(err, core.ErrSubscriptionClosed) {
		t.Fatalf("TryRecv after Close: %v", err)
	}
	if _, err := sub.Recv(ctx); !isErr(err, core.ErrSubscriptionClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	if _, err := sub.RecvBatch(ctx, buf); !isErr(err, core.ErrSubscriptionClosed) {
		t.Fatalf("RecvBatch after Close: %v", err)
	}

	// The store closing ends every subscription, waiting or not.
	waiting := s.SubscribeLossy(core.All())
	idle := s.SubscribeLossy(core.Entity("c:"))
	defer waiting.Close()
	defer idle.Close()
	go func() {
		_, err := waiting.Recv(ctx)
		recvErr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-recvErr:
		if !isErr(err, core.ErrSubscriptionClosed) {
			t.Fatalf("Recv across store Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked after the store closed")
	}
	for _, sb := range []*core.Subscription{waiting, idle, s.SubscribeLossy(core.All())} {
		if _, err := sb.Recv(ctx); !isErr(err, core.ErrSubscriptionClosed) {
			t.Fatalf("Recv after store Close: %v", err)
		}
		if _, _, err := sb.TryRecv(); !isErr(err, core.ErrSubscriptionClosed) {
			t.Fatalf("TryRecv after store Close: %v", err)
		}
		if _, err := sb.RecvBatch(ctx, buf); !isErr(err, core.ErrSubscriptionClosed) {
			t.Fatalf("RecvBatch after store Close: %v", err)
		}
		for range sb.All(ctx) {
			t.Fatal("All yielded after store Close")
		}
	}
}

func TestSubscriptionFences(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	sub := s.SubscribeLossy(core.Entity("f:"))
	defer sub.Close()
	c1, c2 := mustCoord(t, "f:1", "s"), mustCoord(t, "f:2", "s")
	a := mustAppend(t, s, c1, kindA, `{"a":1}`)

	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	late := s.SubscribeLossy(core.Entity("f:")) // subscribed while the fence is open
	defer late.Close()
	var tks []*core.Ticket
	for i := 0; i < 3; i++ {
		tk, err := f.Submit(ctx, []core.Coordinate{c1, c2}[i%2], kindA, []byte(payloadN(i)))
		if err != nil {
			t.Fatal(err)
		}
		tks = append(tks, tk)
	}
	bt, err := f.SubmitBatch(ctx, []core.BatchItem{
		{Coordinate: c2, Kind: kindB, Payload: []byte(`{"b":0}`)},
		{Coordinate: c1, Kind: kindB, Payload: []byte(`{"b":1}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recvN(t, sub, 1); got[0].ID != a.ID {
		t.Fatalf("first notification %+v, want the event before the fence", got[0])
	}
	expectNoNotification(t, sub, "fence open")
	expectNoNotification(t, late, "fence open")
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var want []core.EventID
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
	for _, r := range rs {
		want = append(want, r.ID)
	}
	for _, sb := range []*core.Subscription{sub, late} {
		got := recvN(t, sb, len(want))
		for i, nt := range got {
			if nt.ID != want[i] {
				t.Fatalf("committed fence: notification %d is %s, want %s", i, nt.ID, want[i])
			}
		}
		expectNoNotification(t, sb, "after the commit")
	}

	// A cancelled fence is never announced, nor counted as dropped.
	writeLeakingFence(t, s, c1, kindA, 3)
	after := mustAppend(t, s, c2, kindA, `{}`)
	for _, sb := range []*core.Subscription{sub, late} {
		if got := recvN(t, sb, 1); got[0].ID != after.ID {
			t.Fatalf("after a cancelled fence: %+v, want the next ordinary event", got[0])
		}
		expectNoNotification(t, sb, "after the cancelled fence")
		if d := sb.Dropped(); d != 0 {
			t.Fatalf("Dropped = %d after a cancelled fence, want 0", d)
		}
	}
}

// accountFor drains sub and checks that every notification it ever gave
// (earlier ones in got) plus what it dropped is exactly the events of
// region published while it was subscribed (want, in order): what it
// received is a subsequence of want, in order, field for field.
func accountFor(t *testing.T, what string, sub *core.Subscription, got []core.Notification, want []core.StoredEvent) {
	t.Helper()
	got = append(got, drainSub(t, sub)...)
	dropped := sub.Dropped()
	if uint64(len(got))+dropped != uint64(len(want)) {
		t.Fatalf("%s: received %d + dropped %d != %d events published in the region", what, len(got), dropped, len(want))
	}
	j := 0
	for _, nt := range got {
		for j < len(want) && want[j].GlobalSequence != nt.GlobalSequence {
			j++
		}
		if j == len(want) {
			t.Fatalf("%s: notification %+v is not one of the region's events, or out of order", what, nt)
		}
		if w := notificationOf(want[j]); nt != w {
			t.Fatalf("%s: notification %+v, want %+v", what, nt, w)
		}
		j++
	}
}

func TestSubscriberNeverSlowsTheWriter(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.BroadcastCapacity = 64 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	regions := []core.Region{core.All(), core.Entity("w:1"), core.All().WithKind(kindB), core.Entity("nobody")}
	var subs []*core.Subscription
	for _, r := range regions {
		sub := s.SubscribeLossy(r)
		defer sub.Close()
		subs = append(subs, sub)
	}
	const writers, each = 4, 1500
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c, _ := core.NewCoordinate(fmt.Sprintf("w:%d", g), "s")
			var tk *core.Ticket
			for i := 0; i < each; i++ {
				var err error
				if tk, err = s.Submit(ctx, c, []core.Kind{kindA, kindB}[i%2], []byte(payloadN(i))); err != nil {
					errs <- err
					return
				}
			}
			if _, err := tk.Wait(ctx); err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := s.Stats().Events; got != writers*each {
		t.Fatalf("%d events, want %d", got, writers*each)
	}
	for i, sub := range subs {
		got := drainSub(t, sub)
		if len(got) > 64 {
			t.Fatalf("region %v: %d notifications held, more than the capacity", regions[i], len(got))
		}
		accountFor(t, fmt.Sprint(regions[i]), sub, got, mustQuery(t, s, regions[i]))
		if i < 3 && sub.Dropped() == 0 {
			t.Fatalf("region %v: nothing dropped by a subscriber that never read", regions[i])
		}
	}
}

// TestBurstWithCapacityOne: with a one-notification ring, concurrent
// writers overwhelm every subscriber. A projection watcher still converges
// on the true state; lossy subscribers account exactly for what they lost.
func TestBurstWithCapacityOne(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.BroadcastCapacity = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hot := core.Entity("hot")
	kindBRegion := core.All().WithKind(kindB)
	idle := s.SubscribeLossy(hot) // never reads during the burst
	defer idle.Close()

	// Readers that keep up as best they can.
	type reader struct {
		region core.Region
		batch  bool // RecvBatch instead of Recv
		sub    *core.Subscription
		got    []core.Notification
	}
	readers := []*reader{{region: hot}, {region: kindBRegion}, {region: core.All()}, {region: hot, batch: true}}
	rctx, stopReaders := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	for _, r := range readers {
		r.sub = s.SubscribeLossy(r.region)
		defer r.sub.Close()
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			buf := make([]core.Notification, 16)
			for r.batch {
				n, err := r.sub.RecvBatch(rctx, buf)
				if err != nil {
					return
				}
				if n == 0 {
					t.Error("RecvBatch returned no notifications and no error")
					return
				}
				r.got = append(r.got, buf[:n]...)
			}
			for {
				nt, err := r.sub.Recv(rctx)
				if err != nil {
					return
				}
				r.got = append(r.got, nt)
			}
		}()
	}

	// The watcher: every state it reports has a count that only grows.
	p := ledger{name: "hot", version: 1, factor: 1, allKinds: true}
	w := core.WatchProjection(s, "hot", p)
	var lastSeen atomic.Pointer[ledgerState]
	watchErr := make(chan error, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		prev := -1
		for {
			st, err := w.Next(wctx)
			if err != nil {
				watchErr <- err
				return
			}
			if len(st.Seqs) <= prev {
				watchErr <- fmt.Errorf("watcher went from %d to %d events", prev, len(st.Seqs))
				return
			}
			prev = len(st.Seqs)
			lastSeen.Store(&st)
		}
	}()

	const writers, each = 4, 150
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			hotC, _ := core.NewCoordinate("hot", "s")
			cold, _ := core.NewCoordinate(fmt.Sprintf("cold:%d", g), "s")
			for i := 0; i < each; i++ {
				k := []core.Kind{kindA, kindB, kindC}[(g+i)%3]
				var err error
				switch {
				case i%25 == 24:
					_, err = s.AppendBatch(ctx, []core.BatchItem{
						{Coordinate: hotC, Kind: kindB, Payload: []byte(`{"amt":1}`)},
						{Coordinate: cold, Kind: kindB, Payload: []byte(`{"amt":1}`)},
						{Coordinate: hotC, Kind: kindA, Payload: []byte(`{"amt":1}`)},
					})
				case i%3 == 0:
					_, err = s.Append(ctx, hotC, k, []byte(`{"amt":1}`))
				default:
					_, err = s.Append(ctx, cold, k, []byte(`{"amt":1}`))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	want, found, err := core.Project(s, "hot", p, core.Consistent())
	if err != nil || !found {
		t.Fatal(err, found)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st := lastSeen.Load(); st != nil && reflect.DeepEqual(*st, want) {
			break
		}
		select {
		case err := <-watchErr:
			t.Fatalf("watcher: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher did not converge: last saw %d events, the entity has %d", len(lastSeen.Load().Seqs), len(want.Seqs))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if w.Generation() != s.EntityGeneration("hot") {
		t.Fatalf("watcher generation %d, entity generation %d", w.Generation(), s.EntityGeneration("hot"))
	}
	stopWatch()

	stopReaders()
	rwg.Wait()
	for _, r := range readers {
		accountFor(t, fmt.Sprintf("reader %v (batch %v)", r.region, r.batch), r.sub, r.got, mustQuery(t, s, r.region))
	}
	hotEvents := mustQuery(t, s, hot)
	accountFor(t, "idle subscriber", idle, nil, hotEvents)
	if idle.Dropped() == 0 {
		t.Fatalf("idle subscriber with capacity 1 dropped nothing of %d events", len(hotEvents))
	}
}

// wantNotes is the notifications of events, in order.
func wantNotes(evs []core.StoredEvent) []core.Notification {
	out := make([]core.Notification, len(evs))
	for i, ev := range evs {
		out[i] = notificationOf(ev)
	}
	return out
}

// appendItems appends n events in one batch, to entities a:0, b:0, a:1,
// b:1, … alternately.
func appendItems(t *testing.T, s *core.Store, n int) {
	t.Helper()
	items := make([]core.BatchItem, n)
	for i := range items {
		c := mustCoord(t, fmt.Sprintf("%c:%d", "ab"[i%2], i/2%3), "s")
		items[i] = core.BatchItem{Coordinate: c, Kind: []core.Kind{kindA, kindB}[i/3%2], Payload: []byte(payloadN(i))}
	}
	if _, err := s.AppendBatch(context.Background(), items); err != nil {
		t.Fatal(err)
	}
}

// TestRecvBatchTakesEverythingReady: one RecvBatch call returns every
// notification that is ready — several groups' worth, across the ring's
// pages — up to len(buf), in order and field for field; an empty buf
// returns at once. An All loop that stops early gives back what it took
// but did not yield.
func TestRecvBatchTakesEverythingReady(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.BroadcastCapacity = 1024 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := s.SubscribeLossy(core.All())
	defer all.Close()
	bs := s.SubscribeLossy(core.Entity("b:"))
	defer bs.Close()
	for range 7 {
		appendItems(t, s, 100)
	}
	want := wantNotes(mustQuery(t, s, core.All()))
	buf := make([]core.Notification, 1000)
	if n, err := all.RecvBatch(ctx, buf); err != nil || n != 700 || !reflect.DeepEqual(buf[:n], want) {
		t.Fatalf("RecvBatch with 700 ready = %d, %v; want all 700 in order", n, err)
	}
	wantB := wantNotes(mustQuery(t, s, core.Entity("b:")))
	if n, err := bs.RecvBatch(ctx, buf[:len(wantB)]); err != nil || n != len(wantB) || !reflect.DeepEqual(buf[:n], wantB) {
		t.Fatalf("RecvBatch in a region, buffer of exactly the %d ready = %d, %v", len(wantB), n, err)
	}

	// Exactly len(buf) when more are ready, then the rest.
	appendItems(t, s, 10)
	want = wantNotes(mustQuery(t, s, core.All()))[700:]
	if n, err := all.RecvBatch(ctx, buf[:4]); err != nil || n != 4 || !reflect.DeepEqual(buf[:4], want[:4]) {
		t.Fatalf("RecvBatch into 4 with 10 ready = %d, %v", n, err)
	}
	if n, err := all.RecvBatch(ctx, buf); err != nil || n != 6 || !reflect.DeepEqual(buf[:6], want[4:]) {
		t.Fatalf("RecvBatch of the last 6 = %d, %v", n, err)
	}
	if n, err := all.RecvBatch(ctx, nil); n != 0 || err != nil {
		t.Fatalf("RecvBatch into an empty buffer = %d, %v; want 0, nil at once", n, err)
	}

	// All stopped early: what it took and did not yield comes next, ahead
	// of what is published after.
	appendItems(t, s, 10)
	var got []core.Notification
	for nt := range all.All(ctx) {
		if got = append(got, nt); len(got) == 3 {
			break
		}
	}
	appendItems(t, s, 2)
	want = wantNotes(mustQuery(t, s, core.All()))[710:]
	if nt, ok, err := all.TryRecv(); !ok || err != nil || nt != want[3] {
		t.Fatalf("TryRecv after All stopped = %+v, %v, %v; want %+v", nt, ok, err, want[3])
	}
	got = append(got, want[3])
	for nt := range all.All(ctx) {
		if got = append(got, nt); len(got) == len(want) {
			break
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("across All loops that stopped early:\n got %+v\nwant %+v", got, want)
	}
	expectNoNotification(t, all, "after reading everything")
	if all.Dropped() != 0 || bs.Dropped() != 0 {
		t.Fatalf("Dropped = %d, %d; want 0", all.Dropped(), bs.Dropped())
	}
}

// TestSubscribersThatKeepUpMissNothing: while writers publish
// concurrently in groups of every size, subscribers reading by Recv, by
// All and by RecvBatch, in every region, each receive every notification
// of their region exactly once, in publication order, and drop nothing.
func TestSubscribersThatKeepUpMissNothing(t *testing.T) {
	const writers, each = 4, 1200
	// The ring holds everything: nothing can be lost, whatever the timing.
	s := openStore(t, func(c *core.Config) { c.BroadcastCapacity = writers * each })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type reader struct {
		region core.Region
		mode   string
		batch  int
		sub    *core.Subscription
		got    []core.Notification
		n      atomic.Int64
	}
	readers := []*reader{
		{region: core.All(), mode: "recv"}, {region: core.All(), mode: "all"},
		{region: core.All(), mode: "batch", batch: 7}, {region: core.All(), mode: "batch", batch: 1000},
		{region: core.Entity("w:1"), mode: "batch", batch: 300}, {region: core.Entity("w:2"), mode: "all"},
		{region: core.All().WithKind(kindB), mode: "recv"},
	}
	rctx, stop := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	for _, r := range readers {
		r.sub = s.SubscribeLossy(r.region)
		defer r.sub.Close()
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			keep := func(ns ...core.Notification) {
				r.got = append(r.got, ns...)
				r.n.Store(int64(len(r.got)))
			}
			switch r.mode {
			case "recv":
				for {
					nt, err := r.sub.Recv(rctx)
					if err != nil {
						return
					}
					keep(nt)
				}
			case "all":
				for nt := range r.sub.All(rctx) {
					keep(nt)
				}
			case "batch":
				buf := make([]core.Notification, r.batch)
				for {
					n, err := r.sub.RecvBatch(rctx, buf)
					if err != nil {
						return
					}
					keep(buf[:n]...)
				}
			}
		}()
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c, _ := core.NewCoordinate(fmt.Sprintf("w:%d", g), "s")
			var tk *core.Ticket
			for i := 0; i < each; {
				var err error
				if i%50 == 0 {
					items := make([]core.BatchItem, 1+i%7)
					for j := range items {
						items[j] = core.BatchItem{Coordinate: c, Kind: kindB, Payload: []byte(payloadN(i + j))}
					}
					_, err = s.AppendBatch(ctx, items)
					i += len(items)
				} else {
					tk, err = s.Submit(ctx, c, []core.Kind{kindA, kindB}[i%2], []byte(payloadN(i)))
					i++
				}
				if err != nil {
					errs <- err
					return
				}
			}
			if _, err := tk.Wait(ctx); err != nil {
				errs <- err
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	wants := make([][]core.Notification, len(readers))
	for i, r := range readers {
		wants[i] = wantNotes(mustQuery(t, s, r.region))
		for r.n.Load() < int64(len(wants[i])) {
			if ctx.Err() != nil {
				t.Fatalf("reader %v (%s): %d of %d notifications", r.region, r.mode, r.n.Load(), len(wants[i]))
			}
			time.Sleep(time.Millisecond)
		}
	}
	stop()
	rwg.Wait()
	for i, r := range readers {
		if !reflect.DeepEqual(r.got, wants[i]) {
			t.Fatalf("reader %v (%s): got %d notifications, not the region's %d in order", r.region, r.mode, len(r.got), len(wants[i]))
		}
		expectNoNotification(t, r.sub, fmt.Sprintf("reader %v (%s)", r.region, r.mode))
		if d := r.sub.Dropped(); d != 0 {
			t.Fatalf("reader %v (%s): Dropped = %d", r.region, r.mode, d)
		}
	}
}

// TestDroppedIsExact: the ring holds the last BroadcastCapacity
// notifications; a subscriber further behind — one that never read, or
// one that read part of what was ready — gets exactly those, in order, and
// counts exactly the events of its region it lost. Recv takes what is
// ready ahead (up to 16): a subscriber that took 5 with its first Recv
// and then fell behind gets those 5, then the ring's last ones.
func TestDroppedIsExact(t *testing.T) {
	const capacity = 8
	s := openStore(t, func(c *core.Config) { c.BroadcastCapacity = capacity })
	ctx := context.Background()
	partway := s.SubscribeLossy(core.All())
	defer partway.Close()
	idle := s.SubscribeLossy(core.All())
	defer idle.Close()
	idleA := s.SubscribeLossy(core.Entity("a:"))
	defer idleA.Close()
	ahead := s.SubscribeLossy(core.All())
	defer ahead.Close()
	appendItems(t, s, 5)
	three := make([]core.Notification, 3)
	if n, err := partway.RecvBatch(ctx, three); n != 3 || err != nil {
		t.Fatalf("RecvBatch of 3 with 5 ready: %d, %v", n, err)
	}
	got := three
	gotAhead := recvN(t, ahead, 3)
	for i := 0; i < 20; i++ {
		mustAppend(t, s, mustCoord(t, []string{"a:1", "b:1"}[i%3/2], "s"), kindA, payloadN(i))
	}
	all := mustQuery(t, s, core.All()) // 25 events, the ring holds the last 8
	kept := wantNotes(all[len(all)-capacity:])
	if !reflect.DeepEqual(got, wantNotes(all[:3])) {
		t.Fatalf("first 3 = %+v", got)
	}
	buf := make([]core.Notification, 100)
	n, err := partway.RecvBatch(ctx, buf)
	if err != nil || !reflect.DeepEqual(buf[:n], kept) {
		t.Fatalf("after falling behind: %d notifications, %v; want the last %d", n, err, capacity)
	}
	if d := partway.Dropped(); d != uint64(len(all)-3-capacity) {
		t.Fatalf("reader that read 3: Dropped = %d, want %d", d, len(all)-3-capacity)
	}
	if !reflect.DeepEqual(gotAhead, wantNotes(all[:3])) {
		t.Fatalf("Recv: first 3 = %+v", gotAhead)
	}
	if rest := drainSub(t, ahead); !reflect.DeepEqual(rest, append(wantNotes(all[3:5]), kept...)) {
		t.Fatalf("Recv after falling behind: %d notifications, want the 2 it took ahead and the last %d", len(rest), capacity)
	}
	if d := ahead.Dropped(); d != uint64(len(all)-5-capacity) {
		t.Fatalf("Recv reader that took 5: Dropped = %d, want %d", d, len(all)-5-capacity)
	}
	if got := drainSub(t, idle); !reflect.DeepEqual(got, kept) {
		t.Fatalf("idle reader: %d notifications, want the last %d", len(got), capacity)
	}
	if d := idle.Dropped(); d != uint64(len(all)-capacity) {
		t.Fatalf("idle reader: Dropped = %d, want %d", d, len(all)-capacity)
	}
	var lostA, keptA []core.Notification
	for i, ev := range all {
		if ev.Coordinate.Entity[0] != 'a' {
			continue
		}
		if i < len(all)-capacity {
			lostA = append(lostA, notificationOf(ev))
		} else {
			keptA = append(keptA, notificationOf(ev))
		}
	}
	if got := drainSub(t, idleA); !reflect.DeepEqual(got, keptA) {
		t.Fatalf("idle reader of a:*: %+v, want %+v", got, keptA)
	}
	if d := idleA.Dropped(); d != uint64(len(lostA)) {
		t.Fatalf("idle reader of a:*: Dropped = %d, want %d", d, len(lostA))
	}
}

// The goroutine that wakes waiting subscribers ends with the store: after
// Close, the store leaves no goroutine behind, whether subscribers were
// waiting when it closed, kept calling Recv while it closed, or never
// waited at all — on a writable store and on a read-only one.
func TestSubscriberWakerEndsWithTheStore(t *testing.T) {
	settle := func(want int) int {
		deadline := time.Now().Add(3 * time.Second)
		n := runtime.NumGoroutine()
		for n > want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
			n = runtime.NumGoroutine()
		}
		return n
	}
	for _, mode := range []string{"waiting", "racing", "never waited", "read-only"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			if mode == "read-only" {
				s := openWith(t, testConfig(dir))
				mustAppend(t, s, mustCoord(t, "wk:0", "s"), kindA, `{}`)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(20 * time.Millisecond) // what earlier tests started has ended
			before := runtime.NumGoroutine()
			var s *core.Store
			var err error
			if mode == "read-only" {
				s, err = core.OpenReadOnly(testConfig(dir))
			} else {
				s, err = core.Open(testConfig(dir))
			}
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for i := 0; i < 8; i++ {
				sub := s.SubscribeLossy(core.All())
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer sub.Close()
					switch mode {
					case "never waited":
						_, _, _ = sub.TryRecv()
					case "racing":
						for {
							c, cancel := context.WithTimeout(ctx, 50*time.Microsecond)
							_, err := sub.Recv(c)
							cancel()
							if errors.Is(err, core.ErrSubscriptionClosed) {
								return
							}
							select {
							case <-stop:
								return
							default:
							}
						}
					default:
						for {
							if _, err := sub.Recv(ctx); err != nil {
								return
							}
						}
					}
				}()
			}
			if mode != "read-only" {
				for i := 0; i < 50; i++ {
					mustAppend(t, s, mustCoord(t, "wk:0", "s"), kindA, `{}`)
				}
			}
			if mode == "racing" {
				time.Sleep(20 * time.Millisecond)
			}
			if mode == "read-only" {
				time.Sleep(10 * time.Millisecond) // the receivers wait
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()
			if after := settle(before); after > before {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines before Open, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}
