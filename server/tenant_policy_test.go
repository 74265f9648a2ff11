package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
)

// tarGz builds a policy bundle: name → content (a name starting with
// "link:" is a symlink to its content).
func tarGz(t testing.TB, files ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i := 0; i+1 < len(files); i += 2 {
		h := &tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}
		if name, ok := strings.CutPrefix(files[i], "link:"); ok {
			h = &tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: files[i+1]}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(files[i+1]))
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

func revisionOf(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// denyPrefix is a tenant rule refusing entities under prefix with code.
func denyPrefix(code, prefix string) string {
	return `package batpak.write

deny contains {"code": "` + code + `", "message": "entities under ` + prefix + ` are off limits"} if {
	startswith(input.event.entity, "` + prefix + `")
}
`
}

const tenantTests = `package batpak.write_test

test_secret_denied if {
	count(data.batpak.write.deny) == 1 with input as {"event": {"entity": "secret:1"}}
}

test_other_allowed if {
	count(data.batpak.write.deny) == 0 with input as {"event": {"entity": "note:1"}}
}
`

type policyServer struct {
	srv  *server.Server
	base string
	stop func()
}

// startPolicyServer runs a server on loopback over root with a platform
// policy refusing entities under "blocked:".
func startPolicyServer(t testing.TB, root string, tune func(*server.Config)) policyServer {
	t.Helper()
	platform := filepath.Join(root, "platform")
	if err := os.MkdirAll(platform, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(platform, "platform.rego"), []byte(denyPrefix("PLATFORM_BLOCK", "blocked:")), 0o644); err != nil {
		t.Fatal(err)
	}
	return startTunedServer(t, root, func(cfg *server.Config) {
		cfg.PolicyDir = platform
		if tune != nil {
			tune(cfg)
		}
	})
}

// startTunedServer runs a server on loopback over root/srv with a fixed
// operator credential, its config adjusted by tune; the server stops
// when the test ends (or at ps.stop).
func startTunedServer(t testing.TB, root string, tune func(*server.Config)) policyServer {
	t.Helper()
	cfg := servertest.Config(t)
	cfg.Root = filepath.Join(root, "srv")
	cfg.OperatorToken = "bpko_" + strings.Repeat("a", 52)
	if tune != nil {
		tune(&cfg)
	}
	ts := servertest.Start(t, cfg)
	return policyServer{srv: ts.Server, base: ts.URL, stop: func() {
		if err := ts.Stop(); err != nil {
			t.Error(err)
		}
	}}
}

func (ps policyServer) as(t testing.TB, token string) *client.Client {
	c, err := client.New(ps.base, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func note(entity string) client.AppendRequest {
	return client.AppendRequest{Entity: entity, Scope: "s", Kind: "1:1", Payload: []byte(`{"n":1}`)}
}

// wantDenied checks that err is POLICY_DENIED by layer with reason code
// and revision (any revision when rev is "").
func wantDenied(t *testing.T, what string, err error, layer, code, rev string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Code != client.CodePolicyDenied {
		t.Fatalf("%s: %v, want POLICY_DENIED", what, err)
	}
	if e.Layer() != layer {
		t.Errorf("%s: layer %q, want %q", what, e.Layer(), layer)
	}
	if rs := e.Reasons(); len(rs) == 0 || rs[0].Code != code {
		t.Errorf("%s: reasons %+v, want %s", what, rs, code)
	}
	if rev != "" && e.Revision() != rev {
		t.Errorf("%s: revision %q, want %q", what, e.Revision(), rev)
	}
}

// TestTenantPolicyLayers: a tenant admin uploads the tenant's own bundle;
// the tenant's writes then need both the platform policy and the bundle,
// each denial naming its layer and revision; another tenant is not gated
// by it; keys without the admin role cannot upload; broken, failing and
// hostile bundles are refused with their errors and the active revision
// stays; rollback; a restart keeps the active revision.
func TestTenantPolicyLayers(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	for _, id := range []string{"acme", "globex"} {
		if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	key := func(tenant string, roles ...string) string {
		k, err := op.IssueKey(ctx, tenant, "k", roles...)
		if err != nil {
			t.Fatal(err)
		}
		return k.Key
	}
	adminKey, writerKey, readerKey, globexKey := key("acme", "admin"), key("acme", "writer"), key("acme", "reader"), key("globex", "writer")
	admin := ps.as(t, adminKey).Tenant("acme")
	writer := ps.as(t, writerKey).Tenant("acme")
	globex := ps.as(t, globexKey).Tenant("globex")

	if _, err := writer.Append(ctx, note("secret:0")); err != nil {
		t.Fatalf("before any tenant bundle: %v", err)
	}
	bundleA := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"), "policy_test.rego", tenantTests, "data.json", `{}`)
	revA := revisionOf(bundleA)
	for _, tok := range []string{writerKey, readerKey} {
		if _, err := ps.as(t, tok).Tenant("acme").PushPolicy(ctx, bytes.NewReader(bundleA)); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("a non-admin key uploads a bundle: %v, want FORBIDDEN", err)
		}
	}
	if _, err := ps.as(t, adminKey).Tenant("globex").PushPolicy(ctx, bytes.NewReader(bundleA)); err == nil {
		t.Fatal("acme's admin uploaded a bundle for globex")
	}
	tp, err := admin.PushPolicy(ctx, bytes.NewReader(bundleA))
	if err != nil {
		t.Fatalf("PushPolicy: %v", err)
	}
	if tp.Active != revA || len(tp.Revisions) != 1 {
		t.Fatalf("after the upload: %+v, want revision %s active", tp, revA)
	}

	_, err = writer.Append(ctx, note("secret:1"))
	wantDenied(t, "a write the tenant rule refuses", err, "tenant", "NO_SECRETS", revA)
	_, err = writer.Append(ctx, note("blocked:1"))
	wantDenied(t, "a write the platform refuses", err, "platform", "PLATFORM_BLOCK", "")
	_, err = writer.AppendBatch(ctx, []client.AppendRequest{note("note:1"), note("secret:2")})
	wantDenied(t, "a batch with an item the tenant rule refuses", err, "tenant", "NO_SECRETS", revA)
	if _, err := writer.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("a write both layers allow: %v", err)
	}
	// The decision log: the denials, newest first, with their ids, layer,
	// revision, principal and the input fields the policy read.
	_, err = writer.Append(ctx, note("secret:9"))
	var de *client.Error
	if !errors.As(err, &de) || de.DecisionID() == "" {
		t.Fatalf("a denial without its decision id: %v", err)
	}
	decs, err := admin.PolicyDecisions(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(decs) != 4 || decs[0].ID != de.DecisionID() || decs[0].Layer != "tenant" || decs[0].Revision != revA ||
		decs[0].Input["event.entity"] != "secret:9" || decs[0].Action != "append" || !strings.Contains(string(decs[0].Principal), `"tenant":"acme"`) {
		t.Fatalf("decision log: %+v", decs)
	}
	if decs[2].Layer != "platform" || decs[2].Reasons[0].Code != "PLATFORM_BLOCK" || decs[2].Input["event.entity"] != "blocked:1" {
		t.Errorf("the platform denial's record: %+v", decs[2])
	}
	if _, err := writer.PolicyDecisions(ctx, 0); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("a writer reads the decision log: %v, want FORBIDDEN", err)
	}
	if decs, err := admin.PolicyDecisions(ctx, 1); err != nil || len(decs) != 1 || decs[0].ID != de.DecisionID() {
		t.Errorf("limit 1: %+v, %v", decs, err)
	}
	if _, err := globex.Append(ctx, note("secret:1")); err != nil {
		t.Fatalf("acme's bundle gates globex: %v", err)
	}
	_, err = globex.Append(ctx, note("blocked:1"))
	wantDenied(t, "globex under the platform policy", err, "platform", "PLATFORM_BLOCK", "")

	// Refused bundles: the active revision stays.
	refused := []struct {
		name   string
		bundle []byte
		is     error
		check  func(e *client.Error) string
	}{
		{"compile error", tarGz(t, "policy.rego", "package batpak.write\n\ndeny contains x if {\n"), client.ErrBundleRejected, func(e *client.Error) string {
			stage, errs := e.BundleErrors()
			if stage != "compile" || len(errs) == 0 || !strings.Contains(errs[0], "policy.rego:") {
				return "want stage compile with errors naming policy.rego"
			}
			if strings.Contains(strings.Join(errs, " "), root) {
				return "errors carry a server path"
			}
			return ""
		}},
		{"failing test", tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"), "policy_test.rego", tenantTests+"\ntest_never if {\n\tfalse\n}\n"), client.ErrBundleRejected, func(e *client.Error) string {
			stage, errs := e.BundleErrors()
			if stage != "tests" || len(errs) != 1 || !strings.Contains(errs[0], "test_never") {
				return "want stage tests naming test_never only"
			}
			return ""
		}},
		{"path escape", tarGz(t, "policy.rego", denyPrefix("X", "x:"), "../evil.rego", "package evil"), client.ErrBundleInvalid, func(e *client.Error) string {
			if e.Entry() != "../evil.rego" || e.Status != 400 {
				return "want 400 naming the entry ../evil.rego"
			}
			return ""
		}},
		{"symlink", tarGz(t, "policy.rego", denyPrefix("X", "x:"), "link:data.json", "/etc/passwd"), client.ErrBundleInvalid, func(e *client.Error) string {
			if e.Entry() != "data.json" {
				return "want the entry data.json named"
			}
			return ""
		}},
		{"executable", tarGz(t, "policy.rego", denyPrefix("X", "x:"), "run.sh", "#!/bin/sh"), client.ErrBundleInvalid, func(e *client.Error) string {
			if e.Entry() != "run.sh" {
				return "want the entry run.sh named"
			}
			return ""
		}},
		{"not gzip", []byte("plain text"), client.ErrBundleInvalid, func(*client.Error) string { return "" }},
	}
	for _, r := range refused {
		_, err := admin.PushPolicy(ctx, bytes.NewReader(r.bundle))
		var e *client.Error
		if !errors.Is(err, r.is) || !errors.As(err, &e) {
			t.Fatalf("%s: %v, want %v", r.name, err, r.is)
		}
		if msg := r.check(e); msg != "" {
			t.Errorf("%s: %s: %v %v", r.name, msg, e, e.Extensions)
		}
		if tp, err := admin.Policies(ctx); err != nil || tp.Active != revA || len(tp.Revisions) != 1 {
			t.Fatalf("after a refused bundle (%s): %+v, %v; want %s still active", r.name, tp, err, revA)
		}
	}
	_, err = writer.Append(ctx, note("secret:3"))
	wantDenied(t, "after the refused bundles", err, "tenant", "NO_SECRETS", revA)

	// A second revision, then rollback to the first.
	bundleB := tarGz(t, "policy.rego", denyPrefix("NO_ORDERS", "order:"))
	revB := revisionOf(bundleB)
	if tp, err := admin.PushPolicy(ctx, bytes.NewReader(bundleB)); err != nil || tp.Active != revB || len(tp.Revisions) != 2 {
		t.Fatalf("second upload: %+v, %v", tp, err)
	}
	_, err = writer.Append(ctx, note("order:1"))
	wantDenied(t, "under the second revision", err, "tenant", "NO_ORDERS", revB)
	if _, err := writer.Append(ctx, note("secret:4")); err != nil {
		t.Fatalf("the first revision still gates after the second became active: %v", err)
	}
	if _, err := writer.RollbackPolicy(ctx, revA); !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("a writer rolls back: %v, want FORBIDDEN", err)
	}
	if _, err := admin.RollbackPolicy(ctx, revisionOf([]byte("never uploaded"))); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("rollback to an unknown revision: %v, want NOT_FOUND", err)
	}
	if _, err := admin.RollbackPolicy(ctx, "nothex"); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("rollback to a malformed revision: %v, want INVALID_REQUEST", err)
	}
	if tp, err := admin.RollbackPolicy(ctx, revA); err != nil || tp.Active != revA || len(tp.Revisions) != 2 {
		t.Fatalf("rollback: %+v, %v", tp, err)
	}
	if _, err := writer.Append(ctx, note("order:2")); err != nil {
		t.Fatalf("after rollback the second revision still gates: %v", err)
	}
	_, err = writer.Append(ctx, note("secret:5"))
	wantDenied(t, "after rollback", err, "tenant", "NO_SECRETS", revA)

	// Restart: the active revision is the same, and it gates.
	ps.stop()
	ps = startPolicyServer(t, root, nil)
	writer = ps.as(t, writerKey).Tenant("acme")
	if tp, err := ps.as(t, readerKey).Tenant("acme").Policies(ctx); err != nil || tp.Active != revA || len(tp.Revisions) != 2 {
		t.Fatalf("after restart: %+v, %v; want %s active", tp, err, revA)
	}
	_, err = writer.Append(ctx, note("secret:6"))
	wantDenied(t, "after restart", err, "tenant", "NO_SECRETS", revA)
	if _, err := writer.Append(ctx, note("order:3")); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if _, err := ps.as(t, globexKey).Tenant("globex").Append(ctx, note("secret:2")); err != nil {
		t.Fatalf("after restart acme's bundle gates globex: %v", err)
	}
	// The audit trail: who uploaded and rolled back, and when.
	hist, err := ps.srv.Plane().History(control.PolicyEntity("acme"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, h := range hist {
		kinds = append(kinds, h.Kind)
		if h.By.Tenant != "acme" || h.By.KeyID == "" {
			t.Errorf("change %s recorded by %+v, want acme's admin key", h.Kind, h.By)
		}
	}
	if strings.Join(kinds, ",") != "policy.activated,policy.activated,policy.rolled_back" {
		t.Errorf("policy history %v", kinds)
	}
}

// TestTenantPolicyBundleSizeLimit: a bundle of exactly
// server.policy_bundle_max_bytes is accepted, one byte more is refused
// with 413 naming the limit, and the active revision stays.
func TestTenantPolicyBundleSizeLimit(t *testing.T) {
	// Hashes in a comment: content gzip cannot shrink much.
	pad := []byte("seed")
	var comment strings.Builder
	for range 40 {
		s := sha256.Sum256(pad)
		pad = s[:]
		comment.WriteString("# " + hex.EncodeToString(pad) + "\n")
	}
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:")+comment.String())
	if len(bundle) < 1024 {
		t.Fatalf("bundle of %d bytes is below the limit's range", len(bundle))
	}
	ps := startPolicyServer(t, t.TempDir(), func(c *server.Config) { c.PolicyBundleMaxBytes = int64(len(bundle)) })
	ctx := context.Background()
	admin := acmeAdmin(t, ps)
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatalf("a bundle of exactly the limit: %v", err)
	}
	_, err := admin.PushPolicy(ctx, bytes.NewReader(append(bundle, 0)))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 413 || !strings.Contains(string(e.Extensions["quota"]), "policy_bundle_max_bytes") {
		t.Fatalf("a bundle one byte over the limit: %v, want 413 naming policy_bundle_max_bytes", err)
	}
	if tp, _ := admin.Policies(ctx); tp.Active != revisionOf(bundle) {
		t.Fatalf("after the refusal: %+v", tp)
	}
}

