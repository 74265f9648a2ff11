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
// projection slots with contexts ended at random and holds of up to
// 100 ms: never more than Calls held at once, and once they are done
// nothing is held or waiting, the server's slots nor any tenant's.
func TestCallSlotGivesEverythingBack(t *testing.T) {
	m := &Manager{calls: shares.NewFair(Calls)}
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
					rel, err := m.callSlot(ctx, fmt.Sprint("t", i), ths[i])
					switch {
					case err == nil:
						ok.Add(1)
						if n := held.Add(1); n > Calls {
							t.Errorf("%d slots held at once, more than %d", n, Calls)
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
	if inUse, _ := m.calls.InUse(""); inUse != 0 || m.calls.Waiting() != 0 || m.calls.Tenants() != 0 {
		t.Fatalf("after every reader returned: %d slots held, %d waiting, %d tenants kept", inUse, m.calls.Waiting(), m.calls.Tenants())
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
