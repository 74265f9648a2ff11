package control_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

var defaults = control.Quotas{
	StorageBytes: 10 << 30, EventsPerSecond: 20000, EventsBurst: 40000,
	BytesPerSecond: 64 << 20, BytesBurst: 128 << 20, MaxPayloadBytes: 1 << 20,
	MaxBatchEvents: 10000, MaxSubscriptions: 1100, MaxCursors: 100,
}

func open(t *testing.T, dir string) *control.Plane {
	t.Helper()
	p, err := control.Open(control.Options{Dir: dir, Defaults: defaults})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

func opCtx() context.Context {
	return policy.WithPrincipal(context.Background(), policy.Principal{ID: "operator"})
}

func hashOf(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// must fails the test on an error and returns the value: must(t)(p.X(…)).
func must(t *testing.T) func(any, error) any {
	return func(v any, err error) any {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot is everything a plane answers, for comparing two planes.
type snapshot struct {
	Tenants   []control.Tenant
	Keys      map[string][]control.Key
	Cursors   map[string][]control.CursorDef
	Effective map[string]control.Quotas
	Operator  [32]byte
	HasOp     bool
}

func snap(p *control.Plane, ids ...string) snapshot {
	s := snapshot{Tenants: p.Tenants(), Keys: map[string][]control.Key{}, Cursors: map[string][]control.CursorDef{}, Effective: map[string]control.Quotas{}}
	for _, id := range ids {
		s.Keys[id] = p.Keys(id)
		s.Cursors[id] = p.Cursors(id)
		s.Effective[id] = p.Effective(id)
	}
	s.Operator, s.HasOp = p.OperatorHash()
	return s
}

func TestLifecycleReplaysToTheSameState(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	cat := 2
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{EventsPerSecond: 5, MaxCursors: 3}, control.Settings{Sync: "buffered"}))
	must(t)(p.CreateTenant(ctx, "globex", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(ctx, "gone", control.Quotas{}, control.Settings{}))
	k1 := must(t)(p.IssueKey(ctx, control.Key{ID: "aaaaaaaaaaaa", Tenant: "acme", Roles: []control.Role{control.RoleWriter}, Name: "ci", Hash: hashOf("k1")})).(control.Key)
	must(t)(p.IssueKey(ctx, control.Key{ID: "bbbbbbbbbbbb", Tenant: "acme", Roles: []control.Role{control.RoleReader}, Hash: hashOf("k2")}))
	must(t)(p.IssueKey(ctx, control.Key{ID: "cccccccccccc", Tenant: "gone", Roles: []control.Role{control.RoleAdmin}, Hash: hashOf("k3")}))
	check(t, p.RevokeKey(ctx, "acme", "bbbbbbbbbbbb"))
	check(t, p.DefineCursor(ctx, control.CursorDef{Name: "billing", Tenant: "acme", Region: control.Region{Entity: "order:", Category: &cat}}))
	check(t, p.DefineCursor(ctx, control.CursorDef{Name: "tmp", Tenant: "acme", Region: control.Region{Scope: "shop"}}))
	check(t, p.DeleteCursor(ctx, "acme", "tmp"))
	check(t, p.DefineCursor(ctx, control.CursorDef{Name: "c", Tenant: "gone", Region: control.Region{}}))
	must(t)(p.SuspendTenant(ctx, "globex", "unpaid"))
	must(t)(p.SuspendTenant(ctx, "acme", "audit"))
	must(t)(p.ResumeTenant(ctx, "acme"))
	must(t)(p.SetQuotas(ctx, "globex", control.Quotas{StorageBytes: -1}))
	must(t)(p.SetSettings(ctx, "globex", control.Settings{Sync: "durable"}))
	check(t, p.DeleteTenant(ctx, "gone"))
	check(t, p.SetOperatorHash(ctx, hashOf("bpko_x")))

	if k1.Created.IsZero() || k1.Tenant != "acme" || k1.Hash != hashOf("k1") {
		t.Fatalf("issued key: %+v", k1)
	}
	acme, _ := p.Tenant("acme")
	if acme.State != control.StateActive || acme.SuspendReason != "" || acme.Settings.Sync != "buffered" {
		t.Fatalf("acme: %+v", acme)
	}
	globex, _ := p.Tenant("globex")
	if globex.State != control.StateSuspended || globex.SuspendReason != "unpaid" || globex.Quotas.StorageBytes != -1 {
		t.Fatalf("globex: %+v", globex)
	}
	if _, ok := p.Tenant("gone"); ok {
		t.Fatal("deleted tenant still listed")
	}
	if _, ok := p.Key("cccccccccccc"); ok {
		t.Fatal("a deleted tenant's key still works")
	}
	if got := p.Cursors("gone"); len(got) != 0 {
		t.Fatalf("a deleted tenant's cursors remain: %+v", got)
	}
	if got := p.Keys("acme"); len(got) != 1 || got[0].ID != "aaaaaaaaaaaa" {
		t.Fatalf("acme keys: %+v", got)
	}
	if got := p.Cursors("acme"); len(got) != 1 || got[0].Name != "billing" || *got[0].Region.Category != 2 {
		t.Fatalf("acme cursors: %+v", got)
	}

	ids := []string{"acme", "globex", "gone"}
	before := snap(p, ids...)
	check(t, p.Close())
	p = open(t, dir)
	after := snap(p, ids...)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("replay differs:\nbefore %+v\nafter  %+v", before, after)
	}
	rep, err := p.Verify()
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Events != 18 {
		t.Fatalf("Verify checked %d events, want 18 (one per change)", rep.Events)
	}

	// A deleted id can be created again: a new, empty tenant.
	again := must(t)(p.CreateTenant(ctx, "gone", control.Quotas{}, control.Settings{})).(control.Tenant)
	if again.State != control.StateActive || len(p.Keys("gone")) != 0 || len(p.Cursors("gone")) != 0 {
		t.Fatalf("recreated tenant is not empty: %+v", again)
	}
	hist := must(t)(p.History(control.TenantEntity("gone"))).([]control.Change)
	var kinds []string
	for _, c := range hist {
		kinds = append(kinds, c.Kind)
		if c.By.ID != "operator" {
			t.Fatalf("change %s recorded by %+v", c.Kind, c.By)
		}
	}
	if strings.Join(kinds, ",") != "tenant.created,tenant.deleted,tenant.created" {
		t.Fatalf("history of tenant:gone: %v", kinds)
	}
	if !strings.Contains(string(hist[1].Payload), `"revoked_keys":["cccccccccccc"]`) ||
		!strings.Contains(string(hist[1].Payload), `"deleted_cursors":["c"]`) {
		t.Fatalf("deletion does not list what it ended: %s", hist[1].Payload)
	}
	check(t, p.Close())
}

func TestNoSecretInTheSystemStore(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	must(t)(p.IssueKey(ctx, control.Key{ID: "aaaaaaaaaaaa", Tenant: "acme", Roles: []control.Role{control.RoleAdmin}, Hash: hashOf("bpk_aaaaaaaaaaaa_secret")}))
	hist := must(t)(p.History(control.KeyEntity("aaaaaaaaaaaa"))).([]control.Change)
	if len(hist) != 1 || strings.Contains(string(hist[0].Payload), "secret") {
		t.Fatalf("key history: %+v", hist)
	}
	h := hashOf("bpk_aaaaaaaaaaaa_secret")
	if !strings.Contains(string(hist[0].Payload), fmt.Sprintf("%x", h[:])) {
		t.Fatalf("key.issued does not record the hash: %s", hist[0].Payload)
	}
}

func TestEffectiveQuotasMergeOverDefaults(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{EventsPerSecond: 10, MaxCursors: -1}, control.Settings{}))
	want := defaults
	// A rate set alone takes the default bucket scaled to it (the
	// defaults hold two seconds' worth: 40000 at 20000/s, so 20 at 10/s).
	want.EventsPerSecond, want.EventsBurst, want.MaxCursors = 10, int(math.Round(float64(defaults.EventsBurst)*10/defaults.EventsPerSecond)), -1
	if got := p.Effective("acme"); got != want {
		t.Fatalf("Effective = %+v, want %+v", got, want)
	}
	// A bucket set beside it is kept as set.
	must(t)(p.SetQuotas(ctx, "acme", control.Quotas{EventsPerSecond: 10, EventsBurst: 500}))
	if got := p.Effective("acme"); got.EventsBurst != 500 || got.EventsPerSecond != 10 {
		t.Fatalf("a rate and a bucket set: %+v", got)
	}
	must(t)(p.SetQuotas(ctx, "acme", control.Quotas{StorageBytes: 1 << 20}))
	want = defaults
	want.StorageBytes = 1 << 20
	if got := p.Effective("acme"); got != want {
		t.Fatalf("after SetQuotas Effective = %+v, want %+v", got, want)
	}
	if got := p.Effective("nobody"); got != defaults {
		t.Fatalf("unknown tenant Effective = %+v", got)
	}
}

