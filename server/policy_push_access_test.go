package server_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// slowPut sends PUT path with body over a raw socket: the headers and the
// first 10 bytes, then waits for release before sending the rest, and
// returns the status line and body.
func slowPut(t *testing.T, base, path, token string, body []byte, release <-chan struct{}) (int, string) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/gzip\r\nContent-Length: %d\r\n\r\n", path, addr, token, len(body))
	c.Write(body[:10])
	<-release
	c.Write(body[10:])
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestPolicyPushOutlivedByItsKey: a key revoked while its policy bundle
// is still arriving cannot activate it: the push is refused 401 once the
// bundle is in, and no revision is recorded.
func TestPolicyPushOutlivedByItsKey(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	adminTok := ps.newTenant(t, "acme", "admin", "admin")
	op := ps.as(t, operatorToken).Admin()
	leaked, err := op.IssueKey(ctx, "acme", "leaked", "admin")
	if err != nil {
		t.Fatal(err)
	}
	bundle := tarGz(t, "p.rego", denyPrefix("EVIL", "order:"))
	release := make(chan struct{})
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		code, body := slowPut(t, ps.base, "/v1/tenants/acme/policy", leaked.Key, bundle, release)
		done <- result{code, body}
	}()
	time.Sleep(300 * time.Millisecond)
	if err := op.RevokeKey(ctx, "acme", leaked.ID); err != nil {
		t.Fatal(err)
	}
	// The key is revoked: a fresh request with it is refused.
	if _, err := ps.as(t, leaked.Key).Tenant("acme").Stats(ctx); err == nil {
		t.Fatal("revoked key still works for a new request")
	}
	close(release)
	r := <-done
	pols, err := ps.as(t, adminTok).Tenant("acme").Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != http.StatusUnauthorized || pols.Active != "" {
		t.Errorf("a key revoked before its upload finished activated a policy: %d %s; active %q", r.code, r.body, pols.Active)
	}
}

// TestPolicyPushIntoRecreatedTenant: a tenant deleted and created again
// under its id while the old owner's bundle is still arriving does not
// get the old owner's policy.
func TestPolicyPushIntoRecreatedTenant(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	ctx := context.Background()
	oldOwner := ps.newTenant(t, "reuse", "old-owner", "admin")
	op := ps.as(t, operatorToken).Admin()
	bundle := tarGz(t, "p.rego", denyPrefix("EVIL", "order:"))
	release := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		code, _ := slowPut(t, ps.base, "/v1/tenants/reuse/policy", oldOwner, bundle, release)
		done <- code
	}()
	time.Sleep(300 * time.Millisecond)
	if err := op.DeleteTenant(ctx, "reuse"); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateTenant(ctx, "reuse", nil, nil); err != nil {
		t.Fatal(err)
	}
	newKey, err := op.IssueKey(ctx, "reuse", "new-owner", "admin", "writer")
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	code := <-done
	newTenant := ps.as(t, newKey.Key).Tenant("reuse")
	pols, err := newTenant.Policies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := newTenant.Append(ctx, note("order:1"))
	if code != http.StatusUnauthorized || pols.Active != "" {
		t.Errorf("the deleted tenant's admin key set the new tenant's policy: status %d, active %q, new owner's write: %v", code, pols.Active, werr)
	}
}
