package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

func TestNewCoordinateValidation(t *testing.T) {
	long := strings.Repeat("x", core.MaxCoordinatePartBytes)
	// 512 two-byte runes: exactly 1024 bytes of valid multi-byte UTF-8.
	longRunes := strings.Repeat("é", core.MaxCoordinatePartBytes/2)
	bad := []struct {
		name  string
		value string
	}{
		{"empty", ""},
		{"1025 bytes", long + "x"},
		{"1025 bytes of runes", longRunes + "x"},
		{"invalid UTF-8", "ord\xffer"},
		{"truncated rune", "caf\xc3"},
		{"NUL", "a\x00b"},
		{"only NUL", "\x00"},
	}
	for _, part := range []string{"entity", "scope"} {
		for _, tc := range bad {
			t.Run(part+"/"+tc.name, func(t *testing.T) {
				entity, scope := "order:1", "shop"
				if part == "entity" {
					entity = tc.value
				} else {
					scope = tc.value
				}
				c, err := core.NewCoordinate(entity, scope)
				if err == nil {
					t.Fatalf("NewCoordinate accepted %s %q", part, tc.value)
				}
				if c != (core.Coordinate{}) {
					t.Errorf("refused coordinate is not zero: %+v", c)
				}
				if !errors.Is(err, core.ErrInvalidCoordinate) {
					t.Errorf("errors.Is(%v, ErrInvalidCoordinate) = false", err)
				}
				var ce *core.CoordinateError
				if !errors.As(err, &ce) {
					t.Fatalf("error %T is not a *CoordinateError", err)
				}
				if ce.Part != part {
					t.Errorf("CoordinateError.Part = %q, want %q", ce.Part, part)
				}
				if !strings.Contains(err.Error(), part) {
					t.Errorf("message %q does not name the %s", err, part)
				}
				if (core.Coordinate{Entity: entity, Scope: scope}).Validate() == nil {
					t.Errorf("Coordinate.Validate accepted what NewCoordinate refused")
				}
			})
		}
	}

	for _, v := range []string{"a", long, longRunes, "order:ü/日本", "with space", "tab\there"} {
		c, err := core.NewCoordinate(v, v)
		if err != nil {
			t.Errorf("NewCoordinate refused a valid %d-byte part: %v", len(v), err)
			continue
		}
		if c.Entity != v || c.Scope != v {
			t.Errorf("NewCoordinate changed its input: %+v", c)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Validate refused a coordinate NewCoordinate built: %v", err)
		}
	}

	// Both parts bad: the entity is reported.
	_, err := core.NewCoordinate("", "")
	var ce *core.CoordinateError
	if !errors.As(err, &ce) || ce.Part != "entity" {
		t.Errorf("both parts empty: got %v, want the entity named", err)
	}
}

func TestAppendRefusesInvalidCoordinateAndKind(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, core.Coordinate{}, kindA, []byte(`{}`)); !errors.Is(err, core.ErrInvalidCoordinate) {
		t.Errorf("zero Coordinate: got %v, want ErrInvalidCoordinate", err)
	}
	if _, err := s.Append(ctx, core.Coordinate{Entity: "e", Scope: "a\x00"}, kindA, []byte(`{}`)); !errors.Is(err, core.ErrInvalidCoordinate) {
		t.Errorf("hand-built coordinate with NUL: got %v, want ErrInvalidCoordinate", err)
	}
	c := mustCoord(t, "e", "s")
	for _, k := range []core.Kind{0x0001, 0xD001, 0x0000} {
		if _, err := s.Append(ctx, c, k, []byte(`{}`)); !errors.Is(err, core.ErrInvalidKind) {
			t.Errorf("reserved kind %v: got %v, want ErrInvalidKind", k, err)
		}
	}
	if n := s.Stats().Events; n != 0 {
		t.Errorf("refused writes stored %d events", n)
	}
}

