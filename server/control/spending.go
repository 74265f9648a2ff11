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

// maxSpends bounds the spends kept per tenant and class (the newest are
// kept), so that a tenant with no daily budget does not grow the plane's
// memory without bound: a daily budget above it is charged at most
// maxSpends after a restart.
const maxSpends = 20000

// spendLog is one tenant's recent spends, by class (0: admin, 1: other
// credentials), each oldest first.
type spendLog [2][]Spend

// Spending returns the spends of tenant id recorded at or after since
// (at most SpendWindow ago), oldest first. The plane keeps them for every
// tenant as it applies the log, on every node and across restarts, so
// that a restarted server or a new cluster leader charges a tenant's
// budgets with what it spent before (quota.Manager.Restore).
func (p *Plane) Spending(id string, since time.Time) []Spend {
	p.mu.RLock()
	defer p.mu.RUnlock()
	l := p.st.spends[id]
	if l == nil {
		return nil
	}
	var out []Spend
	for _, ss := range l {
		i, _ := slices.BinarySearchFunc(ss, since, func(s Spend, t time.Time) int { return s.At.Compare(t) })
		out = append(out, ss[i:]...)
	}
	slices.SortStableFunc(out, func(a, b Spend) int { return a.At.Compare(b.At) })
	return out
}

// noteSpend records c in the spends of the tenant whose credential made
// it, and drops what is older than SpendWindow before c: that tenant's,
// and a few other tenants' (a tenant that went quiet is pruned by the
// changes of others).
func (s *state) noteSpend(c change) {
	cut := c.at.Add(-SpendWindow)
	pruned := 0
	for id, l := range s.spends {
		if pruned++; pruned > 2 {
			break
		}
		if l.prune(cut) {
			delete(s.spends, id)
		}
	}
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
	l := s.spends[b.Tenant]
	if l == nil {
		l = &spendLog{}
		s.spends[b.Tenant] = l
	}
	l.prune(cut)
	class := 1
	if sp.Admin {
		class = 0
	}
	ss := l[class]
	// Kept in time order: a change stamped before the last one (a clock
	// stepped back) counts as made at the same time.
	if n := len(ss); n > 0 && sp.At.Before(ss[n-1].At) {
		sp.At = ss[n-1].At
	}
	// Resliced, not copied: append moves only the live ones when it
	// grows the array, so a replay of a long history stays linear.
	l[class] = append(ss[max(0, len(ss)+1-maxSpends):], sp)
}

// prune drops the spends made before cut, and reports whether none are
// left.
func (l *spendLog) prune(cut time.Time) bool {
	for i, ss := range l {
		drop := 0
		for drop < len(ss) && ss[drop].At.Before(cut) {
			drop++
		}
		if drop == len(ss) {
			l[i] = nil // the array goes with its last spend
		} else {
			l[i] = ss[drop:]
		}
	}
	return l[0] == nil && l[1] == nil
}
