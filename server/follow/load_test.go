package follow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/follow"
)

// TestFanOutLoad: whole-store and single-entity subscribers while events
// are appended durably (fsync per group commit) at a steady rate. Every
// subscriber must see exactly its events, each event is encoded once,
// and the acknowledgement-to-delivery latency is reported. By default a
// small run (10 + 100 subscribers, 1,000 events/s for 2 s); the
// measurement of the server's goal runs with
//
//	BATPAK_FOLLOW_LOAD=full go test -race=false -run TestFanOutLoad -v ./server/follow/
//
// (100 + 1,000 subscribers, 5,000 events/s for 10 s, p99 ≤ 200 ms
// asserted).
func TestFanOutLoad(t *testing.T) {
	whole, single, rate, dur := 10, 100, 1000, 2*time.Second
	full := os.Getenv("BATPAK_FOLLOW_LOAD") == "full"
	if full {
		whole, single, rate, dur = 100, 1000, 5000, 10*time.Second
	}
	s := openStore(t, t.TempDir(), func(c *core.Config) { c.Sync = core.SyncConfig{EveryNEvents: 1} })
	enc := &counter{}
	hub := newHub(t, s, follow.Options{Encode: enc.encode})
	total := rate * int(dur/time.Second)

	// ackAt[seq]: when the append of seq returned (unix ns).
	ackAt := make([]atomic.Int64, total+1)
	const buckets = 2001 // 1 ms each; the last is "2 s or more"
	type result struct {
		seqs []uint64
		hist []uint32
		err  error
	}
	subs := make([]*follow.Subscription, whole+single)
	results := make([]result, len(subs))
	entity := func(i int) string { return fmt.Sprintf("acct:%04d", i) }
	for i := range subs {
		r := core.All()
		if i >= whole {
			r = core.Entity(entity(i - whole))
		}
		sub, err := hub.Subscribe(r, follow.FromBeginning())
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}
	var received atomic.Int64 // frames delivered, all subscribers
	want := int64(whole*total + total)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	for i, sub := range subs {
		readers.Add(1)
		go func() {
			defer readers.Done()
			res := &results[i]
			res.hist = make([]uint32, buckets)
			isWhole := i < whole
			var last int64 = -1
			for {
				fs, err := sub.Next(ctx)
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						res.err = err
					}
					return
				}
				now := time.Now().UnixNano()
				for _, f := range fs {
					if isWhole {
						if int64(f.Seq) != last+1 {
							res.err = fmt.Errorf("after %d got %d", last, f.Seq)
							return
						}
						last = int64(f.Seq)
					} else {
						res.seqs = append(res.seqs, f.Seq)
					}
					lat := int64(0)
					if f.Seq < uint64(len(ackAt)) {
						if a := ackAt[f.Seq].Load(); a != 0 {
							lat = max(0, now-a)
						}
					}
					res.hist[min(buckets-1, int(lat/int64(time.Millisecond)))]++
				}
				received.Add(int64(len(fs)))
			}
		}()
	}

	// Writers: a pacer hands out one token per event at the target rate;
	// 64 concurrent appenders take them (group commit shares fsyncs).
	tokens := make(chan int, total)
	perEntity := make([][]uint64, single)
	var peMu sync.Mutex
	var writers sync.WaitGroup
	var writeErr atomic.Value
	start := time.Now()
	for w := 0; w < 64; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for n := range tokens {
				e := n % single
				c := coord(t, entity(e), "load")
				r, err := s.Append(context.Background(), c, kindA, []byte(`{"n":1}`))
				if err != nil {
					writeErr.Store(err)
					return
				}
				ackAt[r.GlobalSequence].Store(time.Now().UnixNano())
				peMu.Lock()
				perEntity[e] = append(perEntity[e], r.GlobalSequence)
				peMu.Unlock()
			}
		}()
	}
	testenv.Feed(tokens, total, float64(rate), start)
	writers.Wait()
	appendDur := time.Since(start)
	if err, _ := writeErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for received.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	readers.Wait()
	for _, sub := range subs {
		sub.Close()
	}

	hist := make([]uint64, buckets)
	for i := range results {
		res := &results[i]
		if res.err != nil {
			t.Fatalf("subscriber %d: %v", i, res.err)
		}
		if i >= whole {
			exp := slices.Clone(perEntity[i-whole])
			sort.Slice(exp, func(a, b int) bool { return exp[a] < exp[b] })
			if !equalSeqs(res.seqs, exp) {
				t.Fatalf("entity subscriber %d: %d events, want %d", i-whole, len(res.seqs), len(exp))
			}
		}
		for b, n := range res.hist {
			hist[b] += uint64(n)
		}
	}
	if got := received.Load(); got != want {
		t.Fatalf("delivered %d frames; want %d", got, want)
	}
	if n := enc.n.Load(); n != int64(total) {
		t.Fatalf("Encode called %d times for %d events; want once per event", n, total)
	}
	pct := func(p float64) int {
		var sum uint64
		for b, n := range hist {
			if sum += n; float64(sum) >= p*float64(want) {
				return b + 1
			}
		}
		return buckets
	}
	p50, p99, p999 := pct(0.50), pct(0.99), pct(0.999)
	t.Logf("%d whole-store + %d single-entity subscribers, %d events in %v (%.0f/s durable): %d frames delivered, %d encodes; ack-to-delivery p50 ≤ %d ms, p99 ≤ %d ms, p99.9 ≤ %d ms",
		whole, single, total, appendDur.Round(time.Millisecond), float64(total)/appendDur.Seconds(), want, enc.n.Load(), p50, p99, p999)
	if full && p99 > 200 {
		t.Fatalf("p99 ack-to-delivery %d ms; the goal is ≤ 200 ms", p99)
	}
}
