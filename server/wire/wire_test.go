package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/wire"
)

func code(t *testing.T, err error) (string, string) {
	t.Helper()
	var we *wire.Error
	if !errors.As(err, &we) {
		t.Fatalf("error %v (%T) is not a *wire.Error", err, err)
	}
	return we.Code, we.Field
}

func TestDecodeRefusals(t *testing.T) {
	cases := []struct {
		name, body, code, field string
	}{
		{"empty", "", wire.CodeInvalidJSON, ""},
		{"syntax", `{"entity":`, wire.CodeInvalidJSON, ""},
		{"garbage", `{"entity" "x"}`, wire.CodeInvalidJSON, ""},
		{"two values", `{} {}`, wire.CodeInvalidJSON, ""},
		{"unknown field", `{"entity":"a","colour":1}`, wire.CodeInvalidRequest, "colour"},
		{"wrong type", `{"entity":5}`, wire.CodeInvalidRequest, "entity"},
		{"invalid utf8", "{\"entity\":\"a\xff\"}", wire.CodeInvalidJSON, ""},
		{"too deep", `{"payload":` + strings.Repeat("[", 10) + strings.Repeat("]", 10) + `}`, wire.CodeInvalidJSON, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var req wire.AppendRequest
			err := wire.Decode([]byte(c.body), &req, 8)
			if err == nil {
				t.Fatal("accepted")
			}
			gotCode, gotField := code(t, err)
			if gotCode != c.code || gotField != c.field {
				t.Fatalf("code %s field %q, want %s %q (%v)", gotCode, gotField, c.code, c.field, err)
			}
		})
	}
}

