package quota_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
)

// clock is a fake time source the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func want(t *testing.T, ex *quota.Exceeded, q string, limit float64, retry time.Duration) {
	t.Helper()
	if ex == nil {
		t.Fatalf("allowed, want %s refused", q)
	}
	if ex.Quota != q || ex.Limit != limit || ex.RetryAfter != retry {
		t.Fatalf("got %+v, want %s limit %v retry %v", *ex, q, limit, retry)
	}
}

func allowed(t *testing.T, ex *quota.Exceeded) {
	t.Helper()
	if ex != nil {
		t.Fatalf("refused: %+v", *ex)
	}
}

func TestEventBucketBoundary(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{EventsPerSecond: 10, EventsBurst: 5})
	allowed(t, tn.AllowWrite(5, 100)) // exactly the burst
	want(t, tn.AllowWrite(1, 0), "events_per_second", 10, 100*time.Millisecond)
	c.add(99 * time.Millisecond)
	want(t, tn.AllowWrite(1, 0), "events_per_second", 10, time.Millisecond)
	c.add(time.Millisecond)
	allowed(t, tn.AllowWrite(1, 0)) // refilled exactly one token
	want(t, tn.AllowWrite(1, 0), "events_per_second", 10, 100*time.Millisecond)
	// Larger than the bucket can ever hold: retrying will not help.
	c.add(time.Hour)
	want(t, tn.AllowWrite(6, 0), "events_burst", 5, 0)
	allowed(t, tn.AllowWrite(5, 0))
}

func TestBytesBucketAndBothOrNeither(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{EventsPerSecond: 100, EventsBurst: 10, BytesPerSecond: 1000, BytesBurst: 1000})
	allowed(t, tn.AllowWrite(1, 1000)) // exactly the bytes burst
	// Bytes short: no event token is taken either.
	want(t, tn.AllowWrite(1, 1), "bytes_per_second", 1000, time.Millisecond)
	want(t, tn.AllowWrite(1, 1001), "bytes_burst", 1000, 0)
	c.add(time.Second) // bytes full again; events bucket was full (9 left + refill, capped at 10)
	allowed(t, tn.AllowWrite(10, 0))
	// Events short while bytes has plenty: no byte is taken.
	want(t, tn.AllowWrite(1, 500), "events_per_second", 100, 10*time.Millisecond)
	allowed(t, tn.AllowWrite(0, 1000))
	// Both short: the longer wait is named.
	want(t, tn.AllowWrite(1, 500), "bytes_per_second", 1000, 500*time.Millisecond)
}

func TestUnlimitedAndDefaults(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{EventsPerSecond: -1, BytesPerSecond: 0, StorageBytes: -1, MaxPayloadBytes: -1, MaxBatchEvents: 0, MaxSubscriptions: -1, MaxCursors: -1})
	for i := 0; i < 1000; i++ {
		allowed(t, tn.AllowWrite(1<<20, 1<<30))
	}
	allowed(t, tn.CheckStorage(1<<60, 1<<30))
	allowed(t, tn.CheckPayload(1<<30))
	allowed(t, tn.CheckBatch(1<<30))
	allowed(t, tn.CheckCursors(1<<30))
	for i := 0; i < 100; i++ {
		if _, ex := tn.AcquireSubscription(); ex != nil {
			t.Fatal(ex)
		}
	}
	// Burst 0: one second's worth of the rate.
	tb := m.Tenant("b", control.Quotas{EventsPerSecond: 2.5})
	allowed(t, tb.AllowWrite(3, 0))
	want(t, tb.AllowWrite(1, 0), "events_per_second", 2.5, 400*time.Millisecond)
	want(t, tb.AllowWrite(4, 0), "events_burst", 3, 0)
}

func TestSizeChecksAtTheBoundary(t *testing.T) {
	m := quota.New()
	tn := m.Tenant("a", control.Quotas{StorageBytes: 1000, MaxPayloadBytes: 64, MaxBatchEvents: 3, MaxCursors: 2})
	allowed(t, tn.CheckStorage(900, 100))
	want(t, tn.CheckStorage(900, 101), "storage_bytes", 1000, 0)
	want(t, tn.CheckStorage(1001, 0), "storage_bytes", 1000, 0)
	allowed(t, tn.CheckPayload(64))
	want(t, tn.CheckPayload(65), "max_payload_bytes", 64, 0)
	allowed(t, tn.CheckBatch(3))
	want(t, tn.CheckBatch(4), "max_batch_events", 3, 0)
	allowed(t, tn.CheckCursors(1)) // the second may be defined
	want(t, tn.CheckCursors(2), "max_cursors", 2, 0)
	if n, ok := tn.MaxCursors(); !ok || n != 2 {
		t.Fatalf("MaxCursors = %d, %v", n, ok)
	}
}

