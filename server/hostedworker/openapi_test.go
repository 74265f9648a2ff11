package hostedworker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server/httpapi"
)

// TestWorkerStatusMatchesOpenAPI: a live worker status (with a fault, a
// running plugin and a log) carries only the members the OpenAPI
// document's Worker schema names, nested objects included.
func TestWorkerStatusMatchesOpenAPI(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Properties map[string]any `json:"properties"`
					Items      *struct {
						Properties map[string]any `json:"properties"`
					} `json:"items"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(httpapi.OpenAPIDocument, &doc); err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["Worker"].Properties
	ts := startServer(t, t.TempDir(), newSource(t, standardFixtures()), nil)
	ctx := context.Background()
	if _, err := ts.op.Admin().CreateTenant(ctx, "acme", nil, nil); err != nil {
		t.Fatal(err)
	}
	k, err := ts.op.Admin().IssueKey(ctx, "acme", "k", "admin")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(ts.base, k.Key)
	acme := c.Tenant("acme")
	appendOrders(t, acme, "order:1", 3)
	if _, err := acme.StartWorker(ctx, "echoer", client.WorkerSpec{Plugin: "echo", Region: inputs, Restart: client.WorkerRestart{BackoffMinMs: 1}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 echoes", func() bool { return len(echoes(t, acme)) >= 3 })

	req, _ := http.NewRequest("GET", ts.base+"/v1/tenants/acme/workers/echoer", nil)
	req.Header.Set("Authorization", "Bearer "+k.Key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got map[string]json.RawMessage
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil || res.StatusCode != 200 {
		t.Fatalf("%d %v", res.StatusCode, err)
	}
	for _, m := range []string{"last_fault", "running", "log"} {
		if _, ok := got[m]; !ok {
			t.Fatalf("the status has no %s to check: %v", m, got)
		}
	}
	for name, raw := range got {
		p, ok := schema[name]
		if !ok {
			t.Errorf("member %q is not in the Worker schema", name)
			continue
		}
		var nested []map[string]any
		if p.Items != nil {
			_ = json.Unmarshal(raw, &nested)
		} else if p.Properties != nil {
			var one map[string]any
			_ = json.Unmarshal(raw, &one)
			nested = append(nested, one)
		}
		want := p.Properties
		if p.Items != nil {
			want = p.Items.Properties
		}
		for _, obj := range nested {
			for sub := range obj {
				if _, ok := want[sub]; !ok && want != nil {
					t.Errorf("member %s.%s is not in the Worker schema", name, sub)
				}
			}
		}
	}
}
