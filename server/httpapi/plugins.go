package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/tenantplugin"
	"github.com/batpak-go/batpak/server/wire"
)

// pluginsOn is the 404 of a server that keeps no tenant plugins.
func (a *API) pluginsOn() error {
	if a.opts.Plugins == nil {
		return errNotFound("this server keeps no tenant plugins")
	}
	return nil
}

// pluginUpload is the body of POST …/plugins.
type pluginUpload struct {
	// Manifest is the plugin manifest (plugins.Manifest), its "sha256"
	// the module's.
	Manifest json.RawMessage `json:"manifest"`
	// Module is the WebAssembly module, base64 (standard, padded).
	Module []byte `json:"module"`
	// Activate makes the version active at once (default true; a new
	// plugin is always active).
	Activate *bool `json:"activate,omitempty"`
}

// pushPlugin takes a plugin (manifest and module), checks and compiles it
// and keeps it as a new version of the tenant's plugin.
func (a *API) pushPlugin(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	var body pluginUpload
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if len(body.Manifest) == 0 || string(body.Manifest) == "null" {
		return errInvalid("manifest", "manifest is required: the plugin manifest as a JSON object")
	}
	if len(body.Module) == 0 {
		return errInvalid("module", "module is required: the WebAssembly module, base64")
	}
	if ex := a.quotaOf(c).AllowUpload(len(body.Module) + len(body.Manifest)); ex != nil {
		return ex
	}
	activate := body.Activate == nil || *body.Activate
	tp, err := a.opts.Plugins.Push(c.writeCtx(), c.tenant, body.Manifest, body.Module, activate)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, tp)
}

// listPlugins answers the tenant's plugins.
func (a *API) listPlugins(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	all, err := allNodes(c)
	if err != nil {
		return err
	}
	own := a.opts.Plugins.List(c.tenant)
	if !all {
		body := map[string]any{"plugins": own}
		if n := a.opts.Plugins.Node(); n != "" {
			body["node"] = n
		}
		return writeJSON(c.w, http.StatusOK, body)
	}
	var others []tenantplugin.NodeList
	if a.opts.Cluster != nil {
		answers, g, err := a.askMembers(c, "/v1/tenants/"+url.PathEscape(c.tenant)+"/plugins")
		if err != nil {
			return err
		}
		defer g.release()
		for _, ans := range answers {
			others = append(others, nodeList(ans))
		}
		return writeJSONHolding(c.w, http.StatusOK, tenantplugin.GatherList(a.opts.Plugins.Node(), own, others), g.Held())
	}
	return writeJSON(c.w, http.StatusOK, tenantplugin.GatherList(a.opts.Plugins.Node(), own, others))
}

// allNodes reads ?nodes: "all" asks for every cluster node's part, absent
// for this node's.
func allNodes(c *call) (bool, error) {
	switch v := c.r.URL.Query().Get("nodes"); v {
	case "":
		return false, nil
	case "all":
		return true, nil
	default:
		return false, errInvalid("nodes", "nodes must be \"all\" (every cluster node's part) or absent (this node's), got "+strconv.Quote(clip(v)))
	}
}

// nodeList is a member's list of the tenant's plugins, from its answer to
// GET …/plugins.
func nodeList(ans memberAnswer) tenantplugin.NodeList {
	if ans.err != "" {
		return tenantplugin.NodeList{Node: ans.id, Error: ans.err}
	}
	var l struct {
		Node    string                 `json:"node"`
		Plugins []tenantplugin.Summary `json:"plugins"`
	}
	if err := json.Unmarshal(ans.body, &l); err != nil {
		return tenantplugin.NodeList{Node: ans.id, Error: "its answer is not a list of plugins: " + printable.Clip(err.Error(), 300)}
	}
	if why := otherNode(ans.id, l.Node); why != "" {
		return tenantplugin.NodeList{Node: ans.id, Error: why}
	}
	return tenantplugin.NodeList{Node: ans.id, Plugins: l.Plugins}
}

// otherNode says why a member's answer naming node is not member id's
// own: "" when it is, or names none (a version before answers did).
func otherNode(id, node string) string {
	if node == "" || node == id {
		return ""
	}
	// Two members on record with one URL, or a proxy in between.
	return "the API URL on record for it answered as node " + strconv.Quote(printable.Clip(node, 200))
}

