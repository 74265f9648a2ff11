package control

import (
	"context"
	"errors"
	"time"
)

// Role is what a credential may do inside its tenant.
type Role string

// The roles, each including the ones before it: a reader reads and
// follows; a writer also appends and commits cursors; an admin also
// verifies, exports, snapshots and manages the tenant's keys and cursors.
const (
	RoleReader Role = "reader"
	RoleWriter Role = "writer"
	RoleAdmin  Role = "admin"
)

// State is a tenant's lifecycle state.
type State string

// Tenant states. A deleted tenant is gone from Tenants and Tenant; its id
// may be created again (a new, empty tenant).
const (
	StateActive    State = "active"
	StateSuspended State = "suspended"
)

// Quotas bound what one tenant may take. A zero field means "the
// server's default" (see Plane.Effective); a negative one means no limit
// where that makes sense (rates, storage).
type Quotas struct {
	StorageBytes     int64   `json:"storage_bytes,omitempty"`      // segment bytes the tenant's store may hold
	EventsPerSecond  float64 `json:"events_per_second,omitempty"`  // sustained append rate (token bucket)
	EventsBurst      int     `json:"events_burst,omitempty"`       // bucket size for events
	BytesPerSecond   float64 `json:"bytes_per_second,omitempty"`   // sustained payload bytes per second
	BytesBurst       int     `json:"bytes_burst,omitempty"`        // bucket size for bytes
	MaxPayloadBytes  int     `json:"max_payload_bytes,omitempty"`  // one event's payload
	MaxBatchEvents   int     `json:"max_batch_events,omitempty"`   // events in one batch request
	MaxSubscriptions int     `json:"max_subscriptions,omitempty"`  // concurrent SSE streams
	MaxCursors       int     `json:"max_cursors,omitempty"`        // named cursors defined
}

// Settings are a tenant's store settings.
type Settings struct {
	// Sync is "durable" (default: a 2xx means fsync'd) or "buffered"
	// (written to the OS; fsync every 1000 events or 1 s).
	Sync string `json:"sync,omitempty"`
}

// Tenant is one tenant as the control plane knows it.
type Tenant struct {
	ID            string    `json:"id"`
	State         State     `json:"state"`
	SuspendReason string    `json:"suspend_reason,omitempty"`
	Created       time.Time `json:"created"`
	Quotas        Quotas    `json:"quotas"`   // overrides; zero fields take the server default
	Settings      Settings  `json:"settings"` // as set
}

// Key is an API key's record. The secret is never stored: only Hash.
type Key struct {
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Roles   []Role    `json:"roles"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
	Hash    [32]byte  `json:"-"`
}

// CursorDef is a named server-side cursor's definition.
type CursorDef struct {
	Name   string `json:"name"`
	Tenant string `json:"tenant"`
	Region Region `json:"region"`
}

// Region is a serialisable core.Region: an entity prefix or a scope,
// optionally narrowed by kind or category.
type Region struct {
	Entity   string `json:"entity,omitempty"`
	Scope    string `json:"scope,omitempty"`
	Kind     string `json:"kind,omitempty"`     // "1:1", "0x1:0x1" or a number
	Category *int   `json:"category,omitempty"` // 0..15
}

// Errors the plane returns (wrapped with the subject).
var (
	ErrExists   = errors.New("control: already exists")
	ErrNotFound = errors.New("control: not found")
	ErrInvalid  = errors.New("control: invalid")
)

// Plane is the event-sourced control plane: every change is an event in the
// system store under <root>/system, replayed when the plane opens. Safe for
// concurrent use.
type Plane struct{}

// Options configure a Plane.
type Options struct {
	Dir      string // the system store's directory (<root>/system)
	Defaults Quotas // the server's default quotas
}

// Open opens (creating if needed) the system store and replays it.
func Open(opts Options) (*Plane, error) { panic("unimplemented") }

// Close closes the system store.
func (p *Plane) Close() error { panic("unimplemented") }

// CreateTenant records a new active tenant. id must match ValidTenantID.
func (p *Plane) CreateTenant(ctx context.Context, id string, q Quotas, s Settings) (Tenant, error) {
	panic("unimplemented")
}

// Tenant returns the tenant called id.
func (p *Plane) Tenant(id string) (Tenant, bool) { panic("unimplemented") }

// Tenants lists every tenant, by id.
func (p *Plane) Tenants() []Tenant { panic("unimplemented") }

// SuspendTenant, ResumeTenant, DeleteTenant, SetQuotas, SetSettings change
// a tenant, each recorded as one event.
func (p *Plane) SuspendTenant(ctx context.Context, id, reason string) (Tenant, error) {
	panic("unimplemented")
}

// ResumeTenant makes a suspended tenant active again.
func (p *Plane) ResumeTenant(ctx context.Context, id string) (Tenant, error) { panic("unimplemented") }

// DeleteTenant records the deletion; the caller removes the data.
func (p *Plane) DeleteTenant(ctx context.Context, id string) error { panic("unimplemented") }

// SetQuotas replaces a tenant's quota overrides.
func (p *Plane) SetQuotas(ctx context.Context, id string, q Quotas) (Tenant, error) {
	panic("unimplemented")
}

// SetSettings replaces a tenant's settings.
func (p *Plane) SetSettings(ctx context.Context, id string, s Settings) (Tenant, error) {
	panic("unimplemented")
}

// Effective returns the tenant's quotas with the defaults filled in.
func (p *Plane) Effective(id string) Quotas { panic("unimplemented") }

// IssueKey records a key whose secret the caller generated (auth.NewKey).
func (p *Plane) IssueKey(ctx context.Context, k Key) (Key, error) { panic("unimplemented") }

// Key returns the live (not revoked) key with this id.
func (p *Plane) Key(id string) (Key, bool) { panic("unimplemented") }

// Keys lists a tenant's live keys.
func (p *Plane) Keys(tenant string) []Key { panic("unimplemented") }

// RevokeKey revokes a key of tenant; it stops working at once.
func (p *Plane) RevokeKey(ctx context.Context, tenant, id string) error { panic("unimplemented") }

// OperatorHash returns the stored operator credential hash, if any.
func (p *Plane) OperatorHash() ([32]byte, bool) { panic("unimplemented") }

// SetOperatorHash records the operator credential's hash.
func (p *Plane) SetOperatorHash(ctx context.Context, h [32]byte) error { panic("unimplemented") }

// DefineCursor records a named cursor of a tenant.
func (p *Plane) DefineCursor(ctx context.Context, c CursorDef) error { panic("unimplemented") }

// Cursors lists a tenant's named cursors.
func (p *Plane) Cursors(tenant string) []CursorDef { panic("unimplemented") }

// DeleteCursor removes a named cursor's definition.
func (p *Plane) DeleteCursor(ctx context.Context, tenant, name string) error {
	panic("unimplemented")
}

// ValidTenantID reports whether id is a usable tenant id.
func ValidTenantID(id string) error { panic("unimplemented") }
