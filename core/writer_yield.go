package core

import (
	"runtime"
	"time"
)

// The writer's yield for company: with no group size to wait for (a
// buffered store, or a durable one whose last group and queue held one
// write between them), gather yields the processor at most once per
// group when its mailbox runs dry, so that the appenders it just
// answered — runnable on its P but not yet running — send their next
// writes into this group instead of each coming back to a group of its
// own.

// yieldForCompany yields if the yielder says it is worth it, and reports
// whether it did (the caller then takes what arrived meanwhile).
func (w *writer) yieldForCompany() bool {
	if !w.yield.worth() {
		return false
	}
	at := time.Now()
	if !w.yield.open(at) {
		return false
	}
	runtime.Gosched()
	if w.yieldHook != nil {
		w.yieldHook()
	}
	w.yield.paid(len(w.s.mailbox), at, time.Since(at))
	return true
}

// yielder decides whether the yield is worth its cost. On a P with
// nothing else to run a yield costs ~0.2 µs; but it also gives up the
// writer's place at the head of the run queue, and with goroutines busy
// on the CPU (a projection's fold, a plugin, anything computing) the
// writer waits behind them for a time slice or more: 10–40 ms measured
// here beside four spinning goroutines. So:
//
//   - A yield pays when it finds requests and came back within
//     yieldSlow, or within yieldPerRequest for each request it found,
//     counting yieldCreditMax at most (64 appenders take ~100 µs to come
//     back, and fill the group).
//   - A yield that took longer than yieldSlow and did not pay spends from
//     a budget that grows by 1/65 of the (wall-clock) time passing, up to
//     yieldBurst: one slow yield now and then (a collection, the vCPU
//     taken away) is bad luck; when the budget is overdrawn, the writer
//     stops yielding until it is back to zero (a minute at most). Such
//     yields so take at most about 1/65 of the time, plus yieldBurst and
//     one yield (for yields under 0.9 s; longer ones pause a minute).
//   - 16 misses in a row, cheap or slow, that find nothing (a lone
//     appender; with a few, a miss now and then is the price of the
//     hits) make the writer skip the yield for the next 16 groups, then
//     32, doubling up to 256 while yields keep finding nothing: a few
//     hundred nanoseconds now and then to notice when company arrives.
//     A yield that pays ends the back-off.
//
// Only the writer goroutine uses it. The zero value is ready: it yields.
type yielder struct {
	misses uint8  // yields that found nothing since the last that paid (at most 16)
	skip   uint16 // groups left to go without yielding
	wait   uint16 // the last back-off, in groups (0: none since a yield paid)

	budget time.Duration // for slow yields that did not pay
	last   time.Time     // when the budget was last topped up
	until  time.Time     // no yield before then: the budget is spent
}

const (
	yieldSlow       = 50 * time.Microsecond // a yield that finds requests pays within this
	yieldPerRequest = 10 * time.Microsecond // … or within this for each request found
	yieldCreditMax  = 64                    // … counting this many at most
	yieldBurst      = 20 * time.Millisecond // the most the budget holds
	yieldMaxPause   = time.Minute           // the longest pause
	yieldShare      = 65                    // slow yields take at most 1/yieldShare of the time
)

// worth reports whether this group may yield, counting down a back-off
// after misses. It reads no clock.
func (y *yielder) worth() bool {
	if y.skip > 0 {
		y.skip--
		return false
	}
	return true
}

// open reports whether the budget for slow yields allows one at now.
func (y *yielder) open(now time.Time) bool { return !now.Before(y.until) }

// paid records how many requests the yield started at at found waiting,
// and how long it took.
func (y *yielder) paid(found int, at time.Time, took time.Duration) {
	if y.last.IsZero() {
		y.budget = yieldBurst
	} else if d := at.Sub(y.last); d > 0 {
		y.budget = min(y.budget+d/yieldShare, yieldBurst)
	}
	y.last = at
	credit := time.Duration(min(found, yieldCreditMax)) * yieldPerRequest
	slow := took >= yieldSlow && took >= credit
	if slow {
		y.budget -= took
		if y.budget < 0 {
			pause := yieldMaxPause
			if -y.budget < yieldMaxPause/yieldShare {
				pause = -y.budget * yieldShare
			}
			y.until = at.Add(took + pause)
		}
	}
	switch {
	case found > 0 && !slow: // it paid
		y.misses, y.skip, y.wait = 0, 0, 0
		return
	case found > 0: // slow, but not a miss
		return
	}
	// A miss, cheap or slow: 16 in a row before the first back-off; after
	// it, one.
	if y.misses++; y.misses < 16 && y.wait == 0 {
		return
	}
	y.misses = 0
	y.wait = min(max(2*y.wait, 16), 256)
	y.skip = y.wait
}
