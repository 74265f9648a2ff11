package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

const operatorToken = "bpko_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// scrape returns the server's /metrics text.
func scrape(t *testing.T, ps policyServer) string {
	t.Helper()
	req, _ := http.NewRequest("GET", ps.base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return string(body)
}

// allDecisions pages through the tenant's decision log with q (its
// Cursor set page by page), newest first.
func allDecisions(t *testing.T, tc *client.Tenant, q client.PolicyDecisionQuery) []client.PolicyDecision {
	t.Helper()
	var out []client.PolicyDecision
	for range 1000 {
		p, err := tc.QueryPolicyDecisions(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Decisions...)
		if p.Next == "" {
			return out
		}
		if len(p.Decisions) != q.Limit && q.Limit > 0 {
			t.Fatalf("a page of %d decisions (limit %d) with a next cursor", len(p.Decisions), q.Limit)
		}
		q.Cursor = p.Next
	}
	t.Fatal("the pages never end")
	return nil
}

// acmeAdmin creates tenant acme on ps and returns it as an admin and
// writer key.
func acmeAdmin(t testing.TB, ps policyServer) *client.Tenant {
	t.Helper()
	tn, _ := acmeAdminKey(t, ps)
	return tn
}

// acmeAdminKey is acmeAdmin that also returns the key.
func acmeAdminKey(t testing.TB, ps policyServer) (*client.Tenant, string) {
	t.Helper()
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, "acme", "a", "admin", "writer")
	if err != nil {
		t.Fatal(err)
	}
	return ps.as(t, k.Key).Tenant("acme"), k.Key
}

// loggedDenial appends an event to entity that the platform policy
// denies, and returns the id of the decision the denial names.
func loggedDenial(t testing.TB, tn *client.Tenant, entity string) string {
	t.Helper()
	_, err := tn.Append(context.Background(), note(entity))
	var e *client.Error
	if !errors.As(err, &e) || e.DecisionID() == "" {
		t.Fatalf("append %s: %v, want a logged denial", entity, err)
	}
	return e.DecisionID()
}