func TestCustomKind(t *testing.T) {
	bad := []struct{ cat, typ uint16 }{
		{0x0, 1}, {0x0, 0}, {0xD, 1}, {0xD, 0xFFF}, {0x10, 1}, {0xFFFF, 1},
		{0x1, 0x1000}, {0xF, 0xFFFF},
	}
	for _, b := range bad {
		k, err := core.CustomKind(b.cat, b.typ)
		if err == nil {
			t.Errorf("CustomKind(%#x, %#x) = %v, want an error", b.cat, b.typ, k)
			continue
		}
		if !errors.Is(err, core.ErrInvalidKind) {
			t.Errorf("CustomKind(%#x, %#x): errors.Is(ErrInvalidKind) = false: %v", b.cat, b.typ, err)
		}
		var ke *core.KindError
		if !errors.As(err, &ke) || ke.Category != b.cat || ke.Type != b.typ {
			t.Errorf("CustomKind(%#x, %#x): error %#v does not carry the pair", b.cat, b.typ, err)
		}
		if !panics(func() { core.MustKind(b.cat, b.typ) }) {
			t.Errorf("MustKind(%#x, %#x) did not panic", b.cat, b.typ)
		}
	}
	for cat := uint16(1); cat <= 0xF; cat++ {
		if cat == 0xD {
			continue
		}
		for _, typ := range []uint16{0, 1, 0x2a, 0xFFF} {
			k, err := core.CustomKind(cat, typ)
			if err != nil {
				t.Fatalf("CustomKind(%#x, %#x): %v", cat, typ, err)
			}
			if k.Category() != cat || k.Type() != typ {
				t.Errorf("CustomKind(%#x, %#x) = %v: category %#x type %#x", cat, typ, k, k.Category(), k.Type())
			}
			back, err := core.ParseKind(k.String())
			if err != nil || back != k {
				t.Errorf("ParseKind(%q) = %v, %v; want %v", k.String(), back, err, k)
			}
		}
	}
	// Distinct pairs give distinct kinds.
	if core.MustKind(1, 2) == core.MustKind(2, 1) {
		t.Error("kinds 1:2 and 2:1 are equal")
	}
}

func panics(f func()) (p bool) {
	defer func() { p = recover() != nil }()
	f()
	return false
}

func TestParseKind(t *testing.T) {
	good := map[string]core.Kind{
		"1:1":          core.MustKind(1, 1),
		"0xF:0x2a":     core.MustKind(0xF, 0x2a),
		"0xf:0x2A":     core.MustKind(0xF, 0x2a),
		"15:42":        core.MustKind(15, 42),
		"0x1:0x0":      core.MustKind(1, 0),
		"14:4095":      core.MustKind(14, 0xFFF),
		" 2 : 3 ":      core.MustKind(2, 3),
		"0b11:0o17":    core.MustKind(3, 15),
		"0x1:0xfff":    core.MustKind(1, 0xFFF),
		"0xC:0x00000a": core.MustKind(0xC, 0xA),
		"010:012":      core.MustKind(10, 12), // leading zeros are decimal, not octal
		"0X1:0B1":      core.MustKind(1, 1),
	}
	for in, want := range good {
		got, err := core.ParseKind(in)
		if err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1", "1:", ":1", "x:1", "1:y", "1:1:1", "0:1", "0x0:0x1", "13:1", "0xD:1",
		"16:1", "0x10:0", "1:4096", "1:0x1000", "-1:1", "1:-1", "70000:1", "1:70000", "0x:1", "1:0b", "1:0x_1", "+1:1"} {
		k, err := core.ParseKind(in)
		if err == nil {
			t.Errorf("ParseKind(%q) = %v, want an error", in, k)
			continue
		}
		if !errors.Is(err, core.ErrInvalidKind) {
			t.Errorf("ParseKind(%q): error %v does not match ErrInvalidKind", in, err)
		}
	}
}

// TestParseKindRange: a category or type too large to be one is out of
// range, with the range named; text that is no number says so.
func TestParseKindRange(t *testing.T) {
	for in, want := range map[string]string{
		"99999:1":     `category "99999" is out of range: it must be 0x1..0xF`,
		"1:99999999":  `type "99999999" is out of range: it must be at most 0xFFF`,
		"0x1:0x99999": `type "0x99999" is out of range: it must be at most 0xFFF`,
		"x:1":         `category "x" is not a number`,
		"1:-1":        `type "-1" is not a number`,
	} {
		_, err := core.ParseKind(in)
		if !errors.Is(err, core.ErrInvalidKind) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKind(%q): %v, want an ErrInvalidKind saying %s", in, err, want)
		}
	}
}

