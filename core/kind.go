package core

import (
	"fmt"
	"strconv"
	"strings"
)

// Kind is an event's type: a 4-bit category in the top bits and a 12-bit type
// in the low bits. Categories 0x0 (system) and 0xD (effects) are reserved for
// batpak itself; build user kinds with CustomKind.
type Kind uint16

const (
	// CategorySystem is reserved for batpak's own records.
	CategorySystem = 0x0
	// CategoryEffect is reserved for effect kinds.
	CategoryEffect = 0xD
	// MaxKindType is the largest type number within a category.
	MaxKindType = 0xFFF
)

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
	cat, typ, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("%w: %q: want CATEGORY:TYPE, e.g. 1:1 or 0xF:0x2a", ErrInvalidKind, s)
	}
	c, err := strconv.ParseUint(strings.TrimSpace(cat), 0, 16)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: category %q is not a number", ErrInvalidKind, s, cat)
	}
	t, err := strconv.ParseUint(strings.TrimSpace(typ), 0, 16)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: type %q is not a number", ErrInvalidKind, s, typ)
	}
	return CustomKind(uint16(c), uint16(t))
}
