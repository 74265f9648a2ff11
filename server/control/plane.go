package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// Plane is the event-sourced control plane: every change is an event in the
// system store under <root>/system, replayed when the plane opens. Safe for
// concurrent use.
//
// Writes are one at a time (validate, append with compare-and-set on the
// entity's clock, apply), so the in-memory state changes in exactly the
// order of the log and a replay rebuilds it exactly. The system store syncs
// every event: a method that returned nil has its change on stable storage.
// Reads (Tenant, Key, Effective, …) take a read lock only and never wait
// for a write's fsync.
type Plane struct {
	store    *core.Store
	defaults Quotas
	onChange func(Change)
	follow   *follower // nil: the plane applies its own changes (single node)
	closeMu  sync.Mutex
	closed   bool

	wmu sync.Mutex // one change at a time: validate, append, apply

	mu sync.RWMutex
	st state
}

// Options configure a Plane.
type Options struct {
	// Dir is the system store's directory (<root>/system): Open opens the
	// store there and the plane closes it on Close. Exactly one of Dir and
	// Store is set.
	Dir string
	// Store, when set, is an open system store the plane follows instead
	// of opening Dir — a store replicated by raft, whose events may be
	// written by other nodes (see "Following a replicated store" in the
	// package doc). The plane never closes it: its owner closes it after
	// the plane's Close. Giving a Store is what makes a plane follow.
	Store *core.Store
	// Defaults are the server's default quotas.
	Defaults Quotas
	// OnChange, when set, is called with every change the plane applies
	// after Open's replay (the replayed ones are not passed: the state
	// Open returns holds them), once each, in the order of the log, after
	// the plane's reads reflect it: the server's hook for the effects of
	// a change (see the package doc). A following plane calls it on its
	// tail goroutine, before a change method that recorded the change
	// returns; a plane that does not follow calls it inside the change
	// method. It must not call the plane's change methods, nor wait for a
	// lock a caller of them holds meanwhile (they wait for it: a
	// deadlock), and should return quickly: the next change waits for it.
	OnChange func(Change)
}

// Open opens (creating if needed) the system store and replays it. It
// fails if the store holds a change of a kind this version does not know
// (written by a newer server), rather than serve a state it cannot rebuild.
// With Options.Store it follows that store instead (see Options.Store).
func Open(opts Options) (*Plane, error) {
	if opts.Store != nil {
		if opts.Dir != "" {
			return nil, fmt.Errorf("%w: Options.Dir and Options.Store are both set (give one)", ErrInvalid)
		}
		return openFollowing(opts)
	}
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: Options.Dir is empty", ErrInvalid)
	}
	cfg := core.DefaultConfig(opts.Dir)
	cfg.Sync.EveryNEvents = 1 // every acknowledged admin change is on stable storage
	cfg.SegmentMaxBytes = 16 << 20
	cfg.ChannelCapacity = 256
	cfg.BroadcastCapacity = 64
	cfg.FDBudget = 8
	s, err := core.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("control: open system store: %w", err)
	}
	p := &Plane{store: s, defaults: opts.Defaults, onChange: opts.OnChange, st: newState()}
	evs, err := s.Query(core.All())
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("control: replay: %w", err)
	}
	for _, ev := range evs {
		if ev.Header.Kind.Category() == core.CategorySystem {
			continue // the store's own records (salvage, maintenance audit)
		}
		c, err := decode(ev)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("control: replay: event %d (%s): %w", ev.GlobalSequence, ev.Coordinate.Entity, err)
		}
		p.st.apply(c)
	}
	return p, nil
}

// Close closes the system store. Reads keep answering from memory; changes
// fail afterwards. A following plane (Options.Store) instead stops its
// tail, waits for it to end and leaves the store open (its owner closes
// it); its changes then fail with ErrClosed, and Close again returns nil.
func (p *Plane) Close() error {
	if p.follow == nil {
		return p.store.Close()
	}
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.stopFollowing()
	return nil
}

// Verify re-reads the system store and checks its hash chains (see
// core.Store.Verify): the audit trail of every admin change is intact.
func (p *Plane) Verify() (core.VerifyReport, error) { return p.store.Verify() }

