package core

import (
	"strings"
	"unicode/utf8"
)

// MaxCoordinatePartBytes is the longest entity or scope accepted, in bytes.
const MaxCoordinatePartBytes = 1024

// Coordinate places an event: Entity is the stream it belongs to (its clock
// and hash chain are per entity) and Scope is the partition it is filed under
// (a tenant, a bounded context). Build one with NewCoordinate; the zero value
// is not valid for writes.
type Coordinate struct {
	Entity string
	Scope  string
}

// NewCoordinate validates entity and scope and returns the coordinate. Each
// part must be non-empty, at most MaxCoordinatePartBytes bytes, valid UTF-8
// and free of NUL; otherwise the error is a *CoordinateError naming the part
// (errors.Is(err, ErrInvalidCoordinate)).
func NewCoordinate(entity, scope string) (Coordinate, error) {
	if err := checkCoordinatePart("entity", entity); err != nil {
		return Coordinate{}, err
	}
	if err := checkCoordinatePart("scope", scope); err != nil {
		return Coordinate{}, err
	}
	return Coordinate{Entity: entity, Scope: scope}, nil
}

// Validate reports whether c would be accepted by NewCoordinate.
func (c Coordinate) Validate() error {
	_, err := NewCoordinate(c.Entity, c.Scope)
	return err
}

func (c Coordinate) String() string { return c.Entity + "@" + c.Scope }

func checkCoordinatePart(part, v string) error {
	var reason string
	switch {
	case v == "":
		reason = "must not be empty"
	case len(v) > MaxCoordinatePartBytes:
		reason = "longer than 1024 bytes"
	case !utf8.ValidString(v):
		reason = "not valid UTF-8"
	case strings.IndexByte(v, 0) >= 0:
		reason = "contains a NUL byte"
	default:
		return nil
	}
	shown := v
	if len(shown) > 64 {
		shown = shown[:64] + "…"
	}
	return &CoordinateError{Part: part, Value: shown, Reason: reason}
}
