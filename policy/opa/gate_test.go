package opa_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// The OPA gate: loading bundles, decisions, failing closed, hot reload.

// loadOPA loads files as a bundle. Unless opts say otherwise the
// evaluation timeout is generous: under -race on a busy machine even the
// default (1s) can run out, and a timeout is not what these tests are
// about (the timeout test sets its own).
func loadOPA(t testing.TB, files map[string]string, opts opa.Options) *opa.Gate {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	g, err := opa.Load(context.Background(), writeBundle(t, files), opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return g
}

// orderInput is a write of an order by principal p.
func orderInput(p policy.Principal, entity, kind, payload string) *policy.Input {
	k, err := core.ParseKind(kind)
	if err != nil {
		panic(err)
	}
	return &policy.Input{
		Action:    core.ActionAppend,
		Principal: p,
		Event: policy.Event{
			Entity: entity, Scope: "shop", Kind: k.String(), Category: k.Category(), Type: k.Type(),
			Payload: json.RawMessage(payload), CorrelationID: core.NewEventID().String(),
		},
	}
}

func decide(t testing.TB, g *opa.Gate, in *policy.Input) opa.Decision {
	t.Helper()
	d, err := g.Decide(context.Background(), in)
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return d
}

// mustFailClosed checks that g refuses in with POLICY_ERROR, cause in
// the message, through Decide and Evaluate alike.
func mustFailClosed(t testing.TB, g *opa.Gate, in *policy.Input, cause string) {
	t.Helper()
	d, err := g.Decide(context.Background(), in)
	if err == nil || d.Allowed {
		t.Fatalf("Decide = %+v, %v; want a POLICY_ERROR denial", d, err)
	}
	if len(d.Reasons) != 1 || d.Reasons[0].Code != policy.CodePolicyError || !strings.Contains(d.Reasons[0].Message, cause) {
		t.Fatalf("reasons %+v, want POLICY_ERROR mentioning %q", d.Reasons, cause)
	}
	if !strings.Contains(err.Error(), cause) {
		t.Fatalf("error %q does not mention %q", err, cause)
	}
	den := g.Evaluate(context.Background(), in)
	if den == nil || den.Code != policy.CodePolicyError || den.Gate != g.Name() {
		t.Fatalf("Evaluate = %+v", den)
	}
}

func TestOPALoadsADirectoryBundle(t *testing.T) {
	g := loadOPA(t, map[string]string{
		"write.rego": tenantPolicy,
		"data.json":  tenantData,
		".manifest":  `{"revision": "2024-06-01.1", "roots": ["batpak", "roles"]}`,
	}, opa.Options{})
	if g.Name() != "opa" || g.Revision() != "2024-06-01.1" {
		t.Fatalf("name %q revision %q", g.Name(), g.Revision())
	}
	ok := decide(t, g, orderInput(clerk, "acme:order:1", "1:1", `{}`))
	if !ok.Allowed || len(ok.Reasons) != 0 || ok.Revision != "2024-06-01.1" {
		t.Fatalf("decision %+v", ok)
	}
	if g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:2", `{}`)) != nil {
		t.Fatal("a clerk may write 0x1:0x2")
	}
	cases := map[string]*policy.Input{
		"other tenant's entity": orderInput(clerk, "globex:order:1", "1:1", `{}`),
		"kind not for clerks":   orderInput(clerk, "acme:order:1", "2:1", `{}`),
		"no principal":          orderInput(policy.Principal{}, "acme:order:1", "1:1", `{}`),
	}
	for name, in := range cases {
		d := g.Evaluate(context.Background(), in)
		if d == nil || d.Code != policy.CodeNotAllowed || len(d.Reasons) != 1 || d.Gate != "opa" || d.Revision != "2024-06-01.1" {
			t.Errorf("%s: denial %+v", name, d)
		}
	}
	admin := policy.Principal{ID: "root", Tenant: "acme", Roles: []string{"clerk", "admin"}}
	if d := g.Evaluate(context.Background(), orderInput(admin, "acme:order:1", "2:1", `{}`)); d != nil {
		t.Fatalf("admin: %v", d)
	}
}

