package tenantpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/policy"
)

// A stray file in a tenant's decision log whose name reads as a number but
// is not the log's own spelling ("7.jsonl" beside 0000000000000007.jsonl)
// is ignored: it once failed every later load, so that the tenant's
// decisions went unwritten and every query failed.
func TestDecisionLogIgnoresStrayNames(t *testing.T) {
	dir := t.TempDir()
	s := openTestDecisions(t, dir)
	writeTestDecisions(t, s, 0, 5)
	s.close()
	if err := os.WriteFile(filepath.Join(dir, "acme", "7.jsonl"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTestDecisions(t, dir)
	defer s.close()
	writeTestDecisions(t, s, 100, 50)
	p, err := s.query("acme", DecisionQuery{Limit: 1000})
	if err != nil || len(p.Decisions) != 55 || s.writeErrs.Load() != 0 {
		t.Fatalf("after a stray 7.jsonl: %d decisions, %v, %d write errors; want 55, none", len(p.Decisions), err, s.writeErrs.Load())
	}
}

// A segment file larger than any the log writes (replaced on disk) is
// skipped, never read whole, and the log goes on: new decisions are
// written after it and a query returns them and the older segments'.
func TestDecisionLogSkipsOversizedSegments(t *testing.T) {
	dir := t.TempDir()
	s := openTestDecisions(t, dir)
	writeTestDecisions(t, s, 0, 5)
	s.close()
	// Segment 2, after the log's segment 1: 512 MiB, sparse.
	f, err := os.Create(filepath.Join(dir, "acme", fmt.Sprintf("%016d.jsonl", 2)))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(512 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s = openTestDecisions(t, dir)
	defer s.close()
	writeTestDecisions(t, s, 100, 50)
	p, err := s.query("acme", DecisionQuery{Limit: 1000})
	runtime.ReadMemStats(&after)
	if err != nil || len(p.Decisions) != 55 || s.writeErrs.Load() != 0 {
		t.Fatalf("after an oversized segment: %d decisions, %v, %d write errors; want 55, none", len(p.Decisions), err, s.writeErrs.Load())
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Fatalf("opening and querying the log allocated %d MiB: the oversized segment was read", got>>20)
	}
	if fi, err := os.Stat(filepath.Join(dir, "acme", fmt.Sprintf("%016d.jsonl", 3))); err != nil || fi.Size() == 0 {
		t.Fatalf("new decisions are not in a segment after the skipped one: %v", err)
	}
}

// openTestDecisions opens a decision store in dir (1,000 decisions, 1 MiB).
func openTestDecisions(t *testing.T, dir string) *decisionStore {
	t.Helper()
	s, err := newDecisionStore(dir, 1000, 1<<20, 1024, slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeTestDecisions writes n denials d<from>… to tenant acme's log and
// waits until they are written.
func writeTestDecisions(t *testing.T, s *decisionStore, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if !s.enqueue("acme", []byte(fmt.Sprintf(`{"decision_id":"d%d","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n", i))) {
			t.Fatal("enqueue refused")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPrincipalShareRefills: a principal's share of its tenant's log
// (an eighth of its entries) refills over DecisionPrincipalRefill, and
// the first decision recorded after some were suppressed counts them;
// principals, tenants and a principal's denials and sampled allows have
// shares of their own, and a subject never names a key's share.
func TestPrincipalShareRefills(t *testing.T) {
	m := &Manager{opts: Options{DecisionPrincipalRefill: 2 * time.Second, DecisionLogSize: 16, DecisionLogBytes: 1 << 20}}
	w := policy.Principal{ID: "w", KeyID: "k1"}
	take := func(tenant, result string, p policy.Principal) (uint64, bool) {
		_, n, ok := m.pace(tenant, result, p, 100)
		return n, ok
	}
	for i := range 2 {
		if _, ok := take("acme", ResultDenied, w); !ok {
			t.Fatalf("decision %d within the share of 16/8 = 2 was suppressed", i)
		}
	}
	for range 3 {
		if _, ok := take("acme", ResultDenied, w); ok {
			t.Fatal("a decision past the principal's share was recorded")
		}
	}
	for what, p := range map[string]struct {
		tenant, result string
		who            policy.Principal
	}{
		"another key":                {"acme", ResultDenied, policy.Principal{ID: "other", KeyID: "k2"}},
		"the same key in a tenant":   {"globex", ResultDenied, w},
		"the key's sampled allows":   {"acme", ResultAllowed, w},
		"a subject named as the key": {"acme", ResultDenied, policy.Principal{ID: "k1"}},
	} {
		if _, ok := take(p.tenant, p.result, p.who); !ok {
			t.Fatalf("%s: its decision was suppressed by another's share", what)
		}
	}
	time.Sleep(1100 * time.Millisecond) // one entry refills a second
	suppressed, ok := take("acme", ResultDenied, w)
	if !ok || suppressed != 3 {
		t.Fatalf("after the share refilled: recorded %v, %d suppressed before it; want recorded, 3", ok, suppressed)
	}
}

// TestPrincipalSharesAreBounded: past maxPaces principals, a tenant's
// further principals share one overflow share per result instead of
// growing the map, and their decisions are still paced.
func TestPrincipalSharesAreBounded(t *testing.T) {
	m := &Manager{opts: Options{DecisionPrincipalRefill: time.Hour, DecisionLogSize: 16, DecisionLogBytes: 1 << 20}}
	for i := range maxPaces + 100 {
		if _, _, ok := m.pace("acme", ResultDenied, policy.Principal{ID: fmt.Sprint("s", i)}, 100); !ok && i < maxPaces {
			t.Fatalf("principal %d's first decision was suppressed", i)
		}
	}
	if n := len(m.paces); n > maxPaces+1 {
		t.Fatalf("%d shares kept after %d principals, want at most %d and one overflow share", n, maxPaces+100, maxPaces)
	}
	suppressed := 0
	for i := range 10 {
		if _, _, ok := m.pace("acme", ResultDenied, policy.Principal{ID: fmt.Sprint("late", i)}, 100); !ok {
			suppressed++
		}
	}
	if suppressed == 0 {
		t.Fatal("principals past the bound were not paced at all")
	}
}

// TestSuppressedCountsAreReportedOnce: two entries of one principal paced
// at once report the decisions suppressed before them once between them,
// and an entry that is not queued gives its count back to the next.
func TestSuppressedCountsAreReportedOnce(t *testing.T) {
	m := &Manager{opts: Options{DecisionPrincipalRefill: time.Hour, DecisionLogSize: 16, DecisionLogBytes: 1 << 20}}
	w := policy.Principal{ID: "w", KeyID: "k1"}
	m.pace("acme", ResultDenied, w, 100)
	m.pace("acme", ResultDenied, w, 100)
	for range 3 {
		m.pace("acme", ResultDenied, w, 100) // suppressed: the share of 2 is used
	}
	pp := m.paces[paceKey("acme", ResultDenied, w)]
	pp.entries.SetBurst(4) // two more entries refill at once
	pp.entries.AllowN(time.Now(), -2)
	_, a, okA := m.pace("acme", ResultDenied, w, 100)
	ppB, b, okB := m.pace("acme", ResultDenied, w, 100)
	if !okA || !okB || a+b != 3 {
		t.Fatalf("two entries paced at once report %d and %d suppressed before them (recorded %v %v), want 3 between them", a, b, okA, okB)
	}
	m.unsettle(ppB, b+1) // B was not queued after all, and had one to give back
	if pp.suppressed != b+1 {
		t.Fatalf("after an entry was not queued the share holds %d to report, want %d", pp.suppressed, b+1)
	}
}

// holdWriter makes s's writer wait, once it takes a batch holding one of
// tenant's decisions, until release is called; it returns once the
// writer waits.
func holdWriter(t *testing.T, s *decisionStore, tenant string) (release func()) {
	t.Helper()
	held, go_ := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.hold = func(batch []queued) {
		for _, it := range batch {
			if it.tenant == tenant {
				once.Do(func() { close(held); <-go_ })
			}
		}
	}
	if !s.enqueue(tenant, []byte(`{"decision_id":"hold","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n")) {
		t.Fatal("enqueue refused")
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not take the decision")
	}
	var rel sync.Once
	return func() { rel.Do(func() { close(go_) }) }
}

// flushed waits until every decision queued so far is written.
func flushed(t *testing.T, s *decisionStore) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// decisionIDs is tenant's log, newest first.
func decisionIDs(t *testing.T, s *decisionStore, tenant string) []string {
	t.Helper()
	p, err := s.query(tenant, DecisionQuery{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range p.Decisions {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestDecisionLogForgetsDeletedTenant: decisions of a tenant still
// waiting for the writer when the tenant is deleted are never written —
// not even when a new tenant of the same id exists before the writer gets
// to them (the new tenant's log starts empty: it never shows the old
// tenant's principals and inputs).
func TestDecisionLogForgetsDeletedTenant(t *testing.T) {
	s := openTestDecisions(t, t.TempDir())
	defer s.close()
	release := holdWriter(t, s, "slow")
	defer release()
	for i := range 5 {
		if !s.enqueue("acme", []byte(fmt.Sprintf(`{"decision_id":"old-%d","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n", i))) {
			t.Fatal("enqueue refused")
		}
	}
	if err := s.remove("acme"); err != nil { // deleted, and created again at once
		t.Fatal(err)
	}
	release()
	flushed(t, s)
	if ids := decisionIDs(t, s, "acme"); len(ids) != 0 {
		t.Fatalf("the new tenant acme's log shows the deleted acme's decisions %v", ids)
	}
	if !s.enqueue("acme", []byte(`{"decision_id":"new","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n")) {
		t.Fatal("enqueue refused")
	}
	flushed(t, s)
	if ids := decisionIDs(t, s, "acme"); len(ids) != 1 || ids[0] != "new" {
		t.Fatalf("the new tenant acme's log: %v, want its one decision", ids)
	}
	if ids := decisionIDs(t, s, "slow"); len(ids) != 1 {
		t.Fatalf("tenant slow's log: %v, want its one decision", ids)
	}
}

// TestDecisionLogTenantShare: one tenant flooding decisions while the
// writer is held up fills at most a quarter of the queue; another
// tenant's decision meanwhile is still queued and written.
func TestDecisionLogTenantShare(t *testing.T) {
	const queue = 8 // a tenant's share: 2
	s, err := newDecisionStore(t.TempDir(), 1000, 1<<20, queue, slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	release := holdWriter(t, s, "slow")
	defer release()
	accepted := 0
	for i := range 3 * queue {
		if s.enqueue("noisy", []byte(fmt.Sprintf(`{"decision_id":"n%d","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n", i))) {
			accepted++
		}
	}
	if accepted != queue/4 {
		t.Fatalf("the noisy tenant queued %d decisions, want its share, %d", accepted, queue/4)
	}
	if !s.enqueue("quiet", []byte(`{"decision_id":"q","time":"2024-01-01T00:00:00Z","result":"denied"}`+"\n")) {
		t.Fatal("the quiet tenant's decision was crowded out")
	}
	release()
	flushed(t, s)
	if ids := decisionIDs(t, s, "quiet"); len(ids) != 1 || ids[0] != "q" {
		t.Fatalf("tenant quiet's log: %v, want its one decision", ids)
	}
	if ids := decisionIDs(t, s, "noisy"); len(ids) != queue/4 {
		t.Fatalf("tenant noisy's log holds %v, want its share of the queue, %d", ids, queue/4)
	}
}

// A denial's entry keeps the first MaxLoggedFields input fields the
// policy reads, each as the raw JSON read, null where the input has none.
func TestInputFieldsBounded(t *testing.T) {
	var paths []string
	for i := range 2 * MaxLoggedFields {
		paths = append(paths, fmt.Sprintf("event.payload.k%d", i))
	}
	paths[1] = "principal.tenant"
	in := &policy.Input{Action: "append", Principal: policy.Principal{Tenant: "acme"},
		Event: policy.Event{Entity: "e:1", Kind: "1:1", Payload: json.RawMessage(`{"k0":12345678901234567890,"k2":{"x":[1]},"k0":7}`)}}
	got := inputFields(in, paths, 4096)
	if len(got) != MaxLoggedFields {
		t.Fatalf("%d fields kept, want %d", len(got), MaxLoggedFields)
	}
	for p, want := range map[string]string{"event.payload.k0": "7", "principal.tenant": `"acme"`, "event.payload.k2": `{"x":[1]}`} {
		if raw, ok := got[p].(json.RawMessage); !ok || string(raw) != want {
			t.Errorf("%s = %v, want %s", p, got[p], want)
		}
	}
	if v, ok := got["event.payload.k3"]; !ok || v != nil {
		t.Errorf("a field the input lacks: %v %v, want null", v, ok)
	}
	if _, ok := got[paths[MaxLoggedFields]]; ok {
		t.Errorf("a field past the first %d kept", MaxLoggedFields)
	}
}

// A field larger than the log keeps is noted by its size without being
// copied; paths down a deep chain of objects stop once reading them would
// read the input over eight times, with a note.
func TestInputFieldsBoundedInCost(t *testing.T) {
	big := `"` + strings.Repeat("a", 100_000) + `"`
	in := &policy.Input{Action: "append", Event: policy.Event{Entity: "e:1", Kind: "1:1", Payload: json.RawMessage(`{"big":` + big + `,"small":1}`)}}
	got := inputFields(in, []string{"event.payload.big", "event.payload.small"}, 4096)
	if s, ok := got["event.payload.big"].(string); !ok || !strings.Contains(s, "100002 bytes of JSON, more than the decision log keeps") {
		t.Fatalf("a 100 KB field: %v", got["event.payload.big"])
	}
	if raw, ok := got["event.payload.small"].(json.RawMessage); !ok || string(raw) != "1" {
		t.Fatalf("a small field beside it: %v", got["event.payload.small"])
	}
	const depth = 200
	deep := strings.Repeat(`{"x":`, depth) + big + strings.Repeat("}", depth)
	in.Event.Payload = json.RawMessage(deep)
	var paths []string
	p := "event.payload"
	for range depth {
		p += ".x"
		paths = append(paths, p)
	}
	got = inputFields(in, paths, 4096)
	if note, _ := got["note"].(string); !strings.Contains(note, "not kept: reading them would read more than 8 times the input") || len(got) > 20 {
		t.Fatalf("%d fields down a chain of %d objects: %d kept, note %q", depth, depth, len(got), got["note"])
	}
}

// A member whose name holds a dot is logged as the policy read it, not
// as the nested member its name spells.
func TestInputFieldsDottedNames(t *testing.T) {
	in := &policy.Input{Action: "append", Event: policy.Event{Entity: "e:1", Kind: "1:1", Payload: json.RawMessage(`{"a.b":"real","a":{"b":"fake"}}`)}}
	got := inputFields(in, []string{`event.payload["a.b"]`, "event.payload.a.b", `event.payload["unclosed`}, 4096)
	if raw, _ := got[`event.payload["a.b"]`].(json.RawMessage); string(raw) != `"real"` {
		t.Errorf(`event.payload["a.b"] = %v, want "real"`, got[`event.payload["a.b"]`])
	}
	if raw, _ := got["event.payload.a.b"].(json.RawMessage); string(raw) != `"fake"` {
		t.Errorf("event.payload.a.b = %v, want the nested member", got["event.payload.a.b"])
	}
	if v, ok := got[`event.payload["unclosed`]; !ok || v != nil {
		t.Errorf("a path that does not read back: %v %v, want null", v, ok)
	}
}
