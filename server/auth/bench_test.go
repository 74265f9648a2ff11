package auth_test

import (
	"testing"

	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

// BenchmarkAuthenticateKey is the per-request cost of an API key: parse,
// plane lookup, SHA-256, constant-time compare.
func BenchmarkAuthenticateKey(b *testing.B) {
	p := plane(b)
	token, _ := issue(b, p, "acme", control.RoleWriter)
	a, _ := auth.New(auth.Config{Plane: p})
	r := req("Bearer " + token)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Authenticate(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
