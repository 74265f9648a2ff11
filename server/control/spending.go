package control

import (
	"slices"
	"time"
)

// Spend is one control-plane change a tenant's own credential made, as
// the control plane recorded it: what server/quota charges to the
// tenant's control_changes_per_day (and, for an upload,
// upload_bytes_per_hour). Changes by the operator and by the server
// itself (a worker quarantined), and key revocations, are not spends.
type Spend struct {
	At    time.Time
	Admin bool  // made with a key holding the admin role (quota.Admin)
	Bytes int64 // bytes uploaded: a policy bundle, a plugin module and manifest
}

// SpendWindow is how far back Spending reaches: the longest window a
// quota charges spends to (control_changes_per_day).
const SpendWindow = 24 * time.Hour

// maxSpends bounds the spends kept per tenant (the newest are kept), so
// that a tenant with no daily budget does not grow the plane's memory
// without bound: a daily budget above it is charged at most maxSpends
// after a restart.
const maxSpends = 20000

// Spending returns the spends of tenant id recorded at or after since
// (at most SpendWindow ago), oldest first. The plane keeps them for every
// tenant as it applies the log, on every node and across restarts, so
// that a restarted server or a new cluster leader charges a tenant's
// budgets with what it spent before (quota.Manager.Restore).
func (p *Plane) Spending(id string, since time.Time) []Spend {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ss := p.st.spends[id]
	i, _ := slices.BinarySearchFunc(ss, since, func(s Spend, t time.Time) int { return s.At.Compare(t) })
	return slices.Clone(ss[i:])
}

// noteSpend records c in the spends of the tenant whose credential made
// it, and drops those older than SpendWindow before it.
func (s *state) noteSpend(c change) {
	b := c.body
	if b.By.Tenant == "" || b.By.Tenant != b.Tenant || c.kind == kindKeyRevoked {
		return
	}
	sp := Spend{At: c.at, Admin: slices.Contains(b.By.Roles, string(RoleAdmin))}
	switch c.kind {
	case kindPolicyActivated:
		if b.Policy != nil {
			sp.Bytes = b.Policy.Bytes
		}
	case kindPluginAdded, kindPluginKept:
		if b.Plugin != nil {
			sp.Bytes = b.Plugin.Bytes + int64(len(b.Plugin.Manifest))
		}
	}
	ss := s.spends[b.Tenant]
	// Kept in time order: a change stamped before the last one (a clock
	// stepped back) counts as made at the same time.
	if n := len(ss); n > 0 && sp.At.Before(ss[n-1].At) {
		sp.At = ss[n-1].At
	}
	cut := sp.At.Add(-SpendWindow)
	drop := 0
	for drop < len(ss) && ss[drop].At.Before(cut) {
		drop++
	}
	// Resliced, not copied: append moves only the live ones when it
	// grows the array, so a replay of a long history stays linear.
	ss = ss[max(drop, len(ss)+1-maxSpends):]
	s.spends[b.Tenant] = append(ss, sp)
}
