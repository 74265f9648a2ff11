package tenancy

import (
	"time"

	"github.com/batpak-go/batpak/core"
)

// Per-tenant store settings (see StoreConfig).
const (
	// TenantChannelCapacity is a tenant store's writer mailbox (core
	// default 4096): 1024 queued writes per tenant is still far more than
	// one group commit needs.
	TenantChannelCapacity = 1024
	// TenantBroadcastCapacity is a tenant store's lossy-subscription ring
	// (core default 8192).
	TenantBroadcastCapacity = 1024
	// TenantFDBudget bounds the segments a tenant store keeps mapped for
	// reads (core default 64): with 10,000 tenants open the process's
	// mappings stay well under Linux's vm.max_map_count (65530).
	TenantFDBudget = 4
	// TenantSegmentMaxBytes is a tenant store's segment size (core default
	// 256 MiB): a small tenant's zero-filled tail, and the address space
	// its active segment is mapped at, stay small.
	TenantSegmentMaxBytes = 64 << 20
)

// StoreConfig is the core.Config of one tenant's store in dir.
//
// durable (hosted tenants' default) syncs every event before its receipt
// (Sync.EveryNEvents 1, no Interval: a 2xx means the event is on stable
// storage; group commit shares fsyncs between concurrent writers); not
// durable is the tenant setting "buffered" (EveryNEvents 1000, Interval
// 1s: an OS crash or power loss can lose about the last second).
//
// The buffers are smaller than core's defaults so that many stores fit in
// one process. What one open, idle tenant store costs, measured on the
// 2-core development machine (Linux, Go 1.26) with 10,000 stores opened
// through a Registry and one small event appended to each —
//
//	BATPAK_TENANTS=10000 go test -count=1 -run TestManyTenants -v ./server/tenancy/
//
//	file descriptors  1       its LOCK file (the writer releases the active
//	                          segment after a second idle: core/doc.go,
//	                          "What an open store holds")
//	goroutines        2       writer and sealer (durable stores never
//	                          start core's background syncer)
//	memory (RSS)      ≈ 48 KiB  mostly the index and buffers on the heap
//	                          (after a GC; the whole process: 476 MiB)
//	mappings          0       while idle; a read maps the segment it reads
//	                          (at most TenantFDBudget)
//
// The same run: 10,000 tenants opened (one durable append each) at 480 to
// 800 per second with 8 goroutines; a first Acquire+Get of a closed
// 10-event tenant p50 ≈ 1 ms, p99 2 to 4 ms (4.7 to 6.7 ms with the
// registry full and evicting) while the machine was lightly loaded; with
// other builds running (load average 9 on 2 cores) the p99s reached 14 ms
// and 46 ms. Closing all 10,200 stores took 9 to 21 s.
//
// Admission, SingleAppendMaxBytes and Logger are left to the caller.
func StoreConfig(dir string, durable bool) core.Config {
	c := core.DefaultConfig(dir)
	c.ChannelCapacity = TenantChannelCapacity
	c.BroadcastCapacity = TenantBroadcastCapacity
	c.FDBudget = TenantFDBudget
	c.SegmentMaxBytes = TenantSegmentMaxBytes
	// A batch request may carry up to the quota's max_batch_events (at most
	// 4096) events of up to 16 MiB together: the store's own ceilings.
	c.Batch.MaxSize = 4096
	c.Batch.MaxBytes = 16 << 20
	if durable {
		c.Sync = core.SyncConfig{EveryNEvents: 1, Mode: core.SyncData}
	} else {
		c.Sync = core.SyncConfig{EveryNEvents: 1000, Interval: time.Second, Mode: core.SyncData}
	}
	return c
}
