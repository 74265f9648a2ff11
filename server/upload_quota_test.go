package server_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/batpak-go/batpak/server"
)

// TestUploadQuotaChargesPluginsAndBundles: a tenant's plugin uploads and
// policy bundles draw on one upload_bytes_per_hour bucket, charged before
// they are checked: once it is spent, either kind is refused with 429
// QUOTA_EXCEEDED naming the quota, with Retry-After, and nothing is
// stored; another tenant's bucket is its own.
func TestUploadQuotaChargesPluginsAndBundles(t *testing.T) {
	counter := fixture(t, "counter")
	up := func(version string) []byte {
		b, _ := json.Marshal(map[string]any{"manifest": manifestOf(t, "count", version, "projection", counter, nil), "module": base64.StdEncoding.EncodeToString(counter)})
		return b
	}
	// An upload is charged its module and manifest.
	cost := len(counter) + len(manifestOf(t, "count", "1.0.0", "projection", counter, nil))
	ps := startTunedServer(t, t.TempDir(), func(c *server.Config) {
		c.Quotas.UploadBytesPerHour = int64(2*cost + 1)
	})
	_, key := acmeAdminKey(t, ps)
	send := func(method, path, media string, body []byte) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, ps.base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", media)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, res.Header, m
	}
	for _, v := range []string{"1.0.0", "1.0.1"} {
		if code, _, m := send("POST", "/v1/tenants/acme/plugins", "application/json", up(v)); code != 200 {
			t.Fatalf("upload %s within the quota: %d %v", v, code, m)
		}
	}
	refused := func(what string, code int, h http.Header, m map[string]any) {
		t.Helper()
		if code != 429 || m["code"] != "QUOTA_EXCEEDED" || m["quota"] != "upload_bytes_per_hour" || h.Get("Retry-After") == "" {
			t.Fatalf("%s past the upload quota: %d %v (Retry-After %q), want 429 QUOTA_EXCEEDED naming upload_bytes_per_hour", what, code, m, h.Get("Retry-After"))
		}
	}
	code, h, m := send("POST", "/v1/tenants/acme/plugins", "application/json", up("1.0.2"))
	refused("a third plugin version", code, h, m)
	code, h, m = send("PUT", "/v1/tenants/acme/policy", "application/gzip", tarGz(t, "policy.rego", denyPrefix("NO", "x:")))
	refused("a policy bundle", code, h, m)
	if code, _, st := send("GET", "/v1/tenants/acme/plugins/count", "", nil); code != 200 || len(st["versions"].([]any)) != 2 {
		t.Fatalf("plugin status after the refusal: %d %v, want the two versions uploaded before it", code, st)
	}
}