// pluginStatus answers one plugin's versions, faults, stats and logs.
func (a *API) pluginStatus(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	all, err := allNodes(c)
	if err != nil {
		return err
	}
	name := c.r.PathValue("name")
	st, err := a.opts.Plugins.Status(c.tenant, name)
	if err != nil || !all {
		if err != nil {
			return err
		}
		return writeJSON(c.w, http.StatusOK, st)
	}
	var others []tenantplugin.NodeStatus
	if a.opts.Cluster != nil {
		answers, g, err := a.askMembers(c, "/v1/tenants/"+url.PathEscape(c.tenant)+"/plugins/"+url.PathEscape(name))
		if err != nil {
			return err
		}
		defer g.release()
		for _, ans := range answers {
			others = append(others, nodePart(ans))
		}
		return writeJSONHolding(c.w, http.StatusOK, tenantplugin.Gather(st, others), g.Held())
	}
	return writeJSON(c.w, http.StatusOK, tenantplugin.Gather(st, others))
}

// nodePart is a member's part of a plugin's cluster-wide status, from
// its answer to GET …/plugins/{name}.
func nodePart(ans memberAnswer) tenantplugin.NodeStatus {
	if ans.err != "" {
		return tenantplugin.NodeStatus{Node: ans.id, Error: ans.err}
	}
	var st tenantplugin.Status
	if err := json.Unmarshal(ans.body, &st); err != nil {
		return tenantplugin.NodeStatus{Node: ans.id, Error: "its answer is not a plugin's status: " + printable.Clip(err.Error(), 300)}
	}
	if why := otherNode(ans.id, st.Node); why != "" {
		return tenantplugin.NodeStatus{Node: ans.id, Error: why}
	}
	st.Node = ans.id
	return st.Part()
}

