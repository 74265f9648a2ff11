package cluster

import (
	"testing"
	"time"
)

// TestCatchUpIgnoresStaleAnnouncements: a commit index of 0, or one below
// what the node has applied — a leader that has just started and not yet
// committed in its term announces those — does not count the node caught
// up; an announcement at or past it does.
func TestCatchUpIgnoresStaleAnnouncements(t *testing.T) {
	var c catchUp
	applied := uint64(500)
	c.bind(func() uint64 { return applied }, func() uint64 { return 3 }, nil)
	now := time.Now()
	for _, commit := range []uint64{0, 245, 499} {
		c.announced(commit, 3, now)
		if at := c.moment(); !at.IsZero() {
			t.Fatalf("commit %d with %d applied counted the node caught up at %s", commit, applied, at)
		}
	}
	c.announced(500, 3, now)
	if at := c.moment(); !at.Equal(now) {
		t.Fatalf("commit 500 with 500 applied: caught up at %s, want %s", at, now)
	}
}

// TestCatchUpIgnoresWhatAPauseHeldBack: requests read right after the
// process was paused (SIGSTOP, a suspended VM) waited in its sockets
// during the pause; their commit indexes are of long ago and are not
// noted, whether they are read before the pause watcher looks again or
// after. Announcements once the quiet period has passed count again.
func TestCatchUpIgnoresWhatAPauseHeldBack(t *testing.T) {
	var c catchUp
	applied := uint64(100)
	c.bind(func() uint64 { return applied }, func() uint64 { return 1 }, nil)
	start := time.Now()
	c.lastLook.Store(start.UnixNano())
	c.announced(100, 1, start.Add(10*time.Millisecond))
	before := c.moment()
	if before.IsZero() {
		t.Fatal("a fresh announcement did not count")
	}
	// Read before the watcher looks again: the last look is 2 s old.
	resumed := start.Add(2 * time.Second)
	c.announced(100, 1, resumed)
	if at := c.moment(); !at.Equal(before) {
		t.Fatalf("an announcement read right after a 2 s pause moved the caught-up moment to %s", at)
	}
	// Read after the watcher noticed the pause (it set the quiet period).
	c.lastLook.Store(resumed.UnixNano())
	c.announced(100, 1, resumed.Add(20*time.Millisecond))
	if at := c.moment(); !at.Equal(before) {
		t.Fatalf("an announcement read during the quiet period after a pause moved the caught-up moment to %s", at)
	}
	// Past the quiet period (2 × the pause + 50 ms), announcements count.
	after := resumed.Add(4*time.Second + 100*time.Millisecond)
	c.lastLook.Store(after.UnixNano())
	c.announced(100, 1, after)
	if at := c.moment(); !at.Equal(after) {
		t.Fatalf("an announcement after the quiet period: caught up at %s, want %s", at, after)
	}
}

// TestWatchPausesNoticesAGap: the watcher looks at the clock every
// pauseLookEvery and reports a longer gap as a stall.
func TestWatchPausesNoticesAGap(t *testing.T) {
	var c catchUp
	stop, done := make(chan struct{}), make(chan struct{})
	go c.watchPauses(stop, done)
	defer func() { close(stop); <-done }()
	for deadline := time.Now().Add(5 * time.Second); c.lastLook.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never looked")
		}
	}
	// A look 2 s ago, as if the process had just resumed: the next look
	// reports the gap.
	c.lastLook.Store(time.Now().Add(-2 * time.Second).UnixNano())
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		quiet := c.quietUntil
		c.mu.Unlock()
		if quiet.After(time.Now().Add(3 * time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher did not report the gap (quiet until %s)", quiet)
		}
	}
}