func TestOPALoadsYAMLDataAndSkipsTestFiles(t *testing.T) {
	g := loadOPA(t, map[string]string{
		"write.rego":      tenantPolicy,
		"data.yaml":       "roles:\n  clerk:\n    kinds: [\"0x3:0x3\"]\n",
		"write_test.rego": "package batpak.write_test\n\nthis is not rego at all\n",
	}, opa.Options{Name: "yaml"})
	if g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "3:3", `{}`)) != nil {
		t.Fatal("the YAML data was not loaded")
	}
	if g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", `{}`)) == nil {
		t.Fatal("0x1:0x1 admitted")
	}
}

func TestOPAManifestRootsAreEnforced(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"write.rego": tenantPolicy,
		"other.rego": "package elsewhere\n\nx := 1\n",
		"data.json":  tenantData,
		".manifest":  `{"revision": "r1", "roots": ["batpak", "roles"]}`,
	})
	_, err := opa.Load(context.Background(), dir, opa.Options{})
	if err == nil || !strings.Contains(err.Error(), "roots") || !strings.Contains(err.Error(), "other.rego") {
		t.Fatalf("Load with a module outside the roots: %v", err)
	}
	// Data outside the roots is refused too.
	dir = writeBundle(t, map[string]string{
		"write.rego": tenantPolicy,
		"data.json":  tenantData,
		".manifest":  `{"revision": "r1", "roots": ["batpak"]}`,
	})
	if _, err := opa.Load(context.Background(), dir, opa.Options{}); err == nil || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("Load with data outside the roots: %v", err)
	}
}

// writeTarball writes a bundle tarball (.tar.gz) holding files.
func writeTarball(t testing.TB, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "/" + name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOPALoadsATarball(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bundle.tar.gz")
	writeTarball(t, path, map[string]string{
		"batpak/write/policy.rego": tenantPolicy,
		"data.json":                tenantData,
		".manifest":                `{"revision": "tar-1", "roots": ["batpak", "roles"]}`,
	})
	g, err := opa.Load(context.Background(), path, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if g.Revision() != "tar-1" {
		t.Fatalf("revision %q", g.Revision())
	}
	if d := g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", `{}`)); d != nil {
		t.Fatalf("denied: %v", d)
	}
	if d := g.Evaluate(context.Background(), orderInput(clerk, "globex:order:1", "1:1", `{}`)); d == nil || d.Revision != "tar-1" {
		t.Fatalf("denial %+v", d)
	}
	// Reload reads the tarball again.
	writeTarball(t, path, map[string]string{
		"write.rego": "package batpak.write\n\ndeny contains \"frozen\"\n",
		".manifest":  `{"revision": "tar-2"}`,
	})
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", `{}`)); d == nil || d.Code != "DENIED" || d.Message != "frozen" || d.Revision != "tar-2" {
		t.Fatalf("after reload: %+v", d)
	}
	// Its *_test.rego files (at any depth) are left out, as a directory's
	// are: a test file's rules never decide a write, and its `with input
	// as` does not make the gate read the input as a whole (uncached, the
	// payload converted whole).
	withTests := map[string]string{
		"write.rego":           "package batpak.write\n\ndeny contains \"too much\" if input.event.payload.amount > 100\n",
		"write_test.rego":      "package batpak.write_test\n\nimport data.batpak.write\n\ntest_big if {\n\twrite.deny[\"too much\"] with input as {\"event\": {\"payload\": {\"amount\": 101}}}\n}\n",
		"more/extra_test.rego": "package batpak.write\n\ndeny contains \"from a test file\"\n",
		".manifest":            `{"revision": "tar-3"}`,
	}
	writeTarball(t, path, withTests)
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	fromDir := loadOPA(t, withTests, opa.Options{})
	if got, want := strings.Join(g.InputPaths(), ","), strings.Join(fromDir.InputPaths(), ","); got != want || want != "event.payload.amount" {
		t.Fatalf("a tarball with test files reads input paths %q, the same files in a directory %q: want event.payload.amount for both", got, want)
	}
	big := `{"amount": 5, "items": [` + strings.Repeat("1,", opa.DefaultMaxInputValues) + `1]}`
	if d := g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", big)); d != nil {
		t.Fatalf("a tarball with test files denied a write its policy allows (the test files judged it, or made it read the payload whole): %+v", d)
	}
	if d := g.Evaluate(context.Background(), orderInput(clerk, "acme:order:1", "1:1", `{"amount": 101}`)); d == nil || d.Message != "too much" || d.Revision != "tar-3" {
		t.Fatalf("a tarball with test files: %+v, want its policy's denial", d)
	}
	// A tarball with a module outside its roots is refused.
	bad := filepath.Join(t.TempDir(), "bad.tar.gz")
	writeTarball(t, bad, map[string]string{
		"write.rego": tenantPolicy,
		"x.rego":     "package x\n\ny := 1\n",
		".manifest":  `{"roots": ["batpak"]}`,
	})
	if _, err := opa.Load(context.Background(), bad, opa.Options{}); err == nil || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("tarball outside roots: %v", err)
	}
	// Not a tarball at all.
	junk := filepath.Join(t.TempDir(), "junk.tar.gz")
	if err := os.WriteFile(junk, []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := opa.Load(context.Background(), junk, opa.Options{}); err == nil {
		t.Fatal("a junk tarball loaded")
	}
}

