package opa_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// The decision cache: keyed on exactly the input fields the policy reads,
// so a cached answer is always the answer the policy would give.

// limitPolicy reads principal.tenant, event.kind and event.payload.amount.
const limitPolicy = `package batpak.write

default allow := false

allow if {
	input.principal.tenant == "acme"
	input.event.kind == "0x1:0x1"
	input.event.payload.amount <= 100
}
`

func sortedPaths(g *opa.Gate) []string {
	p := slices.Clone(g.InputPaths())
	slices.Sort(p)
	return p
}

func TestInputPathsListWhatThePolicyReads(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": limitPolicy}, opa.Options{})
	if got := strings.Join(sortedPaths(g), " "); got != "event.kind event.payload.amount principal.tenant" {
		t.Fatalf("InputPaths = %s", got)
	}
	g = loadOPA(t, map[string]string{"write.rego": tenantPolicy, "data.json": tenantData}, opa.Options{})
	if got := strings.Join(sortedPaths(g), " "); got != "event.entity event.kind principal.roles principal.tenant" {
		t.Fatalf("InputPaths = %s", got)
	}
	// A path stops at the first index that is not a constant key; helper
	// packages and functions count.
	g = loadOPA(t, map[string]string{
		"p.rego": `package batpak.write

import data.batpak.helpers

allow if {
	some item in input.event.payload.items
	item.sku in data.skus
	helpers.ok(input.entity)
	input.event.payload.lines[0].qty > 0
}
`,
		"helpers.rego": `package batpak.helpers

ok(e) if e.clock < 100

cap := input.batch.size
`,
		"data.json": `{"skus": ["a"]}`,
	}, opa.Options{})
	if got := strings.Join(sortedPaths(g), " "); got != "batch.size entity event.payload.items event.payload.lines" {
		t.Fatalf("InputPaths = %s", got)
	}
}

// baseLimitInput is admitted by limitPolicy.
func baseLimitInput() *policy.Input {
	in := orderInput(policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}}, "acme:order:1", "1:1", `{"amount": 50, "note": "gift"}`)
	in.Event.CorrelationID = "0190b6c1-0000-7000-8000-000000000001"
	return in
}

func TestCacheKeysOnReferencedFieldsOnly(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": limitPolicy}, opa.Options{})
	if d := decide(t, g, baseLimitInput()); !d.Allowed || d.Cached {
		t.Fatalf("first decision %+v", d)
	}
	if d := decide(t, g, baseLimitInput()); !d.Allowed || !d.Cached {
		t.Fatalf("same input again: %+v, want a cached admit", d)
	}

	// Changing a field the policy reads changes the decision (the first
	// such input is not answered from the cache).
	referenced := map[string]func(in *policy.Input){
		"principal.tenant":     func(in *policy.Input) { in.Principal.Tenant = "globex" },
		"event.kind":           func(in *policy.Input) { in.Event.Kind, in.Event.Type = "0x1:0x2", 2 },
		"event.payload.amount": func(in *policy.Input) { in.Event.Payload = json.RawMessage(`{"amount": 101, "note": "gift"}`) },
		"amount as a string":   func(in *policy.Input) { in.Event.Payload = json.RawMessage(`{"amount": "50", "note": "gift"}`) },
		"amount missing":       func(in *policy.Input) { in.Event.Payload = json.RawMessage(`{"note": "gift"}`) },
		"payload not object":   func(in *policy.Input) { in.Event.Payload = json.RawMessage(`[50]`) },
	}
	for name, mutate := range referenced {
		in := baseLimitInput()
		mutate(in)
		if d := decide(t, g, in); d.Allowed {
			t.Errorf("%s changed: %+v, want a refusal", name, d)
		}
		if d := decide(t, g, in); d.Allowed || !d.Cached {
			t.Errorf("%s changed, asked again: %+v, want a cached refusal", name, d)
		}
	}
	in := baseLimitInput()
	in.Event.Payload = json.RawMessage(`{"amount": 99, "note": "gift"}`)
	if d := decide(t, g, in); !d.Allowed || d.Cached {
		t.Errorf("another amount: %+v, want an uncached admit", d)
	}
	// A payload that is not JSON is never answered from the cache.
	in.Event.Payload = json.RawMessage(`{"amount": 99, "note": `)
	if d, err := g.Decide(context.Background(), in); err == nil || d.Allowed || d.Cached {
		t.Errorf("invalid payload: %+v, %v; want a POLICY_ERROR", d, err)
	}

	// Changing a field it does not read never changes the decision, and
	// is answered from the cache.
	unreferenced := map[string]func(in *policy.Input){
		"event.scope":        func(in *policy.Input) { in.Event.Scope = "elsewhere" },
		"event.entity":       func(in *policy.Input) { in.Event.Entity = "globex:order:9" },
		"event.payload.note": func(in *policy.Input) { in.Event.Payload = json.RawMessage(`{"amount": 50, "note": "no gift"}`) },
		"payload key order": func(in *policy.Input) {
			in.Event.Payload = json.RawMessage(`{"note": "x", "amount": 50, "extra": [1, 2]}`)
		},
		"principal.id":          func(in *policy.Input) { in.Principal.ID = "u2" },
		"principal.roles":       func(in *policy.Input) { in.Principal.Roles = []string{"admin", "auditor"} },
		"action":                func(in *policy.Input) { in.Action = core.ActionImport },
		"event.correlation_id":  func(in *policy.Input) { in.Event.CorrelationID = core.NewEventID().String() },
		"event.causation_id":    func(in *policy.Input) { in.Event.CausationID = core.NewEventID().String() },
		"event.idempotency_key": func(in *policy.Input) { in.Event.IdempotencyKey = "k" },
		"event.expected_clock":  func(in *policy.Input) { in.Event.ExpectedClock = uint64(7) },
		"batch":                 func(in *policy.Input) { in.Batch = &policy.Batch{Size: 3, Index: 2} },
		"entity":                func(in *policy.Input) { in.Entity = policy.Entity{Exists: true, Clock: 9} },
	}
	for name, mutate := range unreferenced {
		in := baseLimitInput()
		mutate(in)
		if d := decide(t, g, in); !d.Allowed || !d.Cached {
			t.Errorf("%s changed: %+v, want the cached admit", name, d)
		}
	}
}

