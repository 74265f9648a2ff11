package shares_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/shares"
)

// grant is a take that got its slot.
type grant struct {
	tenant  string
	release func()
}

// taker takes slots of p in the background, reporting each on granted.
func taker(t *testing.T, p *shares.Pool) (take func(tenant string), granted chan grant) {
	granted = make(chan grant, 256)
	return func(tenant string) {
		go func() {
			r, err := p.Take(context.Background(), tenant, 0)
			if err != nil {
				t.Error(err)
				return
			}
			granted <- grant{tenant, r}
		}()
	}, granted
}

// next is the next slot handed over.
func next(t *testing.T, granted chan grant) grant {
	t.Helper()
	select {
	case g := <-granted:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("no slot was handed over")
	}
	return grant{}
}

// waitingAtLeast waits until at least n takes wait for a slot of p.
func waitingAtLeast(p *shares.Pool, n int) {
	for p.Waiting() < n {
		time.Sleep(time.Millisecond)
	}
}

// crowd has twelve tenants "slow0".."slow11" take each slots of p, and
// returns the grants of the first Size() once every other take waits.
func crowd(t *testing.T, p *shares.Pool, take func(string), granted chan grant, each int) []grant {
	t.Helper()
	for i := range 12 {
		for range each {
			take(fmt.Sprint("slow", i))
		}
	}
	var held []grant
	for len(held) < p.Size() {
		held = append(held, next(t, granted))
	}
	waitingAtLeast(p, 12*each-p.Size())
	return held
}

// drain gives held back, then every slot handed over until nothing waits.
func drain(t *testing.T, p *shares.Pool, granted chan grant, held []grant) {
	t.Helper()
	for _, h := range held {
		h.release()
	}
	for p.Waiting() > 0 {
		next(t, granted).release()
	}
}

// TestFairServesAQuietTenant: with twelve tenants each keeping four
// takes waiting for eight slots (slow plugins, none of them busy yet), a
// quiet tenant's take gets a slot within as many hand-overs as there are
// tenants, not behind every waiting take (forty of them), and each
// tenant holds at most half. Both kinds of pool.
func TestFairServesAQuietTenant(t *testing.T) {
	for name, p := range map[string]*shares.Pool{"New": shares.New(8), "NewFair": shares.NewFair(8)} {
		t.Run(name, func(t *testing.T) {
			take, granted := taker(t, p)
			held := crowd(t, p, take, granted, 4)
			take("quiet")
			waitingAtLeast(p, 41)
			for handovers := 1; ; handovers++ {
				if handovers > 13 {
					t.Fatal("the quiet tenant waited past 13 hand-overs (one per waiting tenant)")
				}
				held[0].release()
				held = held[1:]
				g := next(t, granted)
				if g.tenant == "quiet" {
					t.Logf("the quiet tenant got a slot at hand-over %d", handovers)
					g.release()
					break
				}
				held = append(held, g)
				per := map[string]int{}
				for _, h := range held {
					if per[h.tenant]++; per[h.tenant] > 4 {
						t.Fatalf("%s holds %d of 8 slots", h.tenant, per[h.tenant])
					}
				}
			}
			drain(t, p, granted, held)
			for len(granted) > 0 {
				(<-granted).release()
			}
		})
	}
}

// TestFairServesATenantThatKeepsWaiting: a tenant with two takes,
// holding no slot with one waiting, is served before tenants whose
// single take gives its slot back and asks again (their entries go and
// come back at the back of the rotation), not after every one of them
// for ever.
func TestFairServesATenantThatKeepsWaiting(t *testing.T) {
	p := shares.NewFair(8)
	take, granted := taker(t, p)
	first, err := p.Take(context.Background(), "two-takes", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		take(fmt.Sprint("one-take", i))
	}
	var held []grant
	for len(held) < 7 {
		held = append(held, next(t, granted))
	}
	waitingAtLeast(p, 5)
	take("two-takes") // its second take waits
	waitingAtLeast(p, 6)
	first() // its first is done: it holds none, one waiting
	for range 20 {
		h := held[0]
		held = held[1:]
		h.release()
		g := next(t, granted)
		if g.tenant == "two-takes" {
			g.release()
			for _, h := range held {
				h.release()
			}
			return
		}
		held = append(held, g)
		take(h.tenant) // the released tenant asks again, its entry made anew
		time.Sleep(time.Millisecond)
	}
	t.Fatal("a tenant holding none with a take waiting was not served in 20 hand-overs")
}

