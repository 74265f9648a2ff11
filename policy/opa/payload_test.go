package opa_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// A policy reading one payload field (the usual case) and one reading the
// payload whole.
const (
	fieldPolicy = `package batpak.write

default allow := false

allow if input.event.payload.total_cents <= 500000
`
	wholePolicy = `package batpak.write

default allow := false

allow if count(input.event.payload) < 10
`
	itemsPolicy = `package batpak.write

default allow := false

allow if {
	input.event.payload.total_cents <= 500000
	every it in input.event.payload.items { it.qty > 0 }
}
`
)

func largeInput(payload []byte) *policy.Input {
	in := &policy.Input{Action: "append", Principal: clerk}
	in.Event.Entity, in.Event.Scope, in.Event.Kind = "acme:order:1", "s", "0x1:0x1"
	in.Event.Payload = payload
	return in
}

// decideMeasured decides in and reports the decision, the time it took
// and the bytes allocated meanwhile.
func decideMeasured(t *testing.T, g *opa.Gate, in *policy.Input) (opa.Decision, time.Duration, uint64) {
	t.Helper()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	d, _ := g.Decide(context.Background(), in)
	took := time.Since(start)
	runtime.ReadMemStats(&m1)
	return d, took, m1.TotalAlloc - m0.TotalAlloc
}

// TestLargePayloadPolicyInputBounded: converting a payload for the policy
// costs what the policy reads, never more than Options.MaxInputValues
// values, and counts inside the policy timeout.
func TestLargePayloadPolicyInputBounded(t *testing.T) {
	scale, maxValues, slack := 1, 0, time.Second // slack for a loaded machine
	if raceEnabled {
		scale, maxValues, slack = 50, 10_000, 5*time.Second // still well past the limit
	}
	flat := []byte("[" + strings.Repeat("{},", 5_300_000/scale) + "{}]")                                           // 15.9 MB, 5.3M values
	wide := []byte(`{"items":[` + strings.Repeat(`{"qty":1},`, 1_000_000/scale) + `{"qty":1}],"total_cents":998}`) // 10 MB
	big := []byte(`{"pad":"` + strings.Repeat("x", (8<<20)/scale) + `","total_cents":998}`)
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct {
		name, rego string
		payload    []byte
		allowed    bool
		reason     string
	}{
		{"field of flat", fieldPolicy, flat, false, ""},
		{"field of wide", fieldPolicy, wide, true, ""},
		{"field of big", fieldPolicy, big, true, ""},
		{"whole flat", wholePolicy, flat, false, "MaxInputValues|context deadline exceeded"},
		// (converting the items may reach the timeout first on a slow machine)
		{"items of wide", itemsPolicy, wide, false, "MaxInputValues|context deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"p.rego": tc.rego}), opa.Options{Timeout: timeout, MaxInputValues: maxValues})
			if err != nil {
				t.Fatal(err)
			}
			d, took, alloc := decideMeasured(t, g, largeInput(tc.payload))
			t.Logf("%d-byte payload: allowed %v in %v, %d MB allocated: %v", len(tc.payload), d.Allowed, took, alloc>>20, d.Reasons)
			if d.Allowed != tc.allowed {
				t.Errorf("allowed = %v, want %v (%v)", d.Allowed, tc.allowed, d.Reasons)
			}
			if tc.reason != "" && (len(d.Reasons) == 0 || d.Reasons[0].Code != policy.CodePolicyError || !containsAny(d.Reasons[0].Message, strings.Split(tc.reason, "|"))) {
				t.Errorf("reasons %v, want a POLICY_ERROR naming %s", d.Reasons, tc.reason)
			}
			if took > timeout+slack {
				t.Errorf("deciding took %v, the timeout is %v", took, timeout)
			}
			if alloc > 64<<20 {
				t.Errorf("deciding allocated %d MB, want under 64", alloc>>20)
			}
		})
	}
}