// TestCachedDecisionsMatchThePolicy is the property: for random inputs
// over small domains (so that keys repeat), the cached gate answers
// exactly what the same policy answers without a cache.
func TestCachedDecisionsMatchThePolicy(t *testing.T) {
	policies := map[string]map[string]string{
		"limit": {"p.rego": limitPolicy},
		"tenant": {"write.rego": tenantPolicy + `
deny contains {"code": "ADMIN_ONLY", "message": "imports are for admins"} if {
	input.action == "import"
	not "admin" in input.principal.roles
}
`, "data.json": tenantData},
		"imports and helpers": {"p.rego": `package batpak.write

import input.principal as who

owner(p, e) if startswith(e.entity, concat(":", [p.tenant, ""]))

allow if {
	owner(who, input.event)
	data.limits[who.tenant] >= object.get(input.event.payload, "amount", 0)
}

deny contains sprintf("clock %d", [input.entity.clock]) if {
	input.entity.exists
	input.event.expected_clock != input.entity.clock
	input.event.expected_clock != null
}

deny contains "batch too big" if input.batch.size > 2
`, "data.json": `{"limits": {"acme": 100, "globex": 10}}`},
		"payload shapes": {"p.rego": `package batpak.write

allow if input.event.payload.amount <= 100

allow if {
	some item in input.event.payload.items
	item.sku == "free"
}

deny contains "nested" if input.event.payload.meta.flags.block == true

deny contains "first line" if input.event.payload.items[0].qty > 5
`},
	}
	r := rand.New(rand.NewSource(1))
	pick := func(xs ...string) string { return xs[r.Intn(len(xs))] }
	payloads := []string{
		`{"amount": 5}`, `{"amount": 100}`, `{"amount": 101}`, `{"amount": 100.0}`, `{"amount": 1e2}`, `{"amount": 1e3}`,
		`{"amount": "5"}`, `{"amount": null}`, `{}`, `null`, `[]`, `5`, `"amount"`,
		`{"amount": {"value": 5}}`, `{"amount": [5]}`, `{"amount": 5, "note": "n"}`, `{ "amount" : 5 }`,
		`{"amount": 5, "amount": 500}`, `{"amount": 500, "amount": 5}`, `{"amo\u0075nt": 500}`, `{"amount\u0000": 500, "amount": 5}`,
		`{"items": [{"sku": "free"}]}`, `{"items": [{"sku": "paid", "qty": 9}]}`, `{"items": [{"sku": "free", "qty": 9}], "amount": 1}`,
		`{"items": {"x": {"sku": "free"}}}`, `{"meta": {"flags": {"block": true}}, "amount": 1}`, `{"meta": {"flags": {"block": "true"}}, "amount": 1}`,
		`{"meta": {"flags": {"block": false}}, "amount": 1}`, `{"meta.flags": {"block": true}, "amount": 1}`, `{"meta": {"flags.block": true}, "amount": 1}`,
	}
	roles := [][]string{nil, {}, {"clerk"}, {"admin"}, {"clerk", "admin"}, {"admin", "clerk"}, {"admin\x00clerk"}, {"admin", ""}, {""}}
	// Mutators of single fields, for re-asking a known input changed a
	// little.
	mutators := []func(in *policy.Input){
		func(in *policy.Input) { in.Action = core.Action(pick("append", "batch", "import")) },
		func(in *policy.Input) { in.Principal.ID = pick("u1", "u2") },
		func(in *policy.Input) { in.Principal.Tenant = pick("acme", "globex", "", "acme\x00") },
		func(in *policy.Input) { in.Principal.Roles = roles[r.Intn(len(roles))] },
		func(in *policy.Input) { in.Event.Entity = pick("acme:1", "globex:1", "acme", ":") },
		func(in *policy.Input) { in.Event.Scope = pick("shop", "ops") },
		func(in *policy.Input) {
			k, _ := core.ParseKind(pick("1:1", "1:2", "2:1"))
			in.Event.Kind, in.Event.Category, in.Event.Type = k.String(), k.Category(), k.Type()
		},
		func(in *policy.Input) { in.Event.Payload = json.RawMessage(payloads[r.Intn(len(payloads))]) },
		func(in *policy.Input) { in.Event.CorrelationID = pick("c1", "c2") },
		func(in *policy.Input) { in.Event.IdempotencyKey = pick("", "k") },
		func(in *policy.Input) {
			in.Event.ExpectedClock = []any{nil, "no_events", uint64(0), uint64(1)}[r.Intn(4)]
		},
		func(in *policy.Input) { in.Entity = policy.Entity{Exists: r.Intn(2) == 0, Clock: uint64(r.Intn(3))} },
		func(in *policy.Input) {
			in.Batch = []*policy.Batch{nil, {Size: 1, Index: 0}, {Size: 3, Index: 1}}[r.Intn(3)]
		},
	}
	randomInput := func() *policy.Input {
		k, _ := core.ParseKind(pick("1:1", "1:2", "2:1"))
		in := &policy.Input{
			Action:    core.Action(pick("append", "batch", "import")),
			Principal: policy.Principal{ID: pick("u1", "u2"), Tenant: pick("acme", "globex", "", "acme\x00"), Roles: roles[r.Intn(len(roles))]},
			Event: policy.Event{
				Entity: pick("acme:1", "globex:1", "acme", ":"), Scope: pick("shop", "ops"),
				Kind: k.String(), Category: k.Category(), Type: k.Type(),
				Payload:       json.RawMessage(payloads[r.Intn(len(payloads))]),
				CorrelationID: pick("c1", "c2"), CausationID: pick("", "x"), IdempotencyKey: pick("", "k"),
			},
			Entity: policy.Entity{Exists: r.Intn(2) == 0, Clock: uint64(r.Intn(3))},
		}
		switch r.Intn(4) {
		case 1:
			in.Event.ExpectedClock = "no_events"
		case 2:
			in.Event.ExpectedClock = uint64(r.Intn(3))
		}
		if r.Intn(2) == 0 {
			in.Batch = &policy.Batch{Size: 1 + r.Intn(3), Index: r.Intn(3)}
		}
		return in
	}
	for name, files := range policies {
		t.Run(name, func(t *testing.T) {
			dir := writeBundle(t, files)
			cached, err := opa.Load(context.Background(), dir, opa.Options{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if cached.InputPaths() == nil {
				t.Fatal("the policy is not cached")
			}
			reference, err := opa.Load(context.Background(), dir, opa.Options{CacheSize: -1, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			hits, admits := 0, 0
			var pool []policy.Input
			for i := 0; i < 1500; i++ {
				var in *policy.Input
				if i%2 == 0 || len(pool) == 0 {
					in = randomInput()
					pool = append(pool, *in)
				} else { // a known input again, with one field changed (or none)
					c := pool[r.Intn(len(pool))]
					in = &c
					if m := r.Intn(len(mutators) + 1); m < len(mutators) {
						mutators[m](in)
					}
				}
				got, gerr := cached.Decide(context.Background(), in)
				want, werr := reference.Decide(context.Background(), in)
				if want.Cached {
					t.Fatal("the reference gate cached")
				}
				if got.Cached {
					hits++
				}
				if want.Allowed {
					admits++
				}
				if got.Allowed != want.Allowed || reasonsOf(got) != reasonsOf(want) || (gerr == nil) != (werr == nil) {
					b, _ := json.Marshal(in)
					t.Fatalf("input %s (principal %q)\ncached (hit %v): %v %s %v\npolicy:          %v %s %v", b, in.Principal, got.Cached, got.Allowed, reasonsOf(got), gerr, want.Allowed, reasonsOf(want), werr)
				}
			}
			if hits < 100 || admits == 0 || admits == 1500 {
				t.Fatalf("%d cache hits, %d admits: the test does not exercise the cache", hits, admits)
			}
		})
	}
}

func reasonsOf(d opa.Decision) string {
	var b strings.Builder
	for _, r := range d.Reasons {
		fmt.Fprintf(&b, "%s:%s;", r.Code, r.Message)
	}
	return b.String()
}

// Payload keys with dots and other characters that mean something in a
// path key the cache correctly: input.event.payload["a.b"] is not
// input.event.payload.a.b.
func TestCacheKeysOnOddPayloadKeys(t *testing.T) {
	keys := []string{"a.b", "a*", "a?", "x|y", "#", "@this", "", "a\\b", `q"t`, "sp ace", "ünï", "1", "a.b.c", "!x", "=", "%"}
	var rules strings.Builder
	rules.WriteString("package batpak.write\n\n")
	for i, k := range keys {
		fmt.Fprintf(&rules, "deny contains \"key %d\" if input.event.payload[%q] == 1\n", i, k)
	}
	rules.WriteString(`deny contains "nested" if input.event.payload.o["k.l"].m == 1` + "\n")
	g := loadOPA(t, map[string]string{"p.rego": rules.String()}, opa.Options{})
	ref := loadOPA(t, map[string]string{"p.rego": rules.String()}, opa.Options{CacheSize: -1})
	paths := g.InputPaths()
	if len(paths) != len(keys)+1 || !slices.Contains(paths, `event.payload["a.b"]`) || !slices.Contains(paths, `event.payload.o["k.l"].m`) {
		t.Fatalf("InputPaths = %q", paths)
	}
	payload := func(fields map[string]any) string {
		b, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// agree checks that the cached gate answers as the policy does.
	agree := func(p string) opa.Decision {
		t.Helper()
		in := orderInput(clerk, "acme:1", "1:1", p)
		var d opa.Decision
		for round := 0; round < 2; round++ {
			var err error
			d, err = g.Decide(context.Background(), in)
			w, _ := ref.Decide(context.Background(), in)
			if err != nil || d.Allowed != w.Allowed || reasonsOf(d) != reasonsOf(w) {
				t.Fatalf("payload %s round %d: cached %+v (%v), policy %+v", p, round, d, err, w)
			}
		}
		return d
	}
	check := func(p string, wantDenied []string) {
		t.Helper()
		d := agree(p)
		{
			var got []string
			for _, r := range d.Reasons {
				got = append(got, r.Message)
			}
			slices.Sort(got)
			slices.Sort(wantDenied)
			if strings.Join(got, ",") != strings.Join(wantDenied, ",") {
				t.Fatalf("payload %s: denied for %v, want %v", p, got, wantDenied)
			}
		}
	}
	// Look-alikes first, so that a key confusing them would be cached
	// wrongly for the real thing.
	check(payload(map[string]any{"a": map[string]any{"b": 1}}), nil)
	check(payload(map[string]any{"a": map[string]any{"b": map[string]any{"c": 1}}}), nil)
	check(payload(map[string]any{"ab": 1, "a": 1, "x": 1, "y": 1, "this": 1, "a\\\\b": 1, "sp": 1, "o": map[string]any{"k": map[string]any{"l": map[string]any{"m": 1}}}}), nil)
	check(`{"a": ["x", 1]}`, nil)
	check(`[1, 1, 1]`, nil)
	for i, k := range keys {
		check(payload(map[string]any{k: 1}), []string{fmt.Sprintf("key %d", i)})
		check(payload(map[string]any{k: 2}), nil)
	}
	check(payload(map[string]any{"o": map[string]any{"k.l": map[string]any{"m": 1}}}), []string{"nested"})
	// Escaped in the JSON text, the same key.
	check(`{"a\u002eb": 1}`, []string{"key 0"})
	// Duplicate keys: the policy sees one of them; the cache must agree
	// (both orders were decided, and cached, above with one key).
	agree(`{"a.b": 2, "a.b": 1}`)
	agree(`{"a.b": 1, "a.b": 2}`)
}

func TestReloadStartsAnEmptyCache(t *testing.T) {
	dir := writeBundle(t, map[string]string{"p.rego": limitPolicy})
	g, err := opa.Load(context.Background(), dir, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	decide(t, g, baseLimitInput())
	if d := decide(t, g, baseLimitInput()); !d.Cached {
		t.Fatal("not cached")
	}
	// The same bundle again: nothing cached survives.
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, g, baseLimitInput()); d.Cached || !d.Allowed {
		t.Fatalf("after reload: %+v", d)
	}
	// A changed bundle: the old answer is not served.
	writeFiles(t, dir, map[string]string{"p.rego": strings.Replace(limitPolicy, "<= 100", "<= 10", 1)})
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, g, baseLimitInput()); d.Cached || d.Allowed {
		t.Fatalf("after reload with a lower limit: %+v", d)
	}
	// A refused reload keeps the cache of the policy in force.
	writeFiles(t, dir, map[string]string{"p.rego": "package batpak.write\n\nallow if {\n"})
	if err := g.Reload(context.Background()); err == nil {
		t.Fatal("broken bundle loaded")
	}
	if d := decide(t, g, baseLimitInput()); !d.Cached || d.Allowed {
		t.Fatalf("after a refused reload: %+v", d)
	}
}

// Policies whose decision does not follow from input paths are not
// cached, and still decide correctly.
func TestUncacheablePolicies(t *testing.T) {
	cases := map[string]string{
		"time.now_ns": `allow if {
	time.now_ns() > 0
	input.principal.tenant == "acme"
}`,
		"rand.intn in a helper": `jitter := rand.intn("x", 10)

allow if {
	jitter >= 0
	input.principal.tenant == "acme"
}`,
		"input as a whole": `allow if object.get(input, ["principal", "tenant"], "") == "acme"`,
		"input assigned": `allow if {
	x := input
	x.principal.tenant == "acme"
}`,
		"dynamic key": `allow if {
	some k
	input[k].tenant == "acme"
}`,
		"walk": `allow if {
	walk(input, [path, "acme"])
	path == ["principal", "tenant"]
}`,
		"import input": `import input as req

allow if req.principal.tenant == "acme"`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\n" + body + "\n"}, opa.Options{})
			if p := g.InputPaths(); p != nil {
				t.Fatalf("InputPaths = %q, want nil (not cacheable)", p)
			}
			acme := orderInput(clerk, "acme:1", "1:1", `{}`)
			other := orderInput(policy.Principal{ID: "u1", Tenant: "globex"}, "acme:1", "1:1", `{}`)
			for i := 0; i < 3; i++ {
				if d := decide(t, g, acme); !d.Allowed || d.Cached {
					t.Fatalf("acme: %+v", d)
				}
				if d := decide(t, g, other); d.Allowed || d.Cached {
					t.Fatalf("globex: %+v", d)
				}
			}
		})
	}
}

// A small cache that keeps filling up still answers correctly.
func TestBoundedCache(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": limitPolicy}, opa.Options{CacheSize: 3})
	hits := 0
	for i := 0; i < 200; i++ {
		amount := (i / 2 * 37) % 8 * 30 // 0..210, each asked twice in a row
		in := orderInput(clerk, "acme:1", "1:1", fmt.Sprintf(`{"amount": %d}`, amount))
		d := decide(t, g, in)
		if d.Allowed != (amount <= 100) {
			t.Fatalf("amount %d: %+v", amount, d)
		}
		if d.Cached {
			hits++
		}
	}
	if hits == 0 {
		t.Fatal("no cache hits")
	}
	off := loadOPA(t, map[string]string{"p.rego": limitPolicy}, opa.Options{CacheSize: -1})
	for i := 0; i < 3; i++ {
		if d := decide(t, off, baseLimitInput()); d.Cached || !d.Allowed {
			t.Fatalf("cache off: %+v", d)
		}
	}
}

// A built-in that is not deterministic makes a policy uncached however it
// is called: named as a value in `with` too (rand.intn standing for a
// function would otherwise replay its first answer for ever); so does one
// whose answer changes with the clock.
func TestNondeterministicWithNotCached(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

pick(s, n) := 0

deny contains "unlucky" if {
	v := pick(input.event.entity, 2) with pick as rand.intn
	v == 0
}
`}, opa.Options{})
	if paths := g.InputPaths(); paths != nil {
		t.Fatalf("input paths %v: the policy is cached, want it not to be", paths)
	}
	if _, ok := g.CacheKeys(); ok {
		t.Fatal("CacheKeys says cacheable")
	}
	// Nor is one verifying certificates against the clock (OPA does not
	// flag it): a certificate valid now may have expired at the next write.
	g = loadOPA(t, map[string]string{"p.rego": `package batpak.write

deny contains "BAD_CERT" if {
	[valid, _] := crypto.x509.parse_and_verify_certificates(input.event.payload.chain)
	not valid
}
`}, opa.Options{})
	if paths := g.InputPaths(); paths != nil {
		t.Fatalf("a policy verifying certificates: input paths %v, want it not cached", paths)
	}
}

// The decision cache keeps a long key (a megabyte payload field the
// policy reads) as its digest, not its bytes: 200 distinct megabyte
// fields leave the heap about as it was, and decisions stay apart.
func TestDecisionCacheKeepsNoLongKeys(t *testing.T) {
	c := opa.NewDecisionCache([][]string{{"event", "payload", "pad"}}, true, 4096)
	in := func(i int) *policy.Input {
		x := baseLimitInput()
		x.Event.Payload = json.RawMessage(fmt.Sprintf(`{"pad": "%s%d"}`, strings.Repeat("x", 1<<20), i))
		return x
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 200 {
		c.Put(in(i), opa.Decision{Allowed: i%10 != 0})
	}
	for i := range 20 {
		if d, ok := c.Get(in(i)); !ok || !d.Cached || d.Allowed != (i%10 != 0) {
			t.Fatalf("item %d: %+v, %v; want its cached decision", i, d, ok)
		}
	}
	if _, ok := c.Get(in(1000)); ok {
		t.Fatal("a field never decided is found in the cache")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 32<<20 {
		t.Fatalf("the heap grew by %d MiB over 200 decisions on megabyte fields", grew>>20)
	}
}

// A denial whose reasons are larger than MaxCachedReasonBytes is not
// cached (a cache's memory is bounded by its entries); a small one is.
func TestLargeReasonsNotCached(t *testing.T) {
	g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

deny contains concat("", ["x" | some i in numbers.range(1, 600)]) if input.event.entity == "big:1"

deny contains "SMALL" if input.event.entity == "small:1"
`}, opa.Options{})
	for _, c := range []struct {
		entity string
		cached bool
	}{{"big:1", false}, {"small:1", true}} {
		in := baseLimitInput()
		in.Event.Entity = c.entity
		decide(t, g, in)
		if d := decide(t, g, in); d.Allowed || d.Cached != c.cached {
			t.Fatalf("%s asked again: %+v, want cached %v", c.entity, d, c.cached)
		}
	}
}

