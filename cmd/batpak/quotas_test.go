package main

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/control"
)

// TestClientQuotasNameEveryQuota: the client's Quotas carry every quota
// the server knows, so that reading a tenant's quotas and writing them
// back (tenant quotas --set) keeps the ones it does not change.
func TestClientQuotasNameEveryQuota(t *testing.T) {
	server, cl := jsonFieldNames(reflect.TypeFor[control.Quotas]()), quotaNames()
	slices.Sort(server)
	slices.Sort(cl)
	if !slices.Equal(server, cl) {
		t.Fatalf("client.Quotas names %v,\nthe server's quotas are %v", cl, server)
	}
}

// TestTenantQuotasCeilingsAndNegatives: against a server on loopback, a
// plugin limit set above the server's ceiling shows the ceiling that
// applies as EFFECTIVE and names the setting; an unset one too. Below
// zero only -1 (unlimited) is taken, and --set and --unset of one quota
// together are a usage error.
func TestTenantQuotasCeilingsAndNegatives(t *testing.T) {
	isolate(t)
	url, op := startServer(t)
	admin := func(args ...string) []string { return append([]string{"--server", url, "--token", op}, args...) }
	ok(t, admin("tenant", "create", "acme")...)

	table := ok(t, admin("tenant", "quotas", "acme", "--set", "plugin_memory_bytes=8GiB", "--set", "max_plugins=2")...)
	row := func(name string) string {
		for _, l := range strings.Split(table, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == name {
				return l
			}
		}
		t.Fatalf("no row %s in\n%s", name, table)
		return ""
	}
	if r := row("plugin_memory_bytes"); !strings.Contains(r, "32MiB (ceiling: server.plugins.memory_bytes)") || !strings.HasSuffix(r, "8GiB") {
		t.Errorf("plugin_memory_bytes set above the ceiling: %q", r)
	}
	if r := row("max_plugins"); !strings.Contains(r, " 2 ") || strings.Contains(r, "ceiling") {
		t.Errorf("max_plugins set below the ceiling: %q", r)
	}
	if r := row("plugin_output_bytes"); !strings.Contains(r, "16MiB (ceiling: server.plugins.output_bytes)") {
		t.Errorf("plugin_output_bytes left unset: %q", r)
	}
	var v struct {
		Effective map[string]any    `json:"effective_quotas"`
		CappedBy  map[string]string `json:"capped_by"`
	}
	if err := json.Unmarshal([]byte(ok(t, admin("tenant", "quotas", "acme", "-o", "json")...)), &v); err != nil {
		t.Fatal(err)
	}
	if v.Effective["plugin_memory_bytes"] != float64(32<<20) || v.CappedBy["plugin_memory_bytes"] != "server.plugins.memory_bytes" || v.CappedBy["max_plugins"] != "" {
		t.Errorf("-o json: effective %v, capped_by %v", v.Effective, v.CappedBy)
	}

	// Negative values: -1 (unlimited) only.
	fails(t, admin("tenant", "quotas", "acme", "--set", "max_workers=-5"), "--set max_workers=-5", "max_workers cannot be negative but -1")
	fails(t, admin("tenant", "quotas", "acme", "--set", "requests_per_second=-0.5"), "requests_per_second cannot be negative")
	fails(t, admin("tenant", "quotas", "acme", "--set", "events_burst=-1"), "a bucket cannot be unlimited")
	if out := ok(t, admin("tenant", "quotas", "acme", "--set", "max_workers=-1")...); !regexp.MustCompile(`max_workers +unlimited +unlimited`).MatchString(out) {
		t.Errorf("max_workers=-1:\n%s", out)
	}
	failsWith(t, exitUsage, admin("tenant", "quotas", "acme", "--set", "max_cursors=1", "--unset", "max_cursors"), "--set max_cursors=1 and --unset max_cursors")
	if out := ok(t, admin("tenant", "quotas", "acme", "-o", "json")...); strings.Contains(out, `"max_cursors"`) && !strings.Contains(out, `"max_cursors":100`) {
		t.Errorf("a refused change changed max_cursors: %s", out)
	}
}
