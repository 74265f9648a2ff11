package control

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// PolicyRevision is one accepted policy bundle of a tenant.
type PolicyRevision struct {
	// Revision is the hex SHA-256 of the bundle as uploaded (the tar.gz
	// bytes): its content address, and the revision every decision of
	// the bundle carries.
	Revision string           `json:"revision"`
	Bytes    int64            `json:"bytes"`    // the bundle's size as uploaded
	Uploaded time.Time        `json:"uploaded"` // when it was first accepted
	By       policy.Principal `json:"by"`       // who uploaded it
}

// TenantPolicy is a tenant's policy bundles: every accepted revision
// (oldest first, each once) and the active one ("" when none is).
type TenantPolicy struct {
	Active string `json:"active"`
	// Activated and ActivatedBy say when and by whom Active was made
	// active (nil when none is).
	Activated   *time.Time        `json:"activated,omitempty"`
	ActivatedBy *policy.Principal `json:"activated_by,omitempty"`
	Revisions   []PolicyRevision  `json:"revisions"`
}

type policyRecord struct {
	Revision string `json:"revision"`
	Bytes    int64  `json:"bytes,omitempty"`
}

// PolicyEntity is the system-store entity whose History records a
// tenant's policy uploads and rollbacks.
func PolicyEntity(tenant string) string { return "policy:" + tenant }

// ValidPolicyRevision checks that rev is a revision's form: 64 lower-case
// hex digits (a SHA-256).
func ValidPolicyRevision(rev string) error {
	if len(rev) != 64 {
		return fmt.Errorf("%w: revision %q: want 64 hex digits (a SHA-256)", ErrInvalid, rev)
	}
	if b, err := hex.DecodeString(rev); err != nil || hex.EncodeToString(b) != rev {
		return fmt.Errorf("%w: revision %q: want 64 lower-case hex digits (a SHA-256)", ErrInvalid, rev)
	}
	return nil
}

// ActivatePolicy records that the tenant's bundle of revision rev (bytes
// long) was accepted and is now its active policy. The caller has
// stored, compiled and tested the bundle first. Activating the active
// revision records nothing; an earlier revision uploaded again becomes
// active (it keeps its first upload's record). ErrNotFound if there is no
// such tenant; ErrInvalid for a malformed rev.
func (p *Plane) ActivatePolicy(ctx context.Context, tenant, rev string, bytes int64) (TenantPolicy, error) {
	return p.changePolicy(ctx, tenant, rev, kindPolicyActivated, bytes, false)
}

// RollbackPolicy makes an earlier revision of the tenant's policy active
// again. ErrNotFound if the tenant has no such revision; rolling back to
// the active revision records nothing.
func (p *Plane) RollbackPolicy(ctx context.Context, tenant, rev string) (TenantPolicy, error) {
	return p.changePolicy(ctx, tenant, rev, kindPolicyRolledBack, 0, true)
}

func (p *Plane) changePolicy(ctx context.Context, tenant, rev string, kind core.Kind, bytes int64, mustExist bool) (TenantPolicy, error) {
	if err := ValidPolicyRevision(rev); err != nil {
		return TenantPolicy{}, err
	}
	p.lockChange()
	defer p.wmu.Unlock()
	if _, ok := p.Tenant(tenant); !ok {
		return TenantPolicy{}, fmt.Errorf("%w: tenant %q", ErrNotFound, tenant)
	}
	cur := p.Policy(tenant)
	if mustExist && !hasRevision(cur, rev) {
		return TenantPolicy{}, fmt.Errorf("%w: policy revision %q of tenant %q", ErrNotFound, rev, tenant)
	}
	if cur.Active == rev {
		return cur, nil
	}
	if _, err := p.record(ctx, kind, PolicyEntity(tenant), body{Tenant: tenant, Policy: &policyRecord{Revision: rev, Bytes: bytes}}); err != nil {
		return TenantPolicy{}, err
	}
	return p.Policy(tenant), nil
}

func hasRevision(tp TenantPolicy, rev string) bool {
	for _, r := range tp.Revisions {
		if r.Revision == rev {
			return true
		}
	}
	return false
}

// Policy returns the tenant's policy revisions and the active one (the
// zero TenantPolicy, with an empty list, when it has none).
func (p *Plane) Policy(tenant string) TenantPolicy {
	p.mu.RLock()
	defer p.mu.RUnlock()
	tp := p.st.policies[tenant]
	if tp == nil {
		return TenantPolicy{Revisions: []PolicyRevision{}}
	}
	out := *tp
	out.Revisions = append([]PolicyRevision{}, tp.Revisions...)
	return out
}

// ActivePolicy returns the revision of the tenant's active policy bundle
// ("" when none is): a map lookup under a read lock, for every write.
func (p *Plane) ActivePolicy(tenant string) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if tp := p.st.policies[tenant]; tp != nil {
		return tp.Active
	}
	return ""
}

// PolicyTenants lists the tenants with an active policy bundle and its
// revision (for loading them at start).
func (p *Plane) PolicyTenants() map[string]string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make(map[string]string, len(p.st.policies))
	for t, tp := range p.st.policies {
		if tp.Active != "" {
			out[t] = tp.Active
		}
	}
	return out
}

// applyPolicy folds a policy change into the state.
func (s *state) applyPolicy(c change) {
	b := c.body
	if _, ok := s.tenants[b.Tenant]; !ok || b.Policy == nil {
		return
	}
	tp := s.policies[b.Tenant]
	if tp == nil {
		tp = &TenantPolicy{}
		s.policies[b.Tenant] = tp
	}
	if c.kind == kindPolicyActivated && !hasRevision(*tp, b.Policy.Revision) {
		tp.Revisions = append(tp.Revisions, PolicyRevision{Revision: b.Policy.Revision, Bytes: b.Policy.Bytes, Uploaded: c.at, By: b.By})
	}
	at, by := c.at, b.By
	tp.Active, tp.Activated, tp.ActivatedBy = b.Policy.Revision, &at, &by
}