// TestTenantPolicyDecisionLogSize: the decision log keeps exactly
// server.policy_decision_log_size denials per tenant, dropping the
// oldest; a size past the range is refused at start.
func TestTenantPolicyDecisionLogSize(t *testing.T) {
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionLogSize = 100001 }, "100000")
	ps := startPolicyServer(t, t.TempDir(), func(c *server.Config) { c.PolicyDecisionLogSize, c.PolicyDecisionPrincipalRefill = 2, -1 })
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, "acme", "a", "admin", "writer")
	if err != nil {
		t.Fatal(err)
	}
	acme := ps.as(t, k.Key).Tenant("acme")
	var ids []string
	for i := range 3 {
		_, err := acme.Append(ctx, note(fmt.Sprintf("blocked:%d", i)))
		var e *client.Error
		if !errors.As(err, &e) || e.DecisionID() == "" {
			t.Fatalf("denial %d: %v", i, err)
		}
		ids = append(ids, e.DecisionID())
		decs, err := acme.PolicyDecisions(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := ids[max(0, len(ids)-2):]
		if len(decs) != len(want) {
			t.Fatalf("after %d denials the log holds %d, want %d", i+1, len(decs), len(want))
		}
		for j, d := range decs {
			if d.ID != want[len(want)-1-j] {
				t.Fatalf("after %d denials the log is %+v, want ids %v newest first", i+1, decs, want)
			}
		}
	}
}