func TestSubscriptionsCountAndIdempotentRelease(t *testing.T) {
	m := quota.New()
	tn := m.Tenant("a", control.Quotas{MaxSubscriptions: 2})
	r1, ex := tn.AcquireSubscription()
	allowed(t, ex)
	r2, ex := tn.AcquireSubscription()
	allowed(t, ex) // exactly the limit
	_, ex = tn.AcquireSubscription()
	want(t, ex, "max_subscriptions", 2, 0)
	r1()
	r1() // a second release gives nothing back
	if n := tn.Subscriptions(); n != 1 {
		t.Fatalf("%d open after one release, want 1", n)
	}
	r3, ex := tn.AcquireSubscription()
	allowed(t, ex)
	_, ex = tn.AcquireSubscription()
	want(t, ex, "max_subscriptions", 2, 0)
	// Lowering the quota keeps the open streams, refuses new ones.
	tn = m.Tenant("a", control.Quotas{MaxSubscriptions: 1})
	if tn.Subscriptions() != 2 {
		t.Fatalf("quota change lost the count: %d", tn.Subscriptions())
	}
	r2()
	_, ex = tn.AcquireSubscription()
	want(t, ex, "max_subscriptions", 1, 0)
	r3()
	_, ex = tn.AcquireSubscription()
	allowed(t, ex)
}

func TestQuotaChangeUpdatesInPlace(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	q := control.Quotas{EventsPerSecond: 10, EventsBurst: 10}
	tn := m.Tenant("a", q)
	allowed(t, tn.AllowWrite(10, 0))
	// Same limiter, new rate: the emptied bucket stays empty and refills
	// at the new rate.
	q.EventsPerSecond = 100
	if m.Tenant("a", q) != tn {
		t.Fatal("Tenant made a new limiter on a quota change")
	}
	want(t, tn.AllowWrite(1, 0), "events_per_second", 100, 10*time.Millisecond)
	c.add(10 * time.Millisecond)
	allowed(t, tn.AllowWrite(1, 0))
	// A smaller burst caps the bucket.
	c.add(time.Hour)
	q.EventsBurst = 4
	m.Tenant("a", q)
	want(t, tn.AllowWrite(5, 0), "events_burst", 4, 0)
	allowed(t, tn.AllowWrite(4, 0))
	want(t, tn.AllowWrite(1, 0), "events_per_second", 100, 10*time.Millisecond)
	// Lifted, then limited again (a full bucket).
	q.EventsPerSecond = -1
	m.Tenant("a", q)
	allowed(t, tn.AllowWrite(1000, 0))
	q.EventsPerSecond = 1
	m.Tenant("a", q)
	allowed(t, tn.AllowWrite(4, 0))
	want(t, tn.AllowWrite(1, 0), "events_per_second", 1, time.Second)
	if tn.Quotas() != q {
		t.Fatalf("Quotas = %+v", tn.Quotas())
	}
	// Forget starts over.
	m.Forget("a")
	if m.Tenant("a", q) == tn {
		t.Fatal("Forget kept the limiter")
	}
}

