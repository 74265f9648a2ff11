package opa_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// The OPA gate as the store's Admission: the input document a policy
// sees on every write path, and its decisions through the store.

// echoPolicy refuses every write and hands back the input it saw.
const echoPolicy = `package batpak.write

deny contains {"code": "ECHO", "message": "echo", "input": input}
`

// TestPolicyInputOnEveryPath checks the input document an OPA policy sees,
// on the write paths with something of their own to say.
func TestPolicyInputOnEveryPath(t *testing.T) {
	g, err := opa.Load(context.Background(), writeBundle(t, map[string]string{"echo.rego": echoPolicy}), opa.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := openGated(t, g)
	// An existing entity (written around the gate, through a bypass).
	existing := mustCoord(t, "acme:order:1", "shop")
	p := admitterOf(t, s).Pipeline(s)
	seed := &policy.Input{Event: policy.Event{Entity: existing.Entity, Scope: "shop", Kind: "0x1:0x1", Payload: json.RawMessage(`{}`)}}
	r, err := p.Bypass(clerkCtx, seed, "seed the store")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := p.Commit(clerkCtx, r, func(ctx context.Context) error {
			_, err := s.Append(ctx, existing, kindA, []byte(`{}`))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		r, _ = p.Bypass(clerkCtx, seed, "seed the store")
	}

	echo := func(t *testing.T, err error) map[string]any {
		t.Helper()
		d := asDenial(t, err)
		if d.Code != "ECHO" || d.Gate != "opa" {
			t.Fatalf("denial %+v", d)
		}
		in, ok := d.Context["input"].(map[string]any)
		if !ok {
			t.Fatalf("context %+v", d.Context)
		}
		return in
	}
	field := func(m map[string]any, path string) any {
		var v any = m
		for _, k := range strings.Split(path, ".") {
			obj, ok := v.(map[string]any)
			if !ok {
				return "<missing>"
			}
			if v, ok = obj[k]; !ok {
				return "<missing>"
			}
		}
		return v
	}
	str := func(v any) string { return fmt.Sprint(v) }

	t.Run("Append", func(t *testing.T) {
		_, err := s.Append(clerkCtx, existing, kindA, []byte(`{"amount": 12.5, "items": [{"sku": "a"}], "note": null}`))
		in := echo(t, err)
		checks := map[string]string{
			"action": "append", "principal.id": "u1", "principal.tenant": "acme", "principal.roles": "[clerk]",
			"event.entity": "acme:order:1", "event.scope": "shop", "event.kind": "0x1:0x1",
			"event.category": "1", "event.type": "1",
			"event.payload.amount": "12.5", "event.payload.items": "[map[sku:a]]", "event.payload.note": "<nil>",
			"event.causation_id": "<nil>", "event.idempotency_key": "<nil>", "event.expected_clock": "<nil>",
			"batch": "<nil>", "entity.exists": "true", "entity.clock": "2",
		}
		for path, want := range checks {
			if got := str(field(in, path)); got != want {
				t.Errorf("input.%s = %s, want %s", path, got, want)
			}
		}
		if id, _ := field(in, "event.correlation_id").(string); len(id) != 36 {
			t.Errorf("correlation_id = %v, want the event's own id", field(in, "event.correlation_id"))
		}
	})
	t.Run("options", func(t *testing.T) {
		corr, cause := core.NewEventID(), core.NewEventID()
		_, err := s.AppendWithOptions(clerkCtx, existing, kindB, []byte(`"text"`), core.AppendOptions{
			ExpectedClock: core.ExpectClock(2), IdempotencyKey: "idem-7", CorrelationID: corr, CausationID: cause,
		})
		in := echo(t, err)
		checks := map[string]string{
			"event.kind": "0x2:0x2a", "event.category": "2", "event.type": "42", "event.payload": "text",
			"event.correlation_id": corr.String(), "event.causation_id": cause.String(),
			"event.idempotency_key": "idem-7", "event.expected_clock": "2",
		}
		for path, want := range checks {
			if got := str(field(in, path)); got != want {
				t.Errorf("input.%s = %s, want %s", path, got, want)
			}
		}
		if n, ok := field(in, "event.expected_clock").(json.Number); !ok || n != "2" {
			t.Errorf("expected_clock %#v, want the number 2", field(in, "event.expected_clock"))
		}
		_, err = s.AppendWithOptions(clerkCtx, mustCoord(t, "acme:new", "shop"), kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectNoEvents()})
		in = echo(t, err)
		if got := field(in, "event.expected_clock"); got != "no_events" {
			t.Errorf("expected_clock %v, want no_events", got)
		}
		if got := str(field(in, "entity.exists")) + "/" + str(field(in, "entity.clock")); got != "false/0" {
			t.Errorf("entity %s, want false/0", got)
		}
	})
	t.Run("no principal", func(t *testing.T) {
		_, err := s.Append(context.Background(), existing, kindA, []byte(`{}`))
		in := echo(t, err)
		if got := str(field(in, "principal.id")) + "/" + str(field(in, "principal.tenant")) + "/" + str(field(in, "principal.roles")); got != "//[]" {
			t.Errorf("principal %s, want empty", got)
		}
	})
	t.Run("reaction", func(t *testing.T) {
		corr, cause := core.NewEventID(), core.NewEventID()
		_, err := s.AppendReaction(clerkCtx, existing, kindA, []byte(`{}`), corr, cause)
		in := echo(t, err)
		if field(in, "action") != "reaction" || field(in, "event.correlation_id") != corr.String() || field(in, "event.causation_id") != cause.String() {
			t.Errorf("input %v", in)
		}
	})
	t.Run("batch", func(t *testing.T) {
		_, err := s.AppendBatch(clerkCtx, []core.BatchItem{{Coordinate: existing, Kind: kindA, Payload: []byte(`{}`)}, {Coordinate: existing, Kind: kindA, Payload: []byte(`{}`)}})
		var bie *core.BatchItemError
		if !errors.As(err, &bie) || bie.Index != 0 {
			t.Fatalf("error %v", err)
		}
		in := echo(t, err)
		if field(in, "action") != "batch" || str(field(in, "batch.size")) != "2" || str(field(in, "batch.index")) != "0" {
			t.Errorf("input action %v batch %v", field(in, "action"), field(in, "batch"))
		}
	})
	t.Run("fence", func(t *testing.T) {
		f, err := s.BeginFence(clerkCtx)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_, err = f.Submit(clerkCtx, existing, kindA, []byte(`{}`))
		if in := echo(t, err); field(in, "action") != "fence" || field(in, "batch") != nil {
			t.Errorf("input action %v batch %v", field(in, "action"), field(in, "batch"))
		}
		_, err = f.SubmitBatch(clerkCtx, []core.BatchItem{{Coordinate: existing, Kind: kindA, Payload: []byte(`{}`)}})
		if in := echo(t, err); field(in, "action") != "fence" || str(field(in, "batch.size")) != "1" {
			t.Errorf("input action %v batch %v", field(in, "action"), field(in, "batch"))
		}
	})
	t.Run("import and plugin", func(t *testing.T) {
		for _, a := range []core.Action{core.ActionImport, core.ActionPlugin} {
			_, err := s.Append(core.WithAction(clerkCtx, a), existing, kindA, []byte(`{}`))
			if in := echo(t, err); field(in, "action") != string(a) {
				t.Errorf("action %v, want %s", field(in, "action"), a)
			}
		}
	})
}

// A policy decides through the store: the refusal carries every reason
// and the bundle revision; admitted writes go through.
func TestOPAAdmitterThroughTheStore(t *testing.T) {
	dir := writeBundle(t, map[string]string{
		"write.rego": tenantPolicy + `
deny contains {"code": "AMOUNT", "message": "amount over the limit", "limit": data.limit} if {
	input.event.payload.amount > data.limit
}
`,
		"data.json": `{"limit": 100, "roles": {"clerk": {"kinds": ["0x1:0x1"]}}}`,
		".manifest": `{"revision": "r42"}`,
	})
	g, err := opa.Load(context.Background(), dir, opa.Options{Name: "tenancy", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s := openGated(t, g)
	if _, err := s.Append(clerkCtx, mustCoord(t, "acme:order:1", "shop"), kindA, []byte(`{"amount": 10}`)); err != nil {
		t.Fatalf("admitted write: %v", err)
	}
	w := watchStore(t, s)
	_, err = s.Append(clerkCtx, mustCoord(t, "acme:order:1", "shop"), kindA, []byte(`{"amount": 1000}`))
	d := asDenial(t, err)
	if d.Gate != "tenancy" || d.Revision != "r42" || d.Code != "AMOUNT" || fmt.Sprint(d.Context["limit"]) != "100" {
		t.Fatalf("denial %+v", d)
	}
	w.Unchanged(t)
	// Another tenant's entity, a kind the role may not write and too
	// large an amount: allow is false and there is one reason.
	other := policy.WithPrincipal(context.Background(), policy.Principal{ID: "u2", Tenant: "globex", Roles: []string{"clerk"}})
	_, err = s.Append(other, mustCoord(t, "acme:order:1", "shop"), kindB, []byte(`{"amount": 1000}`))
	d = asDenial(t, err)
	if strings.Join(reasonCodes(d), ",") != "AMOUNT" {
		t.Fatalf("reasons %v", reasonCodes(d))
	}
	_, err = s.Append(other, mustCoord(t, "acme:order:1", "shop"), kindA, []byte(`{"amount": 1}`))
	if d := asDenial(t, err); d.Code != policy.CodeNotAllowed || len(d.Reasons) != 1 {
		t.Fatalf("denial %+v", d)
	}
	// A write without a principal is refused by a tenant policy.
	if _, err := s.Append(context.Background(), mustCoord(t, "acme:order:1", "shop"), kindA, []byte(`{"amount": 1}`)); err == nil {
		t.Fatal("a write without a principal was admitted")
	}
}