func TestOPARefusesBundlesWithoutADecision(t *testing.T) {
	cases := map[string]map[string]string{
		"no modules":                {"data.json": `{}`},
		"another package":           {"p.rego": "package authz\n\nallow := true\n"},
		"no allow or deny":          {"p.rego": "package batpak.write\n\nhelper := true\n"},
		"decision in a sub-package": {"p.rego": "package batpak.write.rules\n\nallow := true\n"},
		"syntax error":              {"broken.rego": "package batpak.write\n\nallow if {\n"},
		"compile error":             {"broken.rego": "package batpak.write\n\nallow if undefined_function(input)\n"},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			g, err := opa.Load(context.Background(), writeBundle(t, files), opa.Options{})
			if err == nil || g != nil {
				t.Fatalf("Load = %v, %v; want an error", g, err)
			}
			if strings.Contains(name, "error") && !strings.Contains(err.Error(), "broken.rego") {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
	if _, err := opa.Load(context.Background(), filepath.Join(t.TempDir(), "missing"), opa.Options{}); err == nil {
		t.Fatal("a missing bundle loaded")
	}
}

func TestOPADenyReasons(t *testing.T) {
	g := loadOPA(t, map[string]string{"write.rego": `package batpak.write

allow := true

deny contains {"code": "LIMIT", "message": "amount over the limit", "limit": 100, "amount": input.event.payload.amount} if {
	input.event.payload.amount > 100
}

deny contains {"code": "SKU", "msg": "unknown sku", "sku": input.event.payload.sku} if {
	not input.event.payload.sku in {"a", "b"}
}

deny contains "no notes on big orders" if {
	input.event.payload.amount > 100
	input.event.payload.note
}

deny contains {"message": "a code-less reason"} if input.event.payload.codeless
`, ".manifest": `{"revision": "v7"}`}, opa.Options{Name: "orders"})

	if d := decide(t, g, orderInput(clerk, "acme:1", "1:1", `{"amount": 5, "sku": "a"}`)); !d.Allowed || d.Reasons != nil {
		t.Fatalf("decision %+v", d)
	}
	den := g.Evaluate(context.Background(), orderInput(clerk, "acme:1", "1:1", `{"amount": 500, "sku": "z", "note": "x", "codeless": true}`))
	if den == nil {
		t.Fatal("admitted: allow true does not override deny")
	}
	if den.Gate != "orders" || den.Revision != "v7" {
		t.Fatalf("denial gate %q revision %q", den.Gate, den.Revision)
	}
	// Every reason, ordered by code then message; extra fields in Context.
	var got []string
	for _, r := range den.Reasons {
		got = append(got, r.Code+"|"+r.Message)
	}
	want := []string{"DENIED|a code-less reason", "DENIED|no notes on big orders", "LIMIT|amount over the limit", "SKU|unknown sku"}
	if strings.Join(got, ";") != strings.Join(want, ";") {
		t.Fatalf("reasons\n got %v\nwant %v", got, want)
	}
	if den.Code != "DENIED" || den.Message != "a code-less reason" || den.Context != nil {
		t.Fatalf("first reason: %+v", den)
	}
	limit := den.Reasons[2].Context
	if len(limit) != 2 || fmt.Sprint(limit["limit"]) != "100" || fmt.Sprint(limit["amount"]) != "500" {
		t.Fatalf("LIMIT context %v", limit)
	}
	if sku := den.Reasons[3].Context; len(sku) != 1 || sku["sku"] != "z" {
		t.Fatalf("SKU context %v", sku)
	}
	if den.Reasons[1].Context != nil {
		t.Fatalf("string reason context %v", den.Reasons[1].Context)
	}
	if !strings.Contains(den.Error(), "LIMIT: amount over the limit") || !den.Has("SKU") {
		t.Fatalf("Error() = %s", den.Error())
	}
}

// A policy with deny rules only admits what it does not deny; a policy
// whose allow rule is undefined for an input refuses it with NOT_ALLOWED.
func TestOPAAllowAndDenyDefaults(t *testing.T) {
	denyOnly := loadOPA(t, map[string]string{"p.rego": `package batpak.write

deny contains {"code": "BIG", "message": "too big"} if input.event.payload.amount > 100
`}, opa.Options{})
	if d := decide(t, denyOnly, orderInput(policy.Principal{}, "x", "1:1", `{"amount": 1}`)); !d.Allowed {
		t.Fatalf("deny-only policy refused what it does not deny: %+v", d)
	}
	if d := decide(t, denyOnly, orderInput(policy.Principal{}, "x", "1:1", `{}`)); !d.Allowed {
		t.Fatalf("deny-only policy, no amount: %+v", d)
	}
	if d := decide(t, denyOnly, orderInput(policy.Principal{}, "x", "1:1", `{"amount": 101}`)); d.Allowed || d.Reasons[0].Code != "BIG" {
		t.Fatalf("deny-only policy: %+v", d)
	}

	allowOnly := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if input.action == "append"
`}, opa.Options{})
	if d := decide(t, allowOnly, orderInput(clerk, "x", "1:1", `{}`)); !d.Allowed {
		t.Fatalf("allow: %+v", d)
	}
	in := orderInput(clerk, "x", "1:1", `{}`)
	in.Action = core.ActionImport
	d := decide(t, allowOnly, in)
	if d.Allowed || len(d.Reasons) != 1 || d.Reasons[0].Code != policy.CodeNotAllowed {
		t.Fatalf("undefined allow: %+v", d)
	}

	// allow := false with a deny that does not fire: NOT_ALLOWED.
	both := loadOPA(t, map[string]string{"p.rego": `package batpak.write

default allow := false

deny contains "never" if false
`}, opa.Options{})
	if d := decide(t, both, in); d.Allowed || d.Reasons[0].Code != policy.CodeNotAllowed {
		t.Fatalf("default allow false: %+v", d)
	}

	// A ref-head allow rule counts as an allow rule.
	refHead := loadOPA(t, map[string]string{"p.rego": `package batpak

write.allow if input.principal.tenant == "acme"
`}, opa.Options{})
	if d := decide(t, refHead, orderInput(clerk, "x", "1:1", `{}`)); !d.Allowed {
		t.Fatalf("ref-head allow: %+v", d)
	}
	if d := decide(t, refHead, orderInput(policy.Principal{}, "x", "1:1", `{}`)); d.Allowed || d.Reasons[0].Code != policy.CodeNotAllowed {
		t.Fatalf("ref-head allow undefined: %+v", d)
	}
}

// The gate fails closed: whatever goes wrong while deciding refuses the
// write with POLICY_ERROR and the cause — never admits it.
func TestOPAFailsClosed(t *testing.T) {
	in := func(payload string) *policy.Input { return orderInput(clerk, "acme:order:1", "1:1", payload) }
	t.Run("allow is not a boolean", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow := \"yes\"\n"}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "allow is string")
	})
	t.Run("allow is null", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow := null\n"}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "allow is null")
	})
	t.Run("deny is not a set", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow := true\n\ndeny := \"no\"\n"}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "deny is string")
	})
	t.Run("deny holds numbers", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow := true\n\ndeny contains 42\n"}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "deny holds")
	})
	t.Run("decision undefined", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak

write := {"allow": true} if input.action == "import"
`}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "undefined")
	})
	t.Run("decision not an object", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak\n\nwrite := true\n"}, opa.Options{})
		mustFailClosed(t, g, in(`{}`), "want an object")
	})
	t.Run("decision object without allow", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak\n\nwrite := {\"deny\": set()}\n"}, opa.Options{})
		if d, _ := g.Decide(context.Background(), in(`{}`)); d.Allowed {
			t.Fatalf("a decision object without allow admitted: %+v", d)
		}
	})
	t.Run("conflicting rule values", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow := true if input.event.payload.a
allow := false if input.event.payload.b
`}, opa.Options{})
		if d := decide(t, g, in(`{"a": true}`)); !d.Allowed {
			t.Fatalf("a: %+v", d)
		}
		mustFailClosed(t, g, in(`{"a": true, "b": true}`), "conflict")
	})
	t.Run("division by zero in allow", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if input.event.payload.total / input.event.payload.qty < 50
`}, opa.Options{})
		if d := decide(t, g, in(`{"total": 10, "qty": 2}`)); !d.Allowed {
			t.Fatalf("%+v", d)
		}
		mustFailClosed(t, g, in(`{"total": 10, "qty": 0}`), "divide by zero")
	})
	t.Run("division by zero in a deny-only policy", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

deny contains "unit price over 100" if input.event.payload.total / input.event.payload.qty > 100
`}, opa.Options{})
		if d := decide(t, g, in(`{"total": 10, "qty": 2}`)); !d.Allowed {
			t.Fatalf("%+v", d)
		}
		if d := decide(t, g, in(`{"total": 1000, "qty": 2}`)); d.Allowed {
			t.Fatalf("%+v", d)
		}
		mustFailClosed(t, g, in(`{"total": 1000, "qty": 0}`), "divide by zero")
	})
	t.Run("type error at eval", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

deny contains "over the limit" if input.event.payload.amount + 1 > 100
`}, opa.Options{})
		mustFailClosed(t, g, in(`{"amount": "lots"}`), "operand 1 must be number")
	})
	t.Run("builtin error", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if to_number(input.event.payload.qty) < 10
`}, opa.Options{})
		if d := decide(t, g, in(`{"qty": "3"}`)); !d.Allowed {
			t.Fatalf("%+v", d)
		}
		mustFailClosed(t, g, in(`{"qty": "three"}`), "to_number")
	})
	t.Run("payload that is not JSON", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": "package batpak.write\n\nallow := true\n"}, opa.Options{CacheSize: -1})
		mustFailClosed(t, g, in(`{"unterminated": `), "payload")
	})
	t.Run("timeout", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if input.event.payload.quick

allow if {
	some i in numbers.range(1, 5000)
	some j in numbers.range(1, 5000)
	i * j == -1
}
`}, opa.Options{Timeout: 20 * time.Millisecond})
		if d := decide(t, g, in(`{"quick": true}`)); !d.Allowed {
			t.Fatalf("quick: %+v", d)
		}
		start := time.Now()
		mustFailClosed(t, g, in(`{}`), "cancel")
		if el := time.Since(start); el > 5*time.Second {
			t.Fatalf("the timeout took %v", el)
		}
	})
	t.Run("errors are not cached", func(t *testing.T) {
		g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if input.event.payload.total / input.event.payload.qty < 50
`}, opa.Options{})
		for i := 0; i < 3; i++ {
			d, err := g.Decide(context.Background(), in(`{"total": 10, "qty": 0}`))
			if err == nil || d.Allowed || d.Cached {
				t.Fatalf("try %d: %+v, %v", i, d, err)
			}
		}
	})
}

// policyVersion is a complete bundle whose decision depends on parity:
// version "even" admits even n, "odd" admits odd n; each refuses with its
// own code.
func policyVersion(parity string) map[string]string {
	rem := 0
	if parity == "odd" {
		rem = 1
	}
	return map[string]string{
		"write.rego": fmt.Sprintf(`package batpak.write

default allow := false

allow if input.event.payload.n %% 2 == %d

deny contains {"code": "NOT_%s", "message": "n is not %s"} if input.event.payload.n %% 2 != %d
`, rem, strings.ToUpper(parity), parity, rem),
		".manifest": fmt.Sprintf(`{"revision": %q}`, parity),
	}
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func nInput(n int) *policy.Input {
	return orderInput(clerk, "acme:order:1", "1:1", fmt.Sprintf(`{"n": %d}`, n))
}

func TestOPAReload(t *testing.T) {
	dir := writeBundle(t, policyVersion("even"))
	g, err := opa.Load(context.Background(), dir, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(t, g, nInput(2)); !d.Allowed || d.Revision != "even" {
		t.Fatalf("%+v", d)
	}
	if d := decide(t, g, nInput(3)); d.Allowed || d.Reasons[0].Code != "NOT_EVEN" {
		t.Fatalf("%+v", d)
	}

	// A good bundle swaps.
	writeFiles(t, dir, policyVersion("odd"))
	if err := g.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g.Revision() != "odd" {
		t.Fatalf("revision %q", g.Revision())
	}
	if d := decide(t, g, nInput(2)); d.Allowed || d.Reasons[0].Code != "NOT_ODD" || d.Revision != "odd" || d.Cached {
		t.Fatalf("%+v", d)
	}
	if d := decide(t, g, nInput(3)); !d.Allowed {
		t.Fatalf("%+v", d)
	}

	// Broken bundles are refused with their errors; the loaded policy stays.
	broken := map[string]map[string]string{
		"syntax error": {"write.rego": "package batpak.write\n\nallow if {\n\tinput.x ==\n", ".manifest": `{"revision": "broken"}`},
		"no decision":  {"write.rego": "package batpak.write\n\nhelper := 1\n", ".manifest": `{"revision": "broken"}`},
		"bad data":     {"write.rego": "package batpak.write\n\nallow := true\n", "data.json": "{not json", ".manifest": `{"revision": "broken"}`},
		"bad manifest": {"write.rego": "package batpak.write\n\nallow := true\n", ".manifest": `{"revision": `},
	}
	for name, files := range broken {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			writeFiles(t, d, policyVersion("odd"))
			g, err := opa.Load(context.Background(), d, opa.Options{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			decide(t, g, nInput(3)) // warm the cache
			writeFiles(t, d, files)
			err = g.Reload(context.Background())
			if err == nil {
				t.Fatal("a broken bundle was swapped in")
			}
			if name == "syntax error" && (!strings.Contains(err.Error(), "write.rego") || !strings.Contains(err.Error(), "rego_parse_error")) {
				t.Fatalf("error %q does not name the file and the compile error", err)
			}
			if g.Revision() != "odd" {
				t.Fatalf("revision %q after a refused reload", g.Revision())
			}
			if d := decide(t, g, nInput(3)); !d.Allowed || d.Revision != "odd" {
				t.Fatalf("after a refused reload: %+v", d)
			}
			if d := decide(t, g, nInput(4)); d.Allowed || d.Reasons[0].Code != "NOT_ODD" {
				t.Fatalf("after a refused reload: %+v", d)
			}
		})
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(context.Background()); err == nil {
		t.Fatal("reload of a removed bundle succeeded")
	}
	if d := decide(t, g, nInput(3)); !d.Allowed || d.Revision != "odd" {
		t.Fatalf("after the bundle vanished: %+v", d)
	}
}

// Writes and decisions racing repeated reloads (alternating two valid
// policies) each see exactly one of the two policies: never a mix.
func TestOPAReloadUnderConcurrentWrites(t *testing.T) {
	dir := writeBundle(t, policyVersion("even"))
	// A generous timeout: a timeout is no policy's answer, and the
	// reloads compete for the CPU.
	g, err := opa.Load(context.Background(), dir, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := openGated(t, g)
	want := func(revision string, n int) (allowed bool, code string) {
		if revision == "even" {
			return n%2 == 0, "NOT_EVEN"
		}
		return n%2 == 1, "NOT_ODD"
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var decisions, writes atomic.Int64
	seen := [2]atomic.Int64{}
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := mustCoord(t, fmt.Sprintf("acme:order:%d", w), "shop")
			for i := 0; !stop.Load() || i < 20; i++ {
				n := i % 4 // a few distinct inputs, so the cache is exercised
				if w%2 == 0 {
					d, err := g.Decide(context.Background(), nInput(n))
					if err != nil {
						t.Errorf("Decide: %v", err)
						return
					}
					allowed, code := want(d.Revision, n)
					if d.Allowed != allowed || (!allowed && (len(d.Reasons) != 1 || d.Reasons[0].Code != code)) {
						t.Errorf("n=%d revision %q: decision %+v is not that policy's", n, d.Revision, d)
						return
					}
					if d.Revision == "even" {
						seen[0].Add(1)
					} else {
						seen[1].Add(1)
					}
					decisions.Add(1)
					continue
				}
				_, err := s.Append(clerkCtx, c, kindA, []byte(fmt.Sprintf(`{"n": %d}`, n)))
				writes.Add(1)
				if err == nil {
					continue // admitted by whichever policy admits n
				}
				var den *policy.Denial
				if !errors.As(err, &den) {
					t.Errorf("write: %v", err)
					return
				}
				if allowed, code := want(den.Revision, n); allowed || den.Code != code || len(den.Reasons) != 1 {
					t.Errorf("n=%d revision %q: denial %+v is not that policy's", n, den.Revision, den)
					return
				}
			}
		}(w)
	}
	for i := 0; i < 30; i++ {
		parity := "odd"
		if i%2 == 1 {
			parity = "even"
		}
		writeFiles(t, dir, policyVersion(parity))
		if err := g.Reload(context.Background()); err != nil {
			t.Error(err)
			break
		}
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Fatalf("decisions by revision: even %d, odd %d; the reloads did not interleave", seen[0].Load(), seen[1].Load())
	}
	t.Logf("%d decisions (even %d, odd %d), %d writes across 30 reloads", decisions.Load(), seen[0].Load(), seen[1].Load(), writes.Load())
}

func TestOPAWatchReloadsOnChange(t *testing.T) {
	dir := writeBundle(t, policyVersion("even"))
	g, err := opa.Load(context.Background(), dir, opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var errs []error
	if err := g.Watch(ctx, func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("Watch did not pick up the change: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writeFiles(t, dir, policyVersion("odd"))
	waitFor("revision odd", func() bool { return g.Revision() == "odd" })
	if d := decide(t, g, nInput(3)); !d.Allowed || d.Revision != "odd" {
		t.Fatalf("after the watch reload: %+v", d)
	}

	// A broken edit is reported and leaves the policy in force.
	writeFiles(t, dir, map[string]string{"write.rego": "package batpak.write\n\nallow if {\n"})
	waitFor("the error report", func() bool { mu.Lock(); defer mu.Unlock(); return len(errs) > 0 })
	mu.Lock()
	if !strings.Contains(errs[0].Error(), "write.rego") {
		t.Errorf("reported error %q does not name the file", errs[0])
	}
	mu.Unlock()
	if d := decide(t, g, nInput(3)); !d.Allowed || g.Revision() != "odd" {
		t.Fatalf("after a broken edit: %+v, revision %q", d, g.Revision())
	}

	// Fixing it reloads again.
	writeFiles(t, dir, policyVersion("even"))
	waitFor("revision even", func() bool { return g.Revision() == "even" })
	cancel()
}

// The gate asks for the decision's allow and deny only: a rule of the
// package that neither depends on is never evaluated, so its error cannot
// deny; an erring rule the decision does depend on still fails closed.
func TestOPAEvaluatesOnlyTheDecision(t *testing.T) {
	in := orderInput(clerk, "acme:order:1", "1:1", `{"n": 0}`)
	g := loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if input.action == "append"

unused := 1 / input.event.payload.n
`}, opa.Options{})
	if d := decide(t, g, in); !d.Allowed {
		t.Fatalf("an erring rule outside the decision denied: %+v", d)
	}
	g = loadOPA(t, map[string]string{"p.rego": `package batpak.write

allow if used > 0

used := 1 / input.event.payload.n
`}, opa.Options{})
	mustFailClosed(t, g, in, "divide by zero")
}