func TestValidationNamesTheField(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}))
	id63 := strings.Repeat("a", 63)
	if _, err := p.CreateTenant(ctx, id63, control.Quotas{}, control.Settings{}); err != nil {
		t.Fatalf("63-character id refused: %v", err)
	}
	key := func(mod func(*control.Key)) error {
		k := control.Key{ID: "kkkkkkkkkkkk", Tenant: "acme", Roles: []control.Role{control.RoleReader}, Hash: hashOf("x")}
		mod(&k)
		_, err := p.IssueKey(ctx, k)
		return err
	}
	cursor := func(name string, r control.Region) error {
		return p.DefineCursor(ctx, control.CursorDef{Name: name, Tenant: "acme", Region: r})
	}
	bad := 16
	neg := -1
	cases := []struct {
		name, field string
		err         error
	}{
		{"id 64 characters", "tenant id", func() error {
			_, err := p.CreateTenant(ctx, id63+"a", control.Quotas{}, control.Settings{})
			return err
		}()},
		{"id uppercase", "tenant id", func() error { _, err := p.CreateTenant(ctx, "Acme", control.Quotas{}, control.Settings{}); return err }()},
		{"id leading dash", "tenant id", func() error { _, err := p.CreateTenant(ctx, "-a", control.Quotas{}, control.Settings{}); return err }()},
		{"id empty", "tenant id", func() error { _, err := p.CreateTenant(ctx, "", control.Quotas{}, control.Settings{}); return err }()},
		{"sync", "settings.sync", func() error {
			_, err := p.CreateTenant(ctx, "b", control.Quotas{}, control.Settings{Sync: "always"})
			return err
		}()},
		{"sync set", "settings.sync", func() error { _, err := p.SetSettings(ctx, "acme", control.Settings{Sync: "fast"}); return err }()},
		{"burst", "quotas.events_burst", func() error {
			_, err := p.SetQuotas(ctx, "acme", control.Quotas{EventsBurst: -1})
			return err
		}()},
		{"bytes burst", "quotas.bytes_burst", func() error { _, err := p.SetQuotas(ctx, "acme", control.Quotas{BytesBurst: -5}); return err }()},
		{"rate NaN", "quotas.events_per_second", func() error {
			var z float64
			_, err := p.SetQuotas(ctx, "acme", control.Quotas{EventsPerSecond: z / z})
			return err
		}()},
		{"key id", "key id", key(func(k *control.Key) { k.ID = "UPPER" })},
		{"key roles empty", "roles", key(func(k *control.Key) { k.Roles = nil })},
		{"key role unknown", "roles", key(func(k *control.Key) { k.Roles = []control.Role{"root"} })},
		{"key role twice", "roles", key(func(k *control.Key) { k.Roles = []control.Role{"reader", "reader"} })},
		{"key name 201", "name", key(func(k *control.Key) { k.Name = strings.Repeat("n", control.MaxNameBytes+1) })},
		{"key name control", "name", key(func(k *control.Key) { k.Name = "a\nb" })},
		{"key name bidi override", "name", key(func(k *control.Key) { k.Name = "\u202egnp.exe" })},
		{"key name bidi isolate", "name", key(func(k *control.Key) { k.Name = "ci\u2066x" })},
		{"reason bidi mark", "reason", func() error { _, err := p.SuspendTenant(ctx, "acme", "late\u200f"); return err }()},
		{"key hash zero", "hash", key(func(k *control.Key) { k.Hash = [32]byte{} })},
		{"reason 1025", "reason", func() error {
			_, err := p.SuspendTenant(ctx, "acme", strings.Repeat("r", control.MaxReasonBytes+1))
			return err
		}()},
		{"cursor name", "cursor name", cursor(".hidden", control.Region{})},
		{"cursor name 129", "cursor name", cursor(strings.Repeat("c", 129), control.Region{})},
		{"cursor category 16", "region.category", cursor("c", control.Region{Category: &bad})},
		{"cursor category -1", "region.category", cursor("c", control.Region{Category: &neg})},
		{"cursor entity NUL", "region.entity", cursor("c", control.Region{Entity: "a\x00"})},
		{"operator zero", "operator hash", p.SetOperatorHash(ctx, [32]byte{})},
	}
	for _, c := range cases {
		if !errors.Is(c.err, control.ErrInvalid) || !strings.Contains(c.err.Error(), c.field) {
			t.Errorf("%s: got %v, want ErrInvalid naming %q", c.name, c.err, c.field)
		}
	}
	// The limits themselves are accepted.
	if err := key(func(k *control.Key) { k.Name = strings.Repeat("n", control.MaxNameBytes) }); err != nil {
		t.Fatalf("name of MaxNameBytes refused: %v", err)
	}
	if err := key(func(k *control.Key) { k.ID, k.Name = "arabic", "مفتاح ci 🔑" }); err != nil {
		t.Fatalf("a name in a right-to-left script refused: %v", err)
	}
	if _, err := p.SuspendTenant(ctx, "acme", strings.Repeat("r", control.MaxReasonBytes)); err != nil {
		t.Fatalf("reason of MaxReasonBytes refused: %v", err)
	}
	if err := cursor(strings.Repeat("c", 128), control.Region{Category: &[]int{15}[0]}); err != nil {
		t.Fatalf("128-character cursor name refused: %v", err)
	}
	// Nothing refused was recorded: only the 5 accepted changes and the first tenant.
	rep := must(t)(p.Verify()).(core.VerifyReport)
	if rep.Events != 6 {
		t.Fatalf("%d events recorded, want 6", rep.Events)
	}
}

