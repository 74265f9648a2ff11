package core

import (
	"context"
	"testing"
	"time"
)

// yieldClock runs groups on a yielder against a clock the test moves.
type yieldClock struct {
	y   yielder
	now time.Time
}

// groups runs n groups gap apart, each yield finding found requests and
// taking took, and returns how many groups yielded and the time their
// yields took.
func (c *yieldClock) groups(n int, gap time.Duration, found int, took time.Duration) (yields int, spent time.Duration) {
	for i := 0; i < n; i++ {
		c.now = c.now.Add(gap)
		if c.y.worth() && c.y.open(c.now) {
			yields++
			spent += took
			c.y.paid(found, c.now, took)
			c.now = c.now.Add(took)
		}
	}
	return yields, spent
}

const cheap = 200 * time.Nanosecond

// The writer yields in every group while yields find requests; after 16
// cheap ones in a row that find none (a lone appender) it yields in one
// group of 17, then of 33, … at most one of 257; a yield that finds
// requests brings back a yield per group and the 16 misses of grace.
func TestYielderBacksOffWhenAlone(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	if n, _ := c.groups(100, time.Microsecond, 1, cheap); n != 100 {
		t.Fatalf("yields that find requests: %d groups of 100 yielded", n)
	}
	if n, _ := c.groups(16, time.Microsecond, 0, cheap); n != 16 {
		t.Fatalf("the first 16 misses: %d yields, want 16", n)
	}
	if n, _ := c.groups(16, time.Microsecond, 0, cheap); n != 0 {
		t.Fatalf("%d yields while backed off for 16 groups", n)
	}
	if n, _ := c.groups(1+32, time.Microsecond, 0, cheap); n != 1 {
		t.Fatalf("%d yields in the 33 groups after a back-off of 16, want 1", n)
	}
	c.groups(10000, time.Microsecond, 0, cheap)
	if c.y.wait != 256 {
		t.Fatalf("back-off grew to %d groups, want 256 at most", c.y.wait)
	}
	// Company arrives: the next yield, within the longest back-off,
	// finds a request.
	for i := 0; ; i++ {
		if n, _ := c.groups(1, time.Microsecond, 1, cheap); n == 1 {
			break
		}
		if i == 256 {
			t.Fatal("no yield in the 257 groups of the longest back-off")
		}
	}
	if n, _ := c.groups(50, time.Microsecond, 1, cheap); n != 50 {
		t.Fatalf("after a yield that found a request: %d groups of 50 yielded", n)
	}
	// A yield that pays restores the grace: 10 misses, a hit, then 15
	// misses do not back off.
	c.groups(10, time.Microsecond, 0, cheap)
	c.groups(1, time.Microsecond, 1, cheap)
	if n, _ := c.groups(15, time.Microsecond, 0, cheap); n != 15 {
		t.Fatalf("%d yields in 15 misses after a yield that paid", n)
	}
	if n, _ := c.groups(1, time.Microsecond, 1, cheap); n != 1 {
		t.Fatal("backed off before the 16th miss")
	}
}

// Slow yields that find nothing (a lone appender on a busy machine) are
// misses too: the writer backs off from them as from cheap ones, so not
// every rare append pays a slow yield.
func TestYielderBacksOffFromSlowMisses(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	yields, _ := c.groups(3600, time.Second, 0, 12*time.Millisecond) // one append a second for an hour
	if yields > 16+3600/16 {
		t.Fatalf("%d of 3600 rare appends yielded slowly", yields)
	}
}

// Cheap yields that pay between slow ones that do not leave the budget
// alone: the slow ones still take at most 1/65 of the time.
func TestYielderBudgetIgnoresPayingYieldsBetweenSlowOnes(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	start := c.now
	var spent time.Duration
	for i := 0; i < 200_000; i++ {
		_, s := c.groups(1, 100*time.Microsecond, 1, 5*time.Millisecond)
		spent += s
		c.groups(1, 100*time.Microsecond, 1, cheap)
	}
	elapsed := c.now.Sub(start)
	if bound := elapsed/yieldShare + yieldBurst + 5*time.Millisecond; spent > bound {
		t.Fatalf("slow yields took %v of %v, more than %v", spent, elapsed, bound)
	}
}

