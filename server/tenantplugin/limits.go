package tenantplugin

import (
	"fmt"
	"time"

	"github.com/batpak-go/batpak/server/control"
)

// Limits bound a tenant's plugins. As the server's ceilings
// (Options.Ceilings, server.plugins.*) zero fields take the defaults
// below; as a tenant's effective limits (Manager.Limits) each is the
// tenant's quota (control.Quotas.Plugin*, Max*) lowered to the ceiling.
type Limits struct {
	// MemoryBytes caps a plugin's linear memory (whole 64 KiB pages:
	// a value is rounded down). Default 32 MiB; range 64 KiB..4 GiB.
	MemoryBytes int64 `json:"memory_bytes"`
	// CallTimeout bounds one plugin call. Default 1s; range 1ms..1m.
	CallTimeout time.Duration `json:"call_timeout"`
	// OutputBytes bounds one call's output (a projection's state).
	// Default 16 MiB; range 1 KiB..64 MiB.
	OutputBytes int64 `json:"output_bytes"`
	// LogLines and LogBytes are one call's log budget (plugins.Limits).
	// Defaults 256 lines and 64 KiB; ranges 1..65536 lines and
	// 1 KiB..16 MiB.
	LogLines int   `json:"log_lines"`
	LogBytes int64 `json:"log_bytes"`
	// Plugins bounds the plugins a tenant keeps. Default 16; range
	// 1..10000.
	Plugins int `json:"plugins"`
	// Versions bounds the versions one plugin keeps (delete one to add
	// another). Default 8; range 1..1000.
	Versions int `json:"versions"`
	// ModuleBytes bounds one uploaded module: exactly this many bytes are
	// accepted, one more is refused. Default 16 MiB; range 1 KiB..256 MiB.
	// (An upload must also fit in server.max_body_bytes, as base64.)
	ModuleBytes int64 `json:"module_bytes"`
	// AllowClockRandom lets a plugin's manifest grant it the real clock
	// or real randomness (plugins.Grants.Clock, Random). Off by default:
	// such a plugin's answers are not a function of the events alone, so
	// on a cluster, where each node folds a projection itself, its state
	// and ETag differ from node to node (and from one fold to the next).
	// Off, an upload asking either is refused, and a kept version asking
	// either does not load, naming server.plugins.allow_clock_random.
	// A ceiling only: no tenant quota turns it on.
	AllowClockRandom bool `json:"allow_clock_random"`
}

const pageBytes = 64 << 10

// DefaultLimits are the ceilings of a server that sets none.
func DefaultLimits() Limits {
	return Limits{MemoryBytes: 32 << 20, CallTimeout: time.Second, OutputBytes: 16 << 20, LogLines: 256, LogBytes: 64 << 10,
		Plugins: 16, Versions: 8, ModuleBytes: 16 << 20}
}

// WithDefaults fills zero fields with DefaultLimits and checks the
// ranges; the error names the server.plugins.* key.
func (l Limits) WithDefaults() (Limits, error) {
	d := DefaultLimits()
	if l.MemoryBytes == 0 {
		l.MemoryBytes = d.MemoryBytes
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = d.CallTimeout
	}
	if l.OutputBytes == 0 {
		l.OutputBytes = d.OutputBytes
	}
	if l.LogLines == 0 {
		l.LogLines = d.LogLines
	}
	if l.LogBytes == 0 {
		l.LogBytes = d.LogBytes
	}
	if l.Plugins == 0 {
		l.Plugins = d.Plugins
	}
	if l.Versions == 0 {
		l.Versions = d.Versions
	}
	if l.ModuleBytes == 0 {
		l.ModuleBytes = d.ModuleBytes
	}
	switch {
	case l.MemoryBytes < pageBytes || l.MemoryBytes > 4<<30:
		return l, fmt.Errorf("server.plugins.memory_bytes = %d: want 64KiB..4GiB", l.MemoryBytes)
	case l.CallTimeout < time.Millisecond || l.CallTimeout > time.Minute:
		return l, fmt.Errorf("server.plugins.call_timeout = %v: want 1ms..1m", l.CallTimeout)
	case l.OutputBytes < 1<<10 || l.OutputBytes > 64<<20:
		return l, fmt.Errorf("server.plugins.output_bytes = %d: want 1KiB..64MiB", l.OutputBytes)
	case l.LogLines < 1 || l.LogLines > 1<<16:
		return l, fmt.Errorf("server.plugins.log_lines = %d: want 1..65536", l.LogLines)
	case l.LogBytes < 1<<10 || l.LogBytes > 16<<20:
		return l, fmt.Errorf("server.plugins.log_bytes = %d: want 1KiB..16MiB", l.LogBytes)
	case l.Plugins < 1 || l.Plugins > 10000:
		return l, fmt.Errorf("server.plugins.max_plugins = %d: want 1..10000", l.Plugins)
	case l.Versions < 1 || l.Versions > 1000:
		return l, fmt.Errorf("server.plugins.max_versions = %d: want 1..1000", l.Versions)
	case l.ModuleBytes < 1<<10 || l.ModuleBytes > 256<<20:
		return l, fmt.Errorf("server.plugins.module_bytes = %d: want 1KiB..256MiB", l.ModuleBytes)
	}
	l.MemoryBytes -= l.MemoryBytes % pageBytes
	return l, nil
}

