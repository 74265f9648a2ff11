package client

import (
	"encoding/json"
	"time"
)

// Event is an event as the server returns it.
type Event struct {
	ID             string          `json:"id"`
	GlobalSequence uint64          `json:"global_sequence"`
	Entity         string          `json:"entity"`
	Scope          string          `json:"scope"`
	Kind           string          `json:"kind"`
	Clock          uint64          `json:"clock"`
	Timestamp      time.Time       `json:"timestamp"`
	TimestampUS    int64           `json:"timestamp_us"`
	CorrelationID  string          `json:"correlation_id"`
	CausationID    *string         `json:"causation_id"`
	IdempotencyKey *string         `json:"idempotency_key"`
	Flags          uint16          `json:"flags"`
	Payload        json.RawMessage `json:"payload"` // null when Redacted
	Redacted       bool            `json:"redacted"`
}

// Receipt acknowledges a write: under the tenant's sync setting (durable,
// fsync'd, by default) the event is stored when the receipt arrives.
type Receipt struct {
	ID             string `json:"id"`
	CorrelationID  string `json:"correlation_id"`
	GlobalSequence uint64 `json:"global_sequence"`
	Clock          uint64 `json:"clock"`
	TimestampUS    int64  `json:"timestamp_us"`
	// Deduplicated: the idempotency key was already stored; this is the
	// original write's receipt and nothing new was written.
	Deduplicated bool `json:"deduplicated"`
}

// AppendRequest is one event to write.
type AppendRequest struct {
	Entity string `json:"entity"`
	Scope  string `json:"scope"`
	// Kind is "category:type" ("1:1", "0x1:0x2") or a number as a string.
	Kind    string          `json:"kind"`
	Payload json.RawMessage `json:"payload"`
	// ExpectedClock makes the write conditional: ExpectClock(n) or
	// ExpectNoEvents(); nil writes unconditionally.
	ExpectedClock  any    `json:"expected_clock,omitempty"`
	CorrelationID  string `json:"correlation_id,omitempty"`
	CausationID    string `json:"causation_id,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Flags          uint16 `json:"flags,omitempty"`
	// CauseItem, in a batch, names an earlier item of the same batch as
	// this event's cause (its index).
	CauseItem *int `json:"cause_item,omitempty"`
}

// ExpectClock makes a write conditional on the entity's last clock being c.
func ExpectClock(c uint64) any { return c }

// ExpectNoEvents makes a write conditional on the entity having no events.
func ExpectNoEvents() any { return "no_events" }

// Query selects events: an entity prefix or a scope, optionally a kind or
// a category, after a global sequence.
type Query struct {
	Entity   string // entity prefix ("order:" matches "order:1")
	Scope    string // exact scope
	Kind     string // "1:1"
	Category *int   // 0..15
	// After: only events with a global sequence greater than *After
	// (nil: from the first event).
	After *uint64
	// Limit is the page size (server caps it at 1000; 0: the server's default).
	Limit int
}

// Page is one page of a query.
type Page struct {
	Events []Event `json:"events"`
	// NextAfter continues the query (Query.After); nil when there are no
	// more events now. A page may hold no events and a NextAfter: the
	// server examined as much of the log as one page may (65,536 index
	// entries) without finding the region's events there; go on from it.
	NextAfter *uint64 `json:"next_after"`
}

// ImportStats reports an import.
type ImportStats struct {
	Imported int `json:"imported"`
	Skipped  int `json:"skipped"`
}

// Stats is a tenant's store summary and usage.
type Stats map[string]any

// CursorRegion is a named cursor's region.
type CursorRegion struct {
	Entity   string `json:"entity,omitempty"`
	Scope    string `json:"scope,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Category *int   `json:"category,omitempty"`
}

// CursorInfo describes a named cursor.
type CursorInfo struct {
	Name      string       `json:"name"`
	Region    CursorRegion `json:"region"`
	Committed uint64       `json:"committed"`
	Lag       uint64       `json:"lag"`
	// Damaged is set (Committed and Lag zero) when the cursor's saved
	// position is damaged on the server: delete the cursor and define it
	// again, then commit the position its consumer had reached.
	Damaged string `json:"damaged,omitempty"`
}