// TestTenantPolicyRollbackUnderConcurrentWrites: while an admin switches
// the active revision back and forth, every write is decided by one of
// the two revisions as a whole: a denial carries the revision whose rule
// refused it (never POLICY_ERROR, never the other revision's rule).
func TestTenantPolicyRollbackUnderConcurrentWrites(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	ak, err := op.IssueKey(ctx, "acme", "a", "admin")
	if err != nil {
		t.Fatal(err)
	}
	wk, err := op.IssueKey(ctx, "acme", "w", "writer")
	if err != nil {
		t.Fatal(err)
	}
	admin := ps.as(t, ak.Key).Tenant("acme")
	bundleA := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	bundleB := tarGz(t, "policy.rego", denyPrefix("NO_ORDERS", "order:"))
	revA, revB := revisionOf(bundleA), revisionOf(bundleB)
	for _, b := range [][]byte{bundleA, bundleB} {
		if _, err := admin.PushPolicy(ctx, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	errc := make(chan error, 4)
	var seen [2]atomic.Int64
	for w := range 3 {
		go func() {
			writer := ps.as(t, wk.Key).Tenant("acme")
			for i := 0; ; i++ {
				select {
				case <-stop:
					errc <- nil
					return
				default:
				}
				entity, rule, rev := "secret:", "NO_SECRETS", revA
				if (i+w)%2 == 1 {
					entity, rule, rev = "order:", "NO_ORDERS", revB
				}
				_, err := writer.Append(ctx, note(entity+"1"))
				if err == nil {
					continue
				}
				var e *client.Error
				if !errors.As(err, &e) || e.Code != client.CodePolicyDenied || e.Layer() != "tenant" || e.Revision() != rev ||
					len(e.Reasons()) == 0 || e.Reasons()[0].Code != rule {
					errc <- err
					return
				}
				seen[(i+w)%2].Add(1)
			}
		}()
	}
	// At least 20 rollbacks, and more until both revisions have decided
	// a write (on a loaded machine the writers may start late).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < 20 || (seen[0].Load() == 0 || seen[1].Load() == 0) && time.Now().Before(deadline); i++ {
		rev := revA
		if i%2 == 1 {
			rev = revB
		}
		if _, err := admin.RollbackPolicy(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 3 {
		if err := <-errc; err != nil {
			t.Fatalf("a write during rollbacks: %v", err)
		}
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("denials seen per revision: %d, %d; want both revisions to have decided", seen[0].Load(), seen[1].Load())
	}
}

// TestTenantPolicyDamagedBundleFailsClosed: an active revision whose
// stored bundle is damaged when the server starts refuses the tenant's
// writes (POLICY_ERROR, layer tenant) instead of admitting them; pushing
// the same bundle again repairs it.
func TestTenantPolicyDamagedBundleFailsClosed(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	ak, err := op.IssueKey(ctx, "acme", "a", "admin", "writer")
	if err != nil {
		t.Fatal(err)
	}
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	rev := revisionOf(bundle)
	if _, err := ps.as(t, ak.Key).Tenant("acme").PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	ps.stop()
	stored := filepath.Join(root, "srv", "policies", "acme", rev+".tar.gz")
	if err := os.WriteFile(stored, []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	ps = startPolicyServer(t, root, nil)
	acme := ps.as(t, ak.Key).Tenant("acme")
	_, err = acme.Append(ctx, note("note:1"))
	wantDenied(t, "a write under a damaged active bundle", err, "tenant", "POLICY_ERROR", rev)
	if _, err := acme.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatalf("pushing the same bundle again: %v", err)
	}
	if _, err := acme.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("after the repair: %v", err)
	}
	_, err = acme.Append(ctx, note("secret:1"))
	wantDenied(t, "after the repair", err, "tenant", "NO_SECRETS", rev)

	// Deleting the tenant removes its bundles; the id created again
	// starts without a policy.
	op = ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	if err := op.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(stored)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a deleted tenant's bundles remain: %v", err)
	}
	if _, err := op.CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k2, err := op.IssueKey(ctx, "acme", "w", "writer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.as(t, k2.Key).Tenant("acme").Append(ctx, note("secret:1")); err != nil {
		t.Fatalf("a re-created tenant is gated by the deleted one's bundle: %v", err)
	}
}

// tenantAdmin starts a server tuned by tune, creates tenant acme and
// returns a client of acme with an admin and writer key.
func tenantAdmin(t *testing.T, tune func(*server.Config)) (policyServer, *client.Tenant) {
	t.Helper()
	ps := startPolicyServer(t, t.TempDir(), tune)
	return ps, ps.as(t, ps.newTenant(t, "acme", "a", "admin", "writer")).Tenant("acme")
}

// newTenant creates tenant id as the operator and returns a new key of it
// named name, with roles.
func (ps policyServer) newTenant(t testing.TB, id, name string, roles ...string) string {
	t.Helper()
	ctx := context.Background()
	op := ps.as(t, operatorToken).Admin()
	if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, id, name, roles...)
	if err != nil {
		t.Fatal(err)
	}
	return k.Key
}

