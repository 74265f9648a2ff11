package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// activation is one push or rollback: while it ran (start..end) the
// active revision changed from the previous one to rev.
type activation struct {
	start, end time.Time
	rev        string
}

// judgedWrite is one write made while revisions changed.
type judgedWrite struct {
	start, end time.Time
	entity     string
	err        error
}

// TestPolicyActivationUnderConcurrentWrites: while an admin pushes and
// rolls back three bundles and two other admins keep pushing broken ones
// (one does not compile, one fails its test), writers append without
// pause with every allowed write sampled into the decision log. Then:
//   - every write has exactly one decision in the log, denied or allowed
//     as the write was, with the revision (and for a denial the id) its
//     answer carried;
//   - that revision was active at some moment while the write ran (it had
//     been activated before the write ended and not replaced before it
//     began);
//   - the write was judged by that revision as a whole: its outcome is the
//     one that revision's rule gives for the entity;
//   - the broken bundles were all refused, are not among the revisions,
//     and no decision names them.
func TestPolicyActivationUnderConcurrentWrites(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), func(c *server.Config) { c.PolicyDecisionLogSize = 100000; c.PolicyDecisionLogBytes = 64 << 20 })
	ctx := context.Background()
	acme := acmeAdmin(t, ps)
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.SetSettings(ctx, "acme", client.Settings{DecisionAllowSample: 1}); err != nil {
		t.Fatal(err)
	}
	// Each bundle denies one prefix, with its own code, and tests it.
	prefixes := []string{"secret:", "order:", "draft:"}
	codes := []string{"NO_SECRETS", "NO_ORDERS", "NO_DRAFTS"}
	var bundles [][]byte
	revCode := map[string]string{} // revision → the code its rule denies with
	revPrefix := map[string]string{}
	for i := range prefixes {
		b := tarGz(t, "policy.rego", denyPrefix(codes[i], prefixes[i]),
			"policy_test.rego", "package batpak.write_test\n\ntest_denies if {\n\tcount(data.batpak.write.deny) == 1 with input as {\"event\": {\"entity\": \""+prefixes[i]+"1\"}}\n}\n")
		bundles = append(bundles, b)
		revCode[revisionOf(b)], revPrefix[revisionOf(b)] = codes[i], prefixes[i]
	}
	broken := [][]byte{
		tarGz(t, "policy.rego", "package batpak.write\n\ndeny contains x if {\n"),
		tarGz(t, "policy.rego", denyPrefix("NO_NOTES", "note:"),
			"policy_test.rego", "package batpak.write_test\n\ntest_wrong if {\n\tcount(data.batpak.write.deny) == 0 with input as {\"event\": {\"entity\": \"note:1\"}}\n}\n"),
	}
	var tp client.TenantPolicy
	for i := range bundles {
		var err error
		if tp, err = acme.PushPolicy(ctx, bytes.NewReader(bundles[len(bundles)-1-i])); err != nil {
			t.Fatal(err)
		}
	}
	acts := []activation{{rev: tp.Active}} // the first: before everything

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var writes []judgedWrite
	for w := range 3 {
		wg.Go(func() {
			writer := acme
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				entity := fmt.Sprintf("%s%d-%d", append(prefixes, "note:")[(i+w)%4], w, i)
				start := time.Now()
				_, err := writer.Append(ctx, note(entity))
				jw := judgedWrite{start: start, end: time.Now(), entity: entity, err: err}
				mu.Lock()
				writes = append(writes, jw)
				mu.Unlock()
			}
		})
	}
	brokenErrs := make(chan error, 64)
	for _, b := range broken {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := acme.PushPolicy(ctx, bytes.NewReader(b))
				if !errors.Is(err, client.ErrBundleRejected) {
					brokenErrs <- err
					return
				}
			}
		})
	}
	for i := range 12 {
		target := bundles[(i+1)%3]
		start := time.Now()
		var tp client.TenantPolicy
		var err error
		if i%2 == 0 {
			tp, err = acme.PushPolicy(ctx, bytes.NewReader(target))
		} else {
			tp, err = acme.RollbackPolicy(ctx, revisionOf(target))
		}
		if err != nil {
			t.Fatal(err)
		}
		if tp.Active != revisionOf(target) {
			t.Fatalf("activation %d answered active %s, want %s", i, tp.Active, revisionOf(target))
		}
		acts = append(acts, activation{start: start, end: time.Now(), rev: tp.Active})
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(brokenErrs)
	for err := range brokenErrs {
		t.Fatalf("a broken bundle's push: %v, want BUNDLE_REJECTED", err)
	}

	tpNow, err := acme.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range tpNow.Revisions {
		if revCode[r.Revision] == "" {
			t.Errorf("revision %s is listed: not one of the good bundles", r.Revision)
		}
	}
	st, err := acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pd, _ := st["policy_decisions"].(map[string]any); pd["dropped"] != float64(0) {
		t.Fatalf("decisions dropped: %v", pd)
	}
	logged := map[string][]client.PolicyDecision{}
	for _, d := range allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1000}) {
		e, _ := d.Input["event.entity"].(string)
		logged[e] = append(logged[e], d)
	}

	// possible says whether rev may have been active during [s, e].
	possible := func(rev string, s, e time.Time) bool {
		for k, a := range acts {
			if a.rev != rev || (k > 0 && a.start.After(e)) {
				continue
			}
			if k+1 == len(acts) || !acts[k+1].end.Before(s) {
				return true
			}
		}
		return false
	}
	counts := map[string]int{}
	for _, w := range writes {
		ds := logged[w.entity]
		if len(ds) != 1 {
			t.Fatalf("write of %s has %d decisions in the log, want 1: %v", w.entity, len(ds), w.err)
		}
		d := ds[0]
		var ce *client.Error
		switch {
		case w.err == nil:
			if d.Result != "allowed" {
				t.Fatalf("admitted write of %s logged as %+v", w.entity, d)
			}
		case errors.As(w.err, &ce) && ce.Code == client.CodePolicyDenied:
			if d.Result != "denied" || d.ID != ce.DecisionID() || d.Revision != ce.Revision() || ce.Layer() != "tenant" {
				t.Fatalf("denied write of %s (decision %s, revision %s) logged as %+v", w.entity, ce.DecisionID(), ce.Revision(), d)
			}
		default:
			t.Fatalf("write of %s: %v", w.entity, w.err)
		}
		if revCode[d.Revision] == "" {
			t.Fatalf("write of %s judged by revision %q: not a good bundle's", w.entity, d.Revision)
		}
		if !possible(d.Revision, w.start, w.end) {
			t.Fatalf("write of %s (%v..%v) judged by revision %s, which was not active then", w.entity, w.start, w.end, d.Revision[:12])
		}
		wantDenied := strings.HasPrefix(w.entity, revPrefix[d.Revision])
		if wantDenied != (d.Result == "denied") || (wantDenied && d.Reasons[0].Code != revCode[d.Revision]) {
			t.Fatalf("write of %s under revision %s (denying %s) was %s: %+v", w.entity, d.Revision[:12], revPrefix[d.Revision], d.Result, d.Reasons)
		}
		counts[d.Revision]++
	}
	if len(counts) != 3 {
		t.Errorf("writes judged per revision: %v; want all three revisions to have judged some", counts)
	}
	t.Logf("%d writes over %d activations; per revision %v", len(writes), len(acts)-1, counts)
}

