package control

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
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
	// Pruned are the oldest revisions this activation dropped to keep
	// the tenant within its limit of kept revisions: recorded, so that a
	// replay drops the same ones whatever the limit is then.
	Pruned []string `json:"pruned,omitempty"`
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
// active (it keeps its first upload's record). A new revision that would
// make the tenant keep more than keep revisions drops the oldest ones
// but the one it replaces (keep ≤ 0: no limit; 1 is taken as 2, so that
// the replaced revision stays for a rollback); the caller removes their
// bundles (TenantPolicy.Revisions no longer lists them). ErrNotFound if
// there is no such tenant; ErrInvalid for a malformed rev.
func (p *Plane) ActivatePolicy(ctx context.Context, tenant, rev string, bytes int64, keep int) (TenantPolicy, error) {
	return p.changePolicy(ctx, tenant, rev, kindPolicyActivated, bytes, keep, false)
}

// RollbackPolicy makes an earlier revision of the tenant's policy active
// again. ErrNotFound if the tenant has no such revision; rolling back to
// the active revision records nothing.
func (p *Plane) RollbackPolicy(ctx context.Context, tenant, rev string) (TenantPolicy, error) {
	return p.changePolicy(ctx, tenant, rev, kindPolicyRolledBack, 0, 0, true)
}

func (p *Plane) changePolicy(ctx context.Context, tenant, rev string, kind core.Kind, bytes int64, keep int, mustExist bool) (TenantPolicy, error) {
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
	rec := &policyRecord{Revision: rev, Bytes: bytes}
	if kind == kindPolicyActivated && !hasRevision(cur, rev) {
		rec.Pruned = pruneRevisions(cur, keep)
	}
	if _, err := p.record(ctx, kind, PolicyEntity(tenant), body{Tenant: tenant, Policy: rec}); err != nil {
		return TenantPolicy{}, err
	}
	return p.Policy(tenant), nil
}

// pruneRevisions returns the oldest revisions of tp to drop so that, with
// one new revision, at most keep stay (keep ≤ 0: none dropped; keep 1 is
// taken as 2): never the active one, which the new revision replaces.
func pruneRevisions(tp TenantPolicy, keep int) []string {
	if keep <= 0 {
		return nil
	}
	keep = max(keep, 2)
	excess := len(tp.Revisions) + 1 - keep
	var out []string
	for _, r := range tp.Revisions {
		if len(out) >= excess {
			break
		}
		if r.Revision != tp.Active {
			out = append(out, r.Revision)
		}
	}
	return out
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
		if len(b.Policy.Pruned) > 0 {
			tp.Revisions = slices.DeleteFunc(tp.Revisions, func(r PolicyRevision) bool {
				return r.Revision != tp.Active && slices.Contains(b.Policy.Pruned, r.Revision)
			})
		}
		tp.Revisions = append(tp.Revisions, PolicyRevision{Revision: b.Policy.Revision, Bytes: b.Policy.Bytes, Uploaded: c.at, By: b.By})
	}
	at, by := c.at, b.By
	tp.Active, tp.Activated, tp.ActivatedBy = b.Policy.Revision, &at, &by
}