// swapPlugin makes a kept version active.
func (a *API) swapPlugin(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	var body struct {
		Version string `json:"version"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if err := control.ValidPluginVersion(body.Version); err != nil {
		return errInvalid("version", "version must be a kept version of the plugin (GET …/plugins/{name} lists them)")
	}
	tp, err := a.opts.Plugins.Swap(c.writeCtx(), c.tenant, c.r.PathValue("name"), body.Version)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, tp)
}

// resetPlugin lifts a quarantine.
func (a *API) resetPlugin(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	st, err := a.opts.Plugins.Reset(c.writeCtx(), c.tenant, c.r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, st)
}

// deletePlugin forgets a plugin, or one inactive version (?version=).
func (a *API) deletePlugin(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	v := c.r.URL.Query().Get("version")
	if v != "" {
		if err := control.ValidPluginVersion(v); err != nil {
			return errInvalid("version", "version must be a kept version of the plugin")
		}
	}
	if err := a.opts.Plugins.Delete(c.writeCtx(), c.tenant, c.r.PathValue("name"), v); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// projectionResponse is the answer of GET …/projections/{plugin}/{entity}.
type projectionResponse struct {
	Entity     string `json:"entity"`
	Plugin     string `json:"plugin"`
	Version    string `json:"version"`
	Digest     string `json:"digest"`
	Generation uint64 `json:"generation"`
	Found      bool   `json:"found"`
	// State is the plugin's state: itself when it is JSON, else a base64
	// string (StateEncoding says which; null with no events).
	State         json.RawMessage `json:"state"`
	StateEncoding string          `json:"state_encoding"`
}

// projection folds an entity's events through a projection plugin and
// answers the state, with an ETag (If-None-Match → 304).
func (a *API) projection(c *call) error {
	if err := a.pluginsOn(); err != nil {
		return err
	}
	name, entity := c.r.PathValue("plugin"), c.r.PathValue("entity")
	if err := control.ValidPluginName(name); err != nil {
		return errInvalid("plugin", "plugin must be a plugin name: 1..64 of a-z 0-9 . _ -")
	}
	if entity == "" {
		return errInvalid("entity", "entity is required")
	}
	// The plugin is looked up before the store is opened, so an unknown
	// plugin costs no store lease.
	if _, _, err := a.opts.Plugins.Plugin(c.r.Context(), c.tenant, name); err != nil {
		return err
	}
	st, err := c.store()
	if err != nil {
		return err
	}
	p, err := a.opts.Plugins.Project(c.r.Context(), st, c.tenant, name, entity)
	if err != nil {
		return err
	}
	h := c.w.Header()
	h.Set("Cache-Control", "private, no-cache")
	if p.Consistent {
		tag := tenantplugin.ETag(p)
		h.Set("ETag", tag)
		if inm := c.r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, tag) {
			c.w.WriteHeader(http.StatusNotModified)
			return nil
		}
	}
	out := projectionResponse{Entity: entity, Plugin: name, Version: p.Version, Digest: p.Digest, Generation: p.Generation, Found: p.Found,
		State: json.RawMessage("null"), StateEncoding: "json"}
	switch {
	case p.State == nil:
	case json.Valid(p.State):
		out.State = p.State
	default:
		b, _ := json.Marshal(p.State) // []byte: a base64 string
		out.State, out.StateEncoding = b, "base64"
	}
	return writeJSON(c.w, http.StatusOK, out)
}

// etagMatch reports whether an If-None-Match header names tag ("*"
// matches any; weak tags compare by their opaque part).
func etagMatch(header, tag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == tag {
			return true
		}
	}
	return false
}

// pluginProblem maps the plugin manager's refusals.
func pluginProblem(err error) *apiError {
	var (
		rj *tenantplugin.RejectedError
		le *tenantplugin.LimitError
		nl *tenantplugin.NotLoadedError
		pf *plugins.PluginFault
		re *tenantplugin.RoomError
	)
	switch {
	case errors.As(err, &re) && !errors.As(err, &nl):
		// The server's memory for its tenants' plugins: a load refused
		// for want of room (at an upload or a swap).
		lim := float64(re.Limit)
		name := "?"
		if errors.As(err, &rj) {
			name = rj.Plugin
		}
		return &apiError{status: http.StatusInsufficientStorage, code: wire.CodeQuotaExceeded,
			detail: printable.String("plugin " + name + " refused: " + re.Error()), p: wire.Problem{Quota: re.Setting, Limit: &lim, Plugin: name}}
	case errors.Is(err, tenantplugin.ErrBusy):
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "no projection slot within a second: the tenant runs " + itoa(tenantplugin.TenantCalls) + " projection reads at once, and a fold waits for one of the server's plugin call slots (server.plugin_calls_running); retry"}
	case errors.Is(err, plugins.ErrUnloaded):
		return &apiError{status: http.StatusNotFound, code: wire.CodeNotFound,
			detail: printable.String(strings.TrimPrefix(err.Error(), "batpak: ") + " (deleted while the request ran)")}
	case errors.As(err, &le):
		lim := float64(le.Limit)
		status := http.StatusUnprocessableEntity
		if le.Quota == "max_module_bytes" {
			status = http.StatusRequestEntityTooLarge
		}
		return &apiError{status: status, code: wire.CodeQuotaExceeded, detail: le.Error(), p: wire.Problem{Quota: le.Quota, Limit: &lim}}
	case errors.As(err, &rj):
		return &apiError{status: http.StatusUnprocessableEntity, code: wire.CodePluginRejected, detail: rj.Error(), p: wire.Problem{Plugin: rj.Plugin, Errors: []string{printable.String(rj.Reason)}}}
	case errors.As(err, &pf):
		code := wire.CodePluginFault
		if pf.Kind == plugins.FaultQuarantined {
			code = wire.CodePluginQuarantined
		}
		return &apiError{status: http.StatusFailedDependency, code: code, detail: printable.String(strings.TrimPrefix(pf.Error(), "batpak: ")), p: wire.Problem{Plugin: pf.Plugin, Fault: string(pf.Kind)}}
	case errors.Is(err, control.ErrLimit):
		return &apiError{status: http.StatusTooManyRequests, code: wire.CodeQuotaExceeded, detail: strings.TrimPrefix(err.Error(), "control: limit reached: ")}
	case errors.As(err, &nl) && errors.Is(err, tenantplugin.ErrLoading):
		return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "plugin " + nl.Plugin + " is loading (the server loads its tenants' plugins after it starts); retry shortly"}
	case errors.As(err, &nl):
		return &apiError{status: http.StatusFailedDependency, code: wire.CodePluginFault, detail: nl.Error(), p: wire.Problem{Plugin: nl.Plugin, Fault: "not-loaded"}}
	}
	return nil
}
