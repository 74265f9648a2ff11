package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// Native gates, gate sets, receipts and the pipeline with its audited
// bypass.

func sampleInput(entity string) *policy.Input {
	return &policy.Input{
		Action:    core.ActionAppend,
		Principal: clerk,
		Event:     policy.Event{Entity: entity, Scope: "shop", Kind: "0x1:0x1", Category: 1, Type: 1, Payload: json.RawMessage(`{"amount":5}`)},
	}
}

// countingGate counts its calls and refuses with code when deny is set.
type countingGate struct {
	name  string
	code  string // "" admits
	calls atomic.Int32
}

func (g *countingGate) Name() string { return g.name }

func (g *countingGate) Evaluate(context.Context, *policy.Input) *policy.Denial {
	g.calls.Add(1)
	if g.code == "" {
		return nil
	}
	return policy.Deny(g.code, g.name+" says no", map[string]any{"gate": g.name})
}

func panicking(name string) policy.Gate {
	return policy.GateFunc(name, func(context.Context, *policy.Input) *policy.Denial { panic("boom in " + name) })
}

func TestDenialIsAnError(t *testing.T) {
	d := policy.Deny("LIMIT", "amount over the limit", map[string]any{"limit": 100})
	if d.Code != "LIMIT" || d.Message != "amount over the limit" || d.Context["limit"] != 100 {
		t.Fatalf("Deny: %+v", d)
	}
	if len(d.Reasons) != 1 || d.Reasons[0].Code != "LIMIT" || d.Reasons[0].Context["limit"] != 100 {
		t.Fatalf("Deny reasons: %+v", d.Reasons)
	}
	d.Gate = "limits"
	d.Reasons = append(d.Reasons, policy.Reason{Code: "TENANT", Message: "wrong tenant"})
	var err error = d
	msg := err.Error()
	for _, want := range []string{`"limits"`, "LIMIT: amount over the limit", "TENANT: wrong tenant"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error() = %q, want it to contain %q", msg, want)
		}
	}
	if !d.Has("TENANT") || !d.Has("LIMIT") || d.Has("OTHER") {
		t.Errorf("Has: %v %v %v", d.Has("TENANT"), d.Has("LIMIT"), d.Has("OTHER"))
	}
	var back *policy.Denial
	if !errors.As(errors.Join(errors.New("context"), err), &back) || back != d {
		t.Error("errors.As does not find the denial through a wrap")
	}
	// A denial built by hand with no reasons still renders its code.
	bare := &policy.Denial{Gate: "g", Code: "C", Message: "m"}
	if got := bare.Error(); !strings.Contains(got, "C: m") {
		t.Errorf("bare Error() = %q", got)
	}
}

func TestGateSetEvaluateIsOrderedAndFailFast(t *testing.T) {
	a := &countingGate{name: "a"}
	b := &countingGate{name: "b", code: "B_SAYS_NO"}
	c := &countingGate{name: "c", code: "C_SAYS_NO"}
	gs := policy.NewGateSet(a, b, c)
	if got := strings.Join(gs.Names(), ","); got != "a,b,c" {
		t.Fatalf("Names = %s", got)
	}
	in := sampleInput("acme:order:1")
	r, err := gs.Evaluate(context.Background(), in)
	if r != nil {
		t.Fatal("a refused proposal got a receipt")
	}
	d := asDenial(t, err)
	if d.Gate != "b" || d.Code != "B_SAYS_NO" || len(d.Reasons) != 1 {
		t.Fatalf("denial %+v, want b's", d)
	}
	if a.calls.Load() != 1 || b.calls.Load() != 1 || c.calls.Load() != 0 {
		t.Fatalf("calls a=%d b=%d c=%d, want 1 1 0 (stop at the first denial)", a.calls.Load(), b.calls.Load(), c.calls.Load())
	}

	// All pass: a receipt naming the gates, for this input.
	ok := policy.NewGateSet(a, &countingGate{name: "z"})
	r, err = ok.Evaluate(context.Background(), in)
	if err != nil || r == nil {
		t.Fatalf("Evaluate: %v, %v", r, err)
	}
	if r.Input() != in || strings.Join(r.Gates(), ",") != "a,z" || r.Bypassed() {
		t.Fatalf("receipt: input %p (want %p), gates %v, bypassed %v", r.Input(), in, r.Gates(), r.Bypassed())
	}

	// An empty set admits.
	if r, err := policy.NewGateSet().Evaluate(context.Background(), in); err != nil || r == nil {
		t.Fatalf("empty set: %v, %v", r, err)
	}
}