// TestTenantPolicyBundleTotalLimit: the files of a bundle together
// (uncompressed) are bounded by server.policy_bundle_max_total_bytes —
// exactly the limit accepted, one byte more refused naming it — so that
// a decompression bomb (a few KiB of gzip expanding to hundreds of MiB
// in files each under the per-file limit) is refused early.
func TestTenantPolicyBundleTotalLimit(t *testing.T) {
	ctx := context.Background()
	_, admin := tenantAdmin(t, func(c *server.Config) { c.PolicyBundleMaxTotalBytes = 4096 })
	rego := denyPrefix("NO_SECRETS", "secret:")
	pad := func(n int) string { return `{"a":1}` + strings.Repeat(" ", n-len(`{"a":1}`)) }
	exact := tarGz(t, "policy.rego", rego, "a/data.json", pad(2048), "b/data.json", pad(2048-len(rego)))
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(exact)); err != nil {
		t.Fatalf("files of exactly max_total_bytes: %v", err)
	}
	over := tarGz(t, "policy.rego", rego, "a/data.json", pad(2048), "b/data.json", pad(2049-len(rego)))
	_, err := admin.PushPolicy(ctx, bytes.NewReader(over))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(string(e.Extensions["quota"]), "policy_bundle_max_total_bytes") {
		t.Fatalf("files one byte over max_total_bytes: %v, want 400 naming policy_bundle_max_total_bytes", err)
	}
	if tp, _ := admin.Policies(ctx); tp.Active != revisionOf(exact) {
		t.Fatalf("after the refusal: %+v", tp)
	}

	// The bomb, with the default limits: 200 files of 1 MiB of spaces
	// (each under max_file_bytes) compress to a few hundred KiB.
	_, admin = tenantAdmin(t, nil)
	files := []string{"policy.rego", rego}
	for i := range 200 {
		files = append(files, fmt.Sprintf("d%d/data.json", i), pad(1<<20))
	}
	bomb := tarGz(t, files...)
	_, err = admin.PushPolicy(ctx, bytes.NewReader(bomb))
	if !errors.As(err, &e) || !strings.Contains(string(e.Extensions["quota"]), "policy_bundle_max_total_bytes") {
		t.Fatalf("a %d-byte bundle expanding to 200 MiB: %v, want refused naming policy_bundle_max_total_bytes", len(bomb), err)
	}
}

// TestTenantPolicyRefusesOutsideBuiltins: a tenant bundle calling
// http.send (in its tests or its rules), net.lookup_ip_addr,
// opa.runtime, or json.match_schema / json.verify_schema (whose "$ref"
// fetches URLs and reads files) is refused (422, stage compile, naming
// the built-in) before anything of it runs — in Rego v1 or in a bundle
// whose .manifest declares v0: the server never calls out for a tenant,
// reads its own files for it, nor hands it its environment.
func TestTenantPolicyRefusesOutsideBuiltins(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{"type": "object", "required": ["internal-secret"]}`)
	}))
	defer target.Close()
	secret := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(secret, []byte(`{"type": "object", "required": ["file-secret"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, admin := tenantAdmin(t, nil)
	send := `http.send({"method": "GET", "url": "` + target.URL + `"})`
	v0 := `{"rego_version": 0}`
	for name, files := range map[string][]string{
		"http.send in a test": {"policy.rego", denyPrefix("NO", "secret:"), "policy_test.rego",
			"package batpak.write_test\n\ntest_call if {\n\t" + send + ".status_code == 200\n}\n"},
		"http.send in a rule":          {"policy.rego", "package batpak.write\n\ndeny contains \"x\" if {\n\t" + send + ".status_code == 500\n}\n"},
		"net.lookup_ip_addr":           {"policy.rego", "package batpak.write\n\ndeny contains \"x\" if {\n\tcount(net.lookup_ip_addr(\"localhost\")) > 100\n}\n"},
		"opa.runtime":                  {"policy.rego", "package batpak.write\n\ndeny contains \"x\" if {\n\topa.runtime().env.HOME == \"/\"\n}\n"},
		"json.match_schema with a URL": {"policy.rego", "package batpak.write\n\ndeny contains sprintf(\"%v\", [r]) if {\n\tr := json.match_schema({}, {\"$ref\": \"" + target.URL + "/s\"})\n}\n"},
		"json.match_schema in a test": {"policy.rego", denyPrefix("NO", "secret:"), "policy_test.rego",
			"package batpak.write_test\n\ntest_call if {\n\tr := json.match_schema({}, {\"$ref\": \"" + target.URL + "/t\"})\n\tr[0] == false\n}\n"},
		"json.verify_schema with a file": {"policy.rego", "package batpak.write\n\ndeny contains sprintf(\"%v\", [r]) if {\n\tr := json.verify_schema({\"$ref\": \"file://" + secret + "\"})\n}\n"},
		"http.send in a v0 bundle": {".manifest", v0, "policy.rego", "package batpak.write\n\ndeny[m] {\n\tm := " + send + ".raw_body\n}\n",
			"policy_test.rego", "package batpak.write_test\n\ntest_call {\n\t" + send + ".status_code == 200\n}\n"},
		"opa.runtime in a v0 bundle":       {".manifest", v0, "policy.rego", "package batpak.write\n\ndeny[m] {\n\tm := opa.runtime().env.HOME\n}\n"},
		"json.match_schema in a v0 bundle": {".manifest", v0, "policy.rego", "package batpak.write\n\ndeny[m] {\n\tm := sprintf(\"%v\", [json.match_schema({}, {\"$ref\": \"file://" + secret + "\"})])\n}\n"},
	} {
		builtin := strings.Split(name, " ")[0]
		_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, files...)))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), builtin) {
			t.Errorf("a bundle with %s: %v, want 422 naming %s", name, err, builtin)
		}
		if err != nil && (strings.Contains(err.Error(), "internal-secret") || strings.Contains(err.Error(), "file-secret")) {
			t.Errorf("a bundle with %s: the refusal shows what it read: %v", name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the server called out for a tenant bundle %d times", n)
	}
	if tp, _ := admin.Policies(ctx); tp.Active != "" {
		t.Errorf("a refused bundle became active: %+v", tp)
	}
}

