package tenantpolicy

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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/server/control"
)

func bundleOf(t testing.TB, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[i+1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandboxPolicy denies large amounts, and compares two values of 2^40
// leaves each (built by doubling) for a write to slow:1: OPA's
// comparison cannot be interrupted.
var sandboxPolicy = func() string {
	var b strings.Builder
	b.WriteString(`package batpak.write

deny contains {"code": "BIG_AMOUNT", "message": "too much", "context": {"amount": input.event.payload.amount, "limit": 12345678901234567890}} if {
	input.event.payload.amount > 100
}

deny contains "SLOW" if {
	input.event.entity == "slow:1"
	x40 < y40
}

x0 := ["x"]
y0 := ["x"]
`)
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "x%d := array.concat([x%d], [x%d])\ny%d := array.concat([y%d], [y%d])\n", i, i-1, i-1, i, i-1, i-1)
	}
	return b.String()
}()

// The sandbox judges as the policy does in this process — a reason's
// context keeps its numbers exact, the input its expected clock — and a
// child that runs past its deadline is killed and replaced: the next
// decision loads the revision into a new child and answers.
func TestSandboxDecides(t *testing.T) {
	s, err := newSandbox(DefaultMemoryBytes, t.TempDir(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.close()
		testenv.NoChildren(t, 5*time.Second)
	}()
	data := bundleOf(t, "policy.rego", sandboxPolicy)
	dir := t.TempDir()
	if err := Extract(bytes.NewReader(data), dir, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	r, err := s.check(dir, true, 5*time.Second, 200*time.Millisecond, 10*time.Second)
	if err != nil || r.Rejected != nil || r.Err != "" {
		t.Fatalf("check: %+v, %v", r, err)
	}
	if slices.Sort(r.Paths); strings.Join(r.Paths, ",") != "event.entity,event.payload.amount" {
		t.Errorf("input paths %v", r.Paths)
	}
	g := newIsolatedGate(s, data, 200*time.Millisecond, 10*time.Second, r)
	in := func(entity, payload string) *policy.Input {
		return &policy.Input{Action: "append", Event: policy.Event{Entity: entity, Payload: json.RawMessage(payload), ExpectedClock: uint64(1) << 60}}
	}
	ctx := context.Background()
	if d := g.Evaluate(ctx, in("order:1", `{"amount": 5}`)); d != nil {
		t.Fatalf("a small order: %+v", d)
	}
	d := g.Evaluate(ctx, in("order:2", `{"amount": 500}`))
	if d == nil || d.Code != "BIG_AMOUNT" || d.Revision != g.rev {
		t.Fatalf("a large order: %+v", d)
	}
	if ctxJSON, _ := json.Marshal(d.Context); string(ctxJSON) != `{"context":{"amount":500,"limit":12345678901234567890}}` {
		t.Errorf("the reason's context: %s", ctxJSON)
	}
	start := time.Now()
	d = g.Evaluate(ctx, in("slow:1", `{"amount": 5}`))
	if d == nil || d.Code != policy.CodePolicyError || !strings.Contains(d.Message, "ran past 200ms") {
		t.Fatalf("a slow write: %+v, want POLICY_ERROR saying it ran past the timeout", d)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the slow write was refused after %v", took)
	}
	if d := g.Evaluate(ctx, in("order:3", `{"amount": 500}`)); d == nil || d.Code != "BIG_AMOUNT" {
		t.Fatalf("after the slow write: %+v", d)
	}
	if n := s.started.Load(); n != 3 {
		t.Errorf("%d children started, want 3 (the checker, the one killed, its replacement)", n)
	}

	// A child that does not answer within its limit is killed.
	if _, err := s.roundTrip(mustStart(t, s), &sandboxRequest{Op: "decide", Rev: "none"}, 0); !isTimeout(err) {
		t.Fatalf("a request with no time: %v, want a timeout", err)
	}
	if k := s.killed.Load(); k < 1 {
		t.Fatalf("%d children killed", k)
	}
}

func mustStart(t *testing.T, s *sandbox) *child {
	t.Helper()
	c, err := s.start()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func isTimeout(err error) bool {
	var se *sandboxError
	return errors.As(err, &se) && se.timeout != 0
}

// BenchmarkSandboxDecide measures one decision through the sandbox
// (encoding the input, a round trip to an evaluation child, the child's
// evaluation) against the same policy evaluated in this process; every
// input distinct, so that no decision comes from the cache.
//
//	go test -run '^$' -bench SandboxDecide ./server/tenantpolicy/
func BenchmarkSandboxDecide(b *testing.B) {
	data := bundleOf(b, "policy.rego", `package batpak.write

deny contains {"code": "BIG_AMOUNT", "message": "too much"} if input.event.payload.amount > 100

deny contains "NOT_A_CLERK" if not "clerk" in input.principal.roles

deny contains "NO_KEY" if input.event.idempotency_key == ""
`)
	dir := b.TempDir()
	if err := Extract(bytes.NewReader(data), dir, DefaultLimits()); err != nil {
		b.Fatal(err)
	}
	in := func(i int) *policy.Input {
		return &policy.Input{Action: "append", Principal: policy.Principal{ID: "u", Tenant: "acme", Roles: []string{"clerk"}},
			Event: policy.Event{Entity: fmt.Sprintf("order:%d", i), IdempotencyKey: strconv.Itoa(i), Payload: json.RawMessage(fmt.Sprintf(`{"amount": %d, "note": "gift"}`, i%100))}}
	}
	ctx := context.Background()
	b.Run("in-process", func(b *testing.B) {
		g, err := checkDir(ctx, dir, false, 0, time.Second, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		for i := range b.N {
			if d := g.Evaluate(ctx, in(i)); d != nil {
				b.Fatal(d)
			}
		}
	})
	b.Run("sandbox", func(b *testing.B) {
		s, err := newSandbox(DefaultMemoryBytes, b.TempDir(), 1, 1)
		if err != nil {
			b.Fatal(err)
		}
		defer s.close()
		g := newIsolatedGate(s, data, time.Second, 10*time.Second, nil)
		for i := range b.N {
			if d := g.Evaluate(ctx, in(i)); d != nil {
				b.Fatal(d)
			}
		}
	})
}

// A revision whose compilation runs past the check timeout in an
// evaluation child (the type checker walking 2^40 types) denies with
// POLICY_ERROR when the child is killed, and the directory the child was
// extracting into is removed all the same.
func TestSandboxLoadKilled(t *testing.T) {
	tmp := t.TempDir()
	s, err := newSandbox(DefaultMemoryBytes, tmp, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var b strings.Builder
	b.WriteString("package batpak.write\n\nx0 := [\"x\"]\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "x%d := [x%d, x%d]\n", i, i-1, i-1)
	}
	b.WriteString("deny contains \"a\" if x40 == x40\n")
	g := newIsolatedGate(s, bundleOf(t, "policy.rego", b.String()), 200*time.Millisecond, time.Second, nil)
	start := time.Now()
	d := g.Evaluate(context.Background(), &policy.Input{Action: "append"})
	if d == nil || d.Code != policy.CodePolicyError || !strings.Contains(d.Message, "loading the policy: it ran past 1s") {
		t.Fatalf("%+v, want POLICY_ERROR: the load ran past the check timeout", d)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("denied after %v", took)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		t.Fatalf("left in the sandbox's directory: %v", ents)
	}
}

// managerOfAcme opens a Manager with opts over a fresh control plane that
// holds the tenant "acme" (Dir and Plane filled in); both close when the
// test ends.
func managerOfAcme(t *testing.T, opts Options) *Manager {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	plane, err := control.Open(control.Options{Dir: filepath.Join(dir, "control")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plane.Close() })
	if _, err := plane.CreateTenant(ctx, "acme", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.Plane = filepath.Join(dir, "policies"), plane
	m, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// A batch's items reach the sandbox together: 30 items, two round trips
// of batchChunk (after the revision is loaded); decisions made before are answered
// by the manager's cache, as an in-process gate's are; and the first
// refused item is the one reported.
func TestSandboxBatchInOneTrip(t *testing.T) {
	ctx := context.Background()
	m := managerOfAcme(t, Options{Isolate: true, MaxConcurrent: 1})
	if _, err := m.Push(ctx, "acme", bytes.NewReader(bundleOf(t, "policy.rego", `package batpak.write

deny contains "NO_SECRETS" if startswith(input.event.entity, "secret:")
`))); err != nil {
		t.Fatal(err)
	}
	items := func(n int, secret int) []*core.Proposal {
		ps := make([]*core.Proposal, n)
		for i := range ps {
			name := fmt.Sprintf("note:%d", i)
			if i == secret {
				name = "secret:1"
			}
			c, _ := core.NewCoordinate(name, "s")
			ps[i] = &core.Proposal{Coordinate: c, Kind: core.MustKind(1, 1), Payload: []byte(`{}`), Action: core.ActionAppend, BatchIndex: i, BatchSize: n}
		}
		return ps
	}
	adm := m.Admission("acme", nil).(core.ItemsAdmission)
	if err := adm.AdmitItems(ctx, items(2, -1)); err != nil { // loads the revision
		t.Fatal(err)
	}
	before := m.sb.trips.Load()
	if err := adm.AdmitItems(ctx, items(30, -1)); err != nil {
		t.Fatal(err)
	}
	// 28 not decided before, batchChunk to a request.
	if trips, want := m.sb.trips.Load()-before, uint64((28+batchChunk-1)/batchChunk); trips != want {
		t.Fatalf("30 items took %d round trips, want %d", trips, want)
	}
	// Decided before: answered by the manager's cache, no round trip.
	before = m.sb.trips.Load()
	if err := adm.AdmitItems(ctx, items(30, -1)); err != nil {
		t.Fatal(err)
	}
	if err := m.Admission("acme", nil).Admit(ctx, items(30, -1)[7]); err != nil {
		t.Fatal(err)
	}
	if trips := m.sb.trips.Load() - before; trips != 0 {
		t.Fatalf("decisions made before took %d round trips, want none", trips)
	}
	// A batch whose client went away is not sent on.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	before = m.sb.trips.Load()
	fresh := items(40, -1)
	for i, p := range fresh {
		p.Coordinate, _ = core.NewCoordinate(fmt.Sprintf("other:%d", i), "s")
	}
	if err := adm.AdmitItems(gone, fresh); err == nil {
		t.Fatal("a batch whose context ended was admitted")
	}
	if trips := m.sb.trips.Load() - before; trips != 0 {
		t.Fatalf("a batch whose context ended took %d round trips", trips)
	}
	err := adm.AdmitItems(ctx, items(30, 17))
	var bie *core.BatchItemError
	var d *policy.Denial
	if !errors.As(err, &bie) || bie.Index != 17 || !errors.As(err, &d) || d.Message != "NO_SECRETS" || d.Layer != "tenant" {
		t.Fatalf("a batch whose item 17 is a secret: %v, want item 17 refused by the tenant layer", err)
	}
}