// A policy reading more than MaxCachedPaths input fields is not cached
// (each write would build a key of every one of them); one reading
// exactly that many is, and its key reads a large payload's fields as
// Lookup would.
func TestCacheNotUsedPastMaxCachedPaths(t *testing.T) {
	rules := func(n int) string {
		var b strings.Builder
		b.WriteString("package batpak.write\n\ndefault allow := false\n\nallow if input.event.payload.ok == 1\n\n")
		for i := range n - 1 {
			fmt.Fprintf(&b, "r%d if input.event.payload.k%d\n", i, i)
		}
		return b.String()
	}
	var payload strings.Builder
	payload.WriteString(`{"ok":1`)
	for i := range 3000 {
		fmt.Fprintf(&payload, `,"m%d":1`, i)
	}
	payload.WriteString(`,"k7":true}`)
	in := orderInput(policy.Principal{ID: "u1", Tenant: "acme"}, "acme:order:1", "1:1", payload.String())
	for _, tc := range []struct {
		paths  int
		cached bool
	}{{opa.MaxCachedPaths, true}, {opa.MaxCachedPaths + 1, false}} {
		g := loadOPA(t, map[string]string{"p.rego": rules(tc.paths)}, opa.Options{})
		if got := len(g.InputPaths()); tc.cached && got != tc.paths {
			t.Fatalf("%d paths: InputPaths has %d", tc.paths, got)
		}
		decide(t, g, in)
		if d := decide(t, g, in); !d.Allowed || d.Cached != tc.cached {
			t.Fatalf("a policy reading %d input fields, the same input again: %+v, want cached %v", tc.paths, d, tc.cached)
		}
		if _, ok := g.CacheKeys(); ok != tc.cached {
			t.Fatalf("%d paths: CacheKeys cacheable %v", tc.paths, ok)
		}
		// A field the policy reads changed: not answered from the cache.
		in2 := orderInput(policy.Principal{ID: "u1", Tenant: "acme"}, "acme:order:1", "1:1", strings.Replace(payload.String(), `"k7":true`, `"k7":false`, 1))
		if d := decide(t, g, in2); d.Cached {
			t.Fatalf("%d paths: a changed field read answered from the cache", tc.paths)
		}
	}
}

