package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

var kind = core.MustKind(1, 1)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// tenantSet is a control plane stand-in: the ids that exist.
type tenantSet struct {
	mu  sync.Mutex
	ids map[string]bool
	all bool // every valid id exists
}

func (s *tenantSet) Exists(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.ids[id]; ok {
		return v
	}
	return s.all
}

func (s *tenantSet) set(id string, exists bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids == nil {
		s.ids = map[string]bool{}
	}
	s.ids[id] = exists
}

// newRegistry makes a registry in a temporary root where every tenant
// exists, with buffered stores (tests that need durability say so), and
// closes it when the test ends.
func newRegistry(t testing.TB, adjust ...func(*tenancy.Config)) (*tenancy.Registry, tenancy.Config) {
	t.Helper()
	cfg := tenancy.Config{
		Root:        filepath.Join(t.TempDir(), "tenants"),
		MaxOpen:     100,
		IdleTimeout: time.Hour,
		StoreConfig: func(string) core.Config { return tenancy.StoreConfig("", false) },
		Exists:      (&tenantSet{all: true}).Exists,
		Logger:      quiet(),
	}
	for _, f := range adjust {
		f(&cfg)
	}
	r, err := tenancy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r, cfg
}

func acquire(t testing.TB, r *tenancy.Registry, id string) *tenancy.Lease {
	t.Helper()
	l, err := r.Acquire(context.Background(), id)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", id, err)
	}
	return l
}

func appendOne(t testing.TB, s *core.Store, entity string) core.Receipt {
	t.Helper()
	c, err := core.NewCoordinate(entity, "s")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.Append(context.Background(), c, kind, []byte(`{"n":1}`))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return rc
}

