package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"time"
)

// PluginVersion is one kept version of a tenant's plugin.
type PluginVersion struct {
	Version  string          `json:"version"` // the manifest's version
	Digest   string          `json:"digest"`  // hex SHA-256 of the module
	Kind     string          `json:"kind"`    // "projection" or "handler"
	Bytes    int64           `json:"bytes"`
	Manifest json.RawMessage `json:"manifest"`
	Uploaded time.Time       `json:"uploaded"`
	By       json.RawMessage `json:"by"`
}

// TenantPlugin is a tenant's plugin: its kept versions (oldest first) and
// the active one.
type TenantPlugin struct {
	Name        string          `json:"name"`
	Active      string          `json:"active"`
	Activated   time.Time       `json:"activated"`
	ActivatedBy json.RawMessage `json:"activated_by,omitempty"`
	Versions    []PluginVersion `json:"versions"`
}

// PluginSummary is one plugin in a tenant's list.
type PluginSummary struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Active      string `json:"active"`
	Digest      string `json:"digest"`
	Versions    int    `json:"versions"`
	Loaded      bool   `json:"loaded"`
	Quarantined bool   `json:"quarantined"`
}

// PluginStats are a plugin's counters since the server started.
type PluginStats struct {
	Requests        uint64  `json:"requests"`
	Calls           uint64  `json:"calls"`
	CallSeconds     float64 `json:"call_seconds"`
	Faults          uint64  `json:"faults"`
	LogLines        uint64  `json:"log_lines"`
	LogBytes        uint64  `json:"log_bytes"`
	DroppedLogLines uint64  `json:"dropped_log_lines"`
	DroppedLogBytes uint64  `json:"dropped_log_bytes"`
}

// PluginFault is one failed call of a plugin.
type PluginFault struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"`
	Kind    string    `json:"kind"`
	Message string    `json:"message"`
}

// PluginLogLine is one line a plugin logged.
type PluginLogLine struct {
	Time    time.Time `json:"time"`
	Level   string    `json:"level"`
	Stream  string    `json:"stream"`
	Version string    `json:"version"`
	Text    string    `json:"text"`
}

// PluginStatus is a plugin's state as its tenant sees it. On a cluster
// it is one node's: each node runs the plugins it serves and keeps its
// own counters, faults, logs and quarantine (see PluginStatusAllNodes).
type PluginStatus struct {
	TenantPlugin
	// Node is the cluster node these counters are of ("" on a single
	// server).
	Node        string          `json:"node,omitempty"`
	Loaded      bool            `json:"loaded"`
	LoadError   string          `json:"load_error,omitempty"`
	Digest      string          `json:"digest,omitempty"`
	Quarantined bool            `json:"quarantined"`
	Limits      json.RawMessage `json:"limits"`
	Stats       PluginStats     `json:"stats"`
	Faults      []PluginFault   `json:"faults"`
	Logs        []PluginLogLine `json:"logs"`
}

// PushPlugin uploads a plugin (admin role): manifest is the plugin
// manifest as JSON, its "sha256" the module's SHA-256 (required). The
// server validates and compiles the module and keeps it as a new version
// of the plugin the manifest names; it becomes active (a hot swap) unless
// activate is false. Errors: ErrPluginRejected (the manifest or module is
// refused; the detail says why), ErrQuotaExceeded (a manifest limit over
// the tenant's quota, or too many plugins or versions),
// ErrPayloadTooLarge (the module over max_module_bytes), ErrConflict (the
// version is kept with another module or another manifest: a version is
// immutable, push a new one), ErrForbidden.
func (t *Tenant) PushPlugin(ctx context.Context, manifest json.RawMessage, module []byte, activate bool) (TenantPlugin, error) {
	body, err := jsonBody(map[string]any{"manifest": manifest, "module": module, "activate": activate})
	if err != nil {
		return TenantPlugin{}, err
	}
	var tp TenantPlugin
	// Safe to send again: the same module and manifest are the same
	// version.
	err = t.c.do(ctx, request{method: "POST", path: t.path("/plugins"), body: body, safe: true, slow: true}, &tp)
	return tp, err
}