// A policy reading field after field down a deep chain of objects would
// key its cache on the payload many times over (each level almost the
// whole payload): such an input is decided without the cache, rightly,
// while a policy reading a few levels of the same payload is cached.
func TestCacheSkipsKeysCostlierThanTheDecision(t *testing.T) {
	const depth = 100
	var rules strings.Builder
	rules.WriteString("package batpak.write\n\ndefault allow := true\n\n")
	path := "input.event.payload"
	for d := range depth {
		path += ".x"
		fmt.Fprintf(&rules, "r%d if %s\n", d, path)
	}
	rules.WriteString("deny contains \"DEEP\" if input.event.payload.x == \"never\"\n")
	payload := strings.Repeat(`{"x":`, depth) + `"` + strings.Repeat("a", 100_000) + `"` + strings.Repeat("}", depth)
	in := orderInput(policy.Principal{ID: "u1", Tenant: "acme"}, "acme:order:1", "1:1", payload)
	deep := loadOPA(t, map[string]string{"p.rego": rules.String()}, opa.Options{})
	for range 2 {
		if d := decide(t, deep, in); !d.Allowed || d.Cached {
			t.Fatalf("a policy reading %d nested levels: %+v, want allowed and not cached", depth, d)
		}
	}
	shallow := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\ndefault allow := true\n\ndeny contains \"X\" if input.event.payload.x.x.x == 1\n"}, opa.Options{})
	decide(t, shallow, in)
	if d := decide(t, shallow, in); !d.Allowed || !d.Cached {
		t.Fatalf("a policy reading 3 levels of the same payload: %+v, want a cached allow", d)
	}
}