// TestManyTenantsJustUnderBusy: more than eight tenants each keeping the
// slots a little under busy (so none is held to the busy share) still
// cannot keep a quiet tenant, served once long before, waiting past the
// tenants holding none that were never served: the pool remembers when
// it last served the quiet tenant, though its share went meanwhile.
func TestManyTenantsJustUnderBusy(t *testing.T) {
	p := shares.NewWindow(8, time.Hour) // busy past 3,600 slot-seconds: nobody here
	take, granted := taker(t, p)
	once, err := p.Take(context.Background(), "quiet", 0) // served once, long before
	if err != nil {
		t.Fatal(err)
	}
	once()
	held := crowd(t, p, take, granted, 2)
	take("quiet")
	waitingAtLeast(p, 17)
	// The quiet tenant waits only behind the slow tenants never served.
	holders := map[string]bool{}
	for _, h := range held {
		holders[h.tenant] = true
	}
	for handovers := 1; handovers <= 12-len(holders)+1; handovers++ {
		held[0].release()
		held = held[1:]
		g := next(t, granted)
		if g.tenant == "quiet" {
			g.release()
			drain(t, p, granted, held)
			return
		}
		held = append(held, g)
	}
	t.Fatalf("the quiet tenant waited past the %d slow tenants never served", 12-len(holders))
}

// TestFairKeepsNothingBack: a NewFair pool lets busy tenants hold every
// slot no other tenant waits for, where New's keeps half for the others.
func TestFairKeepsNothingBack(t *testing.T) {
	const window = 200 * time.Millisecond
	for _, c := range []struct {
		name string
		p    *shares.Pool
		want int
	}{{"New", shares.NewWindow(4, window), 2}, {"NewFair", shares.NewFair(4), 4}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			var rels []func()
			for _, tenant := range []string{"a", "a", "b", "b"} {
				r, err := c.p.Take(ctx, tenant, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				rels = append(rels, r)
			}
			time.Sleep(window) // a and b: 0.2 slot-seconds each, busy in New's pool (0.1)
			for _, r := range rels {
				r()
			}
			rels = rels[:0]
			for _, tenant := range []string{"a", "a", "b", "b"} {
				r, err := c.p.Take(ctx, tenant, 20*time.Millisecond)
				if err == nil {
					rels = append(rels, r)
				}
			}
			if len(rels) != c.want {
				t.Fatalf("busy tenants alone took %d of 4 slots, want %d", len(rels), c.want)
			}
			for _, r := range rels {
				r()
			}
		})
	}
}

// TestQuickCallsServedAtTheNextHandOver: a tenant whose calls hold a slot
// for no time is served at the next hand-over every time it asks, with
// twelve tenants whose calls hold slots for long keeping two takes each
// waiting for eight slots, whatever kind of pool; counting hand-overs
// rather than slot time, it waited a whole rotation of the slow tenants
// (twelve hand-overs, seconds) each time after the first.
func TestQuickCallsServedAtTheNextHandOver(t *testing.T) {
	for name, p := range map[string]*shares.Pool{"New": shares.NewWindow(8, time.Hour), "NewFair": shares.NewFair(8)} {
		t.Run(name, func(t *testing.T) {
			take, granted := taker(t, p)
			held := crowd(t, p, take, granted, 2)
			for round := range 5 {
				take("quick")
				waitingAtLeast(p, 17)
				for handovers := 1; ; handovers++ {
					time.Sleep(2 * time.Millisecond) // the slow calls hold their slots a while
					h := held[0]
					held = held[1:]
					h.release()
					take(h.tenant) // the slow tenant asks again at once
					g := next(t, granted)
					if g.tenant == "quick" {
						waitingAtLeast(p, 16)
						g.release() // its call took no time at all
						held = append(held, next(t, granted))
						if round > 0 && handovers > 1 {
							t.Fatalf("round %d: the quick tenant was served at hand-over %d, want the next one", round, handovers)
						}
						break
					}
					held = append(held, g)
					waitingAtLeast(p, 17)
				}
			}
			drain(t, p, granted, held)
		})
	}
}