// Concurrent writers take exactly what the buckets hold, and a refused
// write takes from neither bucket.
func TestConcurrentAllowWriteTakesBothOrNeither(t *testing.T) {
	c := newClock() // frozen: no refill during the test
	m := quota.NewWithClock(c.now)
	q := control.Quotas{EventsPerSecond: 1, EventsBurst: 1000, BytesPerSecond: 1, BytesBurst: 5000}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if m.Tenant("a", q).AllowWrite(1, 10) == nil {
					ok.Add(1)
				} else {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 500 || refused.Load() != 1100 {
		t.Fatalf("%d allowed, %d refused; want 500 (bytes bucket 5000 / 10) and 1100", ok.Load(), refused.Load())
	}
	tn := m.Tenant("a", q)
	// The refused writes took no event tokens: 500 remain.
	allowed(t, tn.AllowWrite(500, 0))
	want(t, tn.AllowWrite(1, 0), "events_per_second", 1, time.Second)
}

// A paced write (an import) takes its tokens into debt and waits until
// the debt is paid at the quota's rate; the tenant's other writes are
// refused meanwhile; a cancelled context ends the wait at once.
func TestPaceWrite(t *testing.T) {
	m := quota.New()
	q := control.Quotas{EventsPerSecond: 1000, EventsBurst: 100, BytesPerSecond: -1}
	qt := m.Tenant("a", q)
	start := time.Now()
	// 100 from the full bucket, 200 more at 1000/s: about 200ms.
	if err := qt.PaceWrite(context.Background(), 300, 1<<20); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 5*time.Second {
		t.Fatalf("pacing 300 events at 1000/s with a burst of 100 took %v, want about 200ms", el)
	}
	if ex := qt.AllowWrite(20, 0); ex == nil || ex.Quota != "events_per_second" || ex.RetryAfter <= 0 {
		t.Fatalf("a write right after a paced one: %+v, want events_per_second refused", ex)
	}

	// Debt: a paced write takes a burst (100) at a time into debt; other
	// writes are told to wait until it is paid (about 100ms).
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- qt.PaceWrite(ctx, 400, 0) }()
	time.Sleep(20 * time.Millisecond)
	if ex := qt.AllowWrite(1, 0); ex == nil || ex.RetryAfter < 50*time.Millisecond {
		t.Fatalf("a write beside a paced one in debt: %+v, want refused for ≥ 50ms", ex)
	}
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("cancelled pacing: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a cancelled paced write kept waiting")
	}

	// No rate: no wait.
	free := m.Tenant("b", control.Quotas{EventsPerSecond: -1, BytesPerSecond: -1})
	start = time.Now()
	if err := free.PaceWrite(context.Background(), 1e6, 1<<30); err != nil || time.Since(start) > time.Second {
		t.Fatalf("unlimited pacing: %v after %v", err, time.Since(start))
	}
}

// TestUploadBucket: uploads draw on an hour's worth of bytes, refilled
// continuously; one larger than an hour's worth never fits (RetryAfter 0);
// a refused upload takes nothing; a negative quota is no limit, and a
// changed quota applies in place.
func TestUploadBucket(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{UploadBytesPerHour: 3600})
	allowed(t, tn.AllowUpload(3000))
	want(t, tn.AllowUpload(1000), "upload_bytes_per_hour", 3600, 400*time.Second) // 1 byte a second
	want(t, tn.AllowUpload(3601), "upload_bytes_per_hour", 3600, 0)
	c.add(400 * time.Second)
	allowed(t, tn.AllowUpload(1000)) // the refused one took nothing
	want(t, tn.AllowUpload(1), "upload_bytes_per_hour", 3600, time.Second)
	tn = m.Tenant("a", control.Quotas{UploadBytesPerHour: -1})
	allowed(t, tn.AllowUpload(1<<30))
	tn = m.Tenant("a", control.Quotas{UploadBytesPerHour: 7200})
	c.add(time.Hour)
	allowed(t, tn.AllowUpload(7200))
}

// TestUploadCharge: what an upload cost besides its bytes (its module's
// compile time) is charged whatever the bucket holds: the bucket owes it
// (at most an hour's worth), and the next upload waits until it is paid.
func TestUploadCharge(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{UploadBytesPerHour: 3600})
	allowed(t, tn.AllowUpload(3000))
	tn.ChargeUpload(1000) // 400 bytes more than the bucket held
	want(t, tn.AllowUpload(100), "upload_bytes_per_hour", 3600, 500*time.Second)
	c.add(500 * time.Second)
	allowed(t, tn.AllowUpload(100))
	tn.ChargeUpload(1 << 30) // at most an hour's worth is owed
	c.add(time.Hour)
	want(t, tn.AllowUpload(1), "upload_bytes_per_hour", 3600, time.Second)
	c.add(time.Second)
	allowed(t, tn.AllowUpload(1))
	tn = m.Tenant("a", control.Quotas{UploadBytesPerHour: -1})
	tn.ChargeUpload(1 << 30)
	allowed(t, tn.AllowUpload(1<<30))
}