// History returns the recorded changes of one entity ("tenant:<id>",
// "key:<id>", "cursor:<tenant>/<name>" or "operator"), oldest first: who
// did what, when. TenantEntity, KeyEntity and CursorEntity name them.
func (p *Plane) History(entity string) ([]Change, error) {
	evs, err := p.store.Stream(entity)
	if err != nil {
		return nil, err
	}
	out := make([]Change, 0, len(evs))
	for _, ev := range evs {
		if ev.Header.Kind.Category() == core.CategorySystem {
			continue
		}
		c, err := decode(ev)
		if err != nil {
			return nil, err
		}
		out = append(out, c.public())
	}
	return out, nil
}

// TenantEntity is the system-store entity whose History records tenant id.
func TenantEntity(id string) string { return "tenant:" + id }

// KeyEntity is the system-store entity whose History records API key id.
func KeyEntity(id string) string { return "key:" + id }

// CursorEntity is the system-store entity whose History records the
// definition of tenant's cursor name.
func CursorEntity(tenant, name string) string { return "cursor:" + tenant + "/" + name }

// OperatorEntity is the system-store entity recording the operator credential.
const OperatorEntity = "operator"

// stillHolds refuses a change asked by a tenant's credential that no
// longer holds: an API key (b.By.KeyID) no longer live or of another
// tenant, or any tenant principal (an API key's, a JWT's: b.By.Tenant)
// whose tenant is deleted or suspended, or that asks a change of another
// tenant. The request was admitted earlier, and its credential may have
// lost its access while the request's body arrived or its bundle
// compiled. The caller holds p.wmu, so a revocation or suspension
// recorded before this change is seen. Changes by the operator and the
// server's own (no tenant) are not checked here.
func (p *Plane) stillHolds(b body) error {
	by := b.By
	if by.KeyID == "" && by.Tenant == "" {
		return nil
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	tenant := by.Tenant
	if id := by.KeyID; id != "" {
		k, ok := p.st.keys[id]
		if !ok || (tenant != "" && k.Tenant != tenant) {
			return fmt.Errorf("%w: key %s is revoked or unknown", ErrAccessLost, id)
		}
		tenant = k.Tenant
	}
	if b.Tenant != "" && b.Tenant != tenant {
		return fmt.Errorf("%w: a credential of tenant %s cannot change tenant %s", ErrAccessLost, tenant, b.Tenant)
	}
	if t, ok := p.st.tenants[tenant]; !ok || t.State == StateSuspended {
		return fmt.Errorf("%w: tenant %s is deleted or suspended", ErrAccessLost, tenant)
	}
	return nil
}

// record appends one change with compare-and-set on its entity's clock and
// applies it. The caller holds p.wmu. A following plane does not apply it
// itself: it waits until its tail has (and so every change before it in
// the log), so each change is applied once, in log order.
func (p *Plane) record(ctx context.Context, kind core.Kind, entity string, b body) (change, error) {
	if err := p.Err(); err != nil {
		return change{}, err
	}
	b.By = policy.PrincipalFrom(ctx)
	if err := p.stillHolds(b); err != nil {
		return change{}, err
	}
	payload, err := encodeBody(b)
	if err != nil {
		return change{}, err
	}
	p.mu.RLock()
	n := p.st.clocks[entity]
	p.mu.RUnlock()
	exp := core.ExpectNoEvents()
	if n > 0 {
		exp = core.ExpectClock(n - 1)
	}
	coord, err := core.NewCoordinate(entity, Scope)
	if err != nil {
		return change{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// The wait is not cut short by ctx: once queued the change may be
	// written, and the state must not miss a change the log holds.
	r, err := p.store.AppendWithOptions(context.WithoutCancel(ctx), coord, kind, payload,
		core.AppendOptions{ExpectedClock: exp})
	if err != nil {
		if errors.Is(err, core.ErrConflict) {
			return change{}, fmt.Errorf("%w: %s changed concurrently: %v", ErrExists, entity, err)
		}
		return change{}, fmt.Errorf("control: record change: %w", err)
	}
	c := change{seq: r.GlobalSequence, clock: r.Clock, at: time.UnixMicro(r.Timestamp).UTC(), entity: entity, kind: kind, body: b}
	if p.follow != nil {
		// Like the append, not cut short by ctx: the next change's
		// compare-and-set needs this one applied.
		if err := p.WaitApplied(context.WithoutCancel(ctx), r.GlobalSequence+1); err != nil {
			return change{}, fmt.Errorf("control: change %d recorded but not applied: %w", r.GlobalSequence, err)
		}
		return c, nil
	}
	p.mu.Lock()
	p.st.apply(c)
	p.mu.Unlock()
	if p.onChange != nil {
		c.raw = payload
		p.onChange(c.public())
	}
	return c, nil
}

// CreateTenant records a new active tenant. id must match ValidTenantID;
// q and s are validated (ErrInvalid naming the field). ErrExists if a
// tenant of that id exists (a deleted one's id may be used again: the
// new tenant starts empty).
func (p *Plane) CreateTenant(ctx context.Context, id string, q Quotas, s Settings) (Tenant, error) {
	if err := ValidTenantID(id); err != nil {
		return Tenant{}, err
	}
	if err := q.Validate(); err != nil {
		return Tenant{}, err
	}
	if err := s.Validate(); err != nil {
		return Tenant{}, err
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(id); ok {
		return Tenant{}, fmt.Errorf("%w: tenant %q", ErrExists, id)
	}
	if _, err := p.record(ctx, kindTenantCreated, TenantEntity(id), body{Tenant: id, Quotas: &q, Settings: &s}); err != nil {
		return Tenant{}, err
	}
	t, _ := p.Tenant(id)
	return t, nil
}

// Tenant returns the tenant called id (deleted tenants are gone).
func (p *Plane) Tenant(id string) (Tenant, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	t, ok := p.st.tenants[id]
	if !ok {
		return Tenant{}, false
	}
	return *t, true
}

// Tenants lists every tenant, by id.
func (p *Plane) Tenants() []Tenant {
	p.mu.RLock()
	out := make([]Tenant, 0, len(p.st.tenants))
	for _, t := range p.st.tenants {
		out = append(out, *t)
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// changeTenant is the one path of every tenant update: find the tenant, let
// decide what to record (ok false: nothing to record), record it.
func (p *Plane) changeTenant(ctx context.Context, id string, kind core.Kind, decide func(Tenant) (body, bool)) (Tenant, error) {
	p.lockChange()
	defer p.wmu.Unlock()
	t, ok := p.Tenant(id)
	if !ok {
		return Tenant{}, fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	b, ok := decide(t)
	if !ok {
		return t, nil
	}
	b.Tenant = id
	if _, err := p.record(ctx, kind, TenantEntity(id), b); err != nil {
		return Tenant{}, err
	}
	t, _ = p.Tenant(id)
	return t, nil
}

// SuspendTenant suspends a tenant (its data routes answer
// TENANT_SUSPENDED). Suspending a suspended tenant with the same reason
// records nothing; with another reason it records the new reason.
// reason is at most MaxReasonBytes of UTF-8.
func (p *Plane) SuspendTenant(ctx context.Context, id, reason string) (Tenant, error) {
	if err := checkText("reason", reason, MaxReasonBytes); err != nil {
		return Tenant{}, err
	}
	return p.changeTenant(ctx, id, kindTenantSuspended, func(t Tenant) (body, bool) {
		return body{Reason: reason}, t.State != StateSuspended || t.SuspendReason != reason
	})
}

// ResumeTenant makes a suspended tenant active again; resuming an active
// tenant records nothing.
func (p *Plane) ResumeTenant(ctx context.Context, id string) (Tenant, error) {
	return p.changeTenant(ctx, id, kindTenantResumed, func(t Tenant) (body, bool) {
		return body{}, t.State != StateActive
	})
}

// DeleteTenant records the deletion (ErrNotFound if there is no such
// tenant); the caller removes the data. The tenant's keys stop working and
// its cursor definitions are gone at once; the event lists them, so a
// replay agrees.
func (p *Plane) DeleteTenant(ctx context.Context, id string) error {
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(id); !ok {
		return fmt.Errorf("%w: tenant %q", ErrNotFound, id)
	}
	b := body{Tenant: id, RevokedKeys: []string{}, DeletedCursors: []string{}}
	for _, k := range p.Keys(id) {
		b.RevokedKeys = append(b.RevokedKeys, k.ID)
	}
	for _, c := range p.Cursors(id) {
		b.DeletedCursors = append(b.DeletedCursors, c.Name)
	}
	_, err := p.record(ctx, kindTenantDeleted, TenantEntity(id), b)
	return err
}

// SetQuotas replaces a tenant's quota overrides (validated: ErrInvalid
// naming the field).
func (p *Plane) SetQuotas(ctx context.Context, id string, q Quotas) (Tenant, error) {
	if err := q.Validate(); err != nil {
		return Tenant{}, err
	}
	return p.changeTenant(ctx, id, kindTenantQuotas, func(t Tenant) (body, bool) {
		return body{Quotas: &q}, t.Quotas != q
	})
}

// SetSettings replaces a tenant's settings (Sync "", "durable" or
// "buffered"; anything else is ErrInvalid). The tenant's store picks a new
// sync setting up when it next opens.
func (p *Plane) SetSettings(ctx context.Context, id string, s Settings) (Tenant, error) {
	if err := s.Validate(); err != nil {
		return Tenant{}, err
	}
	return p.changeTenant(ctx, id, kindTenantSettings, func(t Tenant) (body, bool) {
		return body{Settings: &s}, t.Settings != s
	})
}

// Defaults returns the server's default quotas.
func (p *Plane) Defaults() Quotas { return p.defaults }

// Effective returns the tenant's quotas with the defaults filled in: each
// non-zero override replaces the default. An unknown tenant gets the
// defaults.
func (p *Plane) Effective(id string) Quotas {
	p.mu.RLock()
	t, ok := p.st.tenants[id]
	var q Quotas
	if ok {
		q = t.Quotas
	}
	p.mu.RUnlock()
	return q.Over(p.defaults)
}

// MaxKeysPerTenant bounds the live (not revoked) keys of one tenant:
// IssueKey refuses one more with ErrLimit. Every key is a record of the
// control plane all tenants share and an entry of every key list; a
// tenant's admin key must not grow them without bound.
const MaxKeysPerTenant = 1000

// IssueKey records a key whose secret the caller generated (auth.NewKey):
// k.ID (1..64 of a-z 0-9, never used before, even by a revoked key),
// k.Tenant (an existing tenant), k.Roles (1..3 distinct roles), k.Name (at
// most MaxNameBytes) and a non-zero k.Hash. Created is set to the time
// of the record. Only the hash is stored. ErrLimit when the tenant holds
// MaxKeysPerTenant live keys already.
func (p *Plane) IssueKey(ctx context.Context, k Key) (Key, error) {
	if err := validKey(k); err != nil {
		return Key{}, err
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(k.Tenant); !ok {
		return Key{}, fmt.Errorf("%w: tenant %q", ErrNotFound, k.Tenant)
	}
	p.mu.RLock()
	used := p.st.clocks[KeyEntity(k.ID)] > 0
	live := len(p.st.tenantKeys[k.Tenant])
	p.mu.RUnlock()
	if used {
		return Key{}, fmt.Errorf("%w: key %q", ErrExists, k.ID)
	}
	if live >= MaxKeysPerTenant {
		return Key{}, fmt.Errorf("%w: the tenant has %d live keys (at most %d; revoke one first)", ErrLimit, live, MaxKeysPerTenant)
	}
	kr := keyRecord{ID: k.ID, Roles: append([]Role(nil), k.Roles...), Name: k.Name, Hash: hexHash(k.Hash)}
	if _, err := p.record(ctx, kindKeyIssued, KeyEntity(k.ID), body{Tenant: k.Tenant, Key: &kr}); err != nil {
		return Key{}, err
	}
	out, _ := p.Key(k.ID)
	return out, nil
}

// Key returns the live (not revoked, tenant not deleted) key with this
// id. Called on every request: a map lookup under a read lock.
func (p *Plane) Key(id string) (Key, bool) {
	p.mu.RLock()
	k, ok := p.st.keys[id]
	p.mu.RUnlock()
	if !ok {
		return Key{}, false
	}
	k.Roles = append([]Role(nil), k.Roles...)
	return k, true
}

// Keys lists a tenant's live keys, oldest first.
func (p *Plane) Keys(tenant string) []Key {
	p.mu.RLock()
	var out []Key
	for id := range p.st.tenantKeys[tenant] {
		k := p.st.keys[id]
		k.Roles = append([]Role(nil), k.Roles...)
		out = append(out, k)
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// RevokeKey revokes a key of tenant; the next Key call no longer finds
// it. ErrNotFound if tenant has no live key of that id (a key of another
// tenant is not found either).
func (p *Plane) RevokeKey(ctx context.Context, tenant, id string) error {
	p.lockChange()
	defer p.wmu.Unlock()
	k, ok := p.Key(id)
	if !ok || k.Tenant != tenant {
		return fmt.Errorf("%w: key %q", ErrNotFound, id)
	}
	_, err := p.record(ctx, kindKeyRevoked, KeyEntity(id), body{Tenant: tenant, Key: &keyRecord{ID: id}})
	return err
}

// OperatorHash returns the stored operator credential hash, if any.
func (p *Plane) OperatorHash() ([32]byte, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.st.operator, p.st.hasOperator
}

// SetOperatorHash records the operator credential's hash (non-zero);
// setting the hash already stored records nothing.
func (p *Plane) SetOperatorHash(ctx context.Context, h [32]byte) error {
	if h == ([32]byte{}) {
		return fmt.Errorf("%w: operator hash is zero", ErrInvalid)
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if cur, ok := p.OperatorHash(); ok && cur == h {
		return nil
	}
	_, err := p.record(ctx, kindOperatorSet, OperatorEntity, body{OperatorHash: hexHash(h)})
	return err
}

// DefineCursor records a named cursor of a tenant. Defining it again with
// the same region records nothing; with another region it is ErrExists.
// The name follows core's named-cursor rule (ValidCursorName); the tenant
// must exist (ErrNotFound). It enforces no count: use DefineCursorMax.
func (p *Plane) DefineCursor(ctx context.Context, c CursorDef) error {
	return p.DefineCursorMax(ctx, c, -1)
}

// DefineCursorMax is DefineCursor refusing, with ErrLimit, a new cursor
// when the tenant already has max of them (max < 0: no limit). The count
// check and the record happen under the plane's write lock, so concurrent
// definitions cannot pass the limit together. A name that is the cursor
// of one of the tenant's hosted workers is ErrExists (WorkerOfCursor).
func (p *Plane) DefineCursorMax(ctx context.Context, c CursorDef, max int) error {
	if err := ValidCursorName(c.Name); err != nil {
		return err
	}
	if err := c.Region.Validate(); err != nil {
		return err
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(c.Tenant); !ok {
		return fmt.Errorf("%w: tenant %q", ErrNotFound, c.Tenant)
	}
	p.mu.RLock()
	cur, exists := p.st.cursors[c.Tenant][c.Name]
	n := len(p.st.cursors[c.Tenant])
	worker := workerOfCursor(p.st.workers[c.Tenant], c.Name)
	p.mu.RUnlock()
	if worker != "" {
		return fmt.Errorf("%w: cursor %q is worker %q's; give the cursor another name", ErrExists, c.Name, worker)
	}
	if exists {
		if regionEqual(cur.Region, c.Region) {
			return nil
		}
		return fmt.Errorf("%w: cursor %q is defined with another region", ErrExists, c.Name)
	}
	if max >= 0 && n >= max {
		return fmt.Errorf("%w: the tenant has %d cursors (max_cursors %d)", ErrLimit, n, max)
	}
	r := c.Region
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	_, err := p.record(ctx, kindCursorDefined, CursorEntity(c.Tenant, c.Name), body{Tenant: c.Tenant, Cursor: &cursorRecord{Name: c.Name, Region: &r, ID: hex.EncodeToString(id[:])}})
	return err
}

// WorkerOfCursor returns the name of the tenant's hosted worker whose
// cursor is cursor, if any: such a cursor is the worker's alone.
func (p *Plane) WorkerOfCursor(tenant, cursor string) (string, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	w := workerOfCursor(p.st.workers[tenant], cursor)
	return w, w != ""
}

func workerOfCursor(ws map[string]WorkerDef, cursor string) string {
	for _, w := range ws {
		if w.Cursor == cursor {
			return w.Name
		}
	}
	return ""
}

// Cursors lists a tenant's named cursors, by name.
func (p *Plane) Cursors(tenant string) []CursorDef {
	p.mu.RLock()
	out := make([]CursorDef, 0, len(p.st.cursors[tenant]))
	for _, c := range p.st.cursors[tenant] {
		out = append(out, c.clone())
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Cursor returns one named cursor's definition.
func (p *Plane) Cursor(tenant, name string) (CursorDef, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c, ok := p.st.cursors[tenant][name]
	return c.clone(), ok
}

// DeleteCursor removes a named cursor's definition (ErrNotFound if there
// is none). Its committed position, kept in the tenant's store, is the
// caller's to remove.
func (p *Plane) DeleteCursor(ctx context.Context, tenant, name string) error {
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Cursor(tenant, name); !ok {
		return fmt.Errorf("%w: cursor %q", ErrNotFound, name)
	}
	_, err := p.record(ctx, kindCursorDeleted, CursorEntity(tenant, name), body{Tenant: tenant, Cursor: &cursorRecord{Name: name}})
	return err
}