// The plane's cursor-name rule is core's: every name one accepts the
// other accepts.
func TestCursorNameRuleIsCores(t *testing.T) {
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"a", "A.b_c-d", "0", strings.Repeat("x", 128), strings.Repeat("x", 129), ".a", "-a", "_a", "a/b", "a b", "", "é"} {
		_, coreErr := s.NamedCursor(name, core.All())
		planeErr := control.ValidCursorName(name)
		if (coreErr == nil) != (planeErr == nil) {
			t.Errorf("name %q: core says %v, plane says %v", name, coreErr, planeErr)
		}
	}
}

func TestNotFoundAndExists(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "a", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(ctx, "b", control.Quotas{}, control.Settings{}))
	if _, err := p.CreateTenant(ctx, "a", control.Quotas{}, control.Settings{}); !errors.Is(err, control.ErrExists) {
		t.Fatalf("create twice: %v", err)
	}
	for name, err := range map[string]error{
		"suspend":  func() error { _, err := p.SuspendTenant(ctx, "zz", ""); return err }(),
		"resume":   func() error { _, err := p.ResumeTenant(ctx, "zz"); return err }(),
		"delete":   p.DeleteTenant(ctx, "zz"),
		"quotas":   func() error { _, err := p.SetQuotas(ctx, "zz", control.Quotas{}); return err }(),
		"settings": func() error { _, err := p.SetSettings(ctx, "zz", control.Settings{}); return err }(),
		"key": func() error {
			_, err := p.IssueKey(ctx, control.Key{ID: "k1", Tenant: "zz", Roles: []control.Role{"reader"}, Hash: hashOf("x")})
			return err
		}(),
		"cursor":   p.DefineCursor(ctx, control.CursorDef{Name: "c", Tenant: "zz"}),
		"uncursor": p.DeleteCursor(ctx, "a", "nope"),
		"revoke":   p.RevokeKey(ctx, "a", "nope"),
	} {
		if !errors.Is(err, control.ErrNotFound) {
			t.Errorf("%s on a missing subject: %v, want ErrNotFound", name, err)
		}
	}
	// A key id is never reused, even after revocation.
	must(t)(p.IssueKey(ctx, control.Key{ID: "k1", Tenant: "a", Roles: []control.Role{"reader"}, Hash: hashOf("x")}))
	// Another tenant cannot revoke it, and does not learn it exists.
	if err := p.RevokeKey(ctx, "b", "k1"); !errors.Is(err, control.ErrNotFound) {
		t.Fatalf("revoke another tenant's key: %v", err)
	}
	check(t, p.RevokeKey(ctx, "a", "k1"))
	if _, err := p.IssueKey(ctx, control.Key{ID: "k1", Tenant: "a", Roles: []control.Role{"reader"}, Hash: hashOf("y")}); !errors.Is(err, control.ErrExists) {
		t.Fatalf("reused key id: %v", err)
	}
}

