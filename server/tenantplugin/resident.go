package tenantplugin

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/internal/shares"
	"github.com/batpak-go/batpak/plugins"
)

// DefaultCodeBytes and DefaultIdleBytes are Options.CodeBytes' and
// Options.IdleBytes' defaults.
const (
	DefaultCodeBytes = 2 << 30
	DefaultIdleBytes = 1 << 30
)

// RoomError refuses a plugin load for want of room in the server's
// memory for its tenants' plugins (Options.CodeBytes): all tenants'
// loaded modules together, or this tenant's half of it, already hold
// what the setting allows. A *RejectedError (an upload, a swap) or a
// *NotLoadedError (a load at start or on a cluster node) wraps it.
type RoomError struct {
	Setting string // the server setting: "server.plugin_code_bytes"
	Limit   int64  // the room: the setting, or the tenant's half of it
	Tenant  bool   // the tenant's half is full (else the server's whole)
	Held    int64  // what the tenant's loaded plugins hold (Tenant only)
	Asked   int64  // the module's estimate (plugins.CodeEstimate), or what it compiled to
}

func (e *RoomError) Error() string {
	if e.Tenant {
		return fmt.Sprintf("the tenant's loaded plugins hold %d MiB of compiled code, and this module needs about %d MiB more: a tenant may hold half of the server's %s (%d MiB); delete or swap out a plugin",
			mib(e.Held), mib(e.Asked), e.Setting, mib(e.Limit*2))
	}
	return fmt.Sprintf("the server has no room for this module's compiled code (about %d MiB; %s = %d MiB for all tenants); retry later, or ask the operator",
		mib(e.Asked), e.Setting, mib(e.Limit))
}

func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// residentBudget bounds what all tenants' plugin hosts hold in the
// server's memory between calls, of one kind (plugins.MemoryKind): a
// tenant at most half of it, so that one tenant cannot take it all.
type residentBudget struct {
	setting string
	limit   int64 // ≤ 0: no bound

	mu      sync.Mutex
	held    int64
	tenants map[string]int64
}

func newResidentBudget(setting string, limit int64) *residentBudget {
	return &residentBudget{setting: setting, limit: limit, tenants: map[string]int64{}}
}

// take charges n bytes to tenant, or refuses them (*RoomError) when the
// tenant's half or the whole would pass the limit; release gives them
// back (once).
func (b *residentBudget) take(tenant string, n int64) (release func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit > 0 {
		switch t := b.tenants[tenant]; {
		case t+n > b.limit/2:
			return nil, &RoomError{Setting: b.setting, Limit: b.limit / 2, Tenant: true, Held: t, Asked: n}
		case b.held+n > b.limit:
			return nil, &RoomError{Setting: b.setting, Limit: b.limit, Asked: n}
		}
	}
	b.held += n
	b.tenants[tenant] += n
	return sync.OnceFunc(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.held -= n
		if b.tenants[tenant] -= n; b.tenants[tenant] == 0 {
			delete(b.tenants, tenant)
		}
	}), nil
}

// usage is what the budget holds in all, and for tenant.
func (b *residentBudget) usage(tenant string) (all, mine int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.tenants[tenant]
}

// charge is the plugin host's HostOptions.Charge for tenant: compiled
// code against the code budget, idle instances against the idle one.
func (m *Manager) charge(tenant string) func(kind plugins.MemoryKind, n int64) (func(), error) {
	return func(kind plugins.MemoryKind, n int64) (func(), error) {
		if kind == plugins.MemoryCode {
			return m.code.take(tenant, n)
		}
		return m.idle.take(tenant, n)
	}
}

// Resident is what loaded plugins hold in the server's memory between
// calls: their modules' compiled code (plugins.Plugin.CodeBytes)
// and their idle instances (Options.CodeBytes, IdleBytes).
type Resident struct {
	CodeBytes int64 `json:"plugin_code_bytes"`
	IdleBytes int64 `json:"plugin_idle_bytes"`
}

// Resident is what tenant's loaded plugins hold, and what all tenants'
// hold together.
func (m *Manager) Resident(tenant string) (mine, all Resident) {
	all.CodeBytes, mine.CodeBytes = m.code.usage(tenant)
	all.IdleBytes, mine.IdleBytes = m.idle.usage(tenant)
	return mine, all
}

// Metrics are the gauges of what all tenants' loaded plugins hold and of
// their calls running and waiting (for /metrics).
func (m *Manager) Metrics() []prometheus.Collector {
	gauge := func(name, help string, b *residentBudget) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			all, _ := b.usage("")
			return float64(all)
		})
	}
	pool := func(name, help string, v func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	inUse := func(p *shares.Pool) func() int { return func() int { all, _ := p.InUse(""); return all } }
	return []prometheus.Collector{
		pool("batpak_plugin_calls_running", "Plugin calls running now, all tenants together (bounded by server.plugin_calls_running).", inUse(m.running)),
		pool("batpak_plugin_calls_waiting", "Plugin calls waiting for one of server.plugin_calls_running's slots.", m.running.Waiting),
		pool("batpak_projections_in_flight", "Projection folds running (each holds a plugin call slot and one of the server's 32 places for folds).", inUse(m.calls)),
		pool("batpak_projections_waiting", "Projection folds holding a call slot and waiting for one of the server's 32 places for folds (only with server.plugin_calls_running above 32).", m.calls.Waiting),
		gauge("batpak_plugin_code_bytes", "Estimated memory the tenants' loaded plugin modules' compiled code holds (bounded by server.plugin_code_bytes).", m.code),
		gauge("batpak_plugin_idle_bytes", "Memory of the plugin instances kept idle between calls (bounded by server.plugin_idle_bytes).", m.idle),
	}
}