func TestEventIDs(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "ids", "s")
	var prev core.EventID
	for i := 0; i < 200; i++ {
		r := mustAppend(t, s, c, kindA, `{}`)
		id := r.ID
		if id.IsZero() {
			t.Fatal("receipt has the zero id")
		}
		if v := id[6] >> 4; v != 7 {
			t.Fatalf("id %s has version %d, want 7", id, v)
		}
		if id[8]&0xC0 != 0x80 {
			t.Fatalf("id %s has a non-RFC variant", id)
		}
		if i > 0 && bytes.Compare(prev[:], id[:]) >= 0 {
			t.Fatalf("id %d %s does not sort after the previous %s", i, id, prev)
		}
		if i > 0 && prev.String() >= id.String() {
			t.Fatalf("id text %s does not sort after %s", id, prev)
		}
		prev = id

		str := id.String()
		if len(str) != 36 || str[14] != '7' {
			t.Fatalf("String() = %q, want canonical UUIDv7 text", str)
		}
		back, err := core.ParseEventID(str)
		if err != nil || back != id {
			t.Fatalf("ParseEventID(%q) = %v, %v; want %v", str, back, err, id)
		}
		upper, err := core.ParseEventID(strings.ToUpper(str))
		if err != nil || upper != id {
			t.Fatalf("ParseEventID(upper %q) = %v, %v", str, upper, err)
		}
		txt, err := id.MarshalText()
		if err != nil || string(txt) != str {
			t.Fatalf("MarshalText = %q, %v", txt, err)
		}
		var un core.EventID
		if err := un.UnmarshalText(txt); err != nil || un != id {
			t.Fatalf("UnmarshalText(%q) = %v, %v", txt, un, err)
		}
	}
	for _, in := range []string{"", "nope", "0190b6c1-0000-7000-8000", "0190b6c1-0000-7000-8000-00000000000g"} {
		if _, err := core.ParseEventID(in); err == nil {
			t.Errorf("ParseEventID(%q) succeeded", in)
		}
	}
	var zero core.EventID
	if !zero.IsZero() || zero.String() != "00000000-0000-0000-0000-000000000000" {
		t.Errorf("zero id: IsZero %v, String %q", zero.IsZero(), zero.String())
	}
}

func TestExpectationValues(t *testing.T) {
	var none core.Expectation
	if none.IsSet() || none.NoEvents() {
		t.Error("zero Expectation constrains something")
	}
	if _, ok := none.Clock(); ok {
		t.Error("zero Expectation has a clock")
	}
	ne := core.ExpectNoEvents()
	if !ne.IsSet() || !ne.NoEvents() {
		t.Error("ExpectNoEvents is not set / not NoEvents")
	}
	if _, ok := ne.Clock(); ok {
		t.Error("ExpectNoEvents has a clock")
	}
	c0 := core.ExpectClock(0)
	if !c0.IsSet() || c0.NoEvents() {
		t.Error("ExpectClock(0) must be set and distinct from ExpectNoEvents")
	}
	if v, ok := c0.Clock(); !ok || v != 0 {
		t.Errorf("ExpectClock(0).Clock() = %d, %v", v, ok)
	}
	if c0 == ne {
		t.Error("ExpectClock(0) == ExpectNoEvents()")
	}
	if v, ok := core.ExpectClock(7).Clock(); !ok || v != 7 {
		t.Errorf("ExpectClock(7).Clock() = %d, %v", v, ok)
	}
}

// NewEventID from many goroutines at once: every id is unique, RFC 9562
// version 7, carries the time it was made (or, in a burst faster than one
// id per 1/4096 ms, at most one step per id later), and each goroutine's
// ids sort strictly after its earlier ones.
func TestEventIDsConcurrent(t *testing.T) {
	const goroutines, each = 8, 20000
	before := time.Now().UnixMilli()
	out := make([][]core.EventID, goroutines)
	var wg sync.WaitGroup
	for g := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := make([]core.EventID, each)
			for i := range ids {
				ids[i] = core.NewEventID()
			}
			out[g] = ids
		}()
	}
	wg.Wait()
	after := time.Now().UnixMilli()
	seen := make(map[core.EventID]bool, goroutines*each)
	randomBits := make(map[uint64]bool, goroutines*each)
	for g, ids := range out {
		for i, id := range ids {
			if seen[id] {
				t.Fatalf("goroutine %d id %d: %s made twice", g, i, id)
			}
			seen[id] = true
			randomBits[binary.BigEndian.Uint64(id[8:])&(1<<62-1)] = true
			if id[6]>>4 != 7 || id[8]&0xC0 != 0x80 {
				t.Fatalf("id %s is not an RFC 9562 version 7 id", id)
			}
			ms := int64(binary.BigEndian.Uint64(id[:8]) >> 16)
			// An id may run ahead of the clock by one 1/4096 ms step per id
			// made faster than one per step (see NewEventID).
			if ms < before-1 || ms > after+1+int64(goroutines*each)/4096 {
				t.Fatalf("id %s carries %d ms, made between %d and %d", id, ms, before, after)
			}
			if i > 0 && bytes.Compare(ids[i-1][:], id[:]) >= 0 {
				t.Fatalf("goroutine %d: id %s does not sort after %s", g, id, ids[i-1])
			}
		}
	}
	// 62 random bits: a repeat among 160000 draws has odds of about 1e-9.
	if len(randomBits) != goroutines*each {
		t.Fatalf("%d distinct random parts among %d ids", len(randomBits), goroutines*each)
	}
}