// TestTenantPolicyBundleTestsPrintInALoop: a bundle whose Rego test
// prints in a loop (50000 lines of 60 bytes, were they kept) is checked
// without keeping its output — the push allocates at most about twice
// what the same loop without print() does — and accepted as its tests
// pass.
func TestTenantPolicyBundleTestsPrintInALoop(t *testing.T) {
	_, admin := tenantAdmin(t, nil)
	bundle := func(body string) []byte {
		return tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"),
			"policy_test.rego", "package batpak.write_test\n\ntest_loop if {\n\tevery i in numbers.range(1, 50000) {\n\t\t"+body+"\n\t}\n}\n")
	}
	push := func(b []byte) uint64 {
		t.Helper()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tp, err := admin.PushPolicy(context.Background(), bytes.NewReader(b))
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if tp.Active != revisionOf(b) {
			t.Fatalf("active %s, want the pushed bundle", tp.Active)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	quiet := push(bundle(`is_number(i)`))
	loud := push(bundle(`print("a line printed over and over to fill the server's memory", i)`))
	// Printed and bounded (1 MiB kept) it allocates about 5 times as
	// much; compiled out, about as much. Under the policy sandbox the
	// tests run in the checker child and the server itself allocates
	// little for either: the 8 MiB are slack for that noise.
	if loud > 2*quiet+8<<20 {
		t.Errorf("the printing bundle's push allocated %d MiB, the quiet one's %d MiB", loud>>20, quiet>>20)
	}
	t.Logf("allocated: quiet %d MiB, printing %d MiB", quiet>>20, loud>>20)
}
