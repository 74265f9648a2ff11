package tenantplugin

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/shares"
)

// TestCallSlotGivesEverythingBack: 40 tenants, four readers each, take
// a tenant's slot and a fold's turn with contexts ended at random and
// holds of up to 100 ms: never more turns held at once than call slots,
// a fold's plugin calls admitted in its turn without waiting, and once
// they are done nothing is held or waiting — the call slots, the folds
// in flight, any tenant's slots.
func TestCallSlotGivesEverythingBack(t *testing.T) {
	const running = 8
	m := &Manager{calls: shares.NewFair(Calls), running: shares.New(running)}
	ths := make([]*tenantHost, 40)
	for i := range ths {
		ths[i] = &tenantHost{calls: make(chan struct{}, TenantCalls)}
	}
	var held atomic.Int32
	var ok, busy atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for i := range ths {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for time.Now().Before(deadline) {
					ctx, cancel := context.WithCancel(context.Background())
					if r.IntN(3) == 0 {
						time.AfterFunc(time.Duration(r.IntN(2000))*time.Microsecond, cancel)
					}
					tenant := fmt.Sprint("t", i)
					rel, err := tenantSlot(ctx, ths[i], CallSlotWait)
					if err == nil {
						turn := &foldTurn{m: m, tenant: tenant, ctx: ctx, deadline: time.Now().Add(CallSlotWait)}
						var fold func()
						if fold, err = turn.admit(); err == nil {
							callCtx := context.WithValue(ctx, foldTurnKey{}, turn)
							first, ok := turnSlot(callCtx)
							if !ok {
								t.Error("a fold's first call found no slot in its turn")
							} else if _, again := turnSlot(callCtx); again {
								t.Error("a fold's second call found the slot its first took")
							}
							rel = func() { first(); fold(); <-ths[i].calls }
						} else {
							<-ths[i].calls
						}
					}
					switch {
					case err == nil:
						ok.Add(1)
						if n := held.Add(1); n > running {
							t.Errorf("%d turns held at once, more than the %d call slots", n, running)
						}
						time.Sleep(time.Duration(r.IntN(100)) * time.Millisecond)
						held.Add(-1)
						rel()
					case errors.Is(err, ErrBusy):
						busy.Add(1)
					case !errors.Is(err, context.Canceled):
						t.Errorf("callSlot: %v", err)
					}
					cancel()
				}
			}()
		}
	}
	wg.Wait()
	for name, pool := range map[string]*shares.Pool{"folds in flight": m.calls, "call slots": m.running} {
		if inUse, _ := pool.InUse(""); inUse != 0 || pool.Waiting() != 0 || pool.Tenants() != 0 {
			t.Fatalf("%s after every reader returned: %d held, %d waiting, %d tenants kept", name, inUse, pool.Waiting(), pool.Tenants())
		}
	}
	for i, th := range ths {
		if len(th.calls) != 0 {
			t.Fatalf("tenant %d holds %d of its slots after every reader returned", i, len(th.calls))
		}
	}
	if ok.Load() == 0 {
		t.Fatal("no reader got a slot")
	}
}
