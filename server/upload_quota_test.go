package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
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

// TestPolicyCheckTimeIsChargedToUploads: a policy bundle's check time is
// charged to its tenant's upload_bytes_per_hour (CompileCharge), refused
// bundle or not, as a plugin's compile is: a tenant pushing small bundles
// whose tests run to policy_bundle_check_timeout gets 429 QUOTA_EXCEEDED
// naming upload_bytes_per_hour after a push or two, instead of holding a
// checker (a core) for the whole timeout over and over within a budget
// its bytes alone would take a hundred pushes to spend.
func TestPolicyCheckTimeIsChargedToUploads(t *testing.T) {
	ctx := context.Background()
	_, admin := tenantAdmin(t, func(c *server.Config) {
		c.PolicyBundleCheckTimeout = 2 * time.Second // a check held 2s: CompileCharge 4 MiB
		c.Quotas.UploadBytesPerHour = 64 << 10
	})
	var tests strings.Builder
	tests.WriteString("package batpak.write_test\n")
	for i := range 20 {
		fmt.Fprintf(&tests, "\ntest_slow_%d if {\n\tevery a in numbers.range(1, 3000) {\n\t\tevery b in numbers.range(1, 3000) {\n\t\t\ta + b > %d\n\t\t}\n\t}\n}\n", i, -i)
	}
	for i := range 4 {
		bundle := tarGz(t, "policy.rego", denyPrefix("NO", fmt.Sprintf("secret%d:", i)), "policy_test.rego", tests.String())
		_, err := admin.PushPolicy(ctx, bytes.NewReader(bundle))
		var e *client.Error
		if !errors.As(err, &e) {
			t.Fatalf("push %d of a bundle whose tests run past the check timeout: %v, want refused", i, err)
		}
		if e.Status == 429 {
			if e.Code != client.CodeQuotaExceeded || string(e.Extensions["quota"]) != `"upload_bytes_per_hour"` || e.RetryAfter <= 0 {
				t.Fatalf("push %d: %v (quota %s, Retry-After %v), want 429 QUOTA_EXCEEDED naming upload_bytes_per_hour with Retry-After", i, err, e.Extensions["quota"], e.RetryAfter)
			}
			if i == 0 {
				t.Fatal("the first push was refused by the upload quota: nothing was charged yet")
			}
			return
		}
		if e.Status != 422 || !strings.Contains(e.Error(), "policy_bundle_check_timeout") {
			t.Fatalf("push %d: %v, want 422 naming policy_bundle_check_timeout (or 429 once its checks are charged)", i, err)
		}
	}
	t.Fatal("4 bundles whose tests ran to the 2s check timeout (about 2 KiB of uploads) were all checked: their check time is not charged to the 64 KiB upload_bytes_per_hour")
}