// TestControlChangesPerDay: the day's budget of control-plane changes
// refills continuously (86400/budget seconds a change); the pace of 10/s
// applies beside it; a refused change takes from neither bucket; raising
// the budget keeps what was used; negative is no limit.
func TestControlChangesPerDay(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{ControlChangesPerDay: 4})
	for range 4 {
		allowed(t, tn.AllowControlChange(quota.Admin))
	}
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_day", 4, 6*time.Hour)
	c.add(6 * time.Hour)
	allowed(t, tn.AllowControlChange(quota.Admin)) // the refusal took nothing
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_day", 4, 6*time.Hour)
	// Raised to 50 with 4 used: 46 left (the pace's bucket holds 99).
	tn = m.Tenant("a", control.Quotas{ControlChangesPerDay: 50})
	n := 0
	for ; tn.AllowControlChange(quota.Admin) == nil; n++ {
	}
	if n != 46 {
		t.Fatalf("after raising the budget from 4 to 50 with 4 used: %d changes, want 46", n)
	}
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_day", 50, 1728*time.Second)
	tn = m.Tenant("a", control.Quotas{ControlChangesPerDay: -1})
	c.add(time.Minute)
	for range quota.ControlChangesBurst {
		allowed(t, tn.AllowControlChange(quota.Admin))
	}
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_second", quota.ControlChangesPerSecond, 100*time.Millisecond)
}

// TestControlChangeClasses: a tenant's admin credentials and its other
// credentials spend budgets and paces of their own; a quota change sets
// both.
func TestControlChangeClasses(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	tn := m.Tenant("a", control.Quotas{ControlChangesPerDay: 2})
	allowed(t, tn.AllowControlChange(quota.Member))
	allowed(t, tn.AllowControlChange(quota.Member))
	want(t, tn.AllowControlChange(quota.Member), "control_changes_per_day", 2, 12*time.Hour)
	allowed(t, tn.AllowControlChange(quota.Admin))
	allowed(t, tn.AllowControlChange(quota.Admin))
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_day", 2, 12*time.Hour)
	tn = m.Tenant("a", control.Quotas{ControlChangesPerDay: 3})
	allowed(t, tn.AllowControlChange(quota.Member))
	allowed(t, tn.AllowControlChange(quota.Admin))
	// The pace, per class too.
	tn = m.Tenant("b", control.Quotas{ControlChangesPerDay: -1})
	for range quota.ControlChangesBurst {
		allowed(t, tn.AllowControlChange(quota.Member))
	}
	want(t, tn.AllowControlChange(quota.Member), "control_changes_per_second", quota.ControlChangesPerSecond, 100*time.Millisecond)
	allowed(t, tn.AllowControlChange(quota.Admin))
}

// TestRestoreChargesRecordedSpends: a Manager restored with what the
// control plane recorded (a restarted server, a new cluster leader)
// charges each class's day budget and the hour's upload bytes as if the
// spends had been charged when made — older ones partly refilled — and
// replaces what it charged itself before; a tenant with no budget is
// not limited by its record.
func TestRestoreChargesRecordedSpends(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	q := control.Quotas{ControlChangesPerDay: 4, UploadBytesPerHour: 3600}
	tn := m.Tenant("a", q)
	allowed(t, tn.AllowControlChange(quota.Admin)) // replaced by the record below
	now := c.now()
	m.Restore("a", q, []control.Spend{
		{At: now.Add(-30 * time.Hour), Admin: true}, // refilled long ago
		{At: now.Add(-3 * time.Hour), Admin: true},  // half refilled by now
		{At: now.Add(-10 * time.Minute), Admin: false, Bytes: 3000},
		{At: now, Admin: true},
	})
	// Admin: 4 − 0.5 − 1 = 2.5 left.
	allowed(t, tn.AllowControlChange(quota.Admin))
	allowed(t, tn.AllowControlChange(quota.Admin))
	want(t, tn.AllowControlChange(quota.Admin), "control_changes_per_day", 4, 3*time.Hour)
	// Member: one spent of 4, 10 minutes ago.
	for range 3 {
		allowed(t, tn.AllowControlChange(quota.Member))
	}
	want(t, tn.AllowControlChange(quota.Member), "control_changes_per_day", 4, 5*time.Hour+50*time.Minute)
	// Uploads: 3000 bytes 600 s ago (a byte a second refills): 1200 left.
	want(t, tn.AllowUpload(1201), "upload_bytes_per_hour", 3600, time.Second)
	allowed(t, tn.AllowUpload(1200))

	// A restore with nothing recorded gives the full budgets back.
	m.Restore("a", q, nil)
	for range 4 {
		allowed(t, tn.AllowControlChange(quota.Member))
	}
	allowed(t, tn.AllowUpload(3600))
	// No budget: the record does not limit.
	free := control.Quotas{ControlChangesPerDay: -1, UploadBytesPerHour: -1}
	m.Restore("b", free, []control.Spend{{At: now, Admin: true, Bytes: 1 << 40}})
	allowed(t, m.Tenant("b", free).AllowUpload(1<<30))
	allowed(t, m.Tenant("b", free).AllowControlChange(quota.Admin))
	// An upload recorded larger than the bucket (the quota lowered since)
	// leaves it empty.
	low := control.Quotas{UploadBytesPerHour: 1000}
	m.Restore("c", low, []control.Spend{{At: now, Bytes: 5000}})
	want(t, m.Tenant("c", low).AllowUpload(1), "upload_bytes_per_hour", 1000, 3600*time.Millisecond)
}