func TestCursorDefinitionsAndLimit(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "a", control.Quotas{}, control.Settings{}))
	def := func(name, entity string, max int) error {
		return p.DefineCursorMax(ctx, control.CursorDef{Name: name, Tenant: "a", Region: control.Region{Entity: entity}}, max)
	}
	check(t, def("c1", "order:", 2))
	check(t, def("c1", "order:", 2)) // same region: idempotent
	if err := def("c1", "user:", 2); !errors.Is(err, control.ErrExists) {
		t.Fatalf("redefine with another region: %v", err)
	}
	check(t, def("c2", "x", 2)) // exactly the limit
	if err := def("c3", "x", 2); !errors.Is(err, control.ErrLimit) || !strings.Contains(err.Error(), "max_cursors 2") {
		t.Fatalf("one past the limit: %v", err)
	}
	check(t, def("c1", "order:", 2)) // redefining an existing one at the limit is fine
	hist := must(t)(p.History(control.CursorEntity("a", "c1"))).([]control.Change)
	if len(hist) != 1 {
		t.Fatalf("idempotent redefinition recorded %d events", len(hist))
	}
	// Concurrent definitions cannot pass the limit together.
	must(t)(p.CreateTenant(ctx, "b", control.Quotas{}, control.Settings{}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := p.DefineCursorMax(ctx, control.CursorDef{Name: fmt.Sprintf("n%d", i), Tenant: "b"}, 3)
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, control.ErrLimit) {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if ok != 3 || len(p.Cursors("b")) != 3 {
		t.Fatalf("%d concurrent definitions succeeded (%d defined), limit 3", ok, len(p.Cursors("b")))
	}
}

func TestConcurrentCreateOfOneTenantOneWins(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	for round := 0; round < 5; round++ {
		id := fmt.Sprintf("t%d", round)
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for g := range errs {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				_, errs[g] = p.CreateTenant(ctx, id, control.Quotas{MaxCursors: g + 1}, control.Settings{})
			}(g)
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, control.ErrExists):
				t.Fatalf("concurrent create: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%s: %d creates succeeded, want exactly 1", id, wins)
		}
		if h := must(t)(p.History(control.TenantEntity(id))).([]control.Change); len(h) != 1 {
			t.Fatalf("%s: %d events recorded, want 1", id, len(h))
		}
	}
	before := snap(p, "t0", "t4")
	check(t, p.Close())
	p = open(t, dir)
	defer p.Close()
	if after := snap(p, "t0", "t4"); !reflect.DeepEqual(before, after) {
		t.Fatalf("replay differs: %+v vs %+v", before, after)
	}
}

