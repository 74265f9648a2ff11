//go:build !wasip1

package examples_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
	"github.com/batpak-go/batpak/sdk/guest"
)

// The two payloads, as tenant acme under examples/policies: the
// store refuses the one repeating total_cents (the policy would read the
// last, a plugin once read the first), and the one spelling the name with
// an escape is read as 998 by the policy and by a plugin alike.
func TestPolicyAndPluginReadTheSameOrder(t *testing.T) {
	ctx := policy.WithPrincipal(context.Background(), policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}})
	gate, err := opa.Load(ctx, filepath.Join("..", "policies"), opa.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := core.DefaultConfig(t.TempDir())
	cfg.Admission = policy.NewAdmitter(gate)
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	coord, _ := core.NewCoordinate("acme:order:1", "shop")

	dup := `{"total_cents":99999999,"items":[{"qty":1,"price_cents":998}],"currency":"EUR","total_cents":998}`
	_, err = s.Append(ctx, coord, kindPlaced, []byte(dup))
	var pe *core.PayloadError
	if !errors.As(err, &pe) || pe.Rule != "duplicate-key" || pe.Key != "total_cents" {
		t.Errorf("repeated total_cents: got %v, want a PayloadError naming total_cents", err)
	}

	escaped := `{"total\u005fcents":998,"items":[{"qty":1,"price_cents":998}],"currency":"EUR"}`
	if _, err := s.Append(ctx, coord, kindPlaced, []byte(escaped)); err != nil {
		t.Fatalf("escaped total_cents 998: %v", err)
	}
	if n, ok := guest.Int([]byte(escaped), "total_cents"); !ok || n != 998 {
		t.Errorf("guest.Int reads total_cents %d, %v; want 998", n, ok)
	}
	// The policy reads the escaped name too: over the tenant's maximum is denied.
	over := `{"total\u005fcents":99999999,"items":[{"qty":1,"price_cents":99999999}],"currency":"EUR"}`
	var den *policy.Denial
	if _, err := s.Append(ctx, coord, kindPlaced, []byte(over)); !errors.As(err, &den) {
		t.Errorf("escaped total_cents 99999999: got %v, want a denial", err)
	}
	if n, _ := guest.Int([]byte(over), "total_cents"); n != 99999999 {
		t.Errorf("guest.Int reads %d, want 99999999", n)
	}
}

// TestPolicyAndPluginViewsAgree: over adversarial payloads (escaped and
// repeated names, unicode escapes and surrogate pairs, whitespace, nested
// objects, exponents), the value a Rego policy reads at
// input.event.payload.<name> and the value guest.Field reads at <name> are
// the same, or both absent; guest.Int reads the number and guest.String
// the string the policy compares.
func TestPolicyAndPluginViewsAgree(t *testing.T) {
	dir := t.TempDir()
	rego := `package batpak.write

deny contains {"code": "TOTAL", "message": "v", "v": input.event.payload.total_cents}

deny contains {"code": "EMOJI", "message": "v", "v": input.event.payload["😀"]}

deny contains {"code": "FFFD", "message": "v", "v": input.event.payload["\ufffd"]}
`
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	gate, err := opa.Load(context.Background(), dir, opa.Options{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{"TOTAL": "total_cents", "EMOJI": "😀", "FFFD": "\ufffd"}
	spellings := []string{`"total_cents"`, `"total\u005fcents"`, `"\u0074otal_cents"`, `"total_Cents"`, `"TOTAL_CENTS"`,
		`"total_cents "`, `"😀"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00"`, `"\ufffd"`, `"\uFFFD"`, `"x"`, `"items"`}
	values := []string{`998`, `99999999`, `1e3`, `9.98E+2`, `-0`, `"998"`, `"c\u0061rd \"x\"\n"`, `"\ud83d"`, `"\ud83d\ude00"`, `null`, `true`, `[998]`, `{"total_cents":5}`,
		`{"total_cents":1,"total_cents":2}`, `12345678901234567890`, `0.5`}
	ws := []string{"", " ", "\n\t", "\r\n "}
	r := rand.New(rand.NewSource(11))
	for i := 0; i < 400; i++ {
		var b strings.Builder
		b.WriteString(ws[r.Intn(len(ws))] + "{")
		for n, j := 1+r.Intn(5), 0; j < n; j++ {
			if j > 0 {
				b.WriteString(ws[r.Intn(len(ws))] + ",")
			}
			b.WriteString(ws[r.Intn(len(ws))] + spellings[r.Intn(len(spellings))] + ws[r.Intn(len(ws))] + ":" + ws[r.Intn(len(ws))] + values[r.Intn(len(values))])
		}
		b.WriteString(ws[r.Intn(len(ws))] + "}" + ws[r.Intn(len(ws))])
		doc := []byte(b.String())
		in := &policy.Input{Action: "append"}
		in.Event.Payload = doc
		d, err := gate.Decide(context.Background(), in)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		seen := map[string]any{}
		for _, re := range d.Reasons {
			seen[re.Code] = re.Context["v"]
		}
		for code, name := range names {
			pv, pok := seen[code]
			raw, jok := guest.Field(doc, name)
			if pok != jok {
				t.Fatalf("%s, %q: the policy reads it %v, guest.Field %v", doc, name, pok, jok)
			}
			if !jok {
				continue
			}
			var jv any
			dec := json.NewDecoder(strings.NewReader(string(raw)))
			dec.UseNumber()
			if err := dec.Decode(&jv); err != nil {
				t.Fatalf("%s: guest.Field read %s: %v", doc, raw, err)
			}
			pj, _ := json.Marshal(pv)
			jj, _ := json.Marshal(jv)
			if string(pj) != string(jj) {
				t.Fatalf("%s, %q: the policy reads %s, guest.Field %s", doc, name, pj, jj)
			}
			// guest.String reads the string the policy compares.
			ps, isString := pv.(string)
			if s, ok := guest.String(doc, name); ok != isString || s != ps {
				t.Fatalf("%s, %q: guest.String = %q, %v; the policy reads %#v", doc, name, s, ok, pv)
			}
			if name == "total_cents" {
				// and guest.Int reads the number the policy compares
				n, ok := guest.Int(doc, name)
				num, isNum := jv.(json.Number)
				if ok != isNum || (isNum && !intMatches(num, n)) {
					t.Fatalf("%s: guest.Int = %d, %v; the policy reads %v", doc, n, ok, jv)
				}
			}
		}
	}
}

// intMatches: n is the number num truncated toward zero and clamped to
// int64 (guest.Int's documented reading).
func intMatches(num json.Number, n int64) bool {
	if i, err := num.Int64(); err == nil {
		return i == n
	}
	f, err := num.Float64()
	if err != nil {
		return false
	}
	switch {
	case f >= 9.223372036854775807e18:
		return n == 1<<63-1
	case f <= -9.223372036854775808e18:
		return n == -1<<63
	}
	return int64(f) == n
}