func countEvents(t testing.TB, s *core.Store) int {
	t.Helper()
	evs, err := s.Query(core.All().WithKind(kind))
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func dirExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestValidID(t *testing.T) {
	ok := []string{"a", "0", "acme", "acme-corp-2", strings.Repeat("a", tenancy.MaxIDLength)}
	bad := []string{"", "-a", "A", "a_b", "a/b", "..", ".", "../x", "a.b", "é", "a b",
		strings.Repeat("a", tenancy.MaxIDLength+1)}
	for _, id := range ok {
		if err := tenancy.ValidID(id); err != nil {
			t.Errorf("ValidID(%q): %v", id, err)
		}
	}
	for _, id := range bad {
		if err := tenancy.ValidID(id); !errors.Is(err, tenancy.ErrInvalidID) {
			t.Errorf("ValidID(%q) = %v, want ErrInvalidID", id, err)
		}
	}
}

// Acquire refuses invalid and unknown ids before touching the disk: no
// directory is created anywhere, inside Root or out of it.
func TestAcquireRefusesInvalidAndUnknown(t *testing.T) {
	set := &tenantSet{}
	set.set("known", true)
	r, cfg := newRegistry(t, func(c *tenancy.Config) { c.Exists = set.Exists })
	parent := filepath.Dir(cfg.Root)
	for _, id := range []string{"../escape", "..", "a/b", "UPPER", "", "-x", strings.Repeat("z", 64)} {
		if _, err := r.Acquire(context.Background(), id); !errors.Is(err, tenancy.ErrInvalidID) {
			t.Errorf("Acquire(%q) = %v, want ErrInvalidID", id, err)
		}
	}
	if _, err := r.Acquire(context.Background(), "unknown"); !errors.Is(err, tenancy.ErrUnknownTenant) {
		t.Fatalf("Acquire(unknown) = %v, want ErrUnknownTenant", err)
	}
	ents, _ := os.ReadDir(cfg.Root)
	if len(ents) != 0 {
		t.Fatalf("Root holds %d entries after refused Acquires", len(ents))
	}
	if dirExists(filepath.Join(parent, "escape")) {
		t.Fatal("a directory outside Root was created")
	}
	l := acquire(t, r, "known")
	defer l.Release()
	if l.Store().Dir() != filepath.Join(cfg.Root, "known") {
		t.Fatalf("store dir %s", l.Store().Dir())
	}
	if l.Tenant() != "known" {
		t.Fatalf("Tenant() = %q", l.Tenant())
	}
}

// A tenant deleted between Acquire's first check and the open is refused
// before its directory is created again.
func TestAcquireChecksExistsBeforeOpening(t *testing.T) {
	var calls atomic.Int64
	r, cfg := newRegistry(t, func(c *tenancy.Config) {
		c.Exists = func(string) bool { return calls.Add(1) == 1 } // deleted right after the first answer
	})
	if _, err := r.Acquire(context.Background(), "late"); !errors.Is(err, tenancy.ErrUnknownTenant) {
		t.Fatalf("Acquire of a tenant deleted meanwhile = %v, want ErrUnknownTenant", err)
	}
	if dirExists(filepath.Join(cfg.Root, "late")) {
		t.Fatal("a deleted tenant's directory was created")
	}
	if st := r.Stats(); st.Open != 0 || st.OpenFailures != 0 {
		t.Fatalf("stats %+v, want nothing open and no failure counted", st)
	}
}

// An open tenant is reused: the second Acquire gets the same store and
// opens nothing. Release is idempotent.
func TestAcquireReusesOpenStore(t *testing.T) {
	r, _ := newRegistry(t)
	l1 := acquire(t, r, "acme")
	appendOne(t, l1.Store(), "order:1")
	l2 := acquire(t, r, "acme")
	if l1.Store() != l2.Store() {
		t.Fatal("two leases on one tenant got different stores")
	}
	if st := r.Stats(); st.Opens != 1 || st.Open != 1 || st.Leased != 1 {
		t.Fatalf("stats %+v, want one open, one opened, leased", st)
	}
	l1.Release()
	l1.Release() // a second Release must not take l2's lease
	if st := r.Stats(); st.Leased != 1 {
		t.Fatalf("after l1 released twice: %+v, want still leased by l2", st)
	}
	l2.Release()
	if st := r.Stats(); st.Leased != 0 || r.OpenCount() != 1 {
		t.Fatalf("after every release: %+v, want open and unleased", st)
	}
}

// Concurrent Acquires of a closed tenant open it once and share the store.
func TestConcurrentAcquireOpensOnce(t *testing.T) {
	r, _ := newRegistry(t)
	const n = 32
	var wg sync.WaitGroup
	stores := make([]*core.Store, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := r.Acquire(context.Background(), "shared")
			if err != nil {
				t.Error(err)
				return
			}
			stores[i] = l.Store()
			appendOne(t, l.Store(), fmt.Sprintf("e:%d", i))
			l.Release()
		}()
	}
	wg.Wait()
	for i := range stores {
		if stores[i] != stores[0] {
			t.Fatalf("lease %d got another store", i)
		}
	}
	if st := r.Stats(); st.Opens != 1 {
		t.Fatalf("opened %d times, want 1", st.Opens)
	}
	l := acquire(t, r, "shared")
	defer l.Release()
	if got := countEvents(t, l.Store()); got != n {
		t.Fatalf("%d events, want %d", got, n)
	}
}

// 2,000 tenants through a registry that keeps 100 open: never more than
// 100 open, the least recently used go first, a leased one never goes, and
// an evicted tenant reopens with its data.
func TestLRUEvictionUnder2000Tenants(t *testing.T) {
	const tenants, maxOpen = 2000, 100
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.MaxOpen = maxOpen })
	held := acquire(t, r, "held")
	appendOne(t, held.Store(), "kept:1")
	var peak atomic.Int64
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				l, err := r.Acquire(context.Background(), fmt.Sprintf("t%d", i))
				if err != nil {
					t.Error(err)
					continue
				}
				appendOne(t, l.Store(), "order:1")
				if n := int64(r.OpenCount()); n > peak.Load() {
					peak.Store(n)
				}
				l.Release()
			}
		}()
	}
	for i := range tenants {
		next <- i
	}
	close(next)
	wg.Wait()
	if p := peak.Load(); p > maxOpen {
		t.Fatalf("%d stores open at once, MaxOpen is %d", p, maxOpen)
	}
	st := r.Stats()
	// The janitor keeps 1% (one slot) free in the background.
	if st.Open < maxOpen-1 || st.Open > maxOpen || st.Opens != tenants+1 || st.Evictions != st.Opens-uint64(st.Open) {
		t.Fatalf("stats %+v, want %d or %d open, %d opened, the rest evicted", st, maxOpen-1, maxOpen, tenants+1)
	}
	// The leased tenant survived every eviction.
	appendOne(t, held.Store(), "kept:2")
	if got := countEvents(t, held.Store()); got != 2 {
		t.Fatalf("held tenant has %d events, want 2", got)
	}
	held.Release()
	// The most recently used are the ones open: acquiring the last 50
	// opens nothing.
	for i := tenants - 50; i < tenants; i++ {
		acquire(t, r, fmt.Sprintf("t%d", i)).Release()
	}
	if got := r.Stats().Opens; got != st.Opens {
		t.Fatalf("acquiring recently used tenants opened %d stores", got-st.Opens)
	}
	// The first tenant was evicted long ago: it reopens, data intact.
	l := acquire(t, r, "t0")
	defer l.Release()
	if got := r.Stats().Opens; got != st.Opens+1 {
		t.Fatalf("t0 was not reopened (opens %d → %d)", st.Opens, got)
	}
	if got := countEvents(t, l.Store()); got != 1 {
		t.Fatalf("t0 has %d events after eviction and reopen, want 1", got)
	}
	if d := l.Store().Diagnostics().Open.Path; d != "checkpoint" {
		t.Fatalf("t0 reopened by %q, want checkpoint (eviction closes the store)", d)
	}
}