// A rate near zero waits (nearly) forever: the wait is clamped, never
// wrapped to "allowed"; the control plane refuses positive rates below
// control.MinRate.
func TestTinyRatesStayLimits(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	for _, r := range []float64{1e-6, 1e-12, 1e-13, 1e-300} {
		tn := m.Tenant("tiny", control.Quotas{EventsPerSecond: r, EventsBurst: 1})
		allowed(t, tn.AllowWrite(1, 0))
		for range 10 {
			ex := tn.AllowWrite(1, 0)
			if ex == nil || ex.RetryAfter < 24*time.Hour {
				t.Fatalf("rate %g: the second write: %+v, want refused for at least a day", r, ex)
			}
		}
		m.Forget("tiny")
	}
	for _, r := range []float64{1e-7, 1e-13, 1e-300} {
		if err := (control.Quotas{EventsPerSecond: r}).Validate(); err == nil {
			t.Errorf("events_per_second %g was accepted", r)
		}
	}
	if err := (control.Quotas{EventsPerSecond: control.MinRate, BytesPerSecond: -1}).Validate(); err != nil {
		t.Errorf("events_per_second %g: %v", control.MinRate, err)
	}
}

// TestRequestBucket: requests_per_second lets exactly its bucket through
// at once, refuses the next with the time until a token refills, lets one
// through once it has, follows a changed quota in place, and is no limit
// when negative.
func TestRequestBucket(t *testing.T) {
	c := newClock()
	m := quota.NewWithClock(c.now)
	q := control.Quotas{RequestsPerSecond: 4, RequestsBurst: 3}
	tn := m.Tenant("a", q)
	for i := range 3 {
		if ex := tn.AllowRequest(); ex != nil {
			t.Fatalf("request %d of a bucket of 3 refused: %v", i+1, ex)
		}
	}
	ex := tn.AllowRequest()
	if ex == nil || ex.Quota != "requests_per_second" || ex.Limit != 4 || ex.RetryAfter != 250*time.Millisecond {
		t.Fatalf("the 4th request: %+v, want requests_per_second, retry after 250ms", ex)
	}
	c.add(249 * time.Millisecond)
	if ex := tn.AllowRequest(); ex == nil {
		t.Fatal("a request allowed before its token refilled")
	}
	c.add(time.Millisecond)
	if ex := tn.AllowRequest(); ex != nil {
		t.Fatalf("a request refused once its token refilled: %v", ex)
	}
	// Other tenants have buckets of their own.
	if ex := m.Tenant("b", q).AllowRequest(); ex != nil {
		t.Fatalf("another tenant refused: %v", ex)
	}
	// A lower rate applies at once (the bucket stays empty), no limit
	// lets everything through.
	q.RequestsPerSecond = 1
	if ex := m.Tenant("a", q).AllowRequest(); ex == nil || ex.RetryAfter != time.Second {
		t.Fatalf("after lowering the rate to 1/s: %+v", ex)
	}
	q.RequestsPerSecond = -1
	for range 1000 {
		if ex := m.Tenant("a", q).AllowRequest(); ex != nil {
			t.Fatalf("unlimited: %v", ex)
		}
	}
}
