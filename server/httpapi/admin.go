package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/wire"
)

// adminTenant is the {tenant} of an admin route, which must exist.
func (a *API) adminTenant(c *call) (control.Tenant, error) {
	id := c.r.PathValue("tenant")
	t, ok := a.opts.Plane.Tenant(id)
	if !ok {
		return t, errNotFound("no such tenant")
	}
	c.tenant = id
	return t, nil
}

// keyTenant is the tenant a key route manages: the caller's own (tenant
// admin) or the path's (operator).
func (a *API) keyTenant(c *call) (string, error) {
	if c.route.Access == Tenant {
		return c.tenant, nil
	}
	t, err := a.adminTenant(c)
	return t.ID, err
}

func (a *API) issueKey(c *call) error {
	tenant, err := a.keyTenant(c)
	if err != nil {
		return err
	}
	var body struct {
		Roles []control.Role `json:"roles"`
		Name  string         `json:"name"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if len(body.Roles) == 0 {
		return errInvalid("roles", "roles is required: one or more of reader, writer, admin, plus any application roles for the policy")
	}
	if err := control.ValidRoles(body.Roles); err != nil {
		return errInvalid("roles", strings.TrimPrefix(err.Error(), control.ErrInvalid.Error()+": roles: "))
	}
	if len(body.Name) > control.MaxNameBytes {
		return errInvalid("name", fmt.Sprintf("%d bytes, at most %d", len(body.Name), control.MaxNameBytes))
	}
	token, id, hash, err := auth.NewKey()
	if err != nil {
		return err
	}
	k, err := a.opts.Plane.IssueKey(c.r.Context(), control.Key{ID: id, Tenant: tenant, Roles: body.Roles, Name: body.Name, Created: time.Now().UTC(), Hash: hash})
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusCreated, map[string]any{"id": k.ID, "key": token, "roles": k.Roles, "name": k.Name, "tenant": k.Tenant, "created": k.Created})
}

func (a *API) listKeys(c *call) error {
	tenant, err := a.keyTenant(c)
	if err != nil {
		return err
	}
	keys := a.opts.Plane.Keys(tenant)
	if keys == nil {
		keys = []control.Key{}
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"keys": keys})
}

// revokeKey revokes a key of the tenant. The key is refused on this node
// from the moment the revocation is recorded (its streams end), and on a
// cluster the answer waits until the other members refuse it too
// (confirmAccessChange: at most ConfirmWait, naming those that did not
// confirm).
func (a *API) revokeKey(c *call) error {
	tenant, err := a.keyTenant(c)
	if err != nil {
		return err
	}
	id := c.r.PathValue("id")
	if k, ok := a.opts.Plane.Key(id); !ok || k.Tenant != tenant {
		return errNotFound("no such key")
	}
	if err := a.opts.Plane.RevokeKey(c.r.Context(), tenant, id); err != nil {
		return err
	}
	a.accessChanged()
	a.confirmAccessChange(c, "key "+id+" revoked")
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) createTenant(c *call) error {
	var body struct {
		ID       string            `json:"id"`
		Quotas   *control.Quotas   `json:"quotas"`
		Settings *control.Settings `json:"settings"`
	}
	if err := a.decode(c, &body, false); err != nil {
		return err
	}
	if err := control.ValidTenantID(body.ID); err != nil {
		return errInvalid("id", "tenant id must match ^[a-z0-9][a-z0-9-]{0,62}$")
	}
	var q control.Quotas
	var s control.Settings
	if body.Quotas != nil {
		q = *body.Quotas
	}
	if body.Settings != nil {
		s = *body.Settings
		if err := checkSettings(s); err != nil {
			return err
		}
	}
	c.tenant = body.ID
	c.info.tenant = body.ID
	a.tenantMu.Lock()
	defer a.tenantMu.Unlock()
	if _, ok := a.opts.Plane.Tenant(body.ID); !ok {
		// Data a deleted tenant of this id left behind (its removal
		// failed, or the server stopped before it) must never reach the
		// new tenant: remove it first.
		if err := a.opts.Tenants.Remove(c.r.Context(), body.ID); err != nil {
			return err
		}
	}
	t, err := a.opts.Plane.CreateTenant(c.r.Context(), body.ID, q, s)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusCreated, t)
}

func checkSettings(s control.Settings) error {
	if !(s.DecisionAllowSample >= 0 && s.DecisionAllowSample <= 1) {
		return errInvalid("decision_allow_sample", "decision_allow_sample must be 0 to 1 (the share of allowed writes recorded in the policy decision log)")
	}
	switch s.Sync {
	case "", "durable", "buffered":
		return nil
	}
	return errInvalid("sync", "sync must be durable or buffered, got "+strconv.Quote(clip(s.Sync)))
}

func (a *API) listTenants(c *call) error {
	ts := a.opts.Plane.Tenants()
	if ts == nil {
		ts = []control.Tenant{}
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"tenants": ts})
}

// tenantView is a tenant with its effective quotas and, when its store
// could be opened, usage. On a server hosting plugins, the effective
// plugin limits are those its plugins run under (lowered to the
// server.plugins.* ceilings), and capped_by names, by quota, the setting
// whose ceiling one is.
func (a *API) tenantView(c *call, t control.Tenant) map[string]any {
	eff := a.opts.Plane.Effective(t.ID)
	var capped map[string]string
	if a.opts.Plugins != nil {
		eff, capped = a.opts.Plugins.Effective(t.ID, eff)
	}
	v := map[string]any{"id": t.ID, "state": t.State, "created": t.Created, "quotas": t.Quotas,
		"settings": t.Settings, "effective_quotas": eff}
	if len(capped) > 0 {
		v["capped_by"] = capped
	}
	if t.SuspendReason != "" {
		v["suspend_reason"] = t.SuspendReason
	}
	if c.r.Method == http.MethodGet {
		if s, err := c.store(); err == nil {
			st := s.Stats()
			v["usage"] = map[string]any{"storage_bytes": st.Bytes, "index_bytes": s.Usage().IndexBytes, "events": st.Events, "entities": st.Entities,
				"cursors": len(a.opts.Plane.Cursors(t.ID)), "keys": len(a.opts.Plane.Keys(t.ID))}
			a.pluginUsage(t.ID, v["usage"].(map[string]any))
		}
	}
	return v
}

// pluginUsage adds to usage what the tenant's loaded plugins hold in the
// server's memory (tenantplugin.Resident), on a server hosting plugins.
func (a *API) pluginUsage(tenant string, usage map[string]any) {
	if a.opts.Plugins == nil {
		return
	}
	mine, _ := a.opts.Plugins.Resident(tenant)
	usage["plugin_code_bytes"], usage["plugin_idle_bytes"] = mine.CodeBytes, mine.IdleBytes
}

func (a *API) getTenant(c *call) error {
	t, err := a.adminTenant(c)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.tenantView(c, t))
}

// suspendTenant suspends the tenant: its credentials are refused (403
// TENANT_SUSPENDED), its streams end and its workers stop; on a cluster
// the answer waits until the other members refuse them too, as for a
// revocation (confirmAccessChange).
func (a *API) suspendTenant(c *call) error {
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := a.decode(c, &body, true); err != nil {
		return err
	}
	t, err := a.opts.Plane.SuspendTenant(c.r.Context(), c.tenant, body.Reason)
	if err != nil {
		return err
	}
	a.accessChanged()
	a.workersChanged(c.tenant)
	a.confirmAccessChange(c, "tenant suspended")
	return writeJSON(c.w, http.StatusOK, a.tenantView(c, t))
}

func (a *API) resumeTenant(c *call) error {
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	t, err := a.opts.Plane.ResumeTenant(c.r.Context(), c.tenant)
	if err != nil {
		return err
	}
	a.workersChanged(c.tenant)
	return writeJSON(c.w, http.StatusOK, a.tenantView(c, t))
}

// deleteTenant records the tenant's deletion, then removes its data. A
// deletion whose removal did not finish (a cluster's leadership moved
// between the record and the store's drop, the server stopped) is
// finished by the DELETE repeated: the tenant is gone (404), and what it
// left behind is removed first. On a cluster the answer waits until the
// other members have applied the deletion too, as for a revocation
// (confirmAccessChange).
func (a *API) deleteTenant(c *call) error {
	id := c.r.PathValue("tenant")
	confirmed := c.r.URL.Query().Get("confirm") == id
	t, err := a.adminTenant(c)
	if err != nil {
		if confirmed && control.ValidTenantID(id) == nil {
			a.tenantMu.Lock()
			defer a.tenantMu.Unlock()
			if _, ok := a.opts.Plane.Tenant(id); !ok {
				if rerr := a.removeTenantData(c.r.Context(), id); rerr != nil {
					return rerr
				}
			}
		}
		return err
	}
	if !confirmed {
		return errInvalid("confirm", "deleting a tenant removes its data: repeat its id as ?confirm=<tenant id>")
	}
	if err := a.deleteTenantLocked(c, t.ID); err != nil {
		return err
	}
	// Outside the lock: tenant creation and deletion do not wait on a
	// cluster member that is slow to confirm.
	a.confirmAccessChange(c, "tenant deleted")
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// deleteTenantLocked records tenant id's deletion and removes its data,
// under the lock tenant creation and deletion take.
func (a *API) deleteTenantLocked(c *call, id string) error {
	a.tenantMu.Lock()
	defer a.tenantMu.Unlock()
	if err := a.opts.Plane.DeleteTenant(c.r.Context(), id); err != nil {
		return err
	}
	// The deletion is on record: its data goes even if the client hangs
	// up now.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.r.Context()), removeTimeout)
	defer cancel()
	return a.removeTenantData(ctx, id)
}

// removeTimeout bounds the removal of a deleted tenant's data once its
// deletion is on record (its streams and workers end first).
const removeTimeout = 30 * time.Second

// RemoveDeletedTenants finishes deletions that were cut short: of the
// tenants named in ids (those a node holds data of), it removes the data
// of each one the control plane no longer holds, as a tenant DELETE does,
// and returns their ids. It holds the lock tenant creation and deletion
// take, so a tenant created meanwhile is never touched. A cluster's
// leader calls it when it begins to lead and then periodically: a
// deletion whose store drop a change of leader interrupted is finished
// without the DELETE repeated. A failure does not stop the others; the
// errors are joined.
func (a *API) RemoveDeletedTenants(ctx context.Context, ids []string) ([]string, error) {
	a.tenantMu.Lock()
	defer a.tenantMu.Unlock()
	if err := a.opts.Plane.Err(); err != nil {
		return nil, err // a plane that stopped applying changes may lack a tenant's creation
	}
	var removed []string
	var errs []error
	for _, id := range ids {
		if control.ValidTenantID(id) != nil {
			continue
		}
		if _, ok := a.opts.Plane.Tenant(id); ok {
			continue
		}
		if err := a.removeTenantData(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("removing the data of deleted tenant %s: %w", id, err))
			continue
		}
		removed = append(removed, id)
	}
	return removed, errors.Join(errs...)
}

// removeTenantData removes what a tenant the control plane no longer
// holds has: its open streams and workers end, then its store, quota
// limiter, policy and plugins go. Each step is a no-op for what is not
// there. The caller holds tenantMu.
func (a *API) removeTenantData(ctx context.Context, id string) error {
	a.accessChanged()
	a.workersChanged(id) // their leases end before the store is removed
	if err := a.opts.Tenants.Remove(ctx, id); err != nil {
		return err
	}
	a.opts.Quotas.Forget(id)
	if a.opts.Policies != nil {
		if err := a.opts.Policies.Remove(id); err != nil {
			return err
		}
	}
	if a.opts.Plugins != nil {
		if err := a.opts.Plugins.Remove(id); err != nil {
			return err
		}
	}
	return nil
}

func (a *API) setQuotas(c *call) error {
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	var q control.Quotas
	if err := a.decode(c, &q, false); err != nil {
		return err
	}
	t, err := a.opts.Plane.SetQuotas(c.r.Context(), c.tenant, q)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.tenantView(c, t))
}

func (a *API) setSettings(c *call) error {
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	var s control.Settings
	if err := a.decode(c, &s, false); err != nil {
		return err
	}
	if err := checkSettings(s); err != nil {
		return err
	}
	t, err := a.opts.Plane.SetSettings(c.r.Context(), c.tenant, s)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.tenantView(c, t))
}

// snapshot copies the tenant's store to <BackupDir>/<tenant>/<UTC time>.
func (a *API) snapshot(c *call) error {
	if _, err := a.adminTenant(c); err != nil {
		return err
	}
	if a.opts.BackupDir == "" {
		return &apiError{status: 400, code: "INVALID_REQUEST", detail: "this server has no backup directory"}
	}
	s, err := c.store()
	if err != nil {
		return err
	}
	ts := time.Now().UTC().Format("20060102T150405.000000000Z")
	parent := filepath.Join(a.opts.BackupDir, c.tenant)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	rep, err := s.Snapshot(c.r.Context(), filepath.Join(parent, ts))
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, map[string]any{"backup": c.tenant + "/" + ts, "segments": rep.Segments,
		"bytes": rep.Bytes, "global_sequence": rep.GlobalSequence, "elapsed_ms": rep.Elapsed.Milliseconds()})
}

func (a *API) healthz(c *call) error {
	return writeJSON(c.w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(c *call) error {
	if !a.ready.Load() {
		return &apiError{status: 503, code: wire.CodeBusy, detail: "the server is shutting down", retryAfter: time.Second}
	}
	if err := a.opts.Plane.Err(); err != nil {
		return &apiError{status: 503, code: wire.CodeBusy, detail: "the control plane stopped applying changes: " + err.Error(), retryAfter: 5 * time.Second}
	}
	ready := map[string]any{"status": "ready", "open_tenants": a.opts.Tenants.OpenCount()}
	if cl := a.opts.Cluster; cl != nil {
		// A cluster node that knows no leader (an election, or cut off
		// from the majority) serves no tenant request: a balancer should
		// send them elsewhere. One that knows the leader serves them or
		// sends them there (current says which).
		_, leader := cl.Leader()
		lead := cl.IsLeader()
		if !lead && cl.Removed() {
			return errRemoved()
		}
		if !lead && leader == "" {
			return &apiError{status: 503, code: wire.CodeNotLeader, retryAfter: time.Second,
				detail: "this cluster node knows no leader (an election, or it is cut off from the majority): it takes no writes, and serves reads only until too long has passed since it last held everything a leader had committed"}
		}
		ready["cluster"] = map[string]any{"leading": lead, "current": cl.Current()}
	}
	return writeJSON(c.w, http.StatusOK, ready)
}