func TestGateSetEvaluateAllReturnsEveryDenial(t *testing.T) {
	a := &countingGate{name: "a", code: "A_NO"}
	b := &countingGate{name: "b"}
	c := &countingGate{name: "c", code: "C_NO"}
	gs := policy.NewGateSet(a, b, panicking("d"), c)
	ds := gs.EvaluateAll(context.Background(), sampleInput("acme:order:1"))
	var got []string
	for _, d := range ds {
		got = append(got, d.Gate+"/"+d.Code)
	}
	if strings.Join(got, ",") != "a/A_NO,d/GATE_DEFECT,c/C_NO" {
		t.Fatalf("EvaluateAll = %v", got)
	}
	if b.calls.Load() != 1 || c.calls.Load() != 1 {
		t.Fatal("EvaluateAll skipped a gate")
	}
	if ds := policy.NewGateSet(b).EvaluateAll(context.Background(), sampleInput("x")); len(ds) != 0 {
		t.Fatalf("EvaluateAll of passing gates = %v", ds)
	}
}

func TestPanickingGateIsADefectNotACrash(t *testing.T) {
	after := &countingGate{name: "after"}
	gs := policy.NewGateSet(panicking("buggy"), after)
	_, err := gs.Evaluate(context.Background(), sampleInput("acme:order:1"))
	d := asDenial(t, err)
	if d.Code != policy.CodeGateDefect || d.Gate != "buggy" || !strings.Contains(d.Message, "boom in buggy") {
		t.Fatalf("denial %+v", d)
	}
	if len(d.Reasons) != 1 || d.Reasons[0].Code != policy.CodeGateDefect {
		t.Fatalf("reasons %+v", d.Reasons)
	}
	if after.calls.Load() != 0 {
		t.Fatal("a gate after the defect ran")
	}

	// Through the store: the write is refused, nothing is written, the
	// store goes on working.
	s := openGated(t, policy.GateFunc("buggy", func(_ context.Context, in *policy.Input) *policy.Denial {
		var none []string
		if in.Event.Entity == "acme:crash" {
			return policy.Deny(none[len(in.Event.Entity)], "", nil) // index out of range: a runtime panic
		}
		return nil
	}))
	w := watchStore(t, s)
	_, err = s.Append(clerkCtx, mustCoord(t, "acme:crash", "shop"), kindA, []byte(`{}`))
	d = asDenial(t, err)
	if d.Code != policy.CodeGateDefect || d.Gate != "buggy" {
		t.Fatalf("store denial %+v", d)
	}
	w.Unchanged(t)
}

func TestGateDenialIsCompleted(t *testing.T) {
	// A gate may return a bare Denial: the gate set names the gate and
	// fills in the reasons.
	g := policy.GateFunc("tenancy", func(context.Context, *policy.Input) *policy.Denial {
		return &policy.Denial{Code: "TENANT", Message: "wrong tenant"}
	})
	_, err := policy.NewGateSet(g).Evaluate(context.Background(), sampleInput("x"))
	d := asDenial(t, err)
	if d.Gate != "tenancy" || len(d.Reasons) != 1 || d.Reasons[0].Code != "TENANT" || d.Reasons[0].Message != "wrong tenant" {
		t.Fatalf("denial %+v", d)
	}
	// A gate that names itself keeps its name.
	named := policy.GateFunc("outer", func(context.Context, *policy.Input) *policy.Denial {
		d := policy.Deny("X", "x", nil)
		d.Gate = "inner"
		return d
	})
	_, err = policy.NewGateSet(named).Evaluate(context.Background(), sampleInput("x"))
	if d := asDenial(t, err); d.Gate != "inner" {
		t.Fatalf("gate = %q", d.Gate)
	}
}

