package tenancy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// TestManyTenants opens N tenant stores through one registry (N =
// $BATPAK_TENANTS, default 200), appends one event to each, and reports
// what an open idle tenant costs — file descriptors, goroutines, resident
// memory — and the latency of a first Acquire+Get on a closed small
// tenant, with the registry below its limit and full (idle stores evicted
// to make room). The documented
// figures (StoreConfig) come from
//
//	BATPAK_TENANTS=10000 go test -count=1 -run TestManyTenants -v ./server/tenancy/
//
// It fails if an idle tenant costs more than 1.1 descriptors or 2.1
// goroutines, or (from 1,000 tenants) more than 256 KiB of memory.
func TestManyTenants(t *testing.T) {
	n := 200
	if v := os.Getenv("BATPAK_TENANTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("BATPAK_TENANTS=%q: want a positive count", v)
		}
	}
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self (Linux)")
	}
	const small = 200 // closed small tenants for the latency figure
	root := filepath.Join(t.TempDir(), "tenants")
	ctx := context.Background()

	// The small tenants: 10 events each, closed.
	ids := make([]core.EventID, small)
	for i := range small {
		s, err := core.Open(tenancy.StoreConfig(filepath.Join(root, fmt.Sprintf("small-%d", i)), false))
		if err != nil {
			t.Fatal(err)
		}
		for j := range 10 {
			ids[i] = appendOne(t, s, fmt.Sprintf("order:%d", j)).ID
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	r, err := tenancy.New(tenancy.Config{
		Root: root,
		// The first half of the small tenants fits below the 1% the
		// registry keeps free; the second half fills it, and the registry
		// evicts idle stores to keep room.
		MaxOpen:     (n+small/2)*100/99 + 2,
		IdleTimeout: -1,
		StoreConfig: func(string) core.Config { return tenancy.StoreConfig("", true) },
		Exists:      func(string) bool { return true },
		Logger:      quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		start := time.Now()
		if err := r.Close(ctx); err != nil {
			t.Error(err)
		}
		t.Logf("Close of %d stores: %v", r.Stats().Opens, time.Since(start))
	}()

	f0, g0, m0 := openFDs(t), runtime.NumGoroutine(), settledRSS()
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				l, err := r.Acquire(ctx, fmt.Sprintf("t%d", i))
				if err != nil {
					t.Error(err)
					continue
				}
				appendOne(t, l.Store(), "order:1")
				l.Release()
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		return
	}
	opened := time.Since(start)
	// Each writer releases its segment after a second idle.
	deadline := time.Now().Add(10 * time.Second)
	for openFDs(t)-f0 > n+n/1000 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	f1, g1, m1 := openFDs(t), runtime.NumGoroutine(), settledRSS()
	fds := float64(f1-f0) / float64(n)
	gor := float64(g1-g0) / float64(n)
	rss := float64(m1-m0) / float64(n)
	t.Logf("%d tenants open, one durable event each, in %v (%.0f tenants/s)", n, opened.Round(time.Millisecond), float64(n)/opened.Seconds())
	t.Logf("per open idle tenant: %.2f file descriptors, %.2f goroutines, %.1f KiB RSS (process: %d fds, %.1f MiB RSS)", fds, gor, rss/1024, f1, float64(m1)/(1<<20))

	// First Acquire+Get on a closed small tenant: with a free slot, then
	// with an eviction (the registry is full of unleased stores).
	measure := func(from, to int) []time.Duration {
		var lat []time.Duration
		for i := from; i < to; i++ {
			start := time.Now()
			l, err := r.Acquire(ctx, fmt.Sprintf("small-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Store().Get(ids[i]); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(start))
			l.Release()
		}
		return lat
	}
	free := measure(0, small/2)
	evicting := measure(small/2, small)
	st := r.Stats()
	if st.Evictions == 0 || st.Open > (n+small/2)*100/99+2 {
		t.Fatalf("stats %+v: want evictions, at most MaxOpen open", st)
	}
	t.Logf("first Acquire+Get of a closed 10-event tenant, registry below its limit: %s", percentiles(free))
	t.Logf("first Acquire+Get of a closed 10-event tenant, registry full (%d evictions): %s", st.Evictions, percentiles(evicting))

	if fds > 1.1 {
		t.Errorf("%.2f descriptors per idle tenant, want at most 1.1", fds)
	}
	if gor > 2.1 {
		t.Errorf("%.2f goroutines per idle tenant, want at most 2.1", gor)
	}
	if n >= 1000 && rss > 256<<10 {
		t.Errorf("%.1f KiB RSS per idle tenant, want at most 256", rss/1024)
	}
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settledRSS is the resident set after a collection has returned freed
// memory to the system, in bytes.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func percentiles(d []time.Duration) string {
	slices.Sort(d)
	p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))].Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v, p99 %v, max %v (%d tenants)", p(0.5), p(0.99), d[len(d)-1].Round(time.Microsecond), len(d))
}
