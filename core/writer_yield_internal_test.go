package core

import (
	"testing"
	"time"
)

// yieldClock runs groups on a yielder against a clock the test moves.
type yieldClock struct {
	y   yielder
	now time.Time
}

// groups runs n groups, gap apart, each yield finding a request if found
// and taking took, and returns how many groups yielded.
func (c *yieldClock) groups(n int, found bool, took time.Duration) int {
	return c.groupsApart(n, time.Microsecond, found, took)
}

func (c *yieldClock) groupsApart(n int, gap time.Duration, found bool, took time.Duration) int {
	yields := 0
	for i := 0; i < n; i++ {
		c.now = c.now.Add(gap)
		if c.y.worth(c.now) {
			yields++
			n := 0
			if found {
				n = 1
			}
			c.y.paid(n, c.now, took)
			c.now = c.now.Add(took)
		}
	}
	return yields
}

// The writer yields for company in every group while yields bring
// requests quickly; after 16 in a row that bring none (a lone appender)
// it yields in one group of 17, then of 33, … at most one of 257.
func TestYielderBacksOffWhenAlone(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	cheap := 200 * time.Nanosecond
	if got := c.groups(100, true, cheap); got != 100 {
		t.Fatalf("paying yields: %d groups of 100 yielded", got)
	}
	if got := c.groups(16, false, cheap); got != 16 {
		t.Fatalf("the first 16 misses: %d yields, want 16", got)
	}
	// Backed off 16 groups; the next yield misses again: 32.
	if got := c.groups(16, false, cheap); got != 0 {
		t.Fatalf("%d yields while backed off for 16 groups", got)
	}
	if got := c.groups(1+32, false, cheap); got != 1 {
		t.Fatalf("%d yields in the 33 groups after a back-off of 16, want 1", got)
	}
	// The back-off stops growing at 256 groups.
	c.groups(10000, false, cheap)
	if c.y.wait != 256 {
		t.Fatalf("back-off grew to %d groups, want at most 256", c.y.wait)
	}
	// Company arrives: the first yield that finds a request quickly
	// brings back a yield per group.
	c.groups(257, true, cheap)
	if got := c.groups(50, true, cheap); got != 50 {
		t.Fatalf("after a paying yield: %d groups of 50 yielded", got)
	}
}

// A yield that comes back late (goroutines busy on the CPU kept the
// writer waiting), even one that found requests, stops yields for 64
// times as long as it took, so slow yields take at most 1/65 of the
// writer's time.
func TestYielderPausesAfterASlowYield(t *testing.T) {
	c := &yieldClock{now: time.Unix(0, 0)}
	slow := 20 * time.Millisecond
	start := c.now
	yields := c.groupsApart(200_000, 100*time.Microsecond, true, slow) // 20 s and more
	spent, elapsed := time.Duration(yields)*slow, c.now.Sub(start)
	// The first slow yield is taken for bad luck; the last pause may run
	// past the end.
	if yields < 10 || (spent-2*slow)*65 > elapsed {
		t.Fatalf("%d slow yields took %v of %v: want them about 1/65 of it", yields, spent, elapsed)
	}
	// Once the CPU frees up, the first probe that pays brings yields back.
	c.now = c.y.until
	if got := c.groups(20, true, time.Microsecond); got != 20 {
		t.Fatalf("the CPU is free again, yet %d of 20 groups yielded", got)
	}
	// A pause is never longer than yieldMaxPause.
	c.y.paid(1, c.now, time.Hour)
	c.y.paid(1, c.now, time.Hour)
	if d := c.y.until.Sub(c.now); d != yieldMaxPause {
		t.Fatalf("pause after an hour-long yield: %v, want %v", d, yieldMaxPause)
	}
}

// A yield that takes long because many appenders ran in it, each coming
// back with a request (64 producers), pays.
func TestYielderKeepsSlowYieldsThatFillTheGroup(t *testing.T) {
	var y yielder
	now := time.Unix(0, 0)
	for i := 0; i < 100; i++ {
		if !y.worth(now) {
			t.Fatalf("group %d: no yield after yields that found 64 requests each in 150 µs", i)
		}
		y.paid(64, now, 150*time.Microsecond)
		now = now.Add(200 * time.Microsecond)
	}
	// 8 requests in 10 ms (goroutines busy on the CPU): not worth it. One
	// such yield may be bad luck; after the second, the writer pauses.
	y.paid(8, now, 10*time.Millisecond)
	now = now.Add(10 * time.Millisecond)
	if !y.worth(now) {
		t.Fatal("no yield after one slow yield")
	}
	y.paid(8, now, 10*time.Millisecond)
	if y.worth(now.Add(time.Millisecond)) {
		t.Fatal("yielded again 1 ms after a second 10 ms yield that found 8 requests")
	}
	if !y.worth(now.Add(650 * time.Millisecond)) {
		t.Fatal("no yield 650 ms after a 10 ms one")
	}
	// A yield that pays ends the pauses: a slow one after it is bad luck
	// again.
	y.paid(1, now, time.Microsecond)
	y.paid(8, now, 10*time.Millisecond)
	if !y.worth(now.Add(time.Millisecond)) {
		t.Fatal("paused after one slow yield that followed a paying one")
	}
}
