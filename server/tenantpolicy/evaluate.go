package tenantpolicy

import (
	"context"
	"errors"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// ErrNoActivePolicy: the tenant has no active policy bundle to evaluate.
var ErrNoActivePolicy = errors.New("tenantpolicy: the tenant has no active policy bundle")

// Evaluate judges p by the tenant's active bundle alone, as a dry run:
// nothing is written and no decision is logged or counted. The principal
// is ctx's (policy.WithPrincipal). It returns the revision that judged
// and nil when the bundle allows p, a *policy.Denial (Layer "tenant")
// when it refuses it, ErrNoActivePolicy when the tenant has none, or the
// reason the revision could not be loaded. It takes an evaluation slot as
// a write does (at most one evaluation per CPU at once) and ends with
// ctx.
func (m *Manager) Evaluate(ctx context.Context, tenant string, p *core.Proposal) (string, error) {
	rev := m.opts.Plane.ActivePolicy(tenant)
	if rev == "" {
		return "", ErrNoActivePolicy
	}
	l := m.get(tenant, rev)
	if l == nil || l.err != nil {
		msg := "the tenant's policy revision " + rev + " is not loaded"
		if l != nil {
			msg += ": " + l.err.Error()
		}
		return rev, errors.New(msg)
	}
	release, err := m.slot(ctx, tenant)
	if err != nil {
		return rev, err
	}
	defer release()
	var d *policy.Denial
	if err := l.adm.Admit(ctx, p); err != nil {
		if !errors.As(err, &d) {
			return rev, err
		}
		return rev, withLayer(err, "tenant", rev)
	}
	return rev, nil
}

// Evaluations is the policy evaluations running now and waiting for a
// slot (Options.MaxConcurrent), all tenants together.
func (m *Manager) Evaluations() (running, waiting int) {
	running, _ = m.slots.InUse("")
	return running, m.slots.Waiting()
}