// Plugins lists the tenant's plugins; on a cluster, with the state
// (loaded, quarantined) of the node that answers (see PluginsAllNodes).
func (t *Tenant) Plugins(ctx context.Context) ([]PluginSummary, error) {
	var out struct {
		Plugins []PluginSummary `json:"plugins"`
	}
	err := t.c.do(ctx, request{method: "GET", path: t.path("/plugins"), safe: true}, &out)
	return out.Plugins, err
}

// PluginClusterSummary is one plugin in a tenant's list across a
// cluster: Loaded when every answered node runs it, Quarantined when any
// holds it in quarantine.
type PluginClusterSummary struct {
	PluginSummary
	QuarantinedOn []string `json:"quarantined_on"` // the answered nodes holding it in quarantine
	NotLoadedOn   []string `json:"not_loaded_on"`  // the answered nodes not running it
}

// PluginListNode is a node asked for its list of plugins; Error says why
// its list is missing.
type PluginListNode struct {
	Node  string `json:"node"`
	Error string `json:"error,omitempty"`
}

// PluginClusterList is a tenant's plugins across a cluster.
type PluginClusterList struct {
	Plugins []PluginClusterSummary `json:"plugins"`
	// Nodes are the nodes asked, the asked one first.
	Nodes      []PluginListNode `json:"nodes"`
	Answered   int              `json:"answered"`
	Unanswered int              `json:"unanswered"`
}

// PluginsAllNodes lists the tenant's plugins with every cluster node's
// state of each (the node asked gathers the others' lists with this
// client's credential; a single server answers its own). A node that
// cannot be reached is named with an Error; the call still succeeds.
// ErrBusy as for PluginStatusAllNodes.
func (t *Tenant) PluginsAllNodes(ctx context.Context) (PluginClusterList, error) {
	var out PluginClusterList
	err := t.c.do(ctx, request{method: "GET", path: t.path("/plugins"), query: url.Values{"nodes": {"all"}}, safe: true}, &out)
	return out, err
}

// PluginStatus returns a plugin's versions, faults, quarantine, counters
// and recent log lines. ErrNotFound for an unknown plugin.
func (t *Tenant) PluginStatus(ctx context.Context, name string) (PluginStatus, error) {
	var st PluginStatus
	err := t.c.do(ctx, request{method: "GET", path: t.path("/plugins/" + seg(name)), safe: true}, &st)
	return st, err
}

// PluginNodeStatus is one cluster node's part of a plugin's status.
type PluginNodeStatus struct {
	Node string `json:"node"`
	// Error says why the node's part is missing (the node could not be
	// asked, did not answer within 5 s, or refused); the other fields are
	// then zero.
	Error       string          `json:"error,omitempty"`
	Active      string          `json:"active,omitempty"` // the version active in the node's control plane
	Loaded      bool            `json:"loaded"`
	LoadError   string          `json:"load_error,omitempty"`
	Digest      string          `json:"digest,omitempty"`
	Quarantined bool            `json:"quarantined"`
	Stats       PluginStats     `json:"stats"`
	Faults      []PluginFault   `json:"faults"`
	Logs        []PluginLogLine `json:"logs"`
}

// PluginClusterStatus is a plugin's status on every node of a cluster.
type PluginClusterStatus struct {
	TenantPlugin
	Limits json.RawMessage `json:"limits"`
	// Stats are the answered nodes' counters, summed.
	Stats PluginStats `json:"stats"`
	// Quarantined: at least one answered node holds the plugin in
	// quarantine (ResetPlugin lifts it on every node). Loaded: every
	// answered node runs it.
	Quarantined bool `json:"quarantined"`
	Loaded      bool `json:"loaded"`
	Answered    int  `json:"answered"`
	Unanswered  int  `json:"unanswered"`
	// Nodes are the parts, the asked node's first.
	Nodes []PluginNodeStatus `json:"nodes"`
}