// Quotas bound what a tenant may take (zero: the server's default;
// negative: unlimited where that makes sense).
type Quotas struct {
	StorageBytes    int64   `json:"storage_bytes,omitempty"`
	IndexBytes      int64   `json:"index_bytes,omitempty"` // memory the tenant's index may hold
	EventsPerSecond float64 `json:"events_per_second,omitempty"`
	EventsBurst     int     `json:"events_burst,omitempty"`
	BytesPerSecond  float64 `json:"bytes_per_second,omitempty"`
	BytesBurst      int     `json:"bytes_burst,omitempty"`
	// RequestsPerSecond and RequestsBurst bound the requests the
	// tenant's credentials make (one each, per node; 429 past them).
	RequestsPerSecond float64 `json:"requests_per_second,omitempty"`
	RequestsBurst     int     `json:"requests_burst,omitempty"`
	MaxPayloadBytes   int     `json:"max_payload_bytes,omitempty"`
	MaxBatchEvents    int     `json:"max_batch_events,omitempty"`
	MaxSubscriptions  int     `json:"max_subscriptions,omitempty"`
	MaxCursors        int     `json:"max_cursors,omitempty"`
	// Plugin limits: 0 takes the server's ceiling; never above it.
	PluginMemoryBytes int64 `json:"plugin_memory_bytes,omitempty"`
	PluginCallMillis  int   `json:"plugin_call_ms,omitempty"`
	PluginOutputBytes int64 `json:"plugin_output_bytes,omitempty"`
	PluginLogLines    int   `json:"plugin_log_lines,omitempty"`
	PluginLogBytes    int64 `json:"plugin_log_bytes,omitempty"`
	MaxPlugins        int   `json:"max_plugins,omitempty"`
	MaxPluginVersions int   `json:"max_plugin_versions,omitempty"`
	MaxModuleBytes    int64 `json:"max_module_bytes,omitempty"`
	MaxWorkers        int   `json:"max_workers,omitempty"` // hosted workers running or quarantined
	// UploadBytesPerHour bounds the bytes of policy bundles and plugin
	// uploads the tenant may send an hour (429 past it).
	UploadBytesPerHour int64 `json:"upload_bytes_per_hour,omitempty"`
	// ControlChangesPerDay bounds the control-plane changes (keys,
	// cursors, policies, plugins, workers) the tenant's own credentials
	// may make a day (429 past it).
	ControlChangesPerDay int `json:"control_changes_per_day,omitempty"`
}

// Settings are a tenant's store settings.
type Settings struct {
	Sync string `json:"sync,omitempty"` // "durable" (default) or "buffered"
	// DecisionAllowSample is the share of the tenant's allowed writes
	// recorded in its policy decision log: 0 (default: denials only) to 1.
	DecisionAllowSample float64 `json:"decision_allow_sample,omitempty"`
}

// TenantInfo is a tenant as the admin API shows it.
type TenantInfo struct {
	ID            string    `json:"id"`
	State         string    `json:"state"`
	SuspendReason string    `json:"suspend_reason,omitempty"`
	Created       time.Time `json:"created"`
	Quotas        Quotas    `json:"quotas"` // set for the tenant (zero: the server's default)
	// EffectiveQuotas are the quotas the tenant runs under: Quotas over
	// the server's defaults; on a server hosting plugins, the plugin
	// limits lowered to the server's ceilings (server.plugins.*).
	EffectiveQuotas Quotas `json:"effective_quotas"`
	// CappedBy names, by quota, the server setting whose ceiling an
	// effective plugin limit is rather than the tenant's own value (left
	// unset, or set above it): "plugin_memory_bytes":
	// "server.plugins.memory_bytes".
	CappedBy map[string]string `json:"capped_by,omitempty"`
	Settings Settings          `json:"settings"`
	Usage    map[string]any    `json:"usage,omitempty"`
}

// Key is an API key as listed (never its secret).
type Key struct {
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Roles   []string  `json:"roles"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
}

// IssuedKey is a new key: Key holds the secret, shown this once.
type IssuedKey struct {
	ID    string   `json:"id"`
	Key   string   `json:"key"`
	Roles []string `json:"roles"`
	Name  string   `json:"name,omitempty"`
}