// MaxOpen leased stores: exactly the limit opens, one more is refused with
// ErrTooManyOpen until a lease ends.
func TestAllLeasedIsTooManyOpen(t *testing.T) {
	r, _ := newRegistry(t, func(c *tenancy.Config) { c.MaxOpen = 3 })
	var leases []*tenancy.Lease
	for i := range 3 {
		leases = append(leases, acquire(t, r, fmt.Sprintf("t%d", i)))
	}
	_, err := r.Acquire(context.Background(), "t3")
	if !errors.Is(err, tenancy.ErrTooManyOpen) {
		t.Fatalf("Acquire beyond MaxOpen with all leased = %v, want ErrTooManyOpen", err)
	}
	// An open tenant can still be leased again.
	acquire(t, r, "t1").Release()
	leases[0].Release()
	l := acquire(t, r, "t3")
	defer l.Release()
	if st := r.Stats(); st.Open != 3 || st.Evictions != 1 {
		t.Fatalf("stats %+v, want 3 open after evicting t0", st)
	}
	for _, l := range leases[1:] {
		l.Release()
	}
}

// An unleased store idle for IdleTimeout is closed (checkpoint written)
// and reopens with its data; a leased one stays open however long.
func TestIdleCloseAndReopen(t *testing.T) {
	r, _ := newRegistry(t, func(c *tenancy.Config) {
		c.IdleTimeout = 50 * time.Millisecond
		c.StoreConfig = func(string) core.Config { return tenancy.StoreConfig("", true) }
	})
	l := acquire(t, r, "idle")
	rc := appendOne(t, l.Store(), "order:1")
	l.Release()
	busy := acquire(t, r, "busy")
	defer busy.Release()
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().IdleCloses == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle store not closed: %+v", r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // three idle timeouts more
	if st := r.Stats(); st.Open != 1 || st.IdleCloses != 1 {
		t.Fatalf("stats %+v, want only the leased store open", st)
	}
	if _, err := busy.Store().Query(core.All()); err != nil {
		t.Fatalf("leased store unusable: %v", err)
	}
	l = acquire(t, r, "idle")
	defer l.Release()
	if _, err := l.Store().Get(rc.ID); err != nil {
		t.Fatalf("event lost across idle close: %v", err)
	}
	if d := l.Store().Diagnostics().Open.Path; d != "checkpoint" {
		t.Fatalf("reopened by %q, want checkpoint", d)
	}
}

// A store that fails to open (its lock held elsewhere) returns the wrapped
// cause and does not poison the registry: once the cause is gone, the
// next Acquire opens it.
func TestOpenFailureDoesNotPoison(t *testing.T) {
	r, cfg := newRegistry(t)
	other, err := core.Open(tenancy.StoreConfig(filepath.Join(cfg.Root, "locked"), true))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Acquire(context.Background(), "locked")
			var le *core.LockedError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), "tenant locked") {
				t.Errorf("Acquire of a locked store = %v, want a *core.LockedError naming the tenant", err)
			}
		}()
	}
	wg.Wait()
	if st := r.Stats(); st.Open != 0 || st.OpenFailures == 0 || st.Opens != 0 {
		t.Fatalf("stats %+v after failed opens", st)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	l := acquire(t, r, "locked")
	l.Release()
	if st := r.Stats(); st.Open != 1 || st.Opens != 1 {
		t.Fatalf("stats %+v, want the store open", st)
	}
}