// TestTenantPolicyErrorsKeepServerPaths: a bundle whose entry the server
// cannot create (a name too long for the file system, deep or wide) is
// refused naming the entry, without the server's directories in the
// error.
func TestTenantPolicyErrorsKeepServerPaths(t *testing.T) {
	ctx := context.Background()
	_, admin := tenantAdmin(t, nil)
	deep := strings.Repeat(strings.Repeat("d", 200)+"/", 25) + "p.rego"
	for _, name := range []string{strings.Repeat("n", 300) + ".rego", deep} {
		_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, name, denyPrefix("NO", "secret:"))))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 400 {
			t.Fatalf("an entry named %.40q…: %v, want 400", name, err)
		}
		if msg := e.Error(); strings.Contains(msg, os.TempDir()) || strings.Contains(msg, ".bundle-") || strings.Contains(msg, "policies") {
			t.Errorf("the refusal shows the server's directories: %s", msg)
		}
	}
	// OPA names a bundle it cannot load by its directory ("bundle DIR:
	// …"): a broken manifest or data file is refused naming what is
	// wrong, and "<bundle>" for the directory.
	rego := denyPrefix("NO", "secret:")
	for name, files := range map[string][]string{
		"a manifest that is not JSON":  {"w.rego", rego, ".manifest", "{not json"},
		"a manifest of other roots":    {"w.rego", rego, ".manifest", `{"roots":["x"]}`},
		"a data file that is not JSON": {"w.rego", rego, "data.json", "{broken"},
	} {
		_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, files...)))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 422 {
			t.Fatalf("%s: %v, want 422", name, err)
		}
		if msg := e.Error(); strings.Contains(msg, os.TempDir()) || strings.Contains(msg, ".bundle-") || strings.Contains(msg, "policies") {
			t.Errorf("%s: the refusal shows the server's directories: %s", name, msg)
		}
	}
}

// TestTenantPolicyCheckTimeout: a bundle whose tests run long (each
// under the per-test timeout, many of them) is refused once its checks
// pass server.policy_bundle_check_timeout, naming the setting — uploads
// run one at a time, so one tenant's slow bundle must not hold the
// others' for minutes; a timeout out of range is refused at start.
func TestTenantPolicyCheckTimeout(t *testing.T) {
	refusedAtStart(t, func(c *server.Config) { c.PolicyBundleCheckTimeout = 999 * time.Millisecond }, "check timeout")
	ctx := context.Background()
	_, admin := tenantAdmin(t, func(c *server.Config) { c.PolicyBundleCheckTimeout = time.Second })
	var tests strings.Builder
	tests.WriteString("package batpak.write_test\n")
	for i := range 20 {
		fmt.Fprintf(&tests, "\ntest_slow_%d if {\n\tevery a in numbers.range(1, 3000) {\n\t\tevery b in numbers.range(1, 3000) {\n\t\t\ta + b > %d\n\t\t}\n\t}\n}\n", i, -i)
	}
	start := time.Now()
	_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", denyPrefix("NO", "secret:"), "policy_test.rego", tests.String())))
	took := time.Since(start)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), "policy_bundle_check_timeout") {
		t.Fatalf("a bundle whose tests run long: %v, want 422 naming policy_bundle_check_timeout", err)
	}
	if took > 5*time.Second {
		t.Errorf("the refusal took %v with a 1s check timeout", took)
	}
	if tp, _ := admin.Policies(ctx); tp.Active != "" {
		t.Errorf("a refused bundle became active: %+v", tp)
	}
}

// TestTenantPolicyDecisionMaxBytes: a denial's recorded input field and
// reason are kept up to server.policy_decision_max_bytes of JSON each
// (exactly the limit kept, one more replaced by a note of its size), so
// that a tenant denying large payloads cannot make the decision log hold
// a MiB per denial.
func TestTenantPolicyDecisionMaxBytes(t *testing.T) {
	refusedAtStart(t, func(c *server.Config) { c.PolicyDecisionMaxBytes = 255 }, "256")
	ctx := context.Background()
	_, admin := tenantAdmin(t, func(c *server.Config) { c.PolicyDecisionMaxBytes = 300 })
	rule := "package batpak.write\n\ndeny contains {\"code\": \"NO\", \"message\": input.event.payload.s} if {\n\tinput.event.payload.s\n}\n"
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", rule))); err != nil {
		t.Fatal(err)
	}
	deny := func(s string) client.PolicyDecision {
		t.Helper()
		payload, _ := json.Marshal(map[string]string{"s": s})
		_, err := admin.Append(ctx, client.AppendRequest{Entity: "e:1", Scope: "s", Kind: "1:1", Payload: payload})
		// The denial echoes the tenant's own message whole (the client
		// may not parse so large a problem): only its status is checked.
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 403 {
			t.Fatalf("a write of %d bytes: %v, want denied", len(s), err)
		}
		decs, err := admin.PolicyDecisions(ctx, 1)
		if err != nil || len(decs) != 1 || (e.DecisionID() != "" && decs[0].ID != e.DecisionID()) {
			t.Fatalf("decisions: %+v, %v", decs, err)
		}
		return decs[0]
	}
	exact := strings.Repeat("x", 298) // 300 bytes of JSON
	d := deny(exact)
	if d.Input["event.payload.s"] != exact || len(d.Reasons) != 1 || d.Reasons[0].Message != exact {
		t.Fatalf("a field and message of exactly 300 bytes of JSON: recorded %+v", d)
	}
	d = deny(exact + "x")
	if v, _ := d.Input["event.payload.s"].(string); v == exact+"x" || !strings.Contains(v, "301") {
		t.Errorf("a field of 301 bytes of JSON recorded as %.80q…, want a note of its size", v)
	}
	if m := d.Reasons[0].Message; m == exact+"x" || !strings.Contains(m, "301") {
		t.Errorf("a reason of 301 bytes of JSON recorded as %.80q…, want a note of its size", m)
	}
	d = deny(strings.Repeat("y", 512<<10))
	if raw, _ := json.Marshal(d); len(raw) > 2048 {
		t.Errorf("a denial of a 512 KiB payload recorded in %d bytes", len(raw))
	}
}