// An input path is written as Rego would write it, so that a member
// named with a dot, a bracket or a quote reads back as one key.
func TestInputPathsReadBack(t *testing.T) {
	for _, keys := range [][]string{
		{"principal", "tenant"},
		{"event", "payload", "a.b"},
		{"event", "payload", `q"]x`, "y"},
		{"event", "payload", "", "1st", "ünï", "x_1"},
	} {
		p := opa.JoinPath(keys)
		got, ok := opa.SplitPath(p)
		if !ok || !slices.Equal(got, keys) {
			t.Errorf("JoinPath(%q) = %s, read back as %q %v", keys, p, got, ok)
		}
	}
	if p := opa.JoinPath([]string{"event", "payload", "a.b"}); p != `event.payload["a.b"]` {
		t.Errorf("a dotted member: %s", p)
	}
	for _, bad := range []string{"", ".x", `x["a`, `x[1]`, "x..y", "x.1y"} {
		if keys, ok := opa.SplitPath(bad); ok {
			t.Errorf("SplitPath(%q) = %q, want refused", bad, keys)
		}
	}
	g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow if input.event.payload[\"a.b\"] == \"real\"\n"}, opa.Options{})
	if got := g.InputPaths(); len(got) != 1 || got[0] != `event.payload["a.b"]` {
		t.Fatalf("InputPaths %q", got)
	}
}