// TestPolicyDecisionLogPersists: denials of both layers and, once the
// tenant's decision_allow_sample is 1, its allowed writes are recorded
// with id, result, layer, revision, principal, action and the input
// fields the policies read; the log survives a restart; it is queried
// by result, id, revision and time, a page at a time; the tenant's stats
// and /metrics count it; malformed filters are refused naming them.
func TestPolicyDecisionLogPersists(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, "acme", "a", "admin", "writer")
	if err != nil {
		t.Fatal(err)
	}
	acme := ps.as(t, k.Key).Tenant("acme")
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	if _, err := acme.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	rev := revisionOf(bundle)
	denial := func(entity string) string {
		t.Helper()
		_, err := acme.Append(ctx, note(entity))
		var e *client.Error
		if !errors.As(err, &e) || e.DecisionID() == "" {
			t.Fatalf("append %s: %v, want a logged denial", entity, err)
		}
		return e.DecisionID()
	}
	platformID := denial("blocked:1")
	tenantID := denial("secret:1")
	if _, err := acme.Append(ctx, note("note:unsampled")); err != nil {
		t.Fatal(err)
	}
	if _, err := op.SetSettings(ctx, "acme", client.Settings{DecisionAllowSample: 1.5}); !errors.Is(err, client.ErrInvalidRequest) ||
		!strings.Contains(err.Error(), "decision_allow_sample") {
		t.Fatalf("a sample rate of 1.5: %v, want refused naming decision_allow_sample", err)
	}
	if _, err := op.SetSettings(ctx, "acme", client.Settings{DecisionAllowSample: 1}); err != nil {
		t.Fatal(err)
	}
	midway := time.Now().Add(-time.Millisecond)
	if _, err := acme.Append(ctx, note("note:sampled")); err != nil {
		t.Fatal(err)
	}
	lastDenial := denial("secret:2")

	check := func(when string) {
		t.Helper()
		all := allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1})
		if len(all) != 4 {
			t.Fatalf("%s: the log holds %d decisions, want 4 (3 denials, 1 sampled allow): %+v", when, len(all), all)
		}
		wantOrder := []string{"secret:2", "note:sampled", "secret:1", "blocked:1"}
		for i, d := range all {
			if got := d.Input["event.entity"]; got != wantOrder[i] {
				t.Fatalf("%s: decision %d is about %v, want %s (newest first)", when, i, got, wantOrder[i])
			}
			if d.Action != "append" || !strings.Contains(string(d.Principal), `"tenant":"acme"`) || d.ID == "" || d.Time.IsZero() {
				t.Errorf("%s: decision %+v lacks its action, principal, id or time", when, d)
			}
		}
		if d := all[0]; d.ID != lastDenial || d.Result != "denied" || d.Layer != "tenant" || d.Revision != rev || d.Reasons[0].Code != "NO_SECRETS" {
			t.Errorf("%s: tenant denial recorded as %+v", when, d)
		}
		if d := all[1]; d.Result != "allowed" || d.Layer != "tenant" || d.Revision != rev || len(d.Reasons) != 0 {
			t.Errorf("%s: sampled allow recorded as %+v", when, d)
		}
		if d := all[3]; d.ID != platformID || d.Layer != "platform" || d.Reasons[0].Code != "PLATFORM_BLOCK" {
			t.Errorf("%s: platform denial recorded as %+v", when, d)
		}
		if got := allDecisions(t, acme, client.PolicyDecisionQuery{Result: "denied", Limit: 2}); len(got) != 3 || got[2].ID != platformID {
			t.Errorf("%s: result=denied gave %d decisions, want the 3 denials", when, len(got))
		}
		if got := allDecisions(t, acme, client.PolicyDecisionQuery{Result: "allowed"}); len(got) != 1 || got[0].Input["event.entity"] != "note:sampled" {
			t.Errorf("%s: result=allowed gave %+v, want the sampled allow", when, got)
		}
		if got := allDecisions(t, acme, client.PolicyDecisionQuery{ID: tenantID}); len(got) != 1 || got[0].ID != tenantID {
			t.Errorf("%s: decision_id=%s gave %+v", when, tenantID, got)
		}
		if got := allDecisions(t, acme, client.PolicyDecisionQuery{Revision: rev}); len(got) != 3 {
			t.Errorf("%s: revision=%s gave %d decisions, want 3 (the platform denial was before none)", when, rev[:8], len(got))
		}
		if got := allDecisions(t, acme, client.PolicyDecisionQuery{Since: midway}); len(got) != 2 {
			t.Errorf("%s: since gave %d decisions, want the 2 after it", when, len(got))
		}
	}
	check("before the restart")

	st, err := acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pd, _ := st["policy_decisions"].(map[string]any); pd["denied"] != float64(3) || pd["allowed"] != float64(1) || pd["dropped"] != float64(0) {
		t.Errorf("tenant stats policy_decisions = %v, want 3 denied, 1 allowed, 0 dropped", st["policy_decisions"])
	}
	m := scrape(t, ps)
	for _, want := range []string{
		`batpak_policy_decisions_logged_total{layer="platform",result="denied"} 1`,
		`batpak_policy_decisions_logged_total{layer="tenant",result="denied"} 2`,
		`batpak_policy_decisions_logged_total{layer="tenant",result="allowed"} 1`,
		`batpak_policy_decision_log_dropped_total 0`,
		"\ngo_goroutines ", "\nprocess_resident_memory_bytes ", // the process's own
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, bad := range []struct {
		q    client.PolicyDecisionQuery
		name string
	}{
		{client.PolicyDecisionQuery{Cursor: "nope"}, "cursor"},
		{client.PolicyDecisionQuery{Result: "maybe"}, "result"},
		{client.PolicyDecisionQuery{Revision: "abc"}, "revision"},
	} {
		if _, err := acme.QueryPolicyDecisions(ctx, bad.q); !errors.Is(err, client.ErrInvalidRequest) || !strings.Contains(err.Error(), bad.name) {
			t.Errorf("query %+v: %v, want refused naming %s", bad.q, err, bad.name)
		}
	}

	ps.stop()
	ps = startPolicyServer(t, root, nil)
	acme = ps.as(t, k.Key).Tenant("acme")
	check("after a restart")
	// A deleted tenant's log goes with it.
	op = ps.as(t, operatorToken).Admin()
	if err := op.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "srv", "decisions", "acme")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the deleted tenant's decision log: %v, want removed", err)
	}
}