func TestDecodeDepthBoundary(t *testing.T) {
	// {"payload": [[…]]}: the object is level 1, so n brackets reach n+1.
	body := func(n int) []byte {
		return []byte(`{"entity":"a","payload":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
	}
	var req wire.AppendRequest
	if err := wire.Decode(body(7), &req, 8); err != nil {
		t.Fatalf("depth 8 refused at limit 8: %v", err)
	}
	err := wire.Decode(body(8), &req, 8)
	if c, _ := code(t, err); c != wire.CodeInvalidJSON || !strings.Contains(err.Error(), "8") {
		t.Fatalf("depth 9 at limit 8: %v", err)
	}
	// Brackets inside strings do not count.
	if err := wire.Decode([]byte(`{"entity":"[[[[[[[[[[[[[[[[[["}`), &req, 1); err != nil {
		t.Fatalf("brackets in a string counted: %v", err)
	}
}

func TestAppendItem(t *testing.T) {
	var req wire.AppendRequest
	body := `{"entity":"order:1","scope":"shop","kind":"1:2","payload":{"a":1},"expected_clock":"no_events",
	  "correlation_id":"0190a2b4-0000-7000-8000-000000000001","idempotency_key":"k1","flags":3}`
	if err := wire.Decode([]byte(body), &req, 64); err != nil {
		t.Fatal(err)
	}
	it, err := req.Item(-1, "")
	if err != nil {
		t.Fatal(err)
	}
	if it.Coordinate.Entity != "order:1" || it.Coordinate.Scope != "shop" || it.Kind != core.MustKind(1, 2) ||
		!it.Options.ExpectedClock.NoEvents() || it.Options.IdempotencyKey != "k1" || it.Options.Flags != 3 ||
		it.Options.CorrelationID.String() != "0190a2b4-0000-7000-8000-000000000001" {
		t.Fatalf("item %+v", it)
	}
	if _, err := req.Item(-1, "other"); err == nil {
		t.Fatal("header key differing from the body's accepted")
	}
	if it, err := req.Item(-1, "k1"); err != nil || it.Options.IdempotencyKey != "k1" {
		t.Fatalf("same header key: %v", err)
	}

	req.Kind = json.RawMessage(`4097`)
	req.ExpectedClock = json.RawMessage(`4`)
	it, err = req.Item(-1, "")
	if err != nil || it.Kind != core.MustKind(1, 1) {
		t.Fatalf("numeric kind: %v %v", it.Kind, err)
	}
	if c, ok := it.Options.ExpectedClock.Clock(); !ok || c != 4 {
		t.Fatalf("expected clock %v", it.Options.ExpectedClock)
	}
}

func TestAppendItemRefusals(t *testing.T) {
	base := func() wire.AppendRequest {
		return wire.AppendRequest{Entity: "e", Scope: "s", Kind: json.RawMessage(`"1:1"`), Payload: json.RawMessage(`{}`)}
	}
	three := 3
	one := 1
	cases := []struct {
		name   string
		mod    func(*wire.AppendRequest)
		index  int
		code   string
		field  string
		header string
	}{
		{"empty entity", func(a *wire.AppendRequest) { a.Entity = "" }, -1, wire.CodeInvalidCoordinate, "entity", ""},
		{"nul scope", func(a *wire.AppendRequest) { a.Scope = "a\x00b" }, -1, wire.CodeInvalidCoordinate, "scope", ""},
		{"long entity", func(a *wire.AppendRequest) { a.Entity = strings.Repeat("e", 1025) }, -1, wire.CodeInvalidCoordinate, "entity", ""},
		{"no kind", func(a *wire.AppendRequest) { a.Kind = nil }, -1, wire.CodeInvalidKind, "kind", ""},
		{"system kind", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`"0:1"`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"effects kind", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`"13:1"`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"kind text", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`"order"`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"kind fraction", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`257.5`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"kind too big", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`65536`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"kind object", func(a *wire.AppendRequest) { a.Kind = json.RawMessage(`{}`) }, -1, wire.CodeInvalidKind, "kind", ""},
		{"no payload", func(a *wire.AppendRequest) { a.Payload = nil }, -1, wire.CodeInvalidRequest, "payload", ""},
		{"expected text", func(a *wire.AppendRequest) { a.ExpectedClock = json.RawMessage(`"soon"`) }, -1, wire.CodeInvalidRequest, "expected_clock", ""},
		{"expected negative", func(a *wire.AppendRequest) { a.ExpectedClock = json.RawMessage(`-1`) }, -1, wire.CodeInvalidRequest, "expected_clock", ""},
		{"bad correlation", func(a *wire.AppendRequest) { s := "nope"; a.CorrelationID = &s }, -1, wire.CodeInvalidRequest, "correlation_id", ""},
		{"bad causation", func(a *wire.AppendRequest) { s := "nope"; a.CausationID = &s }, -1, wire.CodeInvalidRequest, "causation_id", ""},
		{"long key", func(a *wire.AppendRequest) {}, -1, wire.CodeInvalidRequest, "idempotency_key", strings.Repeat("k", core.MaxIdempotencyKeyBytes+1)},
		{"cause_item on single", func(a *wire.AppendRequest) { a.CauseItem = &one }, -1, wire.CodeInvalidRequest, "cause_item", ""},
		{"cause_item forward", func(a *wire.AppendRequest) { a.CauseItem = &three }, 2, wire.CodeInvalidRequest, "cause_item", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := base()
			c.mod(&a)
			_, err := a.Item(c.index, c.header)
			if err == nil {
				t.Fatal("accepted")
			}
			if gc, gf := code(t, err); gc != c.code || gf != c.field {
				t.Fatalf("got %s %q, want %s %q: %v", gc, gf, c.code, c.field, err)
			}
		})
	}
	// A bare number in category 0 is most often a category meant alone:
	// the refusal says how to write one.
	for _, k := range []string{`"1"`, `1`, `257`} {
		a := base()
		a.Kind = json.RawMessage(k)
		_, err := a.Item(-1, "")
		if err == nil || !strings.Contains(err.Error(), `"category:type"`) || !strings.Contains(err.Error(), "bare number") {
			t.Errorf("kind %s: %v, want a refusal saying how to write a category and type", k, err)
		}
	}
	// The boundary of the key length: exactly the limit is accepted.
	a := base()
	if _, err := a.Item(-1, strings.Repeat("k", core.MaxIdempotencyKeyBytes)); err != nil {
		t.Fatalf("key of exactly the limit refused: %v", err)
	}
	// cause_item naming the previous item is accepted.
	a.CauseItem = &one
	if _, err := a.Item(2, ""); err != nil {
		t.Fatal(err)
	}
}

func TestParseRegion(t *testing.T) {
	r, err := wire.ParseRegion("order:", "shop", "1:1", "")
	if err != nil {
		t.Fatal(err)
	}
	coord := core.Coordinate{Entity: "order:7", Scope: "shop"}
	if !r.Matches(coord, core.MustKind(1, 1), 0) || r.Matches(coord, core.MustKind(1, 2), 0) ||
		r.Matches(core.Coordinate{Entity: "user:1", Scope: "shop"}, core.MustKind(1, 1), 0) {
		t.Fatalf("region %v matches wrongly", r)
	}
	r, err = wire.ParseRegion("", "", "", "2")
	if err != nil || !r.Matches(coord, core.MustKind(2, 9), 0) || r.Matches(coord, core.MustKind(1, 9), 0) {
		t.Fatalf("category region: %v %v", r, err)
	}
	// Leading zeros are decimal: "010" is category ten, not octal eight.
	r, err = wire.ParseRegion("", "", "", "010")
	if err != nil || !r.Matches(coord, core.MustKind(10, 1), 0) || r.Matches(coord, core.MustKind(8, 1), 0) {
		t.Fatalf("category 010: %v %v; want category 10", r, err)
	}
	r, err = wire.ParseRegion("", "", "010:011", "")
	if err != nil || !r.Matches(coord, core.MustKind(10, 11), 0) || r.Matches(coord, core.MustKind(8, 9), 0) {
		t.Fatalf("kind 010:011: %v %v; want 10:11", r, err)
	}
	for _, c := range []struct{ e, s, k, cat, field string }{
		{"", "", "x:y", "", "kind"},
		{"", "", "", "16", "category"},
		{"", "", "", "-1", "category"},
		{"a\x00", "", "", "", "entity"},
		{"", "\xff", "", "", "scope"},
		{strings.Repeat("e", 1025), "", "", "", "entity"},
	} {
		_, err := wire.ParseRegion(c.e, c.s, c.k, c.cat)
		if err == nil {
			t.Fatalf("%+v accepted", c)
		}
		if _, f := code(t, err); f != c.field {
			t.Fatalf("%+v: field %q", c, f)
		}
	}
	cat := 16
	if _, err := wire.RegionFromControl(control.Region{Category: &cat}); err == nil {
		t.Fatal("category 16 accepted")
	}
}

func TestFromStored(t *testing.T) {
	ev := core.StoredEvent{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, GlobalSequence: 7, Redacted: true}
	ev.Header.Kind = core.MustKind(3, 42)
	ev.Header.Timestamp = 1_700_000_000_000_001
	out := wire.FromStored(ev)
	b, _ := json.Marshal(out)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m["kind"] != "3:42" || m["payload"] != nil || m["causation_id"] != nil || m["redacted"] != true ||
		m["timestamp"] != "2023-11-14T22:13:20.000001Z" || m["global_sequence"] != float64(7) {
		t.Fatalf("event JSON %s", b)
	}
	if _, ok := m["payload"]; !ok {
		t.Fatal("payload member missing")
	}
}

// TestDecodeSuggestsTheField: an unknown field that is a known alias, a
// case or one-edit slip, or a prefix of one the request takes (in a
// batch's events too) is answered with that field; a name like none of
// them gets no guess.
func TestDecodeSuggestsTheField(t *testing.T) {
	cases := []struct{ body, field, want string }{
		{`{"entity":"a","data":{}}`, "data", `(did you mean "payload"?)`},
		{`{"entiy":"a"}`, "entiy", `(did you mean "entity"?)`},
		{`{"Scopes":"a"}`, "Scopes", `(did you mean "scope"?)`},
		{`{"idempotency":"k"}`, "idempotency", `(did you mean "idempotency_key"?)`},
		{`{"entity":"a","colour":1}`, "colour", ""},
	}
	for _, c := range cases {
		var req wire.AppendRequest
		err := wire.Decode([]byte(c.body), &req, 8)
		if _, f := code(t, err); f != c.field || (c.want == "") == strings.Contains(err.Error(), "did you mean") || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v, want field %q and %q", c.body, err, c.field, c.want)
		}
	}
	var batch wire.BatchRequest
	err := wire.Decode([]byte(`{"events":[{"entity":"a","knd":"1:1"}]}`), &batch, 8)
	if err == nil || !strings.Contains(err.Error(), `(did you mean "kind"?)`) {
		t.Fatalf("an unknown field in a batch's event: %v", err)
	}
}

// A number of the right JSON type that the field cannot hold (too large,
// or with a fraction) says what the field takes.
func TestDecodeNumberOutOfRange(t *testing.T) {
	var v struct {
		Item  uint32 `json:"cause_item"`
		Clock uint64 `json:"clock"`
	}
	for body, want := range map[string]string{
		`{"cause_item":99999999999999999999}`: "got number 99999999999999999999, want a whole number from 0 to 4294967295",
		`{"cause_item":1.5}`:                  "got number 1.5, want a whole number from 0 to 4294967295",
		`{"clock":-1}`:                        "got number -1, want a whole number from 0 to 18446744073709551615",
		`{"clock":"7"}`:                       "wrong type: got string, want number",
	} {
		err := wire.Decode([]byte(body), &v, 8)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", body, err, want)
		}
	}
}
