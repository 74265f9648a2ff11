package client

import (
	"context"
	"encoding/json"
	"net/url"
)

// Admin is the operator's API (/v1/admin); the client's credential must be
// the operator credential.
type Admin struct{ c *Client }

// Admin returns the operator API handle.
func (c *Client) Admin() *Admin { return &Admin{c: c} }

func (a *Admin) tenant(id, p string) string { return "/v1/admin/tenants/" + seg(id) + p }

// CreateTenant creates tenant id with optional quota overrides and
// settings (nil: the server's defaults).
func (a *Admin) CreateTenant(ctx context.Context, id string, q *Quotas, s *Settings) (TenantInfo, error) {
	body, err := jsonBody(map[string]any{"id": id, "quotas": q, "settings": s})
	if err != nil {
		return TenantInfo{}, err
	}
	var t TenantInfo
	err = a.c.do(ctx, request{method: "POST", path: "/v1/admin/tenants", body: body}, &t)
	return t, err
}

// Tenants lists every tenant.
func (a *Admin) Tenants(ctx context.Context) ([]TenantInfo, error) {
	var out struct {
		Tenants []TenantInfo `json:"tenants"`
	}
	err := a.c.do(ctx, request{method: "GET", path: "/v1/admin/tenants", safe: true}, &out)
	return out.Tenants, err
}

// Tenant returns one tenant.
func (a *Admin) Tenant(ctx context.Context, id string) (TenantInfo, error) {
	var t TenantInfo
	err := a.c.do(ctx, request{method: "GET", path: a.tenant(id, ""), safe: true}, &t)
	return t, err
}

// Suspend suspends a tenant: every request for its data is refused with
// TENANT_SUSPENDED until Resume.
func (a *Admin) Suspend(ctx context.Context, id, reason string) (TenantInfo, error) {
	body, _ := jsonBody(map[string]string{"reason": reason})
	var t TenantInfo
	err := a.c.do(ctx, request{method: "POST", path: a.tenant(id, "/suspend"), body: body, safe: true}, &t)
	return t, err
}

// Resume makes a suspended tenant active again.
func (a *Admin) Resume(ctx context.Context, id string) (TenantInfo, error) {
	var t TenantInfo
	err := a.c.do(ctx, request{method: "POST", path: a.tenant(id, "/resume"), safe: true}, &t)
	return t, err
}

// DeleteTenant deletes tenant id and all its data, for ever. The server
// needs the id repeated as confirmation; this call sends it.
func (a *Admin) DeleteTenant(ctx context.Context, id string) error {
	return a.c.do(ctx, request{method: "DELETE", path: a.tenant(id, ""), query: url.Values{"confirm": {id}}, safe: true}, nil)
}

// SetQuotas replaces a tenant's quota overrides.
func (a *Admin) SetQuotas(ctx context.Context, id string, q Quotas) (TenantInfo, error) {
	body, _ := jsonBody(q)
	var t TenantInfo
	err := a.c.do(ctx, request{method: "PUT", path: a.tenant(id, "/quotas"), body: body, safe: true}, &t)
	return t, err
}

// SetSettings replaces a tenant's settings.
func (a *Admin) SetSettings(ctx context.Context, id string, s Settings) (TenantInfo, error) {
	body, _ := jsonBody(s)
	var t TenantInfo
	err := a.c.do(ctx, request{method: "PUT", path: a.tenant(id, "/settings"), body: body, safe: true}, &t)
	return t, err
}

// IssueKey issues an API key for tenant id with the given roles ("reader",
// "writer", "admin"). The secret (IssuedKey.Key) is shown this once.
func (a *Admin) IssueKey(ctx context.Context, id, name string, roles ...string) (IssuedKey, error) {
	body, _ := jsonBody(map[string]any{"name": name, "roles": roles})
	var k IssuedKey
	err := a.c.do(ctx, request{method: "POST", path: a.tenant(id, "/keys"), body: body}, &k)
	return k, err
}

// Keys lists tenant id's live keys.
func (a *Admin) Keys(ctx context.Context, id string) ([]Key, error) {
	var out struct {
		Keys []Key `json:"keys"`
	}
	err := a.c.do(ctx, request{method: "GET", path: a.tenant(id, "/keys"), safe: true}, &out)
	return out.Keys, err
}

// RevokeKey revokes one of tenant id's keys; it stops working at once.
func (a *Admin) RevokeKey(ctx context.Context, id, keyID string) error {
	return a.c.do(ctx, request{method: "DELETE", path: a.tenant(id, "/keys/"+seg(keyID)), safe: true}, nil)
}

// Snapshot writes a consistent copy of tenant id's store into the server's
// backup directory and returns the server's report (with the backup name).
func (a *Admin) Snapshot(ctx context.Context, id string) (map[string]json.RawMessage, error) {
	var rep map[string]json.RawMessage
	err := a.c.do(ctx, request{method: "POST", path: a.tenant(id, "/snapshot"), slow: true}, &rep)
	return rep, err
}
