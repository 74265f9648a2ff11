package control

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
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
// (every field but the bursts, which must not be negative: see
// Quotas.Validate). The quota package enforces them.
type Quotas struct {
	StorageBytes int64 `json:"storage_bytes,omitempty"` // segment bytes the tenant's store may hold
	// IndexBytes bounds the memory the tenant's store's in-memory index
	// holds (core.Usage.IndexBytes, a running estimate: a fixed cost per
	// event plus every entity's, scope's and idempotency key's name): a
	// write that would pass it is refused (507). It bounds what one
	// tenant's names and event count cost the server's memory while its
	// store is open, which storage_bytes alone does not (long names cost
	// the index what they cost the disk). Server default 1 GiB
	// (server.quotas.index_bytes); negative: no limit.
	IndexBytes      int64   `json:"index_bytes,omitempty"`
	EventsPerSecond float64 `json:"events_per_second,omitempty"` // sustained append rate (token bucket)
	EventsBurst     int     `json:"events_burst,omitempty"`      // bucket size for events
	BytesPerSecond  float64 `json:"bytes_per_second,omitempty"`  // sustained payload bytes per second
	BytesBurst      int     `json:"bytes_burst,omitempty"`       // bucket size for bytes
	// RequestsPerSecond bounds the requests the tenant's credentials make,
	// one token each whatever the route and whether it is allowed (reads,
	// writes, event streams opened, plugin calls, control changes, the
	// console's routes), from a bucket of RequestsBurst,
	// counted per node: past it a request is answered 429 QUOTA_EXCEEDED
	// "requests_per_second" with Retry-After, held
	// server.rate_refusal_delay first, before its body is read or its
	// store touched. It bounds the CPU a flood of small requests from one
	// tenant takes from the others, which the event and byte rates
	// (writes only) and the response budget (bytes, not requests) do not.
	// Server default 20,000 a second, bucket 40,000
	// (server.quotas.requests_per_second, requests_burst); negative: no
	// limit.
	RequestsPerSecond float64 `json:"requests_per_second,omitempty"`
	RequestsBurst     int     `json:"requests_burst,omitempty"`    // bucket size for requests
	MaxPayloadBytes   int     `json:"max_payload_bytes,omitempty"` // one event's payload
	MaxBatchEvents    int     `json:"max_batch_events,omitempty"`  // events in one batch request
	MaxSubscriptions  int     `json:"max_subscriptions,omitempty"` // concurrent long responses: SSE streams, NDJSON queries, exports, verifies
	MaxCursors        int     `json:"max_cursors,omitempty"`       // named cursors defined

	// Plugin limits (the tenantplugin package applies them): zero or
	// negative means the server's ceiling (server.plugins.*), and a value
	// above the ceiling is lowered to it. A manifest asking for more than
	// the tenant's limit is refused at upload.
	PluginMemoryBytes int64 `json:"plugin_memory_bytes,omitempty"` // a plugin's linear memory (whole 64 KiB pages); also bounds its call stack and 8 bytes a table element
	PluginCallMillis  int   `json:"plugin_call_ms,omitempty"`      // one plugin call's time
	PluginOutputBytes int64 `json:"plugin_output_bytes,omitempty"` // one call's output (a projection's state)
	PluginLogLines    int   `json:"plugin_log_lines,omitempty"`    // lines one call may log
	PluginLogBytes    int64 `json:"plugin_log_bytes,omitempty"`    // bytes one call may log
	MaxPlugins        int   `json:"max_plugins,omitempty"`         // plugins the tenant keeps
	MaxPluginVersions int   `json:"max_plugin_versions,omitempty"` // versions one plugin keeps
	MaxModuleBytes    int64 `json:"max_module_bytes,omitempty"`    // one uploaded module
	// MaxWorkers bounds the tenant's hosted workers that are running (or
	// restarting) or quarantined: starting one more is refused. A stopped
	// worker does not count. Server default 16 (server.quotas.max_workers);
	// negative: no limit.
	MaxWorkers int `json:"max_workers,omitempty"`
	// UploadBytesPerHour bounds the bytes of policy bundles and plugin
	// uploads the tenant may send (a token bucket holding one hour's
	// worth, refilled continuously): each upload is charged its size
	// before it is checked, accepted or not. It bounds the disk a loop of
	// uploads takes — on a cluster every upload is a raft entry and a blob
	// on every node, kept for server.cluster.blob_grace after nothing
	// references it — and the CPU their checks take. Server default
	// 256 MiB (server.quotas.upload_bytes_per_hour); negative: no limit.
	UploadBytesPerHour int64 `json:"upload_bytes_per_hour,omitempty"`
	// ControlChangesPerDay bounds the changes the tenant's own credentials
	// make to the control plane all tenants share — keys issued, cursors
	// defined or deleted, policy, plugin and worker changes (a token
	// bucket holding one day's worth, refilled continuously; cursor
	// commits are not changes, nor key revocations, which take back an
	// issue that was counted and must stay open to stop a leaked key). Each change is a
	// lasting, audited record of the system store (about 0.5 KiB), so this
	// bounds how fast a tenant's churn grows that store on every node:
	// 5,000 a day is at most ~2.5 MiB. Beside it, every tenant's changes
	// are paced at 10 a second after a burst of 100. A tenant's admin
	// credentials and its other credentials each have a budget and a pace
	// of their own (so a leaked writer key cannot spend its admins'; the
	// bound on the store's growth is twice the budget). The
	// operator's changes are never counted. Server default 5000
	// (server.quotas.control_changes_per_day); negative: no limit.
	ControlChangesPerDay int `json:"control_changes_per_day,omitempty"`
}