func TestRevokedKeyIsGoneAtOnceAndAfterRestart(t *testing.T) {
	dir := t.TempDir()
	p := open(t, dir)
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "a", control.Quotas{}, control.Settings{}))
	must(t)(p.IssueKey(ctx, control.Key{ID: "k1", Tenant: "a", Roles: []control.Role{"writer"}, Hash: hashOf("1")}))
	must(t)(p.IssueKey(ctx, control.Key{ID: "k2", Tenant: "a", Roles: []control.Role{"reader"}, Hash: hashOf("2")}))
	// Readers hammer Key while the revocation happens: once RevokeKey
	// returned, no Key call finds it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					p.Key("k1")
				}
			}
		}()
	}
	check(t, p.RevokeKey(ctx, "a", "k1"))
	if _, ok := p.Key("k1"); ok {
		t.Fatal("revoked key still returned by Key")
	}
	close(stop)
	wg.Wait()
	if k, ok := p.Key("k2"); !ok || k.Roles[0] != control.RoleReader {
		t.Fatalf("the other key: %+v %v", k, ok)
	}
	check(t, p.Close())
	p = open(t, dir)
	defer p.Close()
	if _, ok := p.Key("k1"); ok {
		t.Fatal("revoked key back after restart")
	}
	if _, ok := p.Key("k2"); !ok {
		t.Fatal("live key lost at restart")
	}
}

