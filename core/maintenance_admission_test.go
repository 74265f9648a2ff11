package core_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// writeGate admits every write and cannot judge maintenance.
type writeGate struct{}

func (writeGate) Admit(context.Context, *core.Proposal) error { return nil }

// maintGate admits writes, records every maintenance proposal and refuses
// those whose entities include one starting with "deny:".
type maintGate struct {
	mu   sync.Mutex
	seen []core.MaintenanceProposal
	sys  int // system records proposed
}

func (g *maintGate) Admit(_ context.Context, p *core.Proposal) error {
	if p.Action == core.ActionSystem {
		g.mu.Lock()
		g.sys++
		g.mu.Unlock()
		return errors.New("no system records from applications")
	}
	return nil
}

func (g *maintGate) AdmitMaintenance(_ context.Context, p *core.MaintenanceProposal) (core.MaintenanceGrant, error) {
	g.mu.Lock()
	g.seen = append(g.seen, *p)
	g.mu.Unlock()
	for e := range p.Entities {
		if strings.HasPrefix(e, "deny:") {
			return core.MaintenanceGrant{}, fmt.Errorf("refused: %s", e)
		}
	}
	if strings.HasPrefix(p.Entity, "deny:") {
		return core.MaintenanceGrant{}, fmt.Errorf("refused: %s", p.Entity)
	}
	return core.MaintenanceGrant{Who: json.RawMessage(`{"id":"ops-1"}`)}, nil
}

func (g *maintGate) last(t *testing.T) core.MaintenanceProposal {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		t.Fatal("no maintenance proposal")
	}
	return g.seen[len(g.seen)-1]
}

type auditRec struct {
	Action   string          `json:"action"`
	Who      json.RawMessage `json:"who"`
	Why      string          `json:"why"`
	Entity   string          `json:"entity"`
	IDs      []string        `json:"ids"`
	Entities map[string]int  `json:"entities"`
	Erased   int             `json:"events_erased"`
	Removed  int             `json:"events_removed"`
	Compact  *struct {
		MaxPerEntity int  `json:"max_per_entity"`
		Tombstone    bool `json:"tombstone"`
	} `json:"compact"`
}