// TestPolicyInputValueLimit: exactly MaxInputValues values are converted,
// one more is refused with a denial naming the limit.
func TestPolicyInputValueLimit(t *testing.T) {
	g, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"p.rego": wholePolicy}), opa.Options{MaxInputValues: 10})
	if err != nil {
		t.Fatal(err)
	}
	// [0,…] of n-1 numbers is n values.
	arr := func(n int) []byte { return []byte("[" + strings.TrimSuffix(strings.Repeat("0,", n-1), ",") + "]") }
	if d, err := g.Decide(context.Background(), largeInput(arr(10))); err != nil || !d.Allowed {
		t.Errorf("10 values (the limit; count 9): %v, %v", d, err)
	}
	d, err := g.Decide(context.Background(), largeInput(arr(11)))
	if err == nil || d.Allowed || !strings.Contains(err.Error(), "10") || !strings.Contains(err.Error(), "MaxInputValues") {
		t.Errorf("11 values: %v, %v; want a denial naming the limit 10", d, err)
	}
	// What the policy does not read is not counted.
	g2, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"p.rego": fieldPolicy}), opa.Options{MaxInputValues: 10})
	if err != nil {
		t.Fatal(err)
	}
	p := []byte(fmt.Sprintf(`{"pad":%s,"total_cents":7}`, arr(1000)))
	if d, err := g2.Decide(context.Background(), largeInput(p)); err != nil || !d.Allowed {
		t.Errorf("1000 values the policy does not read: %v, %v", d, err)
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestPolicySeesPayloadAsEncodingJSON: what a policy reads of a payload —
// whole or one field — is what encoding/json reads (the decoder OPA's own
// conversion uses): escaped names decoded, the last of repeated names,
// numbers as written.
func TestPolicySeesPayloadAsEncodingJSON(t *testing.T) {
	g, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"p.rego": `package batpak.write

deny contains {"code": "WHOLE", "message": "whole", "v": input.event.payload}

deny contains {"code": "FIELD", "message": "field", "v": input.event.payload.total_cents}
`}), opa.Options{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	// A policy reading only the field gets only the field (pruned input).
	gf, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"p.rego": `package batpak.write

deny contains {"code": "FIELD", "message": "field", "v": input.event.payload.total_cents}
`}), opa.Options{CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{
		`{"total_cents":1,"total_cents":2}`, `{"total\u005fcents":998,"x":[1,{"a":"\ud800"}]}`,
		`{"a":{"b":[true,false,null,-0.5e+3,1E2,"\ud83d\ude00"]},"total_cents":{"n":1,"n":2}}`,
		"{\"\\u0000\":\"\\\"\",\"total_cents\":\"x\\/y\"}", `[1,2]`, `"s"`, `12345678901234567890123`, `{}`,
	}
	for _, doc := range docs {
		var want map[string]any
		dec := json.NewDecoder(strings.NewReader(`{"v":` + doc + `}`))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		d, _ := g.Decide(context.Background(), largeInput([]byte(doc)))
		got := map[string]any{}
		for _, r := range d.Reasons {
			got[r.Code] = r.Context["v"]
		}
		wantField, hasField := any(nil), false
		if m, ok := want["v"].(map[string]any); ok {
			wantField, hasField = m["total_cents"]
		}
		if g, w := mustJSON(t, got["WHOLE"]), mustJSON(t, want["v"]); g != w {
			t.Errorf("%s: the policy reads %s, encoding/json %s", doc, g, w)
		}
		if _, ok := got["FIELD"]; ok != hasField || mustJSON(t, got["FIELD"]) != mustJSON(t, wantField) {
			t.Errorf("%s: the policy reads total_cents %v (%v), encoding/json %v (%v)", doc, got["FIELD"], ok, wantField, hasField)
		}
		d, _ = gf.Decide(context.Background(), largeInput([]byte(doc)))
		var field any
		var ok bool
		for _, r := range d.Reasons {
			if r.Code == "FIELD" {
				field, ok = r.Context["v"], true
			}
		}
		if ok != hasField || mustJSON(t, field) != mustJSON(t, wantField) {
			t.Errorf("%s: a policy reading only total_cents reads %v (%v), encoding/json %v (%v)", doc, field, ok, wantField, hasField)
		}
	}
}
