package tenantplugin_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenantplugin"
)

// TestStateCacheBudget: the cache holds at most its byte budget, drops
// the least recently used first, keeps tenants' keys apart, and Forget
// drops one tenant's states only.
func TestStateCacheBudget(t *testing.T) {
	const budget = 64 << 10
	c := tenantplugin.NewStateCache(budget)
	a, b := c.Tenant("acme"), c.Tenant("globex")
	state := make([]byte, 1000)
	a.Put("k", core.CachedState{State: []byte("acme's"), UpTo: 1})
	b.Put("k", core.CachedState{State: []byte("globex's"), UpTo: 2})
	if st, ok := a.Get("k"); !ok || string(st.State) != "acme's" {
		t.Fatalf("acme's key: %q %v", st.State, ok)
	}
	if st, ok := b.Get("k"); !ok || string(st.State) != "globex's" {
		t.Fatalf("globex's key: %q %v", st.State, ok)
	}
	// Three tenants, each within its half, fill the whole: the least
	// recently used of all goes.
	others := []core.ProjectionCache{b, c.Tenant("initech")}
	for i := 0; i < 1000; i++ {
		a.Get("k") // kept recently used
		a.Put(fmt.Sprint("e", i), core.CachedState{State: state})
		others[i%2].Put(fmt.Sprint("e", i), core.CachedState{State: state})
		if n := c.Bytes(); n > budget {
			t.Fatalf("after %d puts the cache holds %d bytes, over its budget %d", i+1, n, budget)
		}
	}
	if _, ok := a.Get("k"); !ok {
		t.Error("the most recently used state was dropped")
	}
	if _, ok := b.Get("k"); ok {
		t.Error("the least recently used state is still held past the budget")
	}
	if _, ok := a.Get("e0"); ok {
		t.Error("the oldest state is still held past the budget")
	}
	// A state larger than a quarter of the budget is not kept.
	a.Put("big", core.CachedState{State: make([]byte, budget/4+1)})
	if _, ok := a.Get("big"); ok {
		t.Error("a state over a quarter of the budget was kept")
	}
	b.Put("x", core.CachedState{State: []byte("x")})
	c.Forget("acme")
	if _, ok := a.Get("k"); ok {
		t.Error("Forget kept acme's state")
	}
	if _, ok := b.Get("x"); !ok {
		t.Error("Forget(acme) dropped globex's state")
	}
}

// TestStateCacheTenantShare: a tenant holds at most half of the cache:
// one that keeps putting large states drops its own oldest, and another
// tenant's states, however long unused, stay (before, four states of 15
// MiB from one tenant pushed every other tenant's out of the server's 64
// MiB).
func TestStateCacheTenantShare(t *testing.T) {
	const budget = 64 << 20
	c := tenantplugin.NewStateCache(budget)
	acme, globex := c.Tenant("acme"), c.Tenant("globex")
	for i := range 100 {
		acme.Put(fmt.Sprint("order:", i), core.CachedState{State: make([]byte, 1000), UpTo: 1})
	}
	big := make([]byte, 15<<20)
	for i := range 8 {
		globex.Put(fmt.Sprint("ledger:", i), core.CachedState{State: big, UpTo: 1})
		if n := c.Bytes(); n > budget {
			t.Fatalf("the cache holds %d bytes, over its budget %d", n, budget)
		}
	}
	for i := range 100 {
		if _, ok := acme.Get(fmt.Sprint("order:", i)); !ok {
			t.Fatalf("acme's state order:%d was dropped for globex's", i)
		}
	}
	// globex keeps what fits in its half, its most recent.
	for i, want := range []bool{false, false, false, false, false, false, true, true} {
		if _, ok := globex.Get(fmt.Sprint("ledger:", i)); ok != want {
			t.Errorf("globex's ledger:%d held %v, want %v (its half: its two latest)", i, ok, want)
		}
	}
	// Its own: a tenant alone is held to its half too.
	if n := c.Bytes(); n > budget/2+100*1100 {
		t.Errorf("the cache holds %d bytes: globex is over its half", n)
	}
}

// TestStateCacheForgetsErasedEntities: a tenant's view forgets the states
// of the entities an erasure names (core.EntityForgetter), every
// projection of them, and keeps its other entities' and another tenant's
// states of the same entity.
func TestStateCacheForgetsErasedEntities(t *testing.T) {
	c := tenantplugin.NewStateCache(1 << 20)
	acme, globex := c.Tenant("acme"), c.Tenant("globex")
	st := core.CachedState{State: []byte(`{"ssn":"x"}`), UpTo: 1, Found: true}
	for _, k := range []string{"user:1\x00p1\x001", "user:1\x00p2\x001", "user:10\x00p1\x001"} {
		acme.Put(k, st)
	}
	globex.Put("user:1\x00p1\x001", st)
	f, ok := acme.(core.EntityForgetter)
	if !ok {
		t.Fatal("a tenant's view of the state cache does not forget erased entities")
	}
	f.ForgetEntities(map[string]bool{"user:1": true})
	for _, k := range []string{"user:1\x00p1\x001", "user:1\x00p2\x001"} {
		if _, ok := acme.Get(k); ok {
			t.Errorf("acme's state %q kept after its entity was erased", k)
		}
	}
	if _, ok := acme.Get("user:10\x00p1\x001"); !ok {
		t.Error("acme's state of another entity (user:10) went with user:1's")
	}
	if _, ok := globex.Get("user:1\x00p1\x001"); !ok {
		t.Error("another tenant's state of the same entity name went with acme's")
	}
}

// TestStateCacheChargesWhatAStateCosts: what the cache counts against its
// budget for a state covers what keeping it takes of the heap — its key,
// its bytes and the cache's own bookkeeping — so that a tenant filling
// the cache with tiny states holds about the budget, not several times
// it (with 64 bytes counted for the bookkeeping, 1-byte states under
// keys of about 30 bytes held 3.1 times what the cache counted).
func TestStateCacheChargesWhatAStateCosts(t *testing.T) {
	const budget = 16 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := tenantplugin.NewStateCache(budget)
	tenants := []core.ProjectionCache{c.Tenant("acme"), c.Tenant("globex"), c.Tenant("initech")}
	for i := 0; c.Bytes() < budget-budget/64; i++ {
		// A key as a store makes it (entity, projection, schema version);
		// a state decoded into its own allocation.
		tenants[i%3].Put(fmt.Sprintf("order:%08d\x00counter\x001", i), core.CachedState{State: []byte{byte(i)}, UpTo: uint64(i)})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("the cache counts %d bytes; the heap grew by %d (%.2f times)", c.Bytes(), held, float64(held)/float64(c.Bytes()))
	if held > c.Bytes()*5/4 {
		t.Errorf("the cache counts %d bytes of tiny states, which hold %d bytes of the heap", c.Bytes(), held)
	}
	runtime.KeepAlive(c)
}