// TestTenantPolicyHostileAdmin: one tenant's admin cannot roll another
// tenant back, nor to another tenant's revision, nor read its policy or
// decisions; an archive naming a file twice ("./p.rego" and "p.rego") is
// refused; uploads racing each other each leave a listed revision and
// one of them active.
func TestTenantPolicyHostileAdmin(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	keys := map[string]string{}
	for _, id := range []string{"acme", "globex"} {
		if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
		k, err := op.IssueKey(ctx, id, "a", "admin")
		if err != nil {
			t.Fatal(err)
		}
		keys[id] = k.Key
	}
	acme := ps.as(t, keys["acme"]).Tenant("acme")
	globex := ps.as(t, keys["globex"]).Tenant("globex")
	bundle := tarGz(t, "policy.rego", denyPrefix("NO", "secret:"))
	if _, err := acme.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	rev := revisionOf(bundle)
	if _, err := globex.RollbackPolicy(ctx, rev); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("globex rolls back to acme's revision: %v, want NOT_FOUND", err)
	}
	if tp, _ := globex.Policies(ctx); tp.Active != "" {
		t.Errorf("globex's active revision after the attempt: %q", tp.Active)
	}
	asAcme := ps.as(t, keys["acme"]).Tenant("globex")
	if _, err := asAcme.RollbackPolicy(ctx, rev); err == nil {
		t.Error("acme's admin rolled globex back")
	}
	if _, err := asAcme.Policies(ctx); err == nil {
		t.Error("acme's admin read globex's policy")
	}
	if _, err := asAcme.PolicyDecisions(ctx, 10); err == nil {
		t.Error("acme's admin read globex's decisions")
	}

	for _, names := range [][2]string{{"./p.rego", "p.rego"}, {"a/p.rego", "a//p.rego"}, {"p.rego", "a/../p.rego"}} {
		_, err := acme.PushPolicy(ctx, bytes.NewReader(tarGz(t, names[0], denyPrefix("A", "a:"), names[1], denyPrefix("B", "b:"))))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 400 {
			t.Errorf("entries %q and %q: %v, want 400", names[0], names[1], err)
		}
	}

	const n = 6
	revs := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			b := tarGz(t, "policy.rego", denyPrefix(fmt.Sprintf("R%d", i), "secret:"))
			_, err := globex.PushPolicy(ctx, bytes.NewReader(b))
			revs <- revisionOf(b)
			errs <- err
		}()
	}
	want := map[string]bool{}
	for range n {
		want[<-revs] = true
		if err := <-errs; err != nil {
			t.Errorf("a racing upload: %v", err)
		}
	}
	tp, err := globex.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(tp.Revisions) != n || !want[tp.Active] {
		t.Errorf("after %d racing uploads: %d revisions, active %q", n, len(tp.Revisions), tp.Active)
	}
	for _, r := range tp.Revisions {
		if !want[r.Revision] {
			t.Errorf("revision %s listed, not uploaded", r.Revision)
		}
	}
}

// TestTenantPolicyDecisionLogGrowsWithUse: a tenant's decision log takes
// memory for the denials it holds, not for its capacity: ten tenants
// with one denial each under the largest log size (100000) stay within
// a few MiB.
func TestTenantPolicyDecisionLogGrowsWithUse(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), func(c *server.Config) { c.PolicyDecisionLogSize = 100000 })
	ctx := context.Background()
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	var writers []*client.Tenant
	for i := range 10 {
		id := fmt.Sprintf("t%d", i)
		if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
		k, err := op.IssueKey(ctx, id, "w", "writer")
		if err != nil {
			t.Fatal(err)
		}
		w := ps.as(t, k.Key).Tenant(id)
		if _, err := w.Append(ctx, note("ok:1")); err != nil { // open the store first
			t.Fatal(err)
		}
		writers = append(writers, w)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, w := range writers {
		if _, err := w.Append(ctx, note("blocked:1")); err == nil {
			t.Fatal("a blocked write was admitted")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("ten denials took %d MiB of heap", grew>>20)
	}
}

// refusedAtStart checks that server.New refuses a config that set
// changes out of its range, with an error containing want.
func refusedAtStart(t *testing.T, set func(*server.Config), want string) {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Stderr = t.TempDir(), io.Discard
	set(&cfg)
	if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("server.New: %v, want refused naming %q", err, want)
	}
}

// TestTenantPolicyKeepsBoundedRevisions: a tenant admin pushing bundle
// after bundle cannot make the server keep them all. Past
// server.policy_max_revisions the oldest revisions are dropped — never the
// one a new bundle replaces — and their bundles removed from disk; the
// same list comes back after a restart, and a dropped revision can no
// longer be rolled back to.
func TestTenantPolicyKeepsBoundedRevisions(t *testing.T) {
	refusedAtStart(t, func(c *server.Config) { c.PolicyMaxRevisions = 1 }, "2..1000")
	refusedAtStart(t, func(c *server.Config) { c.PolicyMaxRevisions = 1001 }, "2..1000")
	root := t.TempDir()
	tune := func(c *server.Config) { c.PolicyMaxRevisions = 3 }
	ps := startPolicyServer(t, root, tune)
	ctx := context.Background()
	admin, key := acmeAdminKey(t, ps)
	revs := make([]string, 7)
	push := func(i int) {
		t.Helper()
		bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", fmt.Sprintf("secret%d:", i)))
		revs[i] = revisionOf(bundle)
		if _, err := admin.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	kept := func(want ...int) {
		t.Helper()
		tp, err := admin.Policies(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got, wantRevs []string
		for _, r := range tp.Revisions {
			got = append(got, r.Revision)
		}
		for _, i := range want {
			wantRevs = append(wantRevs, revs[i])
		}
		if !slices.Equal(got, wantRevs) {
			t.Fatalf("revisions kept %v, want those of pushes %v", got, want)
		}
		var files []string
		ents, _ := os.ReadDir(filepath.Join(root, "srv", "policies", "acme"))
		for _, e := range ents {
			files = append(files, strings.TrimSuffix(e.Name(), ".tar.gz"))
		}
		slices.Sort(files)
		slices.Sort(wantRevs)
		if !slices.Equal(files, wantRevs) {
			t.Fatalf("bundles on disk %v, want those of pushes %v", files, want)
		}
	}
	for i := 1; i <= 5; i++ {
		push(i)
	}
	kept(3, 4, 5)
	var e *client.Error
	if _, err := admin.RollbackPolicy(ctx, revs[1]); !errors.As(err, &e) || e.Status != 404 {
		t.Fatalf("rollback to a dropped revision: %v, want 404", err)
	}
	if _, err := admin.RollbackPolicy(ctx, revs[3]); err != nil {
		t.Fatal(err)
	}
	// The active revision is the oldest: the next push replaces it, so
	// the one after it goes instead.
	push(6)
	kept(3, 5, 6)
	ps.stop()
	ps = startPolicyServer(t, root, tune)
	admin = ps.as(t, key).Tenant("acme")
	kept(3, 5, 6)
	if tp, _ := admin.Policies(ctx); tp.Active != revs[6] {
		t.Fatalf("after a restart the active revision is %s, want push 6's", tp.Active)
	}
	if _, err := admin.RollbackPolicy(ctx, revs[3]); err != nil {
		t.Fatalf("rollback to a kept revision after a restart: %v", err)
	}
}

// TestTenantPolicyLoadsAfterLimitsShrink: limits bound uploads, not what
// was accepted: a server restarted with a smaller
// policy_bundle_max_file_bytes than the active bundle's file still loads
// that revision and judges writes by it (on a cluster, a node configured
// smaller than the node that took the upload does the same); a new upload
// over the smaller limit is refused.
func TestTenantPolicyLoadsAfterLimitsShrink(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	ps := startTunedServer(t, root, nil)
	tc, key := acmeAdminKey(t, ps)
	rego := denyPrefix("NO_SECRETS", "secret:") + "\n# " + strings.Repeat("padding ", 400) + "\n" // a file of about 3.3 KiB
	tp, err := tc.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", rego)))
	if err != nil {
		t.Fatal(err)
	}
	ps.stop()
	ps = startTunedServer(t, root, func(c *server.Config) { c.PolicyBundleMaxFileBytes = 1 << 10 })
	tc = ps.as(t, key).Tenant("acme")
	_, err = tc.Append(ctx, note("secret:1"))
	wantDenied(t, "a write the active revision refuses, after the limit shrank", err, "tenant", "NO_SECRETS", tp.Active)
	if _, err := tc.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("a write the active revision allows: %v", err)
	}
	if _, err := tc.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", rego+"\n"))); err == nil {
		t.Fatal("a new upload with a file over policy_bundle_max_file_bytes was accepted")
	}
}

