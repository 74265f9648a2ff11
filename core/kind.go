package core

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is an event's type: a 4-bit category in the top bits and a 12-bit type
// in the low bits. Build user kinds with CustomKind.
//
// Which categories an application may write:
//
//   - 0x1–0xC and 0xE–0xF: its own kinds, through every write path.
//   - 0xD, effects: only the named effect kinds (KindEffectError,
//     KindEffectRetry, KindEffectAck, KindEffectBackpressure,
//     KindEffectCancel, KindEffectConflict; batpak 0.4.1's EFFECT_*
//     constants), and only as reactions naming the event they are about (a
//     non-zero causation id): AppendReaction, SubmitReaction,
//     TrySubmitReaction, AppendReactionBatch. Any other 0xD kind, or an
//     effect kind through any other path (Append, batches, fences, outboxes,
//     Import, React), is refused with a *KindError.
//   - 0x0, system: the store's own records. Application code writes them
//     only through AppendSystem, which the Admission judges; every other
//     path refuses them.
type Kind uint16

const (
	// CategorySystem is reserved for batpak's own records.
	CategorySystem = 0x0
	// CategoryEffect is reserved for effect kinds.
	CategoryEffect = 0xD
	// MaxKindType is the largest type number within a category.
	MaxKindType = 0xFFF
)

// The effect kinds batpak 0.4.1 names (category 0xD). An application
// writes them as reactions (see Kind); IsEffect reports the category.
const (
	KindEffectError        Kind = 0xD001 // an error was observed while processing the cause
	KindEffectRetry        Kind = 0xD002 // the cause is being retried
	KindEffectAck          Kind = 0xD004 // the cause is acknowledged
	KindEffectBackpressure Kind = 0xD005 // producers of the cause should slow down
	KindEffectCancel       Kind = 0xD006 // the cause (a request) is cancelled
	KindEffectConflict     Kind = 0xD007 // the cause met a conflict
)

// The system kinds batpak 0.4.1 names (category 0x0), for reading logs
// that carry them; no application write path accepts them (see Kind), and
// this store writes none of them itself. Two share their numbers with
// records this store writes on its reserved entities (ReservedEntityPrefix):
// 0x001 is also the policy package's bypass audit record and 0x002
// KindMaintenanceAudit — tell them apart by entity.
const (
	KindSystemInit         Kind = 0x0001
	KindSystemShutdown     Kind = 0x0002
	KindSystemHeartbeat    Kind = 0x0003
	KindSystemConfigChange Kind = 0x0004
	KindSystemCheckpoint   Kind = 0x0005
	// KindSystemBatchBegin and KindSystemBatchCommit name the crate's batch
	// markers; this store's batch markers are record types, not events.
	KindSystemBatchBegin  Kind = 0x0006
	KindSystemBatchCommit Kind = 0x0007
	// KindTombstone is the crate's compaction tombstone marker; this
	// store's tombstones keep the event's own kind, Redacted.
	KindTombstone Kind = 0x0FFE
)

// KindData is batpak 0.4.1's DATA kind: an ordinary user kind, 0x1:0x0.
const KindData Kind = 0x1000

// IsSystem reports whether k is in the system category, 0x0.
func (k Kind) IsSystem() bool { return k.Category() == CategorySystem }

// IsEffect reports whether k is in the effect category, 0xD.
func (k Kind) IsEffect() bool { return k.Category() == CategoryEffect }

// namedEffect reports whether k is one of the named effect kinds.
func (k Kind) namedEffect() bool {
	switch k {
	case KindEffectError, KindEffectRetry, KindEffectAck, KindEffectBackpressure, KindEffectCancel, KindEffectConflict:
		return true
	}
	return false
}

// validWrite reports whether an application may write k: a user kind, or,
// for a reaction with a cause (reaction true, causation non-zero), a named
// effect kind.
func (k Kind) validWrite(reaction bool, causation EventID) error {
	if !k.IsEffect() {
		return k.validUser()
	}
	switch {
	case !k.namedEffect():
		return &KindError{k.Category(), k.Type(), "category 0xD holds only the named effect kinds (KindEffectError, …)"}
	case !reaction:
		return &KindError{k.Category(), k.Type(), "an effect kind is written as a reaction (AppendReaction, SubmitReaction, TrySubmitReaction, AppendReactionBatch)"}
	case causation.IsZero():
		return &KindError{k.Category(), k.Type(), "an effect kind needs the event it is about as its causation id"}
	}
	return nil
}

