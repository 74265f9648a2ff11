package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
)

// examplePolicy is examples/policies, the multi-tenant shop policy.
func examplePolicy(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "examples", "policies")
}

// TestPlatformPolicyGatesTenantWrites runs the server with the example
// policy as its platform policy: a key's application roles reach the
// policy (a clerk may place orders), the tenant in the principal is the
// key's, a refused write answers POLICY_DENIED with the policy's reasons
// and revision and writes nothing, and /metrics counts the decisions.
func TestPlatformPolicyGatesTenantWrites(t *testing.T) {
	cfg := servertest.Config(t)
	cfg.PolicyDir = examplePolicy(t)
	ctx := context.Background()
	srv := servertest.Start(t, cfg)
	base := srv.URL

	op, _ := client.New(base, srv.Token)
	for _, id := range []string{"acme", "globex"} {
		if _, err := op.Admin().CreateTenant(ctx, id, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	clerk, err := op.Admin().IssueKey(ctx, "acme", "till", "writer", "clerk")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := op.Admin().IssueKey(ctx, "acme", "no-app-role", "writer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Admin().IssueKey(ctx, "acme", "app-role-only", "clerk"); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("a key with only an application role: %v, want INVALID_REQUEST", err)
	}

	order := json.RawMessage(`{"order":"acme:order:1","customer":"c1","items":[{"sku":"A","name":"a","qty":2,"price_cents":499}],"total_cents":998,"currency":"EUR"}`)
	placed := client.AppendRequest{Entity: "acme:order:1", Scope: "shop", Kind: "1:1", Payload: order}

	c, _ := client.New(base, clerk.Key)
	if _, err := c.Tenant("acme").Append(ctx, placed); err != nil {
		t.Fatalf("a clerk placing an order of its own tenant: %v", err)
	}
	// Another tenant's entity prefix: the principal's tenant is the key's.
	foreign := placed
	foreign.Entity = "globex:order:1"
	_, err = c.Tenant("acme").Append(ctx, foreign)
	var pe *client.Error
	if !errors.As(err, &pe) || pe.Code != client.CodePolicyDenied || len(pe.Reasons()) == 0 {
		t.Fatalf("writing globex's entity with an acme key: %v, want POLICY_DENIED with reasons", err)
	}
	if _, ok := pe.Extensions["revision"]; !ok {
		t.Errorf("denial without the policy revision: %v", pe.Extensions)
	}
	// Without the clerk role the policy refuses the kind.
	p, _ := client.New(base, plain.Key)
	if _, err := p.Tenant("acme").Append(ctx, placed); !errors.Is(err, client.ErrPolicyDenied) {
		t.Fatalf("a writer without an application role: %v, want POLICY_DENIED", err)
	}
	var n int
	for _, err := range c.Tenant("acme").Query(ctx, client.Query{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("acme holds %d events, want the one admitted", n)
	}

	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"batpak_policy_decisions_total 3", "batpak_policy_decision_denials_total 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