// TestTenantPolicyBuiltinsCannotTakeTheServer: a tenant bundle cannot
// make one built-in call ask the server for terabytes (which would end
// the process, every tenant's writes with it) or for time without bound:
// a bundle calling strings.render_template or graph.reachable_paths is
// refused naming it; a test asking bits.lsh for 128 GiB fails with the
// (the bundle is refused; the process lives); a rule doing it denies the write with
// POLICY_ERROR; and the server goes on taking writes.
func TestTenantPolicyBuiltinsCannotTakeTheServer(t *testing.T) {
	ctx := context.Background()
	_, admin := tenantAdmin(t, nil)
	for _, builtin := range []string{"strings.render_template", "graph.reachable_paths"} {
		call := map[string]string{
			"strings.render_template": `strings.render_template("{{range $.a}}{{range $.a}}x{{end}}{{end}}", {"a": [1]}) == "x"`,
			"graph.reachable_paths":   `count(graph.reachable_paths({"a": ["b"]}, {"a"})) == 1`,
		}[builtin]
		_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", "package batpak.write\n\ndeny contains \"x\" if not "+call+"\n")))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), builtin) || !strings.Contains(e.Error(), "no bound") {
			t.Errorf("a bundle calling %s: %v, want 422 naming it and why", builtin, err)
		}
	}
	// A number of 2,000 digits, in a rule or in the bundle's data: Go
	// parses it in time that grows with the square of its length, at
	// every comparison.
	long := strings.Repeat("7", 2000)
	for file, body := range map[string]string{
		"policy.rego": "package batpak.write\n\ndeny contains \"x\" if input.event.payload.n > " + long + "\n",
		"data.json":   `{"limits": {"n": ` + long + `}}`,
	} {
		files := []string{file, body}
		if file != "policy.rego" {
			files = append(files, "policy.rego", denyPrefix("NO", "secret:"))
		}
		_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, files...)))
		var e *client.Error
		if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), "2000") || !strings.Contains(e.Error(), file) {
			t.Errorf("a bundle with a number of 2000 digits in %s: %v, want 422 naming it", file, err)
		}
	}
	bomb := `bits.lsh(1, 1099511627776) > 0`
	_, err := admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", denyPrefix("NO", "secret:"), "policy_test.rego",
		"package batpak.write_test\n\ntest_bomb if {\n\t"+bomb+"\n}\n")))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), "test_bomb: failed") {
		t.Fatalf("a bundle whose test asks bits.lsh for 128 GiB: %v, want 422, the test failed", err)
	}
	bundle := tarGz(t, "policy.rego", "package batpak.write\n\ndeny contains \"BOMB\" if {\n\tinput.event.entity == \"bomb:1\"\n\t"+bomb+"\n}\n")
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	_, err = admin.Append(ctx, note("bomb:1"))
	wantDenied(t, "a write whose rule asks bits.lsh for 128 GiB", err, "tenant", "POLICY_ERROR", revisionOf(bundle))
	if _, err := admin.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("a write after the refused one: %v", err)
	}
}

// doubling is Rego nesting a value depth times in itself under the
// names <name>0..<name><depth>, each level two references to the one
// below (so 2^depth leaves from a few bytes a level); with concat, each
// level is built by array.concat, so that its type does not double too.
func doubling(name string, depth int, concat bool) string {
	var b strings.Builder
	b.WriteString(name + "0 := [\"" + strings.Repeat("x", 64) + "\"]\n")
	for i := 1; i <= depth; i++ {
		if concat {
			fmt.Fprintf(&b, "%s%d := array.concat([%s%d], [%s%d])\n", name, i, name, i-1, name, i-1)
		} else {
			fmt.Fprintf(&b, "%s%d := [%s%d, %s%d]\n", name, i, name, i-1, name, i-1)
		}
	}
	return b.String()
}

// A tenant's bundle runs in child processes: what OPA cannot interrupt
// or bound — its type checker, its comparisons and its unification walk a value built by
// doubling in full, and turning a decision into Go values copies it —
// ends the child, never the server. An upload whose compilation would
// take minutes is refused at the check timeout; a write whose rule would
// compare for hours is denied a second past the evaluation timeout; one
// whose decision would take gigabytes is denied at the memory limit; and
// the next write, of this tenant and of another, goes through.
func TestTenantPolicyRunsInItsOwnProcess(t *testing.T) {
	ctx := context.Background()
	ps, admin := tenantAdmin(t, func(c *server.Config) {
		c.PolicyBundleCheckTimeout = 2 * time.Second
		c.PolicyMemory = 64 << 20
	})
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	if _, err := op.CreateTenant(ctx, "other", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := op.IssueKey(ctx, "other", "w", "writer")
	if err != nil {
		t.Fatal(err)
	}
	other := ps.as(t, k.Key).Tenant("other")

	start := time.Now()
	_, err = admin.PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", "package batpak.write\n\n"+doubling("x", 40, false)+
		"deny contains \"a\" if x40 == x40\n")))
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 422 || !strings.Contains(e.Error(), "policy_bundle_check_timeout") {
		t.Fatalf("a bundle whose type check walks 2^40 types: %v, want 422 naming policy_bundle_check_timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the refusal took %v", took)
	}
	if _, err := other.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("another tenant's write after the refusal: %v", err)
	}

	bundle := tarGz(t, "policy.rego", "package batpak.write\n\n"+doubling("x", 40, true)+doubling("y", 40, true)+
		"deny contains \"BOMB\" if {\n\tinput.event.entity == \"bomb:1\"\n\tx40 < y40\n}\n"+
		"deny contains {\"code\": \"BIG\", \"message\": \"m\", \"context\": {\"x\": x40}} if input.event.entity == \"big:1\"\n")
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Append(ctx, note("note:1")); err != nil {
		t.Fatalf("a write the bundle allows: %v", err)
	}
	for _, c := range []struct{ entity, want string }{
		{"bomb:1", "ran past 1s"},
		{"big:1", "64 MiB of memory"},
	} {
		start := time.Now()
		_, err := admin.Append(ctx, note(c.entity))
		wantDenied(t, c.entity, err, "tenant", "POLICY_ERROR", revisionOf(bundle))
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to say %q", c.entity, err, c.want)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: denied after %v", c.entity, took)
		}
		if _, err := admin.Append(ctx, note("note:2")); err != nil {
			t.Fatalf("a write after %s: %v", c.entity, err)
		}
		if _, err := other.Append(ctx, note("note:2")); err != nil {
			t.Fatalf("another tenant's write after %s: %v", c.entity, err)
		}
	}
	// The operator sees the kills: the upload's checker, the write past
	// its timeout, the write over its memory (and its one retry).
	m := scrape(t, ps)
	var killed int
	if _, err := fmt.Sscanf(m[strings.Index(m, "\nbatpak_policy_sandbox_killed_total ")+1:], "batpak_policy_sandbox_killed_total %d", &killed); err != nil || killed < 3 {
		t.Errorf("batpak_policy_sandbox_killed_total = %d (%v), want at least 3", killed, err)
	}
}

