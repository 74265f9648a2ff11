package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// BenchmarkTenantPolicyPushToActive measures a bundle's push to active
// through the API on loopback: the upload, its Rego tests, compilation,
// storing it (fsync) and recording it in the control plane, until the
// answer names it active (the next write is judged by it). Each push is
// a new revision. rules is how many deny rules (each with its test) the
// bundle holds.
//
//	go test -run '^$' -bench TenantPolicyPushToActive -benchtime 20x ./server
func BenchmarkTenantPolicyPushToActive(b *testing.B) {
	for _, rules := range []int{1, 50} {
		b.Run(fmt.Sprintf("rules=%d", rules), func(b *testing.B) {
			ps := startPolicyServer(b, b.TempDir(), nil)
			acme := acmeAdmin(b, ps)
			bundles := make([][]byte, b.N)
			for i := range bundles {
				var pol, tests strings.Builder
				pol.WriteString("package batpak.write\n\n")
				tests.WriteString("package batpak.write_test\n\n")
				for r := range rules {
					fmt.Fprintf(&pol, "deny contains {\"code\": \"NO_%d\", \"message\": \"push %d\"} if startswith(input.event.entity, \"p%d:\")\n\n", r, i, r)
					fmt.Fprintf(&tests, "test_%d if count(data.batpak.write.deny) == 1 with input as {\"event\": {\"entity\": \"p%d:1\"}}\n\n", r, r)
				}
				bundles[i] = tarGz(b, "policy.rego", pol.String(), "policy_test.rego", tests.String())
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := range b.N {
				tp, err := acme.PushPolicy(ctx, bytes.NewReader(bundles[i]))
				if err != nil || tp.Active != revisionOf(bundles[i]) {
					b.Fatalf("push %d: %v (active %s)", i, err, tp.Active)
				}
			}
			b.StopTimer()
			_, err := acme.Append(ctx, client.AppendRequest{Entity: "p0:1", Scope: "s", Kind: "1:1", Payload: []byte(`{}`)})
			if err == nil {
				b.Fatal("the last pushed bundle does not judge the next write")
			}
		})
	}
}
