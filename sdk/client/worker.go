package client

import (
	"context"
	"encoding/json"
	"time"
)

// WorkerRestart is a hosted worker's restart policy: after a fault it
// restarts after BackoffMinMs, doubling per fault up to BackoffMaxMs;
// once it has restarted MaxRestarts times within WindowMs, the next fault
// quarantines it. Zero (nil) fields take the server's defaults (5
// restarts within 10 minutes, 200ms doubling to 30s).
type WorkerRestart struct {
	MaxRestarts  *int  `json:"max_restarts,omitempty"`
	WindowMs     int64 `json:"window_ms,omitempty"`
	BackoffMinMs int64 `json:"backoff_min_ms,omitempty"`
	BackoffMaxMs int64 `json:"backoff_max_ms,omitempty"`
}

// WorkerSpec is what StartWorker sends: the handler plugin to run, the
// events it sees (the zero Region is every event), the named cursor it
// resumes from ("" = the worker's name) and its restart policy.
type WorkerSpec struct {
	Plugin  string        `json:"plugin"`
	Region  CursorRegion  `json:"region"`
	Cursor  string        `json:"cursor,omitempty"`
	Restart WorkerRestart `json:"restart"`
}

// WorkerFault is one failure of a hosted worker.
type WorkerFault struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"` // trap, timeout, malformed, …, denied, quota, unavailable, store, loop, error
	Message string    `json:"message"`
}

// WorkerLogEntry is one line of a worker's own log.
type WorkerLogEntry struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
}

// Worker is a hosted worker's definition and status.
type Worker struct {
	Name    string        `json:"name"`
	Plugin  string        `json:"plugin"`
	Region  CursorRegion  `json:"region"`
	Cursor  string        `json:"cursor"`
	Restart WorkerRestart `json:"restart"`
	// Desired is the recorded state (running, stopped, quarantined);
	// State what it is doing (starting, running, backoff, stopped, quarantined,
	// suspended).
	Desired string `json:"desired"`
	State   string `json:"state"`
	Running *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Digest  string `json:"digest"`
	} `json:"running,omitempty"`
	// Position is the worker's cursor's committed position, Head the
	// tenant store's global sequence, Lag = Head - Position: the log's
	// events past the position, in the worker's region or not. It is the
	// region's events not yet handled when Region is every event, and an
	// upper bound on them otherwise: a caught-up worker whose region
	// leaves out later events keeps a Lag above 0 (batpak worker status
	// prints it "≤ N").
	Position     uint64       `json:"position"`
	Head         uint64       `json:"head"`
	Lag          uint64       `json:"lag"`
	Restarts     int          `json:"restarts"`
	RecentFaults int          `json:"recent_faults"`
	LastFault    *WorkerFault `json:"last_fault,omitempty"`
	NextRestart  *time.Time   `json:"next_restart,omitempty"`
	Quarantine   *struct {
		Since  time.Time `json:"since"`
		Reason string    `json:"reason"`
	} `json:"quarantine,omitempty"`
	Changed   time.Time        `json:"changed"`
	ChangedBy string           `json:"changed_by"`
	Log       []WorkerLogEntry `json:"log"`
}

// StartWorker starts (or reconfigures) the tenant's hosted worker name
// running spec.Plugin (admin role). spec is the worker's whole
// configuration: on an existing worker, what it leaves out (a region
// filter, the cursor, the restart policy) takes its default; to change
// one setting, start from the worker's own (Worker) and change that.
// Starting a running worker with the same spec changes nothing. Errors:
// ErrNotFound for an unknown plugin, ErrInvalidRequest naming the field,
// ErrConflict for a cursor in use or, for a new name, when the tenant
// has as many workers defined as the server allows
// (server.workers_max_defined: delete some with DeleteWorker),
// ErrQuotaExceeded past max_workers, ErrNotImplemented on a server
// without hosted workers.
func (t *Tenant) StartWorker(ctx context.Context, name string, spec WorkerSpec) (Worker, error) {
	body, err := json.Marshal(spec)
	if err != nil {
		return Worker{}, err
	}
	var w Worker
	err = t.c.do(ctx, request{method: "PUT", path: t.path("/workers/" + seg(name)), body: body, safe: true}, &w)
	return w, err
}

// StopWorker stops a hosted worker after the batch in hand (admin role);
// it keeps its definition and its cursor's position.
func (t *Tenant) StopWorker(ctx context.Context, name string) (Worker, error) {
	var w Worker
	err := t.c.do(ctx, request{method: "POST", path: t.path("/workers/" + seg(name) + "/stop"), safe: true}, &w)
	return w, err
}

// DeleteWorker stops a hosted worker if it runs and forgets it (admin
// role): its definition, status and log, and its cursor's position (a
// worker's cursor is its own, so it goes with it: a worker or cursor
// that takes the name up later starts at the log's beginning). The
// reactions it wrote stay. ErrNotFound if there is no such worker.
func (t *Tenant) DeleteWorker(ctx context.Context, name string) error {
	return t.c.do(ctx, request{method: "DELETE", path: t.path("/workers/" + seg(name)), safe: true}, nil)
}

// ResetWorker clears a worker's quarantine and fault count and starts it
// again (admin role).
func (t *Tenant) ResetWorker(ctx context.Context, name string) (Worker, error) {
	var w Worker
	err := t.c.do(ctx, request{method: "POST", path: t.path("/workers/" + seg(name) + "/reset"), safe: true}, &w)
	return w, err
}

// Worker returns one hosted worker's status (ErrNotFound if there is none).
func (t *Tenant) Worker(ctx context.Context, name string) (Worker, error) {
	var w Worker
	err := t.c.do(ctx, request{method: "GET", path: t.path("/workers/" + seg(name)), safe: true}, &w)
	return w, err
}

// Workers lists the tenant's hosted workers with their status.
func (t *Tenant) Workers(ctx context.Context) ([]Worker, error) {
	var out struct {
		Workers []Worker `json:"workers"`
	}
	err := t.c.do(ctx, request{method: "GET", path: t.path("/workers"), safe: true}, &out)
	return out.Workers, err
}