// Settings are a tenant's store settings.
type Settings struct {
	// Sync is "durable" (default: a 2xx means fsync'd) or "buffered"
	// (written to the OS; fsync every 1000 events or 1 s).
	Sync string `json:"sync,omitempty"`
	// DecisionAllowSample is the share of the tenant's allowed writes
	// (of those a policy judged) recorded in its policy decision log, 0
	// (default: denials only) to 1 (every allowed write).
	DecisionAllowSample float64 `json:"decision_allow_sample,omitempty"`
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
	// ID is drawn at random when the cursor is defined: a cursor deleted
	// and defined again under its name has another ("" for one defined
	// by a server from before ids).
	ID string `json:"id,omitempty"`
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
	// ErrLimit: DefineCursorMax found the tenant's cursor count,
	// StartWorker its worker count, or IssueKey its live keys
	// (MaxKeysPerTenant), at its limit.
	ErrLimit = errors.New("control: limit reached")
	// ErrAccessLost: the API key a change was asked with was revoked, or
	// its tenant deleted or suspended, before the change was recorded
	// (a policy bundle's compile and tests, a plugin's, take a while);
	// nothing was recorded.
	ErrAccessLost = errors.New("control: the credential lost its access before the change was recorded")
)

// InUseError refuses to remove something others still use (a plugin a
// hosted worker runs). It wraps ErrExists, and names the users.
type InUseError struct {
	What   string   // what was to be removed: `plugin "echo"`
	Users  []string // the workers using it, by name
	Advice string   // what to do first
}

// maxUsersShown bounds how many users InUseError's message names.
const maxUsersShown = 10

func (e *InUseError) Error() string {
	names := make([]string, 0, min(len(e.Users), maxUsersShown))
	for _, u := range e.Users[:min(len(e.Users), maxUsersShown)] {
		names = append(names, strconv.Quote(u))
	}
	list := strings.Join(names, ", ")
	if n := len(e.Users) - len(names); n > 0 {
		list += fmt.Sprintf(" and %d more", n)
	}
	who := "hosted worker"
	if len(e.Users) != 1 {
		who = "hosted workers"
	}
	return fmt.Sprintf("control: %s is in use by %s %s; %s", e.What, who, list, e.Advice)
}

// Unwrap returns ErrExists.
func (e *InUseError) Unwrap() error { return ErrExists }