// Yields that keep the writer waiting behind goroutines busy on the CPU,
// finding little, take at most 1/65 of its time beyond a burst of 20 ms;
// the writer still tries now and then.
func TestYielderBudgetsSlowYields(t *testing.T) {
	for _, took := range []time.Duration{60 * time.Microsecond, 20 * time.Millisecond, 300 * time.Millisecond} {
		c := &yieldClock{now: time.Unix(0, 0)}
		start := c.now
		yields, spent := c.groups(1_000_000, 100*time.Microsecond, 1, took) // 100 s and more
		elapsed := c.now.Sub(start)
		if bound := elapsed/yieldShare + yieldBurst + took; spent > bound {
			t.Errorf("yields of %v: %d took %v of %v, more than %v", took, yields, spent, elapsed, bound)
		}
		if spent < elapsed/yieldShare/2 {
			t.Errorf("yields of %v: %d took %v of %v: the writer gave up trying", took, yields, spent, elapsed)
		}
	}
}

// One slow yield is bad luck: the next group yields again. When the
// budget is spent, the pause lasts until it has grown back.
func TestYielderPausesWhenTheBudgetIsSpent(t *testing.T) {
	var y yielder
	at := time.Unix(0, 0)
	y.paid(0, at, 15*time.Millisecond)
	at = at.Add(15 * time.Millisecond)
	if !y.worth() || !y.open(at) {
		t.Fatal("no yield after one slow yield")
	}
	y.paid(0, at, 10*time.Millisecond) // 25 ms spent of 20: 5 ms short
	want := at.Add(10*time.Millisecond + (5*time.Millisecond-15*time.Millisecond/yieldShare)*yieldShare)
	if y.until.Sub(want).Abs() > time.Microsecond {
		t.Fatalf("paused until %v, want %v", y.until.Sub(at), want.Sub(at))
	}
	if y.open(want.Add(-time.Millisecond)) || !y.open(want) {
		t.Fatal("the pause does not end when the budget has grown back")
	}
	// However long the yield, the pause after it is yieldMaxPause.
	y.paid(0, want, time.Hour)
	if !y.until.Equal(want.Add(time.Hour + yieldMaxPause)) {
		t.Fatalf("paused %v after an hour-long yield, want %v", y.until.Sub(want.Add(time.Hour)), yieldMaxPause)
	}
}

// A yield that takes long because many appenders ran in it, each coming
// back with a request (64 producers), pays and spends nothing; one that
// finds a full mailbox after 40 ms does not (the credit stops at 64
// requests).
func TestYielderCreditsRequestsFound(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	if n, _ := c.groups(1000, 200*time.Microsecond, 64, 150*time.Microsecond); n != 1000 {
		t.Fatalf("%d of 1000 groups yielded", n)
	}
	if c.y.budget != yieldBurst {
		t.Fatalf("yields that filled the group spent %v of the budget", yieldBurst-c.y.budget)
	}
	c.y.paid(4096, c.now, 40*time.Millisecond)
	if c.y.budget != yieldBurst-40*time.Millisecond {
		t.Fatalf("a 40 ms yield finding 4096 requests left %v of the budget", c.y.budget)
	}
}

// Writes that arrive while the writer yields join its group, in the
// order they were sent.
func TestWritesSentDuringTheYieldJoinTheGroup(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.Sync.EveryNEvents = 1000
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	coord, _ := NewCoordinate("order:1", "shop")
	kind := MustKind(1, 1)
	if _, err := s.Append(ctx, coord, kind, []byte(`{"n":0}`)); err != nil {
		t.Fatal(err)
	}
	var joined []*Ticket
	s.w.yieldHook = func() {
		if joined != nil {
			return
		}
		joined = []*Ticket{}
		for _, p := range []string{`{"n":2}`, `{"n":3}`} {
			tk, err := s.Submit(ctx, coord, kind, []byte(p))
			if err != nil {
				t.Error(err)
				return
			}
			joined = append(joined, tk)
		}
	}
	before := s.Stats().GroupCommits
	r1, err := s.Append(ctx, coord, kind, []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(joined) != 2 {
		t.Fatalf("the writer did not yield (%d writes sent during it)", len(joined))
	}
	for i, tk := range joined {
		r, err := tk.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.Clock != r1.Clock+uint64(i)+1 {
			t.Fatalf("write %d sent during the yield has clock %d after %d", i, r.Clock, r1.Clock)
		}
	}
	if g := s.Stats().GroupCommits - before; g != 1 {
		t.Fatalf("the append and the two writes sent during its yield took %d groups, want 1", g)
	}
}
