package tenantpolicy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/shares"
)

// TestEvaluationSlotsAreShared: one tenant holds at most half of the
// evaluation slots, so another tenant still gets one while the first
// tenant's next evaluation waits, and a wait past slotWait is a
// *core.RetryError saying whose slots ran out.
func TestEvaluationSlotsAreShared(t *testing.T) {
	defer func(w time.Duration) { slotWait = w }(slotWait)
	slotWait = 50 * time.Millisecond
	m := &Manager{slots: shares.New(2)}
	ctx := context.Background()
	relA, err := m.slot(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	var re *core.RetryError
	if _, err := m.slot(ctx, "slow"); !errors.As(err, &re) || re.After <= 0 || !strings.Contains(re.Reason, "this tenant's") {
		t.Fatalf("the slow tenant's second evaluation: %v, want a *core.RetryError for its share", err)
	}
	relB, err := m.slot(ctx, "other")
	if err != nil {
		t.Fatalf("another tenant while the slow one holds its share: %v", err)
	}
	defer relB()
	if _, err := m.slot(ctx, "third"); !errors.As(err, &re) || !strings.Contains(re.Reason, "the server's") {
		t.Fatalf("a third tenant with every slot taken: %v, want a *core.RetryError for the server's", err)
	}
}

// TestUploadWaitsAreBounded: an upload or rollback waits at most
// uploadWait for its tenant's previous change and for a check slot, then
// is a *core.RetryError saying which (503 BUSY over HTTP), nothing
// changed; another tenant's change is not held by the first tenant's.
func TestUploadWaitsAreBounded(t *testing.T) {
	defer func(w time.Duration) { uploadWait = w }(uploadWait)
	uploadWait = 50 * time.Millisecond
	m := &Manager{opts: Options{Limits: Limits{MaxBundleBytes: 1 << 20}}, checks: shares.New(2)}
	ctx := context.Background()
	held, err := m.changes.lock(ctx, "slow")
	if err != nil {
		t.Fatal(err)
	}
	var re *core.RetryError
	if _, err := m.Push(ctx, "slow", strings.NewReader("bundle")); !errors.As(err, &re) || !strings.Contains(re.Reason, "previous policy change") {
		t.Fatalf("an upload while the tenant's previous change runs: %v, want a *core.RetryError naming it", err)
	}
	if _, err := m.Rollback(ctx, "slow", strings.Repeat("a", 64)); !errors.As(err, &re) {
		t.Fatalf("a rollback while the tenant's previous change runs: %v, want a *core.RetryError", err)
	}
	other, err := m.changes.lock(ctx, "other")
	if err != nil {
		t.Fatalf("another tenant's change while the first's runs: %v", err)
	}
	other()
	held()
	held() // once

	slot, err := m.checks.Take(ctx, "slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slot()
	wait, cancel := context.WithTimeout(ctx, uploadWait)
	defer cancel()
	if _, err := m.check(ctx, wait, "slow", nil, true, false, Limits{}); !errors.As(err, &re) || !strings.Contains(re.Reason, "server.policy_checks") {
		t.Fatalf("a check with the tenant's share of slots taken: %v, want a *core.RetryError naming server.policy_checks", err)
	}
	gone, stop := context.WithCancel(ctx)
	stop()
	if _, err := m.check(gone, gone, "slow", nil, true, false, Limits{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a check whose request ended: %v, want its context's error", err)
	}
	if n := len(m.changes.m); n != 0 {
		t.Errorf("%d tenant locks kept after their changes ended", n)
	}
}

// TestLoadThatStoppedWaitingIsNotKept: a write that finds its tenant's
// revision not loaded here (a cluster node: another node activated it)
// waits for a check slot within its own context; when that context ends
// first, the write fails, but the next write, with a slot free, loads the
// revision: a wait that ran out is not the revision's load result.
func TestLoadThatStoppedWaitingIsNotKept(t *testing.T) {
	ctx := context.Background()
	m := managerOfAcme(t, Options{Checks: 2})
	tp, err := m.Push(ctx, "acme", bytes.NewReader(bundleOf(t, "policy.rego", "package batpak.write\n\ndeny contains \"X\" if input.event.entity == \"x\"\n")))
	if err != nil {
		t.Fatal(err)
	}
	rev := tp.Active
	m.gmu.Lock()
	delete(m.gates["acme"], rev) // not loaded on this node
	m.gmu.Unlock()
	// Two other tenants' uploads hold every check slot.
	r1, _ := m.checks.Take(ctx, "other1", 0)
	r2, _ := m.checks.Take(ctx, "other2", 0)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	l := m.ensure(short, "acme", rev)
	if !errors.Is(l.err, context.DeadlineExceeded) {
		t.Fatalf("a write whose context ended waiting for a slot: %v, want its context's error", l.err)
	}
	r1()
	r2()
	l = m.ensure(ctx, "acme", rev)
	if l.err != nil {
		t.Fatalf("a later write, every slot free: %v (the first write's context error kept as the revision's load)", l.err)
	}
}

// TestLoadCutShortIsNotKept: a write whose deadline passes while the
// revision it needs compiles (in this process, without Isolate, where
// the compile honours the write's context) fails, and may say the check
// ran past its time; the next write still loads the revision, which
// nothing is wrong with.
func TestLoadCutShortIsNotKept(t *testing.T) {
	ctx := context.Background()
	m := managerOfAcme(t, Options{Checks: 2})
	var rego strings.Builder // enough rules that compiling takes a while
	rego.WriteString("package batpak.write\n")
	for i := range 2000 {
		fmt.Fprintf(&rego, "\ndeny contains \"X%d\" if { input.event.entity == \"x%d\"; count(input.event.entity) > %d }\n", i, i, i%7)
	}
	tp, err := m.Push(ctx, "acme", bytes.NewReader(bundleOf(t, "policy.rego", rego.String())))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 100 * time.Millisecond} {
		m.gmu.Lock()
		delete(m.gates["acme"], tp.Active) // not loaded on this node
		m.gmu.Unlock()
		short, cancel := context.WithTimeout(ctx, d)
		m.ensure(short, "acme", tp.Active)
		cancel()
		if l := m.ensure(ctx, "acme", tp.Active); l.err != nil {
			t.Fatalf("a write after one cut short at %v: %v", d, l.err)
		}
	}
}

// TestTenantsThatKeepSlotsBusyShareHalf: tenants whose evaluations kept
// the slots busy lately share half the slots, so two tenants with
// policies that run long cannot take both slots of a pool of 2 from a
// third, whose evaluation gets one at once.
func TestTenantsThatKeepSlotsBusyShareHalf(t *testing.T) {
	defer func(w time.Duration) { slotWait = w }(slotWait)
	slotWait = 50 * time.Millisecond
	m := &Manager{slots: shares.NewWindow(2, 400*time.Millisecond)}
	ctx := context.Background()
	relA, err := m.slot(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	relC, err := m.slot(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // both evaluations run long
	relA()
	relC()
	relA, err = m.slot(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer relA()
	var re *core.RetryError
	if _, err := m.slot(ctx, "c"); !errors.As(err, &re) || !strings.Contains(re.Reason, "busy lately") {
		t.Fatalf("the second busy tenant while the first holds the busy share: %v, want a *core.RetryError saying it kept the slots busy", err)
	}
	relB, err := m.slot(ctx, "b")
	if err != nil {
		t.Fatalf("a tenant whose evaluations are quick, beside two busy ones: %v", err)
	}
	relB()
}

// TestEvaluationsCounted: Evaluations (the /metrics gauges) counts the
// evaluations holding a slot and those waiting for one.
func TestEvaluationsCounted(t *testing.T) {
	m := &Manager{slots: shares.New(2)}
	ctx := context.Background()
	rel, err := m.slot(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = m.slots.Take(waitCtx, "a", 0) }() // a's share (1 of 2) is taken: it waits
	deadline := time.Now().Add(5 * time.Second)
	for {
		if running, waiting := m.Evaluations(); running == 1 && waiting == 1 {
			break
		}
		if time.Now().After(deadline) {
			running, waiting := m.Evaluations()
			t.Fatalf("Evaluations = %d running, %d waiting; want 1 and 1", running, waiting)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	rel()
	for running, waiting := m.Evaluations(); running != 0 || waiting != 0; running, waiting = m.Evaluations() {
		if time.Now().After(deadline) {
			t.Fatalf("after the release and the cancel: %d running, %d waiting", running, waiting)
		}
		time.Sleep(time.Millisecond)
	}
}
