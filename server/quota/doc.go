// Package quota holds each tenant's limits in memory: token buckets for
// requests per second, events per second and payload bytes per second
// (golang.org/x/time/rate), and checks for storage, payload size, batch
// size, concurrent subscriptions (long responses: event streams, NDJSON
// queries, exports, verifies) and named cursors. The HTTP layer asks
// before it writes, so a refused request has written nothing.
//
//	quota               checked by               exactly the limit  refused with            RetryAfter
//	------------------  -----------------------  -----------------  ----------------------  -------------------------
//	requests_per_second AllowRequest()           allowed            "requests_per_second"   until a token refills
//	events_per_second   AllowWrite(events, _)    allowed            "events_per_second"     until the bucket refills
//	bytes_per_second    AllowWrite(_, bytes)     allowed            "bytes_per_second"      until the bucket refills
//	(bucket size)       AllowWrite               allowed            "events_burst" /        0: split the request
//	                                                                "bytes_burst"
//	storage_bytes       CheckStorage(used, add)  allowed            "storage_bytes"         0
//	index_bytes         CheckIndex(used, add)    allowed            "index_bytes"           0
//	max_payload_bytes   CheckPayload(n)          allowed            "max_payload_bytes"     0
//	max_batch_events    CheckBatch(n)            allowed            "max_batch_events"      0
//	max_subscriptions   AcquireSubscription()    that many open     "max_subscriptions"     0
//	max_cursors         CheckCursors(defined)    that many defined  "max_cursors"           0
//	control_changes_    AllowControlChange(c)    allowed            "control_changes_       until a token refills
//	per_day (and a                                                  per_day" /
//	pace: 10/s, 100)                                                "control_changes_
//	                                                                per_second"
//
// Control-plane changes are charged per class (ChangeClass): a tenant's
// admin credentials and its other credentials each have a pace and a
// day's budget of their own.
//
// The buckets live in memory, but the day's budgets of changes and the
// hour's upload bytes outlast the process: Manager.Restore charges them
// from the control plane's record of what the tenant spent
// (control.Plane.Spending), which a server does when it starts and a
// cluster node when it begins to lead.
//
// AllowWrite takes from both buckets or from neither. A bucket starts
// full (burst tokens) and refills at the rate; a burst of 0 means one
// second's worth of the rate (at least 1). A zero or negative quota is no
// limit: negative is how an operator lifts one for a tenant (zero in a
// tenant's overrides means the server default, see control.Quotas).
//
// Sources holds the buckets of the requests no tenant is charged for
// (no valid credential, the routes that read none), one per source
// address (an IPv4 address, an IPv6 /64), at most MaxSources of them:
// Sources.Allow refuses with "anonymous_requests_per_second".
//
// Manager.Tenant is called on every request with the tenant's effective
// quotas; it changes the limiter in place when they changed, so a quota
// update takes effect on the next request without losing the bucket's
// state.
package quota