// TestPolicyDecisionLogLimits: a tenant's log shows exactly the newest
// decisions within server.policy_decision_log_bytes and takes at most
// 5/4 of it on disk; the log's settings are refused at start one past
// their range and accepted at its ends.
func TestPolicyDecisionLogLimits(t *testing.T) {
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionLogBytes = 64<<10 - 1 }, "64KiB")
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionLogBytes = 1<<30 + 1 }, "1GiB")
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionQueue = 1<<20 + 1 }, "1048576")
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionQueue = -1 }, "1048576")
	for _, tune := range []func(*server.Config){
		func(c *server.Config) { c.PolicyDecisionLogBytes, c.PolicyDecisionQueue = 1<<30, 1<<20 },
		func(c *server.Config) { c.PolicyDecisionQueue = 1 },
	} {
		ps := startPolicyServer(t, t.TempDir(), tune)
		ps.stop()
	}

	root := t.TempDir()
	const limit = 64 << 10
	ps := startPolicyServer(t, root, func(c *server.Config) {
		c.PolicyDecisionLogBytes, c.PolicyDecisionLogSize = limit, 100000
		c.PolicyDecisionPrincipalRefill = -1 // one writer fills the log
	})
	acme := acmeAdmin(t, ps)
	ctx := context.Background()
	pad := strings.Repeat("x", 900)
	const n = 150 // ~150 KiB of decisions: more than twice the limit
	for i := range n {
		if _, err := acme.Append(ctx, note(fmt.Sprintf("blocked:%03d:%s", i, pad))); err == nil {
			t.Fatal("a blocked write was admitted")
		}
	}
	got := allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1000})
	// Each entry is the same size: the newest limit/size of them show.
	size := 0
	for _, d := range got {
		line := fmt.Sprintf("%v", d.Input["event.entity"])
		if !strings.HasPrefix(line, "blocked:") {
			t.Fatalf("decision about %q", line)
		}
	}
	var dirBytes int64
	dir := filepath.Join(root, "srv", "decisions", "acme")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, _ := e.Info()
		dirBytes += fi.Size()
	}
	b, _ := os.ReadFile(filepath.Join(dir, ents[len(ents)-1].Name()))
	size = bytes.IndexByte(b, '\n') + 1
	if want := limit / size; len(got) != want {
		t.Errorf("the log shows %d decisions of %d bytes, want the newest %d within %d bytes", len(got), size, want, limit)
	}
	if got[0].Input["event.entity"] != fmt.Sprintf("blocked:%03d:%s", n-1, pad) {
		t.Errorf("the newest decision is about %.20v, want the last denial", got[0].Input["event.entity"])
	}
	if dirBytes > limit*5/4+int64(size) {
		t.Errorf("the log takes %d bytes on disk, more than 5/4 of %d plus one decision", dirBytes, limit)
	}

	// By count: 40 denials under a log of 8 show the newest 8 and leave
	// at most 5/4 of 8 on disk.
	root = t.TempDir()
	ps = startPolicyServer(t, root, func(c *server.Config) { c.PolicyDecisionLogSize, c.PolicyDecisionPrincipalRefill = 8, -1 })
	acme = acmeAdmin(t, ps)
	for i := range 40 {
		if _, err := acme.Append(ctx, note(fmt.Sprintf("blocked:%d", i))); err == nil {
			t.Fatal("a blocked write was admitted")
		}
	}
	got = allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 3})
	if len(got) != 8 || got[0].Input["event.entity"] != "blocked:39" || got[7].Input["event.entity"] != "blocked:32" {
		t.Errorf("a log of 8 after 40 denials shows %d, newest %v", len(got), got[0].Input["event.entity"])
	}
	ents, err = os.ReadDir(filepath.Join(root, "srv", "decisions", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	onDisk := 0
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(root, "srv", "decisions", "acme", e.Name()))
		onDisk += bytes.Count(b, []byte{'\n'})
	}
	if onDisk > 10 {
		t.Errorf("a log of 8 keeps %d decisions on disk, more than 5/4 of 8", onDisk)
	}
}

// TestPolicyDecisionLogQueueFull: with the smallest queue
// (server.policy_decision_queue 1) and many writers denied at once,
// every denial is either recorded or counted as dropped — in the
// tenant's stats and in /metrics — and the log holds exactly the
// recorded ones.
func TestPolicyDecisionLogQueueFull(t *testing.T) {
	ps, acme := tenantAdmin(t, func(c *server.Config) { c.PolicyDecisionQueue, c.PolicyDecisionPrincipalRefill = 1, -1 })
	ctx := context.Background()
	const writers, each = 8, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := acme.Append(ctx, note(fmt.Sprintf("blocked:%d:%d", w, i))); err == nil {
					t.Error("a blocked write was admitted")
				}
			}
		})
	}
	wg.Wait()
	st, err := acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := st["policy_decisions"].(map[string]any)
	denied, dropped := pd["denied"].(float64), pd["dropped"].(float64)
	if denied+dropped != writers*each {
		t.Fatalf("recorded %v + dropped %v denials, want %d", denied, dropped, writers*each)
	}
	if got := allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1000}); len(got) != int(denied) {
		t.Errorf("the log holds %d decisions, the stats say %v were recorded", len(got), denied)
	}
	if want := fmt.Sprintf("batpak_policy_decision_log_dropped_total %v", dropped); !strings.Contains(scrape(t, ps), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	t.Logf("%v of %d denials dropped with a queue of 1", dropped, writers*each)
}