func audits(t *testing.T, s *core.Store) []auditRec {
	t.Helper()
	evs, err := s.Stream(core.MaintenanceAuditEntity)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]auditRec, len(evs))
	for i, ev := range evs {
		if ev.Header.Kind != core.KindMaintenanceAudit || ev.Coordinate.Scope != core.MaintenanceAuditScope {
			t.Fatalf("audit record kind %s scope %s", ev.Header.Kind, ev.Coordinate.Scope)
		}
		if err := json.Unmarshal(ev.Payload, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// An Admission that cannot judge maintenance refuses it: fail closed.
func TestMaintenanceFailsClosed(t *testing.T) {
	s := openStore(t, smallSegments, func(c *core.Config) { c.Admission = writeGate{} })
	r := mustAppend(t, s, mustCoord(t, "e:1", "s"), kindA, `{"secret":1}`)
	if err := s.Redact(context.Background(), r.ID); !errors.Is(err, core.ErrMaintenanceNotAdmitted) {
		t.Fatalf("Redact = %v, want ErrMaintenanceNotAdmitted", err)
	}
	if _, err := s.EraseEntity(context.Background(), "e:1"); !errors.Is(err, core.ErrMaintenanceNotAdmitted) {
		t.Fatalf("EraseEntity = %v, want ErrMaintenanceNotAdmitted", err)
	}
	if _, err := s.Compact(context.Background(), core.Merge()); !errors.Is(err, core.ErrMaintenanceNotAdmitted) {
		t.Fatalf("Compact = %v, want ErrMaintenanceNotAdmitted", err)
	}
	if ev, err := s.Get(r.ID); err != nil || ev.Redacted || string(ev.Payload) != `{"secret":1}` {
		t.Fatalf("event after refused maintenance: %+v, %v", ev, err)
	}
}

// Redact and EraseEntity ask the gate with what they would erase; a
// refusal erases nothing and records nothing; an erasure is recorded.
func TestRedactIsAdmittedAndAudited(t *testing.T) {
	g := &maintGate{}
	s := openStore(t, func(c *core.Config) { c.Admission = g })
	ctx := core.WithReason(context.Background(), "GDPR 17")
	victim := mustAppend(t, s, mustCoord(t, "deny:1", "s"), kindA, `{"secret":1}`)
	if err := s.Redact(ctx, victim.ID); err == nil || !strings.Contains(err.Error(), "refused: deny:1") {
		t.Fatalf("Redact = %v, want the gate's refusal", err)
	}
	if p := g.last(t); p.Action != core.ActionRedact || p.Entity != "deny:1" || p.Reason != "GDPR 17" ||
		len(p.IDs) != 1 || p.IDs[0] != victim.ID || p.Entities["deny:1"] != 1 || p.EventsErased != 1 {
		t.Fatalf("proposal %+v", p)
	}
	if ev, _ := s.Get(victim.ID); ev.Redacted {
		t.Fatal("a refused redaction erased the payload")
	}
	var ids []core.EventID
	for i := 0; i < 3; i++ {
		ids = append(ids, mustAppend(t, s, mustCoord(t, "ok:1", "s"), kindA, `{"secret":2}`).ID)
	}
	if err := s.Redact(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	// EraseEntity proposes only the events not yet redacted.
	n, err := s.EraseEntity(ctx, "ok:1")
	if err != nil || n != 2 {
		t.Fatalf("EraseEntity = %d, %v, want 2", n, err)
	}
	if p := g.last(t); p.Action != core.ActionErase || p.Entity != "ok:1" || len(p.IDs) != 2 || p.IDs[0] != ids[1] || p.EventsErased != 2 {
		t.Fatalf("erase proposal %+v", p)
	}
	// Nothing left to erase: asked, not recorded.
	if n, err := s.EraseEntity(ctx, "ok:1"); err != nil || n != 0 {
		t.Fatalf("second EraseEntity = %d, %v", n, err)
	}
	a := audits(t, s)
	if len(a) != 2 || a[0].Action != "redact" || a[1].Action != "erase" || string(a[0].Who) != `{"id":"ops-1"}` || a[0].Why != "GDPR 17" ||
		a[0].Erased != 1 || a[1].Erased != 2 || len(a[1].IDs) != 2 || a[1].Entities["ok:1"] != 2 {
		t.Fatalf("audit records %+v", a)
	}
}

// Compact is admitted with exactly what it would remove or tombstone; a
// refusal leaves the store as it was.
func TestCompactIsAdmittedWithItsPlan(t *testing.T) {
	g := &maintGate{}
	s := openStore(t, smallSegments, func(c *core.Config) { c.Admission = g })
	pad := strings.Repeat("x", 500)
	for i := 0; i < 400; i++ {
		mustAppend(t, s, mustCoord(t, fmt.Sprintf("ok:%d", i%4), "s"), kindA, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
		if i%50 == 0 {
			mustAppend(t, s, mustCoord(t, "deny:1", "s"), kindA, fmt.Sprintf(`{"i":%d}`, i))
		}
	}
	before := s.Stats().Events
	// Removing deny:1's older events is refused.
	if _, err := s.Compact(context.Background(), core.CompactConfig{MaxPerEntity: 1}); err == nil || !strings.Contains(err.Error(), "refused: deny:1") {
		t.Fatalf("Compact = %v, want the gate's refusal", err)
	}
	p := g.last(t)
	if p.Action != core.ActionCompact || p.Compact == nil || p.Compact.MaxPerEntity != 1 || p.EventsRemoved == 0 || p.Entities["deny:1"] == 0 || p.Segments == 0 {
		t.Fatalf("proposal %+v", p)
	}
	if got := s.Stats().Events; got != before {
		t.Fatalf("%d events after a refused compaction, want %d", got, before)
	}
	if len(audits(t, s)) != 0 {
		t.Fatal("a refused compaction was recorded")
	}
	// Tombstoning ok:1 is admitted: the proposal's counts are the report's.
	rep, err := s.Compact(context.Background(), core.TombstoneWhere(func(ev core.StoredEvent) bool { return ev.Coordinate.Entity == "ok:1" }))
	if err != nil {
		t.Fatal(err)
	}
	p = g.last(t)
	if rep.EventsTombstoned == 0 || p.EventsErased != rep.EventsTombstoned || p.EventsRemoved != 0 || len(p.Entities) != 1 || p.Entities["ok:1"] != rep.EventsTombstoned {
		t.Fatalf("proposal %+v, report %+v", p, rep)
	}
	a := audits(t, s)
	if len(a) != 1 || a[0].Action != "compact" || a[0].Erased != rep.EventsTombstoned || a[0].Compact == nil || !a[0].Compact.Tombstone {
		t.Fatalf("audit records %+v", a)
	}
	// Application code cannot forge an audit record: the store's own
	// entities are reserved, gate or not ...
	if _, err := s.AppendSystem(context.Background(), mustCoord(t, core.MaintenanceAuditEntity, core.MaintenanceAuditScope), core.KindMaintenanceAudit, []byte(`{"forged":true}`), core.AppendOptions{}); !errors.Is(err, core.ErrInvalidCoordinate) {
		t.Fatalf("a forged audit record: %v, want a reserved-entity refusal", err)
	}
	if _, err := s.Append(context.Background(), mustCoord(t, core.MaintenanceAuditEntity+":x", "s"), kindA, []byte(`{}`)); !errors.Is(err, core.ErrInvalidCoordinate) {
		t.Fatalf("an application event on a reserved entity: %v", err)
	}
	// ... and a system record elsewhere goes through the gate.
	if _, err := s.AppendSystem(context.Background(), mustCoord(t, "app:sys", "s"), core.KindMaintenanceAudit, []byte(`{"forged":true}`), core.AppendOptions{}); err == nil {
		t.Fatal("a system record was written around the gate")
	}
	if g.sys != 1 || len(audits(t, s)) != 1 {
		t.Fatalf("system proposals %d, audit records %d", g.sys, len(audits(t, s)))
	}
}

// Without an Admission, maintenance runs unasked and is still recorded.
func TestMaintenanceWithoutAdmissionIsRecorded(t *testing.T) {
	s := openStore(t)
	r := mustAppend(t, s, mustCoord(t, "e:1", "s"), kindA, `{"secret":1}`)
	if err := s.Redact(context.Background(), r.ID); err != nil {
		t.Fatal(err)
	}
	a := audits(t, s)
	if len(a) != 1 || string(a[0].Who) != "null" || a[0].Erased != 1 {
		t.Fatalf("audit records %+v", a)
	}
}

// withoutSystem leaves out batpak's own records (the audit records of
// erasures), for checks about application events.
func withoutSystem(evs []core.StoredEvent) []core.StoredEvent {
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Header.Kind.Category() != core.CategorySystem {
			out = append(out, ev)
		}
	}
	return out
}

// withoutNewAudit leaves out of evs the audit records of destructive
// operations (MaintenanceAuditEntity) that are not in had: what an
// operation recorded about itself, for checks about the events it kept.
func withoutNewAudit(evs, had []core.StoredEvent) []core.StoredEvent {
	old := map[core.EventID]bool{}
	for _, ev := range had {
		old[ev.Header.ID] = true
	}
	out := evs[:0:0]
	for _, ev := range evs {
		if ev.Coordinate.Entity != core.MaintenanceAuditEntity || old[ev.Header.ID] {
			out = append(out, ev)
		}
	}
	return out
}

// The store's own records are not held to the application's payload
// limits: a small SingleAppendMaxBytes or MaxJSONDepth never makes an
// erasure impossible.
func TestMaintenanceRecordsIgnoreApplicationLimits(t *testing.T) {
	s := openStore(t, func(c *core.Config) {
		c.SingleAppendMaxBytes = 64
		c.MaxJSONDepth = 1
	})
	c := mustCoord(t, "customer:with-a-rather-long-entity-name-to-fill-the-record", "s")
	for i := 0; i < 20; i++ {
		mustAppend(t, s, c, kindA, `{"n":1}`)
	}
	ctx := core.WithReason(context.Background(), strings.Repeat("a long reason ", 20))
	n, err := s.EraseEntity(ctx, c.Entity)
	if err != nil || n != 20 {
		t.Fatalf("EraseEntity under small payload limits: %d, %v", n, err)
	}
	if a := audits(t, s); len(a) != 1 || a[0].Erased != 20 {
		t.Fatalf("audit records %+v", a)
	}
}

// A destructive operation while a visibility fence is open waits for the
// fence to end (its audit record cannot overtake the fence's hidden
// events), or gives up with its context, changing nothing.
func TestMaintenanceWaitsForAnOpenFence(t *testing.T) {
	s := openStore(t)
	r := mustAppend(t, s, mustCoord(t, "e:1", "s"), kindA, `{"secret":1}`)
	f, err := s.BeginFence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Redact(ctx, r.ID); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Redact while a fence stays open: %v, want the context's deadline", err)
	}
	if ev, _ := s.Get(r.ID); ev.Redacted || len(audits(t, s)) != 0 {
		t.Fatal("a redaction that gave up changed something")
	}
	done := make(chan error, 1)
	go func() { done <- s.Redact(context.Background(), r.ID) }()
	time.Sleep(20 * time.Millisecond)
	if err := f.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Redact after the fence ended: %v", err)
	}
	if ev, _ := s.Get(r.ID); !ev.Redacted || len(audits(t, s)) != 1 {
		t.Fatal("the redaction waiting for the fence did not happen or was not recorded")
	}
}

// Retention leaves the store's own records whole unless asked: a
// compaction cannot bury the audit trail of earlier erasures.
func TestRetentionKeepsTheAuditTrail(t *testing.T) {
	s := openStore(t, smallSegments)
	c := mustCoord(t, "e:1", "s")
	for i := 0; i < 3; i++ {
		r := mustAppend(t, s, c, kindA, `{"secret":1}`)
		if err := s.Redact(context.Background(), r.ID); err != nil {
			t.Fatal(err)
		}
	}
	rotate(t, s)
	if _, err := s.Compact(context.Background(), core.CompactConfig{MaxPerEntity: 1, Tombstone: func(core.StoredEvent) bool { return true }}); err != nil {
		t.Fatal(err)
	}
	a := audits(t, s)
	if len(a) != 4 || a[0].Action != "redact" || a[0].Erased != 1 || a[3].Action != "compact" {
		t.Fatalf("audit records after retention: %+v; want the 3 redactions whole and the compaction's", a)
	}
	if _, err := s.Compact(context.Background(), core.CompactConfig{MaxPerEntity: 1, StoreRecords: true}); err != nil {
		t.Fatal(err)
	}
	if a := audits(t, s); len(a) >= 5 {
		t.Fatalf("with StoreRecords the audit records were kept anyway: %d", len(a))
	}
}
