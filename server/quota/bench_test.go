package quota_test

import (
	"testing"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
)

// BenchmarkAllowWrite is the per-request cost of the rate check: the
// tenant lookup with its quota comparison, then both buckets.
func BenchmarkAllowWrite(b *testing.B) {
	m := quota.New()
	q := control.Quotas{EventsPerSecond: 1e12, EventsBurst: 1 << 30, BytesPerSecond: 1e15, BytesBurst: 1 << 30}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ex := m.Tenant("acme", q).AllowWrite(1, 100); ex != nil {
				b.Fatal(ex)
			}
		}
	})
}

// BenchmarkAllowRequest is what every request of a tenant's credentials
// pays for its request rate: the tenant lookup with its quota
// comparison, then one bucket.
func BenchmarkAllowRequest(b *testing.B) {
	m := quota.New()
	q := control.Quotas{RequestsPerSecond: 1e12, RequestsBurst: 1 << 30}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ex := m.Tenant("acme", q).AllowRequest(); ex != nil {
				b.Fatal(ex)
			}
		}
	})
}

// BenchmarkSourceAllow is what a request no tenant is charged for pays
// for its source's bucket: parsing the remote address, the map lookup
// and the bucket.
func BenchmarkSourceAllow(b *testing.B) {
	s := quota.NewSources(1e12, 1<<30)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ex := s.Allow("192.0.2.7:43210"); ex != nil {
				b.Fatal(ex)
			}
		}
	})
}