// Remove waits for leases up to ctx (nothing is deleted when ctx ends
// first), then closes the store and deletes the directory, leaving no
// trash; Acquire is refused while it runs.
func TestRemoveWaitsForLeasesThenDeletes(t *testing.T) {
	set := &tenantSet{all: true}
	r, cfg := newRegistry(t, func(c *tenancy.Config) { c.Exists = set.Exists })
	l := acquire(t, r, "gone")
	appendOne(t, l.Store(), "order:1")
	dir := filepath.Join(cfg.Root, "gone")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Remove(ctx, "gone"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Remove with a lease held = %v, want DeadlineExceeded", err)
	}
	if !dirExists(dir) {
		t.Fatal("a timed-out Remove deleted the data")
	}
	appendOne(t, l.Store(), "order:2") // still usable
	l2 := acquire(t, r, "gone")        // and still acquirable
	l2.Release()

	done := make(chan error, 1)
	go func() { done <- r.Remove(context.Background(), "gone") }()
	// While Remove waits, Acquire is refused.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l3, err := r.Acquire(context.Background(), "gone")
		if errors.Is(err, tenancy.ErrUnknownTenant) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		l3.Release() // acquired before Remove began
		if time.Now().After(deadline) {
			t.Fatal("Acquire not refused during Remove")
		}
		time.Sleep(time.Millisecond)
	}
	set.set("gone", false) // what the control plane records first
	l.Release()
	if err := <-done; err != nil {
		t.Fatalf("Remove: %v", err)
	}
	ents, _ := os.ReadDir(cfg.Root)
	if len(ents) != 0 {
		t.Fatalf("Root holds %v after Remove", ents)
	}
	if r.OpenCount() != 0 {
		t.Fatalf("%d stores open after Remove", r.OpenCount())
	}
	// Removing a tenant that has no directory is not an error.
	if err := r.Remove(context.Background(), "never-was"); err != nil {
		t.Fatalf("Remove of a tenant without data: %v", err)
	}
	if _, err := r.Acquire(context.Background(), "gone"); !errors.Is(err, tenancy.ErrUnknownTenant) {
		t.Fatalf("Acquire after delete = %v, want ErrUnknownTenant", err)
	}
	if err := r.Remove(context.Background(), "../x"); !errors.Is(err, tenancy.ErrInvalidID) {
		t.Fatalf("Remove(../x) = %v, want ErrInvalidID", err)
	}
}

// A Remove that finds a Forget of the same tenant under way (a cluster
// node forgetting a tenant the log deleted, while the DELETE that
// recorded it removes it) waits for it, then deletes the data; before,
// it failed as "already being removed" and the data stayed.
func TestRemoveWaitsForForgetUnderWay(t *testing.T) {
	set := &tenantSet{all: true}
	r, cfg := newRegistry(t, func(c *tenancy.Config) { c.Exists = set.Exists })
	l := acquire(t, r, "gone")
	appendOne(t, l.Store(), "order:1")
	set.set("gone", false)
	forgot := make(chan error, 1)
	go func() { forgot <- r.Forget(context.Background(), "gone") }()
	// The Forget waits for the lease; a Remove arriving meanwhile waits
	// for the Forget, and ends when its ctx does if the lease stays.
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := r.Remove(ctx, "gone"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Remove while a Forget waits for a lease = %v, want DeadlineExceeded", err)
	}
	removed := make(chan error, 1)
	go func() { removed <- r.Remove(context.Background(), "gone") }()
	time.Sleep(20 * time.Millisecond)
	l.Release()
	if err := <-forgot; err != nil {
		t.Fatalf("Forget: %v", err)
	}
	if err := <-removed; err != nil {
		t.Fatalf("Remove after the Forget: %v", err)
	}
	if dirExists(filepath.Join(cfg.Root, "gone")) {
		t.Fatal("the tenant's data is still there after Remove")
	}
}

