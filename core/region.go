package core

import (
	"fmt"
	"strings"

	"github.com/batpak-go/batpak/core/internal/index"
)

// Region is the one predicate batpak uses to select events: for queries now,
// and for subscriptions and cursors. Build one with All, Entity or Scope and
// narrow it with the With methods; every constraint must hold (AND). A Region
// is a value: the With methods return a copy.
type Region struct {
	entityPrefix string
	hasEntity    bool
	entityExact  bool // entityPrefix is the whole name
	scope        string
	hasScope     bool
	kind         Kind
	hasKind      bool
	category     uint16
	hasCategory  bool
	clockMin     uint64
	clockMax     uint64
	hasClock     bool
}

// All matches every event.
func All() Region { return Region{} }

// Entity matches events whose entity starts with prefix ("order:" matches
// "order:1" and "order:2"; a full entity name matches that entity, and any
// entity it is a prefix of).
func Entity(prefix string) Region { return All().WithEntity(prefix) }

// Scope matches events filed under exactly this scope.
func Scope(scope string) Region { return All().WithScope(scope) }

// WithEntity narrows to entities starting with prefix.
func (r Region) WithEntity(prefix string) Region {
	r.entityPrefix, r.hasEntity, r.entityExact = prefix, true, false
	return r
}

// WithExactEntity narrows to the one entity named name (not the entities
// it is a prefix of). A read of it walks only that entity's events, where
// a prefix shared by many entities walks the whole log.
func (r Region) WithExactEntity(name string) Region {
	r.entityPrefix, r.hasEntity, r.entityExact = name, true, true
	return r
}

// WithScope narrows to exactly this scope.
func (r Region) WithScope(scope string) Region {
	r.scope, r.hasScope = scope, true
	return r
}

// WithKind narrows to exactly this kind.
func (r Region) WithKind(k Kind) Region {
	r.kind, r.hasKind = k, true
	return r
}

// WithCategory narrows to kinds in this category (0x0..0xF).
func (r Region) WithCategory(c uint16) Region {
	r.category, r.hasCategory = c, true
	return r
}

// WithClockRange narrows to events whose per-entity clock is in [min, max],
// both inclusive.
func (r Region) WithClockRange(min, max uint64) Region {
	r.clockMin, r.clockMax, r.hasClock = min, max, true
	return r
}

// Matches reports whether an event at coord with kind k and clock c is in r.
func (r Region) Matches(coord Coordinate, k Kind, clock uint64) bool {
	f := r.filter()
	return f.Matches(coord.Entity, coord.Scope, uint16(k), clock)
}

// filter is r as the index takes it: the one place a Region becomes an
// index.Filter.
func (r Region) filter() index.Filter {
	return index.Filter{
		EntityPrefix: r.entityPrefix, HasEntity: r.hasEntity, EntityExact: r.entityExact,
		Scope: r.scope, HasScope: r.hasScope,
		Kind: uint16(r.kind), HasKind: r.hasKind,
		Category: r.category, HasCategory: r.hasCategory,
		ClockMin: r.clockMin, ClockMax: r.clockMax, HasClock: r.hasClock,
	}
}

// String describes the region, e.g. "entity=order:* scope=eu kind=0x1:0x1".
func (r Region) String() string {
	var parts []string
	switch {
	case r.hasEntity && r.entityExact:
		parts = append(parts, "entity="+r.entityPrefix)
	case r.hasEntity:
		parts = append(parts, "entity="+r.entityPrefix+"*")
	}
	if r.hasScope {
		parts = append(parts, "scope="+r.scope)
	}
	if r.hasKind {
		parts = append(parts, "kind="+r.kind.String())
	}
	if r.hasCategory {
		parts = append(parts, fmt.Sprintf("category=%#x", r.category))
	}
	if r.hasClock {
		parts = append(parts, fmt.Sprintf("clock=[%d,%d]", r.clockMin, r.clockMax))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, " ")
}
