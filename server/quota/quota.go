package quota

import (
	"time"

	"github.com/batpak-go/batpak/server/control"
)

// Exceeded says which quota refused a request.
type Exceeded struct {
	Quota      string        // "events_per_second", "bytes_per_second", "storage_bytes", "max_payload_bytes", "max_batch_events", "max_subscriptions", "max_cursors"
	Limit      float64       // the quota's value
	RetryAfter time.Duration // 0 when retrying will not help
}

func (e *Exceeded) Error() string { return "quota exceeded: " + e.Quota }

// Manager holds every tenant's limiters.
type Manager struct{}

// New makes a Manager.
func New() *Manager { panic("unimplemented") }

// Tenant returns tenant id's limiter, updating it to q (effective quotas).
func (m *Manager) Tenant(id string, q control.Quotas) *Tenant { panic("unimplemented") }

// Forget drops a tenant's limiter (deleted tenant).
func (m *Manager) Forget(id string) { panic("unimplemented") }

// Tenant is one tenant's limiters.
type Tenant struct{}

// AllowWrite takes events and bytes from the rate buckets, or refuses
// (taking nothing) with the quota that ran out and when to retry.
func (t *Tenant) AllowWrite(events, bytes int) *Exceeded { panic("unimplemented") }

// CheckStorage refuses when used+adding would pass the storage quota.
func (t *Tenant) CheckStorage(used int64, adding int) *Exceeded { panic("unimplemented") }

// AcquireSubscription counts one more stream, or refuses.
func (t *Tenant) AcquireSubscription() (release func(), ex *Exceeded) { panic("unimplemented") }