// A gate may hand out one shared denial value to every writer; concurrent
// writers must not race on it (run with -race).
func TestSharedDenialFromConcurrentWriters(t *testing.T) {
	shared := policy.Deny("CLOSED", "the shop is closed", nil)
	s := openGated(t, policy.GateFunc("closed", func(context.Context, *policy.Input) *policy.Denial { return shared }))
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				_, err := s.Append(clerkCtx, mustCoord(t, "acme:order:1", "shop"), kindA, []byte(`{}`))
				var d *policy.Denial
				if !errors.As(err, &d) || d.Code != "CLOSED" || d.Gate != "closed" {
					t.Errorf("err %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestReceiptIsSingleUse(t *testing.T) {
	p := policy.NewPipeline(policy.NewGateSet(&countingGate{name: "a"}), nil)
	r, err := p.Evaluate(context.Background(), sampleInput("acme:order:1"))
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	c, err := p.Commit(context.Background(), r, func(context.Context) error { runs++; return nil })
	if err != nil || runs != 1 {
		t.Fatalf("first Commit: %v, runs %d", err, runs)
	}
	if strings.Join(c.Gates, ",") != "a" || c.Bypassed || c.Audit != nil {
		t.Fatalf("Committed %+v", c)
	}
	if _, err := p.Commit(context.Background(), r, func(context.Context) error { runs++; return nil }); !errors.Is(err, policy.ErrReceiptUsed) {
		t.Fatalf("second Commit: %v, want ErrReceiptUsed", err)
	}
	if runs != 1 {
		t.Fatalf("fn ran %d times", runs)
	}

	// Concurrent commits of one receipt: exactly one runs.
	r, _ = p.Evaluate(context.Background(), sampleInput("acme:order:1"))
	var ran, used atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Commit(context.Background(), r, func(context.Context) error { ran.Add(1); return nil })
			if errors.Is(err, policy.ErrReceiptUsed) {
				used.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ran.Load() != 1 || used.Load() != 15 {
		t.Fatalf("ran %d, refused %d; want 1 and 15", ran.Load(), used.Load())
	}

	// fn's error is Commit's; the receipt is spent all the same.
	r, _ = p.Evaluate(context.Background(), sampleInput("acme:order:1"))
	boom := errors.New("boom")
	if _, err := p.Commit(context.Background(), r, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Commit = %v, want fn's error", err)
	}
	if _, err := p.Commit(context.Background(), r, func(context.Context) error { return nil }); !errors.Is(err, policy.ErrReceiptUsed) {
		t.Fatalf("Commit after a failed fn = %v", err)
	}
}

// Only gate evaluation makes receipts: one made outside the package (the
// zero value), nil, or one from another gate set does not commit.
func TestReceiptCannotBeForged(t *testing.T) {
	p := policy.NewPipeline(policy.NewGateSet(&countingGate{name: "strict", code: "NO"}), nil)
	ran := false
	fn := func(context.Context) error { ran = true; return nil }
	if _, err := p.Commit(context.Background(), &policy.Receipt{}, fn); err == nil {
		t.Fatal("a zero Receipt committed")
	}
	if _, err := p.Commit(context.Background(), new(policy.Receipt), fn); err == nil {
		t.Fatal("new(Receipt) committed")
	}
	if _, err := p.Commit(context.Background(), nil, fn); err == nil {
		t.Fatal("a nil receipt committed")
	}
	// A receipt from a lenient gate set is no proof for this pipeline.
	lenient, err := policy.NewGateSet().Evaluate(context.Background(), sampleInput("acme:order:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(context.Background(), lenient, fn); err == nil {
		t.Fatal("a receipt of another gate set committed")
	}
	if ran {
		t.Fatal("fn ran for a forged receipt")
	}
	// The pipeline's own evaluation refuses, and gives no receipt.
	r, err := p.Evaluate(context.Background(), sampleInput("acme:order:1"))
	if r != nil || asDenial(t, err).Code != "NO" {
		t.Fatalf("Evaluate = %v, %v", r, err)
	}
}

func TestPipelineCommitWritesThroughTheStore(t *testing.T) {
	rec := &recorder{}
	gates := policy.NewGateSet(rec)
	s := openGated(t, rec)
	p := policy.NewPipeline(gates, s)
	coord := mustCoord(t, "acme:order:1", "shop")
	in := sampleInput(coord.Entity)
	r, err := p.Evaluate(clerkCtx, in)
	if err != nil {
		t.Fatal(err)
	}
	var rc core.Receipt
	c, err := p.Commit(clerkCtx, r, func(ctx context.Context) error {
		var err error
		rc, err = s.Append(ctx, coord, kindA, in.Event.Payload)
		return err
	})
	if err != nil || c.Bypassed || strings.Join(c.Gates, ",") != "recorder" {
		t.Fatalf("Commit: %+v, %v", c, err)
	}
	if evs, _ := s.Stream(coord.Entity); len(evs) != 1 || evs[0].Header.ID != rc.ID {
		t.Fatalf("stream %v", evs)
	}
	if evs, _ := s.Stream(policy.AuditEntity); len(evs) != 0 {
		t.Fatal("an evaluated commit wrote an audit record")
	}
}

// auditPayload is the audit record's JSON.
type auditPayload struct {
	Who  policy.Principal `json:"who"`
	Why  string           `json:"why"`
	What policy.Input     `json:"what"`
}

func TestBypassIsAuditedAndLetsOnlyItsWriteThrough(t *testing.T) {
	rec := &recorder{}
	s := openGated(t, rec)
	p := admitterOf(t, s).Pipeline(s)
	admin := policy.Principal{ID: "ops-7", Tenant: "acme", Roles: []string{"oncall"}}
	ctx := policy.WithPrincipal(context.Background(), admin)
	coord := mustCoord(t, "deny:order:9", "shop")
	in := sampleInput(coord.Entity)
	in.Event.Payload = json.RawMessage(`{"fix":"INC-42"}`)

	// The gates refuse it.
	if _, err := p.Evaluate(ctx, in); asDenial(t, err).Code != "ENTITY_REFUSED" {
		t.Fatal("the gate let the proposal through")
	}
	if _, err := p.Bypass(ctx, in, ""); !errors.Is(err, policy.ErrNoReason) {
		t.Fatalf("Bypass without a reason: %v, want ErrNoReason", err)
	}
	if _, err := p.Bypass(ctx, nil, "no proposal"); err == nil {
		t.Fatal("Bypass of a nil proposal")
	}
	if evs, _ := s.Stream(policy.AuditEntity); len(evs) != 0 {
		t.Fatal("a refused bypass was audited")
	}
	r, err := p.Bypass(ctx, in, "INC-42: repair a corrupt order")
	if err != nil || !r.Bypassed() || len(r.Gates()) != 0 || r.Input() != in {
		t.Fatalf("Bypass: %v, %v", r, err)
	}
	var written core.Receipt
	var other, samePlace, again, admitted error
	var kept context.Context
	c, err := p.Commit(ctx, r, func(ctx context.Context) error {
		var err error
		// The bypassed write passes the Admitter that refuses it...
		if written, err = s.Append(ctx, coord, kindA, in.Event.Payload); err != nil {
			return err
		}
		// ... a different write in the same fn is still judged ...
		_, other = s.Append(ctx, mustCoord(t, "deny:order:10", "shop"), kindA, []byte(`{}`))
		// ... and so is another write to the same place ...
		_, samePlace = s.Append(ctx, coord, kindA, []byte(`{"fix":"something else"}`))
		// ... and the same write again: one bypass, one write.
		_, again = s.Append(ctx, coord, kindA, in.Event.Payload)
		kept = ctx
		// An admitted write goes through as ever.
		_, admitted = s.Append(ctx, mustCoord(t, "acme:order:11", "shop"), kindA, []byte(`{}`))
		return nil
	})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if d := asDenial(t, other); d.Code != "ENTITY_REFUSED" {
		t.Fatalf("other write: %v", other)
	}
	if d := asDenial(t, samePlace); d.Code != "ENTITY_REFUSED" {
		t.Fatalf("another write to the bypassed place: %v", samePlace)
	}
	if d := asDenial(t, again); d.Code != "ENTITY_REFUSED" {
		t.Fatalf("the bypassed write a second time: %v", again)
	}
	if admitted != nil {
		t.Fatalf("an admitted write in fn: %v", admitted)
	}
	if !c.Bypassed || c.Audit == nil {
		t.Fatalf("Committed %+v", c)
	}
	evs, err := s.Stream(coord.Entity)
	if err != nil || len(evs) != 1 || evs[0].Header.ID != written.ID {
		t.Fatalf("bypassed entity holds %d events (%v), want the bypassed write", len(evs), err)
	}

	// The audit record: who, why, what.
	audit, err := s.Stream(policy.AuditEntity)
	if err != nil || len(audit) != 1 {
		t.Fatalf("audit stream: %d events (%v), want 1", len(audit), err)
	}
	a := audit[0]
	if a.Coordinate.Scope != "policy" || a.Header.Kind != policy.KindBypassAudit || a.Header.Kind.Category() != core.CategorySystem {
		t.Fatalf("audit event at %v kind %v", a.Coordinate, a.Header.Kind)
	}
	if a.Header.ID != c.Audit.ID || a.GlobalSequence >= evs[0].GlobalSequence {
		t.Fatalf("audit %s (seq %d) is not Committed.Audit %s written before the bypassed write (seq %d)", a.Header.ID, a.GlobalSequence, c.Audit.ID, evs[0].GlobalSequence)
	}
	var ap auditPayload
	if err := json.Unmarshal(a.Payload, &ap); err != nil {
		t.Fatalf("audit payload %s: %v", a.Payload, err)
	}
	if ap.Who.ID != "ops-7" || ap.Who.Tenant != "acme" || strings.Join(ap.Who.Roles, ",") != "oncall" {
		t.Errorf("who = %+v", ap.Who)
	}
	if ap.Why != "INC-42: repair a corrupt order" {
		t.Errorf("why = %q", ap.Why)
	}
	if ap.What.Event.Entity != coord.Entity || ap.What.Event.Scope != "shop" || ap.What.Event.Kind != "0x1:0x1" || string(ap.What.Event.Payload) != `{"fix":"INC-42"}` || ap.What.Action != core.ActionAppend {
		t.Errorf("what = %+v", ap.What)
	}

	// Single use: a second commit neither runs fn nor audits again.
	if _, err := p.Commit(ctx, r, func(context.Context) error { t.Error("fn ran again"); return nil }); !errors.Is(err, policy.ErrReceiptUsed) {
		t.Fatalf("second Commit: %v", err)
	}
	if audit, _ := s.Stream(policy.AuditEntity); len(audit) != 1 {
		t.Fatalf("%d audit records after a second commit", len(audit))
	}
	// Outside Commit the write is refused again, even with the context fn
	// was given.
	if _, err := s.Append(ctx, coord, kindA, in.Event.Payload); asDenial(t, err).Code != "ENTITY_REFUSED" {
		t.Fatal("the bypass outlived its commit")
	}
	if _, err := s.Append(kept, coord, kindA, in.Event.Payload); asDenial(t, err).Code != "ENTITY_REFUSED" {
		t.Fatal("a context kept from fn let the bypassed write through after Commit")
	}
}

// The principal of the Bypass call is who is recorded, even if Commit runs
// elsewhere (a queue, a background job) without one.
func TestBypassRecordsWhoAskedForIt(t *testing.T) {
	s := openGated(t, &recorder{})
	p := admitterOf(t, s).Pipeline(s)
	who := policy.Principal{ID: "ops-1", Tenant: "acme"}
	r, err := p.Bypass(policy.WithPrincipal(context.Background(), who), sampleInput("deny:x"), "because")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(context.Background(), r, func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	audit, _ := s.Stream(policy.AuditEntity)
	if len(audit) != 1 {
		t.Fatalf("%d audit records", len(audit))
	}
	var ap auditPayload
	if err := json.Unmarshal(audit[0].Payload, &ap); err != nil || ap.Who.ID != "ops-1" {
		t.Fatalf("who = %+v (%v), want ops-1", ap.Who, err)
	}
}

func TestBypassIsNeverSilent(t *testing.T) {
	// No store to audit in: the bypass does not commit and fn never runs.
	p := policy.NewPipeline(policy.NewGateSet(), nil)
	r, err := p.Bypass(clerkCtx, sampleInput("x"), "reason")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(clerkCtx, r, func(context.Context) error { t.Error("fn ran without an audit record"); return nil }); err == nil {
		t.Fatal("a bypass committed without an audit record")
	}

	// The audit record is written even when fn then fails.
	s := openGated(t, &recorder{})
	p = policy.NewPipeline(policy.NewGateSet(), s)
	r, _ = p.Bypass(clerkCtx, sampleInput("x"), "reason")
	boom := errors.New("boom")
	c, err := p.Commit(clerkCtx, r, func(context.Context) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Commit = %v", err)
	}
	_ = c
	if audit, _ := s.Stream(policy.AuditEntity); len(audit) != 1 {
		t.Fatalf("%d audit records, want 1", len(audit))
	}
	// A closed store cannot record it: no commit.
	_ = s.Close()
	r, _ = p.Bypass(clerkCtx, sampleInput("x"), "reason")
	if _, err := p.Commit(clerkCtx, r, func(context.Context) error { t.Error("fn ran"); return nil }); err == nil {
		t.Fatal("a bypass committed on a closed store")
	}
}

// A bypass receipt lets a write through only the Admitter of the pipeline
// that issued it: a pipeline over an empty gate set, or one made from
// another admitter, cannot open the store's gate.
func TestBypassHonouredOnlyByItsOwnAdmitter(t *testing.T) {
	rec := &recorder{}
	s := openGated(t, rec)
	coord := mustCoord(t, "deny:order:1", "shop")
	in := sampleInput(coord.Entity)
	try := func(p *policy.Pipeline) error {
		t.Helper()
		r, err := p.Bypass(clerkCtx, in, "INC-7")
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		if _, err := p.Commit(clerkCtx, r, func(ctx context.Context) error {
			_, werr = s.Append(ctx, coord, kindA, in.Event.Payload)
			return nil
		}); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		return werr
	}
	for name, p := range map[string]*policy.Pipeline{
		"empty gate set":  policy.NewPipeline(policy.NewGateSet(), s),
		"same gates":      policy.NewPipeline(admitterOf(t, s).Gates(), s),
		"other admitter":  policy.NewAdmitter(rec).Pipeline(s),
		"other admitter2": policy.NewAdmitter().Pipeline(s),
	} {
		if d := asDenial(t, try(p)); d.Code != "ENTITY_REFUSED" {
			t.Fatalf("%s: a foreign bypass got through: %+v", name, d)
		}
	}
	if evs, _ := s.Stream(coord.Entity); len(evs) != 0 {
		t.Fatalf("%d events written through foreign bypasses", len(evs))
	}
	// A receipt is committed only by the pipeline that issued it.
	a := admitterOf(t, s)
	p1, p2 := a.Pipeline(s), a.Pipeline(s)
	r, err := p1.Bypass(clerkCtx, in, "INC-7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Commit(clerkCtx, r, func(context.Context) error { t.Error("fn ran"); return nil }); !errors.Is(err, policy.ErrForeignReceipt) {
		t.Fatalf("Commit by another pipeline: %v, want ErrForeignReceipt", err)
	}
	// Its own pipeline's bypass passes.
	if err := try(a.Pipeline(s)); err != nil {
		t.Fatalf("own bypass: %v", err)
	}
	if evs, _ := s.Stream(coord.Entity); len(evs) != 1 {
		t.Fatalf("%d events after the own bypass, want 1", len(evs))
	}
}