// under returns the tenant's limits: each quota that is set (positive)
// and below the ceiling c, else the ceiling.
func under(c Limits, q control.Quotas) Limits {
	lo := func(v, ceil int64) int64 {
		if v > 0 && v < ceil {
			return v
		}
		return ceil
	}
	loi := func(v, ceil int) int { return int(lo(int64(v), int64(ceil))) }
	out := Limits{
		MemoryBytes: lo(q.PluginMemoryBytes, c.MemoryBytes),
		CallTimeout: c.CallTimeout,
		OutputBytes: lo(q.PluginOutputBytes, c.OutputBytes),
		LogLines:    loi(q.PluginLogLines, c.LogLines),
		LogBytes:    lo(q.PluginLogBytes, c.LogBytes),
		Plugins:     loi(q.MaxPlugins, c.Plugins),
		Versions:    loi(q.MaxPluginVersions, c.Versions),
		ModuleBytes: lo(q.MaxModuleBytes, c.ModuleBytes),

		AllowClockRandom: c.AllowClockRandom,
	}
	if ms := time.Duration(q.PluginCallMillis) * time.Millisecond; ms > 0 && ms < c.CallTimeout {
		out.CallTimeout = ms
	}
	out.MemoryBytes = max(out.MemoryBytes-out.MemoryBytes%pageBytes, pageBytes)
	return out
}

// Effective returns q, the tenant's effective quotas
// (control.Plane.Effective), with each plugin limit as the tenant's
// plugins run under it (Limits: its quota lowered to the server's
// ceiling), and, by quota name, the server.plugins.* setting whose
// ceiling a limit is rather than the tenant's own value (left unset, or
// set above the ceiling).
func (m *Manager) Effective(tenant string, q control.Quotas) (control.Quotas, map[string]string) {
	t, _ := m.opts.Plane.Tenant(tenant)
	own, c, l := t.Quotas, m.opts.Ceilings, m.Limits(tenant)
	capped := map[string]string{}
	for _, f := range []struct {
		quota, setting string
		own, ceiling   int64
	}{
		{"plugin_memory_bytes", "server.plugins.memory_bytes", own.PluginMemoryBytes, c.MemoryBytes},
		{"plugin_call_ms", "server.plugins.call_timeout", int64(own.PluginCallMillis), c.CallTimeout.Milliseconds()},
		{"plugin_output_bytes", "server.plugins.output_bytes", own.PluginOutputBytes, c.OutputBytes},
		{"plugin_log_lines", "server.plugins.log_lines", int64(own.PluginLogLines), int64(c.LogLines)},
		{"plugin_log_bytes", "server.plugins.log_bytes", own.PluginLogBytes, c.LogBytes},
		{"max_plugins", "server.plugins.max_plugins", int64(own.MaxPlugins), int64(c.Plugins)},
		{"max_plugin_versions", "server.plugins.max_versions", int64(own.MaxPluginVersions), int64(c.Versions)},
		{"max_module_bytes", "server.plugins.module_bytes", own.MaxModuleBytes, c.ModuleBytes},
	} {
		if f.own <= 0 || f.own > f.ceiling {
			capped[f.quota] = f.setting
		}
	}
	q.PluginMemoryBytes = l.MemoryBytes
	q.PluginCallMillis = int(l.CallTimeout.Milliseconds())
	q.PluginOutputBytes = l.OutputBytes
	q.PluginLogLines = l.LogLines
	q.PluginLogBytes = l.LogBytes
	q.MaxPlugins = l.Plugins
	q.MaxPluginVersions = l.Versions
	q.MaxModuleBytes = l.ModuleBytes
	return q, capped
}