// CustomKind builds a user kind. It refuses the reserved categories 0x0 and
// 0xD, categories above 0xF and types above 0xFFF with a *KindError
// (errors.Is(err, ErrInvalidKind)).
func CustomKind(category, typ uint16) (Kind, error) {
	switch {
	case category > 0xF:
		return 0, &KindError{category, typ, "category must be 0x1..0xF"}
	case category == CategorySystem:
		return 0, &KindError{category, typ, "category 0x0 is reserved for system kinds"}
	case category == CategoryEffect:
		return 0, &KindError{category, typ, "category 0xD is reserved for effect kinds"}
	case typ > MaxKindType:
		return 0, &KindError{category, typ, "type must be at most 0xFFF"}
	}
	return Kind(category<<12 | typ), nil
}

// MustKind is CustomKind for package-level constants: it panics on a bad
// pair, so use it only with literal values.
func MustKind(category, typ uint16) Kind {
	k, err := CustomKind(category, typ)
	if err != nil {
		panic(err)
	}
	return k
}

// Category is the top 4 bits.
func (k Kind) Category() uint16 { return uint16(k) >> 12 }

// Type is the low 12 bits.
func (k Kind) Type() uint16 { return uint16(k) & MaxKindType }

// String renders the kind as "CAT:TYPE" in hex, e.g. "0x1:0x2a"; ParseKind
// reads it back.
func (k Kind) String() string {
	b := make([]byte, 0, 10)
	b = append(b, "0x"...)
	b = strconv.AppendUint(b, uint64(k.Category()), 16)
	b = append(b, ":0x"...)
	b = strconv.AppendUint(b, uint64(k.Type()), 16)
	return string(b)
}

// validUser reports whether k is a kind users may write.
func (k Kind) validUser() error {
	_, err := CustomKind(k.Category(), k.Type())
	return err
}

// ParseKind reads "CAT:TYPE", each number in Go syntax (decimal, or hex with
// 0x), and validates it like CustomKind: "1:1", "0xF:0x2a" and "15:42" work.
func ParseKind(s string) (Kind, error) {
	c, t, err := parseKindNumbers(s)
	if err != nil {
		return 0, err
	}
	return CustomKind(c, t)
}

// parseWrittenKind is ParseKind that also accepts the named effect kinds
// (for Import, whose events were written through the reaction APIs).
func parseWrittenKind(s string) (Kind, error) {
	c, t, err := parseKindNumbers(s)
	if err != nil {
		return 0, err
	}
	if k := Kind(c<<12 | t); c == CategoryEffect && t <= MaxKindType && k.namedEffect() {
		return k, nil
	}
	return CustomKind(c, t)
}

func parseKindNumbers(s string) (uint16, uint16, error) {
	cat, typ, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %q: want CATEGORY:TYPE, e.g. 1:1 or 0xF:0x2a", ErrInvalidKind, s)
	}
	c, err := ParseKindNumber(cat)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %q: category %q %s", ErrInvalidKind, s, cat, kindNumberProblem(err, "must be 0x1..0xF"))
	}
	t, err := ParseKindNumber(typ)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %q: type %q %s", ErrInvalidKind, s, typ, kindNumberProblem(err, "must be at most 0xFFF"))
	}
	return uint16(c), uint16(t), nil
}

// kindNumberProblem says what is wrong with a category or type that
// ParseKindNumber refused with err: a number too large for it is out of
// range (want says the range), anything else is not a number.
func kindNumberProblem(err error, want string) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is out of range: it " + want
	}
	return "is not a number"
}

// ParseKindNumber reads a kind's category or type as ParseKind does:
// decimal, or after a prefix hexadecimal ("0x"), octal ("0o") or binary
// ("0b"), surrounding spaces ignored, at most 16 bits. Leading zeros
// alone are decimal: "010" is ten, not the octal eight Go's base-0
// parsing would make of it.
func ParseKindNumber(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if len(s) > 2 && s[0] == '0' {
		switch s[1] {
		case 'x', 'X':
			return strconv.ParseUint(s[2:], 16, 16)
		case 'o', 'O':
			return strconv.ParseUint(s[2:], 8, 16)
		case 'b', 'B':
			return strconv.ParseUint(s[2:], 2, 16)
		}
	}
	return strconv.ParseUint(s, 10, 16)
}
