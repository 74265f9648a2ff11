// Package httpapi is the batpak server's HTTP API: the routes of
// /v1 (tenant data, admin, health, OpenAPI document, metrics), their
// handlers, the middleware every request passes (request id, panic
// recovery, access log, metrics; every answer carries X-Request-Id and
// X-Content-Type-Options: nosniff) and the one place where errors become
// RFC 9457 problem documents.
//
// Every tenant data route runs the same checks, in this order, before its
// handler reads or writes anything:
//
//  1. authenticate the bearer credential             → 401 UNAUTHENTICATED
//  2. the credential's tenant's request rate
//     (requests_per_second, per node; charged on
//     every route, held as below)                     → 429 QUOTA_EXCEEDED + Retry-After
//     or, with no valid credential or a JWT naming
//     a tenant the server does not hold, its source's
//     (Options.Sources: per IPv4 address or IPv6 /64,
//     held as below; before the 401)                  → 429 TOO_MANY_REQUESTS + Retry-After
//  3. operator credential, another tenant's key,
//     or a role below the route's                     → 403 FORBIDDEN
//  4. tenant unknown / suspended                      → 404 NOT_FOUND / 403 TENANT_SUSPENDED
//  5. body: content type, size (before parsing),
//     UTF-8, depth, fields                            → 415 / 413 / 400
//  6. quotas (payload, batch, storage, rates)         → 413 / 507 / 429 + Retry-After
//  7. the store call (policy gate inside)             → 403 POLICY_DENIED, 409, 503 BUSY, …
//
// Writes of a tenant whose events bucket is empty (for a millisecond or
// more) are refused 429 before step 5, so that a flood past the rate
// costs little; a rate refusal is held Options.RateRefusalDelay before it
// is answered. An import arriving while the bucket is so empty is
// refused the same way, before its body is read; once accepted it is not
// refused for the rates but paced: each batch of it is charged its events
// and NDJSON bytes and the next waits for the tokens
// (quota.Tenant.PaceWrite).
//
// Before all of these, the query is checked: one that does not parse (a
// ";" separator, a bad percent-escape, which Go's parser would drop with
// the filter in it), a parameter given twice (a proxy reading the other
// value would see another request) and a parameter the route does not take
// are refused with 400 INVALID_REQUEST, naming the parameter (and the ones
// the route takes: a misspelt filter such as entity_prefix for entity
// would otherwise be ignored, and the whole log answered). The parameters
// a route takes are those the OpenAPI document lists for it (read from the
// embedded document, so the two cannot disagree); consistency and min_seq
// are taken on every tenant route, and consistency on every admin and
// cluster route, and their values are checked on a single server too,
// where they change nothing. Health, readiness, the document itself and
// metrics take anything. A refused query of a tenant's credential is
// charged to its request rate too (and answered 429 past it), one without
// a valid credential to its source's bucket. The routes that read no
// credential (health, readiness, the document, public metrics) and paths
// no route has are charged to their source's bucket too (Options.Sources),
// before they are answered. A request's source is its client's address:
// its peer's, or, when the peer is one of Options.TrustedProxies, the
// address X-Forwarded-For names past them (TrustedProxies.Client); the
// access log records that address as remote, the proxy's as proxy.
//
// On a cluster node (Options.Cluster), a follower answers a state change,
// a linearizable read, and a credential it does not know (step 1 on a node
// that has not applied the key yet) with 307 to the leader after the
// query check and before any other; see Cluster. On a cluster's leader,
// a key's revocation and a tenant's suspension or deletion are answered
// only once every other member has confirmed that it applied the change
// (Cluster.ConfirmControl, GET /v1/cluster/applied), at most ConfirmWait;
// a member that did not is named in the answer's UnconfirmedHeader. From
// the answer on, every member that confirmed refuses what the change took
// away.
//
// A tenant credential's changes to the control plane every tenant shares
// (keys issued, cursors defined or deleted, policy, plugin and worker
// changes) are paced after step 4: quota.ControlChangesBurst at once,
// quota.ControlChangesPerSecond after that, then 429 QUOTA_EXCEEDED
// "control_changes_per_second" with Retry-After, and budgeted per day
// (control_changes_per_day), the tenant's admin credentials and its
// others each with buckets of their own (quota.ChangeClass). The
// operator's are not, nor a key's revocation: each takes back an issue
// that was charged, and a leaked writer key spending the budget must stay
// revocable.
//
// Admin routes (/v1/admin/…) take the operator credential only. A 403 for
// another tenant never says whether that tenant exists.
//
// Limits (Options): MaxBodyBytes bounds every request body (Content-Length
// is checked before reading, the read itself is bounded too). A body's
// memory follows the bytes that arrived, never its Content-Length alone:
// it starts with at most 4 KiB of room and grows as it is read, and room
// past 64 KiB is charged to MaxRequestBytes (256 MiB, or the largest body
// a route takes if larger), shared by all requests while they run, of
// which one tenant's requests hold at most a quarter (or one largest
// body); a body that finds no room gets 503 BUSY with Retry-After.
// Large JSON responses (64 KiB or more: pages, causal walks, cursor
// polls) are built whole and held until written, each counted twice its
// size against MaxResponseBytes (256 MiB, all responses together), of
// which one tenant's hold at most MaxResponseBytesPerTenant (64 MiB, or
// one response): 503 BUSY with Retry-After past its share at once, past
// the whole after a second's wait. An NDJSON query holds about 2 MiB of
// the same budget while each step is read and written (more for one
// event larger than the step), an export twice the tenant's
// max_payload_bytes (at least 2 MiB) while it runs:
// past it one that has not begun is answered 503 BUSY, and a query under
// way ends early, its last line's next_after the last event sent.
// MaxJSONDepth
// bounds the nesting of payloads (request envelopes may add their own few
// levels); pages are at most MaxPageLimit (1000) events; NDJSON reads
// stream in steps of at most 100 events and 1 MiB of payload, without a
// total bound unless limit is given; their last line is {"next_after":…},
// null when the answer is complete.
// An event stream, an NDJSON query, an export and a verify each count
// against the tenant's max_subscriptions while they last (429
// QUOTA_EXCEEDED past it): they hold a connection as long as the client
// reads.
//
// Cluster-wide answers: GET …/plugins?nodes=all,
// GET …/plugins/{name}?nodes=all and the operator's GET
// /v1/cluster?nodes=all (every member's own status, judged together by
// cluster.Assess: the members' health) ask every other member
// (Cluster.Members, through Cluster.MemberClient) for its part with the
// caller's own credential, in parallel, and each member checks the
// credential as for any request (min_seq and consistency apply to the
// asked node's own part). A member is never sent the credential over
// plain http when this node is reached over https, no redirect is
// followed, each part is waited for at most MemberAskTimeout, the parts
// are at most MaxMemberAnswerBytes together and count once against
// MaxResponseBytes, and a part that cannot be had is an error in its
// place (without the member's address), not a failure of the answer. A
// tenant gathers one such answer at a time on a node, the node
// MaxMemberAsks until they are written, the operator's included (503 BUSY
// past either; the operator's requests meanwhile share one gathering).
//
// Metrics (Options.Registry, prefix batpak_): requests by route pattern and
// status code, request latency by route, appended events, append requests,
// fsyncs, events per fsync, writer queue depth at submit, policy denials,
// quota rejections, open tenants, subscriptions and disconnects. Series
// with a tenant label are bounded: the first Options.TenantSeries tenants
// seen (default 50) get their own series, every later one is counted under
// tenant="other".
package httpapi