// TestDecisionWithHugeNumbersIsListed: a denial whose reason context and
// recorded input hold a number past float64's range (a writer sent
// 1e400; the policy named it) is listed like any other, by id and in
// the whole log, with the number exactly as sent; a writer cannot keep
// its refused writes out of the log by choosing such numbers.
func TestDecisionWithHugeNumbersIsListed(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	acme := acmeAdmin(t, ps)
	bundle := tarGz(t, "policy.rego", `package batpak.write

deny contains {"code": "TOO_BIG", "message": "amount over limit", "amount": input.event.payload.amount} if {
	input.event.payload.amount >= 1000
}
`)
	if _, err := acme.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	const huge = "1e400"
	_, err := acme.Append(ctx, client.AppendRequest{Entity: "order:1", Scope: "s", Kind: "1:1", Payload: []byte(`{"amount":` + huge + `}`)})
	var e *client.Error
	if !errors.As(err, &e) || e.DecisionID() == "" {
		t.Fatalf("an amount of %s: %v, want a logged denial", huge, err)
	}
	byID := allDecisions(t, acme, client.PolicyDecisionQuery{ID: e.DecisionID()})
	if len(byID) != 1 {
		t.Fatalf("the decision %s by its id: %d entries, want 1", e.DecisionID(), len(byID))
	}
	d := byID[0]
	if len(d.Reasons) != 1 || fmt.Sprint(d.Reasons[0].Context["amount"]) != huge || fmt.Sprint(d.Input["event.payload.amount"]) != huge {
		t.Fatalf("the logged decision: reasons %+v, input %v; want the amount %s exactly in both", d.Reasons, d.Input, huge)
	}
	if all := allDecisions(t, acme, client.PolicyDecisionQuery{Result: "denied"}); len(all) != 1 || all[0].ID != e.DecisionID() {
		t.Fatalf("the log's denials: %d, want the one of amount %s", len(all), huge)
	}
}

// TestWriterCannotPushItsDenialsOutOfTheLog: one principal adds at most
// an eighth of its tenant's decision log at once, so a writer provoking
// denials cannot push older entries, its own first denial among them,
// out of the log; its denials past its share carry no decision id and
// are counted as suppressed; another principal's denials are recorded
// meanwhile, and say nothing was suppressed before them.
func TestWriterCannotPushItsDenialsOutOfTheLog(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), func(c *server.Config) { c.PolicyDecisionLogSize = 80 })
	ctx := context.Background()
	acme, _ := acmeAdminKey(t, ps)
	k, err := ps.as(t, operatorToken).Admin().IssueKey(ctx, "acme", "w", "writer")
	if err != nil {
		t.Fatal(err)
	}
	writer := ps.as(t, k.Key).Tenant("acme")
	denial := func(tn *client.Tenant, entity string) string {
		t.Helper()
		_, err := tn.Append(ctx, note(entity))
		var e *client.Error
		if !errors.As(err, &e) || e.Code != "POLICY_DENIED" {
			t.Fatalf("append %s: %v, want a denial", entity, err)
		}
		return e.DecisionID()
	}
	first := denial(writer, "blocked:first")
	if first == "" {
		t.Fatal("the writer's first denial has no decision id")
	}
	unrecorded := 0
	for i := range 200 {
		if denial(writer, fmt.Sprintf("blocked:%d", i)) == "" {
			unrecorded++
		}
	}
	if want := 200 - (80/8 - 1); unrecorded != want {
		t.Fatalf("%d of the writer's 200 further denials carry no decision id, want %d (its share is 80/8 = 10)", unrecorded, want)
	}
	if got := allDecisions(t, acme, client.PolicyDecisionQuery{ID: first}); len(got) != 1 {
		t.Fatalf("the writer's first denial after 200 more: %d entries, want it kept", len(got))
	}
	other := denial(acme, "blocked:admin")
	if got := allDecisions(t, acme, client.PolicyDecisionQuery{ID: other}); other == "" || len(got) != 1 || got[0].SuppressedBefore != 0 {
		t.Fatalf("another principal's denial meanwhile: id %q, %+v; want it recorded, nothing suppressed before it", other, got)
	}
	st, err := acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pd, _ := st["policy_decisions"].(map[string]any)
	if pd["suppressed"].(float64) != float64(unrecorded) {
		t.Fatalf("the tenant's stats count %v suppressed, want %d", pd["suppressed"], unrecorded)
	}
}
