package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testmodules"
	"github.com/batpak-go/batpak/plugins"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
)

// TestPluginCodeRoomOverHTTP: a module whose compiled code would pass the
// tenant's half of server.plugin_code_bytes is refused with 507
// QUOTA_EXCEEDED naming the setting, before it is compiled, and nothing is
// kept; a module that fits loads, and the tenant's stats (and the
// operator's view of the tenant) show what its loaded plugins hold.
func TestPluginCodeRoomOverHTTP(t *testing.T) {
	e := startPluginEnv(t, t.TempDir(), func(c *server.Config) { c.PluginCodeBytes = 64 << 20 })
	ctx := context.Background()
	big := testmodules.LargeCode(700_000) // about 35 MiB estimated: over the tenant's 32
	est, err := plugins.CodeEstimate(big)
	if err != nil || est <= 32<<20 {
		t.Fatalf("the large module's estimate %d (%v) is not over a tenant's half", est, err)
	}
	_, err = e.acme.PushPlugin(ctx, manifestOf(t, "big", "1", "projection", big, nil), big, true)
	ce := wantCode(t, "a module over the tenant's half of the code room", err, client.CodeQuotaExceeded)
	var quota string
	_ = json.Unmarshal(ce.Extensions["quota"], &quota)
	if ce.Status != 507 || quota != "server.plugin_code_bytes" || !strings.Contains(ce.Detail, "half of the server's server.plugin_code_bytes") {
		t.Fatalf("refusal: %d quota %q %q, want 507 naming server.plugin_code_bytes and the tenant's half", ce.Status, quota, ce.Detail)
	}
	if ps, err := e.acme.Plugins(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("plugins after the refusal: %v %v, want none", ps, err)
	}

	counter := fixture(t, "counter")
	if _, err := e.acme.PushPlugin(ctx, manifestOf(t, "count", "1", "projection", counter, nil), counter, true); err != nil {
		t.Fatal(err)
	}
	h, err := plugins.NewHost(plugins.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	p, err := h.Load(ctx, counter, plugins.Manifest{Name: "count", Version: "1", Kind: plugins.KindProjection})
	if err != nil {
		t.Fatal(err)
	}
	want := p.CodeBytes() // what its compiled code is charged
	st, err := e.acme.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	usage, _ := st["usage"].(map[string]any)
	if got, _ := usage["plugin_code_bytes"].(float64); int64(got) != want {
		t.Fatalf("stats usage.plugin_code_bytes = %v, want what its compiled code is charged, %d", usage["plugin_code_bytes"], want)
	}
	tv, err := e.op.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tv.Usage["plugin_code_bytes"].(float64); int64(got) != want {
		t.Fatalf("the operator's view of the tenant: usage.plugin_code_bytes = %v, want %d", tv.Usage["plugin_code_bytes"], want)
	}
	if gs, _ := e.globex.Stats(ctx); gs["usage"].(map[string]any)["plugin_code_bytes"].(float64) != 0 {
		t.Fatalf("another tenant's stats show acme's plugins: %v", gs["usage"])
	}
}