// PluginStatusAllNodes returns the plugin's status on every node of the
// cluster (the node asked gathers the others' parts with this client's
// credential; a single server answers its own as the one part). A node
// that cannot be reached has an Error in its part; the call still
// succeeds. ErrNotFound for an unknown plugin; ErrBusy while another
// cluster-wide call of this tenant (status or list, any of its keys) is
// being gathered on that node, or the node is gathering as many as it
// does at once (8).
func (t *Tenant) PluginStatusAllNodes(ctx context.Context, name string) (PluginClusterStatus, error) {
	var st PluginClusterStatus
	err := t.c.do(ctx, request{method: "GET", path: t.path("/plugins/" + seg(name)), query: url.Values{"nodes": {"all"}}, safe: true}, &st)
	return st, err
}

// SwapPlugin makes a kept version of the plugin active (admin role), hot.
// ErrNotFound for an unknown plugin or version.
func (t *Tenant) SwapPlugin(ctx context.Context, name, version string) (TenantPlugin, error) {
	body, _ := jsonBody(map[string]string{"version": version})
	var tp TenantPlugin
	err := t.c.do(ctx, request{method: "POST", path: t.path("/plugins/" + seg(name) + "/swap"), body: body, safe: true, slow: true}, &tp)
	return tp, err
}

// ResetPlugin lifts the plugin's quarantine (admin role).
func (t *Tenant) ResetPlugin(ctx context.Context, name string) (PluginStatus, error) {
	var st PluginStatus
	err := t.c.do(ctx, request{method: "POST", path: t.path("/plugins/" + seg(name) + "/reset"), safe: true}, &st)
	return st, err
}

// DeletePlugin deletes the plugin (version ""), or one version that is
// not the active one (admin role). The plugin is not deleted while a
// hosted worker running or quarantined runs it: ErrConflict naming the
// workers (stop or delete them, or start them with another plugin,
// first).
func (t *Tenant) DeletePlugin(ctx context.Context, name, version string) error {
	var q url.Values
	if version != "" {
		q = url.Values{"version": {version}}
	}
	return t.c.do(ctx, request{method: "DELETE", path: t.path("/plugins/" + seg(name)), query: q, safe: true}, nil)
}

// Projection is an entity's state as a projection plugin folds it.
type Projection struct {
	Entity     string `json:"entity"`
	Plugin     string `json:"plugin"`
	Version    string `json:"version"`
	Digest     string `json:"digest"`
	Generation uint64 `json:"generation"`
	Found      bool   `json:"found"`
	// State is the plugin's state when it is JSON; else a JSON string of
	// its bytes, base64 (StateEncoding "base64").
	State         json.RawMessage `json:"state"`
	StateEncoding string          `json:"state_encoding"`
	// ETag is the answer's entity tag: give it as etag to the next call.
	ETag string `json:"-"`
}

// Project returns the entity's state as the tenant's projection plugin
// folds it. With etag (an earlier answer's ETag) it returns
// notModified true and no state when the state is still that one.
// Errors: ErrNotFound (no such plugin), ErrPluginFault,
// ErrPluginQuarantined.
func (t *Tenant) Project(ctx context.Context, plugin, entity, etag string) (p Projection, notModified bool, err error) {
	var h http.Header
	if etag != "" {
		h = http.Header{"If-None-Match": {etag}}
	}
	resp, err := t.c.send(ctx, request{method: "GET", path: t.path("/projections/" + seg(plugin) + "/" + seg(entity)), header: h, safe: true})
	if err != nil {
		return Projection{}, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified {
		_, _ = io.Copy(io.Discard, resp.Body)
		return Projection{ETag: resp.Header.Get("ETag")}, true, nil
	}
	if err := t.c.decodeBounded(resp.Body, "GET projection", &p); err != nil {
		return Projection{}, false, err
	}
	p.ETag = resp.Header.Get("ETag")
	return p, false, nil
}

// Fault is a PLUGIN_FAULT's kind of fault ("trap", "timeout", "memory",
// …, "not-loaded"); "" for other errors.
func (e *Error) Fault() string { return e.str("fault") }