// Concurrent Acquires, appends, Removes, evictions and idle closes (under
// -race): every Acquire
// either gets a working store or ErrUnknownTenant, Removes succeed, and at
// the end every remaining tenant's directory holds a store that opens.
func TestConcurrentAcquireAndRemove(t *testing.T) {
	r, cfg := newRegistry(t, func(c *tenancy.Config) { c.MaxOpen = 8; c.IdleTimeout = 5 * time.Millisecond })
	ids := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var appended, refused, removed atomic.Int64
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := ids[(w*7+i)%len(ids)]
				l, err := r.Acquire(ctx, id)
				switch {
				case err == nil:
				case errors.Is(err, tenancy.ErrUnknownTenant), errors.Is(err, tenancy.ErrTooManyOpen), ctx.Err() != nil:
					refused.Add(1)
					continue
				default:
					t.Errorf("Acquire(%s): %v", id, err)
					return
				}
				c, _ := core.NewCoordinate("order:1", "s")
				if _, err := l.Store().Append(context.Background(), c, kind, []byte(`{}`)); err != nil {
					t.Errorf("Append to %s: %v", id, err)
				}
				appended.Add(1)
				l.Release()
			}
		}()
	}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				id := ids[(w*3+i*5)%len(ids)]
				err := r.Remove(ctx, id)
				switch {
				case err == nil:
					removed.Add(1)
				case errors.Is(err, tenancy.ErrUnknownTenant), ctx.Err() != nil:
				default:
					t.Errorf("Remove(%s): %v", id, err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d appends, %d refused acquires, %d removes, %+v", appended.Load(), refused.Load(), removed.Load(), r.Stats())
	if appended.Load() == 0 || removed.Load() == 0 {
		t.Fatal("the workload did not interleave appends and removes")
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(cfg.Root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("trash left behind: %s", e.Name())
		}
		s, err := core.Open(tenancy.StoreConfig(filepath.Join(cfg.Root, e.Name()), false))
		if err != nil {
			t.Fatalf("tenant %s left unopenable: %v", e.Name(), err)
		}
		s.Close()
	}
}

// Close waits for leases up to ctx, then closes every store anyway and
// says so; later Acquires fail with ErrClosed.
func TestCloseWaitsForLeases(t *testing.T) {
	r, _ := newRegistry(t)
	l := acquire(t, r, "held")
	rc := appendOne(t, l.Store(), "order:1")
	acquire(t, r, "free").Release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := r.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 tenant stores still leased") {
		t.Fatalf("Close with a lease held = %v, want DeadlineExceeded naming 1 leased store", err)
	}
	if _, err := l.Store().Get(rc.ID); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("leased store after Close: %v, want core.ErrClosed", err)
	}
	l.Release()
	if _, err := r.Acquire(context.Background(), "free"); !errors.Is(err, tenancy.ErrClosed) {
		t.Fatalf("Acquire after Close = %v, want ErrClosed", err)
	}
	if r.OpenCount() != 0 {
		t.Fatalf("%d open after Close", r.OpenCount())
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// New deletes what an interrupted Remove left and refuses bad configs.
func TestNewRemovesTrashAndChecksConfig(t *testing.T) {
	root := t.TempDir()
	trash := filepath.Join(root, ".trash-x-1-1")
	if err := os.MkdirAll(filepath.Join(trash, "cursors"), 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(root, "x")
	if err := os.Mkdir(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	exists := func(string) bool { return true }
	r, err := tenancy.New(tenancy.Config{Root: root, Exists: exists})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	if dirExists(trash) || !dirExists(keep) {
		t.Fatal("New must delete trash and only trash")
	}
	for _, bad := range []tenancy.Config{
		{Exists: exists},
		{Root: root},
		{Root: root, Exists: exists, MaxOpen: -1},
		{Root: root, Exists: exists, MaxOpen: tenancy.MaxMaxOpen + 1},
		{Root: root, Exists: exists, IdleTimeout: 24*time.Hour + 1},
	} {
		if r, err := tenancy.New(bad); err == nil {
			r.Close(context.Background())
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	r2, err := tenancy.New(tenancy.Config{Root: t.TempDir(), Exists: exists, MaxOpen: tenancy.MaxMaxOpen, IdleTimeout: 24 * time.Hour})
	if err != nil {
		t.Fatalf("New at the limits: %v", err)
	}
	r2.Close(context.Background())
}

func TestStoreConfig(t *testing.T) {
	d := tenancy.StoreConfig("x", true)
	if d.Sync.EveryNEvents != 1 || d.Sync.Interval != 0 || d.Validate() != nil {
		t.Fatalf("durable config %+v", d.Sync)
	}
	b := tenancy.StoreConfig("x", false)
	if b.Sync.EveryNEvents != 1000 || b.Sync.Interval != time.Second || b.Validate() != nil {
		t.Fatalf("buffered config %+v", b.Sync)
	}
}
