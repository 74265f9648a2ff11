package shares_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/shares"
)

// TestShares: one tenant holds at most half of the slots, so another
// tenant still gets one while the first tenant's next take waits; a wait
// past its bound says which share ran out; a take without a bound waits
// while its context lasts; every slot comes back, once.
func TestShares(t *testing.T) {
	p := shares.New(2)
	ctx := context.Background()
	relA, err := p.Take(ctx, "slow", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Take(ctx, "slow", 30*time.Millisecond); !errors.Is(err, shares.ErrTenantShare) {
		t.Fatalf("the slow tenant's second take: %v, want ErrTenantShare", err)
	}
	relB, err := p.Take(ctx, "other", time.Second)
	if err != nil {
		t.Fatalf("another tenant while the slow one holds its share: %v", err)
	}
	if _, err := p.Take(ctx, "third", 30*time.Millisecond); !errors.Is(err, shares.ErrPool) {
		t.Fatalf("a third tenant with every slot taken: %v, want ErrPool", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.Take(short, "third", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an unbounded take with every slot taken: %v, want its context's end", err)
	}
	relA()
	relA() // once
	relB()
	for _, tenant := range []string{"slow", "other", "third"} {
		if all, mine := p.InUse(tenant); all != 0 || mine != 0 {
			t.Fatalf("after the releases: %d in use, %d by %s", all, mine, tenant)
		}
	}
	if n := p.Tenants(); n != 0 {
		t.Fatalf("after every take returned or gave up, the pool keeps %d tenants' shares", n)
	}
	if one := shares.New(1); one.PerTenant() != 1 || one.Size() != 1 {
		t.Fatalf("a pool of 1: %d per tenant of %d", one.PerTenant(), one.Size())
	}
}

// TestSharesOfGoneTenantsAreDropped: a pool that has served many tenants
// keeps only the shares of tenants whose takes hold or wait on a slot, so
// tenants created and deleted over a server's life cost it nothing.
func TestSharesOfGoneTenantsAreDropped(t *testing.T) {
	p := shares.New(4)
	ctx := context.Background()
	held, err := p.Take(ctx, "stays", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		release, err := p.Take(ctx, fmt.Sprintf("tenant-%d", i), 0)
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	if n := p.Tenants(); n != 1 {
		t.Fatalf("1,000 tenants came and went beside one holding a slot: %d shares kept, want 1", n)
	}
	second, err := p.Take(ctx, "stays", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, mine := p.InUse("stays"); mine != 2 {
		t.Fatalf("a tenant's second take while its first holds: %d of its share in use, want 2", mine)
	}
	held()
	if _, mine := p.InUse("stays"); mine != 1 || p.Tenants() != 1 {
		t.Fatalf("one of two takes returned: %d in use, %d shares kept; want 1 and 1", mine, p.Tenants())
	}
	second()
	if n := p.Tenants(); n != 0 {
		t.Fatalf("every take returned: %d shares kept, want 0", n)
	}
}

// A pool of 4 module checks: each tenant takes at most 2 at once.
func Example() {
	p := shares.New(4)
	release, err := p.Take(context.Background(), "acme", time.Second)
	if err != nil {
		return // busy: answer 503 with Retry-After
	}
	defer release()
	all, acme := p.InUse("acme")
	fmt.Println(p.Size(), p.PerTenant(), all, acme)
	// Output: 4 2 1 1
}

// TestRefusal: a wait that ran out says whose slots and the bounds;
// anything else is not a refusal.
func TestRefusal(t *testing.T) {
	p := shares.New(4)
	if r, ok := p.Refusal(shares.ErrTenantShare, "checks"); !ok || r != "checks: this tenant's take every slot they may (2 per tenant, 4 in all)" {
		t.Fatalf("tenant share: %q %v", r, ok)
	}
	if r, ok := p.Refusal(shares.ErrPool, "checks"); !ok || r != "checks: the server's take every slot they may (2 per tenant, 4 in all)" {
		t.Fatalf("pool: %q %v", r, ok)
	}
	for _, err := range []error{nil, context.Canceled} {
		if _, ok := p.Refusal(err, "checks"); ok {
			t.Fatalf("%v taken for a refusal", err)
		}
	}
}

// TestBusyTenantsShareHalf: tenants whose takes kept the slots busy
// lately (an eighth of the pool's capacity over the window) need one of
// the busy tenants' share, half the pool, besides their own: two busy
// tenants cannot take a pool of 2 from a third; the refusal says why; a
// tenant whose use has decayed takes its own share again.
func TestBusyTenantsShareHalf(t *testing.T) {
	const window = 400 * time.Millisecond
	p := shares.NewWindow(2, window) // busy past 0.1 slot-seconds
	ctx := context.Background()
	relA, err := p.Take(ctx, "a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	relC, err := p.Take(ctx, "c", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	relA()
	relC()
	quick, err := p.Take(ctx, "b", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	quick() // a moment's use: b is not busy
	if !p.Busy("a") || !p.Busy("c") || p.Busy("b") {
		t.Fatalf("busy: a %v, c %v, b %v; want a and c only", p.Busy("a"), p.Busy("c"), p.Busy("b"))
	}
	relA, err = p.Take(ctx, "a", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Take(ctx, "c", 10*time.Millisecond)
	if !errors.Is(err, shares.ErrBusyShare) {
		t.Fatalf("a second busy tenant while the first holds the busy share: %v, want ErrBusyShare", err)
	}
	if r, ok := p.Refusal(err, "checks"); !ok || !strings.Contains(r, "busy lately") {
		t.Fatalf("the refusal: %q %v", r, ok)
	}
	relB, err := p.Take(ctx, "b", 10*time.Millisecond)
	if err != nil {
		t.Fatalf("a tenant that is not busy while busy ones hold their share: %v", err)
	}
	relB()
	relA()
	time.Sleep(3 * window) // the use decays: 0.3 s × e⁻³ < 0.1 s
	if p.Busy("c") {
		t.Fatal("c is still busy after its use decayed")
	}
	relC, err = p.Take(ctx, "c", 10*time.Millisecond)
	if err != nil {
		t.Fatalf("c after its use decayed: %v", err)
	}
	relC()
	if all, _ := p.InUse("a"); all != 0 || p.Tenants() != 0 {
		t.Fatalf("after every release: %d in use, %d shares kept", all, p.Tenants())
	}
}

// TestManyShortTakesMakeATenantBusy: use is the time held, however it is
// split: many short takes in a row make a tenant busy as one long one
// does, so a tenant cannot stay out of the busy share by keeping each
// call short.
func TestManyShortTakesMakeATenantBusy(t *testing.T) {
	p := shares.NewWindow(2, 400*time.Millisecond) // busy past 0.1 slot-seconds
	ctx := context.Background()
	for range 30 {
		rel, err := p.Take(ctx, "a", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		rel()
	}
	if !p.Busy("a") {
		t.Fatal("30 takes of 10 ms in a row did not make the tenant busy")
	}
}

// TestHoldingCountsAsItRuns: a take still holding its slot counts as
// use while it runs, so tenants holding every slot with long takes are
// busy before any take returns, and the next take of another busy tenant
// waits for the busy share.
func TestHoldingCountsAsItRuns(t *testing.T) {
	p := shares.NewWindow(4, 400*time.Millisecond) // busy past 0.2 slot-seconds
	ctx := context.Background()
	var rels []func()
	for _, tenant := range []string{"x", "x", "y", "y"} {
		rel, err := p.Take(ctx, tenant, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	time.Sleep(150 * time.Millisecond) // 0.3 slot-seconds each, none returned
	if !p.Busy("x") || !p.Busy("y") {
		t.Fatalf("two tenants holding every slot for 150 ms: busy x %v, y %v; want both", p.Busy("x"), p.Busy("y"))
	}
	for _, rel := range rels {
		rel()
	}
}

// TestWaitingForItsShareHoldsNoBusySlot: a busy tenant's takes waiting
// for its own share do not hold the busy tenants' slots meanwhile, so
// another busy tenant takes one of the idle slots.
func TestWaitingForItsShareHoldsNoBusySlot(t *testing.T) {
	p := shares.NewWindow(4, 400*time.Millisecond)
	ctx := context.Background()
	var rels []func()
	for _, tenant := range []string{"a", "a", "b", "b"} { // each holds its share of 2
		rel, err := p.Take(ctx, tenant, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, rel)
	}
	time.Sleep(150 * time.Millisecond) // a and b are busy
	rels[2]()                          // b returns its slots
	rels[3]()
	waiting, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 2 { // a's third and fourth takes wait for a's own share
		go func() {
			if rel, err := p.Take(waiting, "a", 0); err == nil {
				rel()
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	rel, err := p.Take(ctx, "b", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("busy b with 2 of 4 slots idle while a's third take waits for a's share: %v", err)
	}
	rel()
	for _, rel := range rels[:2] {
		rel()
	}
}

// TestEndedContextTakesNothing: a take whose context has already ended
// fails with its error every time, never by chance against a free slot.
func TestEndedContextTakesNothing(t *testing.T) {
	p := shares.New(4)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 200 {
		if rel, err := p.Take(ctx, "a", 0); !errors.Is(err, context.Canceled) {
			if rel != nil {
				rel()
			}
			t.Fatalf("a take with its context ended: %v, want context.Canceled", err)
		}
	}
	if all, _ := p.InUse("a"); all != 0 || p.Tenants() != 0 {
		t.Fatalf("after refused takes: %d in use, %d shares kept", all, p.Tenants())
	}
}

// TestTryTake: TryTake takes a free slot at once; with none free (or the
// tenant's share full) it takes nothing and leaves nothing waiting, and
// a waiting take of another tenant comes first for the next free slot.
func TestTryTake(t *testing.T) {
	p := shares.NewFair(2)
	ctx := context.Background()
	a, ok := p.TryTake("a")
	if !ok {
		t.Fatal("TryTake of a free slot failed")
	}
	if _, ok := p.TryTake("a"); ok {
		t.Fatal("TryTake past the tenant's share (1 of 2) succeeded")
	}
	b, ok := p.TryTake("b")
	if !ok {
		t.Fatal("TryTake of the last free slot failed")
	}
	if _, ok := p.TryTake("c"); ok || p.Waiting() != 0 {
		t.Fatalf("TryTake of a full pool: ok %v, %d waiting; want refused, none waiting", ok, p.Waiting())
	}
	got := make(chan func(), 1)
	go func() {
		rel, err := p.Take(ctx, "c", 0)
		if err != nil {
			t.Error(err)
		}
		got <- rel
	}()
	for p.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	a()
	c := <-got
	if _, ok := p.TryTake("d"); ok {
		t.Fatal("TryTake took the slot handed to a waiting take")
	}
	b()
	c()
	if inUse, _ := p.InUse(""); inUse != 0 || p.Waiting() != 0 || p.Tenants() != 0 {
		t.Fatalf("after every release: %d held, %d waiting, %d tenants kept", inUse, p.Waiting(), p.Tenants())
	}
}
