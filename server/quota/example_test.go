package quota_test

import (
	"fmt"

	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/quota"
)

func Example() {
	m := quota.New()
	// Called on every request with the tenant's effective quotas.
	t := m.Tenant("acme", control.Quotas{EventsPerSecond: 100, EventsBurst: 200, BytesPerSecond: 1 << 20, BytesBurst: 1 << 20})

	if ex := t.AllowWrite(150, 4096); ex == nil {
		fmt.Println("150 events allowed")
	}
	if ex := t.AllowWrite(100, 4096); ex != nil {
		fmt.Println("refused by", ex.Quota, "retry later:", ex.RetryAfter > 0)
	}
	if ex := t.AllowWrite(500, 1); ex != nil {
		fmt.Println("refused by", ex.Quota, "retry later:", ex.RetryAfter > 0)
	}
	release, _ := t.AcquireSubscription()
	defer release()
	// Output:
	// 150 events allowed
	// refused by events_per_second retry later: true
	// refused by events_burst retry later: false
}
