package index

import "strings"

// Filter selects events; every constraint whose Has field is set must
// hold. Package core builds one from a Region.
type Filter struct {
	EntityPrefix string // the entity's name starts with it
	HasEntity    bool
	EntityExact  bool   // with HasEntity: the name is EntityPrefix exactly
	Scope        string // the scope is exactly this
	HasScope     bool
	Kind         uint16 // the kind is exactly this
	HasKind      bool
	Category     uint16 // the kind's category (its high 4 bits) is this
	HasCategory  bool
	ClockMin     uint64 // the per-entity clock is in [ClockMin, ClockMax]
	ClockMax     uint64
	HasClock     bool
}

// Matches reports whether an event of entity and scope with kind and
// clock is in f.
func (f *Filter) Matches(entity, scope string, kind uint16, clock uint64) bool {
	if f.HasEntity && !f.entityMatches(entity) {
		return false
	}
	if f.HasScope && scope != f.Scope {
		return false
	}
	return f.matchesKindClock(kind, clock)
}

// entityMatches reports whether an entity name passes f's entity
// constraint (set).
func (f *Filter) entityMatches(name string) bool {
	if f.EntityExact {
		return name == f.EntityPrefix
	}
	return strings.HasPrefix(name, f.EntityPrefix)
}

func (f *Filter) matchesKindClock(kind uint16, clock uint64) bool {
	if f.HasKind && kind != f.Kind {
		return false
	}
	if f.HasCategory && kind>>12 != f.Category {
		return false
	}
	if f.HasClock && (clock < f.ClockMin || clock > f.ClockMax) {
		return false
	}
	return true
}