func TestIdempotentChangesRecordNothing(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	ctx := opCtx()
	must(t)(p.CreateTenant(ctx, "a", control.Quotas{}, control.Settings{}))
	must(t)(p.ResumeTenant(ctx, "a"))                    // already active
	must(t)(p.SuspendTenant(ctx, "a", "why"))            // recorded
	must(t)(p.SuspendTenant(ctx, "a", "why"))            // same: nothing
	must(t)(p.SuspendTenant(ctx, "a", "other"))          // new reason: recorded
	must(t)(p.SetQuotas(ctx, "a", control.Quotas{}))     // unchanged
	must(t)(p.SetSettings(ctx, "a", control.Settings{})) // unchanged
	check(t, p.SetOperatorHash(ctx, hashOf("o")))        // recorded
	check(t, p.SetOperatorHash(ctx, hashOf("o")))        // same: nothing
	if n := len(must(t)(p.History(control.TenantEntity("a"))).([]control.Change)); n != 3 {
		t.Fatalf("tenant:a has %d events, want 3", n)
	}
	if n := len(must(t)(p.History(control.OperatorEntity)).([]control.Change)); n != 1 {
		t.Fatalf("operator has %d events, want 1", n)
	}
	tn, _ := p.Tenant("a")
	if tn.SuspendReason != "other" {
		t.Fatalf("reason %q", tn.SuspendReason)
	}
}

// TestChangeByALostKeyIsRefused: a change asked with an API key is
// recorded only while that key is live, of the change's tenant, and the
// tenant not suspended — checked as the change is recorded, so a key
// revoked while its request was under way (a bundle compiling) changes
// nothing. Changes without a key (the operator's) are not affected.
func TestChangeByALostKeyIsRefused(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	op := opCtx()
	must(t)(p.CreateTenant(op, "a", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(op, "b", control.Quotas{}, control.Settings{}))
	must(t)(p.IssueKey(op, control.Key{ID: "ka", Tenant: "a", Roles: []control.Role{control.RoleAdmin}, Hash: hashOf("a")}))
	asKey := func(id, tenant string) context.Context {
		return policy.WithPrincipal(context.Background(), policy.Principal{ID: id, Tenant: tenant, Roles: []string{"admin"}, KeyID: id})
	}
	def := func(tenant, name string) control.CursorDef {
		return control.CursorDef{Name: name, Tenant: tenant}
	}
	check(t, p.DefineCursor(asKey("ka", "a"), def("a", "live")))
	if err := p.DefineCursor(asKey("ka", "a"), def("b", "other")); !errors.Is(err, control.ErrAccessLost) {
		t.Fatalf("a's key changing b: %v, want ErrAccessLost", err)
	}
	must(t)(p.SuspendTenant(op, "a", "unpaid"))
	if err := p.DefineCursor(asKey("ka", "a"), def("a", "suspended")); !errors.Is(err, control.ErrAccessLost) {
		t.Fatalf("a key of a suspended tenant: %v, want ErrAccessLost", err)
	}
	must(t)(p.ResumeTenant(op, "a"))
	check(t, p.RevokeKey(op, "a", "ka"))
	if err := p.DefineCursor(asKey("ka", "a"), def("a", "revoked")); !errors.Is(err, control.ErrAccessLost) {
		t.Fatalf("a revoked key: %v, want ErrAccessLost", err)
	}
	if _, ok := p.Cursor("a", "revoked"); ok {
		t.Fatal("the revoked key's cursor was recorded")
	}
	check(t, p.DefineCursor(op, def("a", "by-operator")))
}

// TestChangeByATenantTokenOfASuspendedTenantIsRefused: a change asked by
// a tenant's credential without an API key (a JWT's principal) is
// refused as it is recorded when the tenant is suspended or deleted, or
// when it names another tenant.
func TestChangeByATenantTokenOfASuspendedTenantIsRefused(t *testing.T) {
	p := open(t, t.TempDir())
	defer p.Close()
	op := opCtx()
	must(t)(p.CreateTenant(op, "a", control.Quotas{}, control.Settings{}))
	must(t)(p.CreateTenant(op, "b", control.Quotas{}, control.Settings{}))
	jwt := policy.WithPrincipal(context.Background(), policy.Principal{ID: "alice", Tenant: "a", Roles: []string{"admin"}})
	check(t, p.DefineCursor(jwt, control.CursorDef{Name: "live", Tenant: "a"}))
	if err := p.DefineCursor(jwt, control.CursorDef{Name: "other", Tenant: "b"}); !errors.Is(err, control.ErrAccessLost) {
		t.Fatalf("a's token changing b: %v, want ErrAccessLost", err)
	}
	must(t)(p.SuspendTenant(op, "a", "unpaid"))
	if err := p.DefineCursor(jwt, control.CursorDef{Name: "suspended", Tenant: "a"}); !errors.Is(err, control.ErrAccessLost) {
		t.Fatalf("a token of a suspended tenant: %v, want ErrAccessLost", err)
	}
}