// The evaluation children serve every tenant, but one tenant's revisions
// cannot get another's writes refused: a tenant that keeps ten revisions
// of 60,000-element data in the children (under a 64 MiB limit) does not
// stop another tenant's larger bundle from judging its writes (a child
// near its limit drops its compiled revisions before compiling one more,
// and a load killed for memory is tried again in a fresh child); and the
// directories children extract into are gone, killed or not.
func TestTenantPolicySandboxIsShared(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	ps := startPolicyServer(t, root, func(c *server.Config) {
		c.PolicyBundleCheckTimeout = 5 * time.Second
		c.PolicyMemory = 64 << 20
	})
	op := ps.as(t, "bpko_"+strings.Repeat("a", 52)).Admin()
	admins := map[string]*client.Tenant{}
	for _, id := range []string{"acme", "other"} {
		if _, err := op.CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
		k, err := op.IssueKey(ctx, id, "a", "admin", "writer")
		if err != nil {
			t.Fatal(err)
		}
		admins[id] = ps.as(t, k.Key).Tenant(id)
	}
	for i := range 10 {
		data := fmt.Sprintf(`{"rev%d": [%s1]}`, i, strings.Repeat("1,", 60000))
		if _, err := admins["acme"].PushPolicy(ctx, bytes.NewReader(tarGz(t, "policy.rego", denyPrefix("NO", "secret:"), "d/data.json", data))); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if _, err := admins["acme"].Append(ctx, note("note:1")); err != nil {
				t.Fatalf("acme's write under revision %d: %v", i, err)
			}
		}
	}
	victim := tarGz(t, "policy.rego", denyPrefix("NO", "secret:"), "v/data.json", fmt.Sprintf(`{"v": [%s1]}`, strings.Repeat("1,", 120000)))
	if _, err := admins["other"].PushPolicy(ctx, bytes.NewReader(victim)); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := admins["other"].Append(ctx, note("note:1")); err != nil {
			t.Fatalf("the other tenant's write %d: %v", i, err)
		}
	}
	if _, err := admins["other"].Append(ctx, note("secret:1")); err == nil {
		t.Fatal("the other tenant's bundle did not judge: a secret was written")
	}
	var left []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), ".bundle-") {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("extraction directories left behind: %v", left)
	}
}

// A batch's items are judged by the tenant's bundle in one round trip to
// the sandbox, with the same answers as one at a time: the first item
// either layer refuses is the one reported (its index in the problem),
// the platform's refusal of a later item does not hide the tenant's of
// an earlier one, nothing of a refused batch is written, and a batch both
// allow is written whole.
func TestTenantPolicyBatchJudgedTogether(t *testing.T) {
	ctx := context.Background()
	_, admin := tenantAdmin(t, nil)
	bundle := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	if _, err := admin.PushPolicy(ctx, bytes.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	batch := func(entities ...string) []client.AppendRequest {
		var out []client.AppendRequest
		for _, e := range entities {
			out = append(out, note(e))
		}
		return out
	}
	many := make([]string, 50)
	for i := range many {
		many[i] = fmt.Sprintf("note:%d", i)
	}
	rs, err := admin.AppendBatch(ctx, batch(many...))
	if err != nil || len(rs) != 50 {
		t.Fatalf("a batch of 50 both layers allow: %d receipts, %v", len(rs), err)
	}
	for _, c := range []struct {
		entities    []string
		index       int
		layer, code string
	}{
		{[]string{"note:a", "note:b", "secret:1", "blocked:1", "secret:2"}, 2, "tenant", "NO_SECRETS"},
		{[]string{"note:a", "blocked:1", "secret:1"}, 1, "platform", "PLATFORM_BLOCK"},
		{[]string{"blocked:1", "note:a"}, 0, "platform", "PLATFORM_BLOCK"},
		{append(slices.Clone(many[:40]), "secret:3"), 40, "tenant", "NO_SECRETS"},
	} {
		_, err := admin.AppendBatch(ctx, batch(c.entities...))
		rev := ""
		if c.layer == "tenant" {
			rev = revisionOf(bundle)
		}
		wantDenied(t, fmt.Sprint(c.entities), err, c.layer, c.code, rev)
		var e *client.Error
		if errors.As(err, &e) && string(e.Extensions["index"]) != fmt.Sprint(c.index) {
			t.Errorf("%v: item %s reported, want %d", c.entities, e.Extensions["index"], c.index)
		}
	}
	n := 0
	for _, err := range admin.Query(ctx, client.Query{Entity: "note:"}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 50 {
		t.Fatalf("%d notes written, want the first batch's 50 only", n)
	}
}

// TestTenantPolicyUploadsDoNotHoldOthers: a tenant uploading bundles that
// run their checks to server.policy_bundle_check_timeout, two at once,
// holds up its own uploads only: another tenant's upload made meanwhile is
// checked and active before the first slow one is even refused. (A tenant
// takes at most half of server.policy_checks, and its own uploads run one
// at a time.)
func TestTenantPolicyUploadsDoNotHoldOthers(t *testing.T) {
	ctx := context.Background()
	ps, slow := tenantAdmin(t, func(c *server.Config) { c.PolicyBundleCheckTimeout = 4 * time.Second })
	other := ps.as(t, ps.newTenant(t, "other", "a", "admin", "writer")).Tenant("other")
	bomb := tarGz(t, "policy.rego", "package batpak.write\n\n"+doubling("x", 40, false)+"deny contains \"a\" if x40 == x40\n")
	refused := make(chan error, 2)
	firstDone := make(chan struct{})
	for i := range 2 {
		go func() {
			_, err := slow.PushPolicy(ctx, bytes.NewReader(bomb))
			if i == 0 {
				close(firstDone)
			}
			refused <- err
		}()
		if i == 0 {
			time.Sleep(300 * time.Millisecond) // the first is checking
		}
	}
	time.Sleep(300 * time.Millisecond)
	good := tarGz(t, "policy.rego", denyPrefix("NO_SECRETS", "secret:"))
	if _, err := other.PushPolicy(ctx, bytes.NewReader(good)); err != nil {
		t.Fatalf("another tenant's upload while the first checks slow bundles: %v", err)
	}
	select {
	case <-firstDone:
		t.Fatal("another tenant's upload was answered only after the slow tenant's first upload: it waited behind it")
	default:
	}
	if tp, _ := other.Policies(ctx); tp.Active != revisionOf(good) {
		t.Errorf("the other tenant's active revision: %q, want its upload's", tp.Active)
	}
	for range 2 {
		err := <-refused
		var e *client.Error
		if !errors.As(err, &e) || (e.Status != 422 && e.Status != 503) {
			t.Errorf("a slow upload: %v, want 422 (check timeout) or 503 (its previous upload still checking)", err)
		}
	}
}
