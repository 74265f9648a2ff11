// Package console is batpak's web console: a few pages (one HTML file,
// one script, one stylesheet, embedded with embed; no build step, nothing
// fetched from elsewhere) that `batpak serve` answers under /console/ on
// the API's own listener (server.console, on by default).
//
// # Sign-in and sessions
//
// A person pastes a tenant API key (bpk_…), the operator credential
// (bpko_…) or, when the server takes them, a JWT; POST /console/session
// (a JSON body of at most MaxSignInBytes) verifies it with the API's own
// auth.Authenticator and starts a session; a bad credential gets 401 and
// no cookie. The credential stays in the
// server's memory with the session; the browser gets only a cookie:
//
//	cookie          batpak_console=<256 random bits>; Path=/console; HttpOnly;
//	                SameSite=Strict; Secure when the server speaks TLS or the
//	                request came over TLS: directly, or through a trusted proxy
//	                that terminated it (Options.HTTPS: X-Forwarded-Proto: https
//	                from a server.trusted_proxies address)
//	stored          SHA-256 of the id only (a memory dump holds no usable id);
//	                lookups compare in constant time
//	lifetime        DefaultIdleTimeout (30 min) unused, DefaultLifetime (12 h) in all;
//	                a sweep (every quarter of the idle timeout, at most every
//	                minute) ends expired sessions, so an open live tail, one
//	                request however long it streams, ends at the idle timeout.
//	                A page that reads again by itself uses its session: an open
//	                overview (every 2 s), dashboard (every 1 s) or plugins page
//	                (every 5 s) keeps it alive until its lifetime
//	bounds          DefaultMaxSessions (1024) at once: past it a tenant sign-in is
//	                refused 503 BUSY (expired sessions are dropped first), an
//	                operator sign-in ends the least recently used tenant session;
//	                MaxSessionsPerPrincipal (16) per credential and
//	                MaxSessionsPerTenant (64) per tenant: a sign-in past either
//	                ends that credential's (tenant's) least recently used session,
//	                so one tenant's keys cannot fill the store
//	sign-out        DELETE /console/session ends the session on the server; a
//	                session's requests in flight through /console/api (a live
//	                tail) end when it does (sign-out, expiry, eviction, revocation)
//	every request   re-authenticates the stored credential: a revoked key or a
//	                changed operator credential ends its sessions at once; a
//	                suspended tenant's data is refused by the API as usual
//
// # Cross-site protection
//
// Every state-changing request (any method but GET, HEAD, OPTIONS) needs
// the session's CSRF token in X-CSRF-Token (256 random bits, compared in
// constant time; GET /console/session gives it to the page) and a
// same-origin request: a browser's Sec-Fetch-Site or Origin must say so
// (http.CrossOriginProtection), and one of them must be present. Sign-in
// takes the same origin check. No request a browser marks as sent by
// another origin's page (Sec-Fetch-Site same-site or cross-site) uses the
// session, whatever its method: a sibling host is the same site, so the
// SameSite cookie alone would let its pages read through the session or
// open streams. Every console response carries
// ContentSecurityPolicy (no inline script or style, nothing from other
// origins, no framing), X-Content-Type-Options: nosniff, Referrer-Policy:
// no-referrer, X-Frame-Options: DENY and Cross-Origin-Resource-Policy:
// same-origin, and one to a request that came over TLS (as the cookie's
// Secure says) StrictTransportSecurity (a year; no includeSubDomains, no
// preload); tenant data passed through the
// console gets Cache-Control: no-store (in place of what the API route
// would send). The page builds every element
// with the DOM, never with markup from data. The event page and the
// live tail show a payload from its text in the API's answer, re-indented
// token by token, never parsed into JavaScript values: its numbers (past
// 2^53, past a double's range, -0, 1.0), string escapes and key order are
// shown as stored, and Download JSON saves that text (the stored bytes;
// the API answers without the whitespace between tokens). What it shows
// of a payload is bounded by the payload's size, not its shape: the event
// page indents a payload only while that text stays within 256 KiB
// (measured as it is written, never built whole first: indented, a small
// payload nested hundreds of levels deep would be hundreds of millions of
// characters), and past it shows the compact JSON cut at 256 KiB, with a
// button showing all of it; the live tail and the decision log show the
// first 120 and 100 characters of the compact JSON.
//
// # Data
//
// The pages read the JSON API: /console/api/<path> is answered by the API
// for <path> with the session's credential, so the API's authorization
// applies unchanged (a tenant key reaches its own tenant only; the
// operator credential the admin routes only, never tenant events). The
// console checks the path first as well: a tenant session may send only
// /v1/tenants/<its tenant>[/…], the operator only /v1/admin/… and
// /v1/cluster[/…]. A request the console passes on is the API's in the
// access log and metrics (its route, one request id); one the console
// answers itself (no session, a path the session does not reach) is
// logged under route "console api" (httpapi.API.WrapPassing, as the
// server mounts it). Every line of a request the console answers itself
// names its caller as the API's lines do (Options.NoteCaller): tenant
// and principal (a key's id, or "operator" with the tenant the path
// names) for each request of a session, sign-out included, and for a
// sign-in whose credential authenticated; a refused credential names
// no one. Besides the API the console serves:
//
//	GET  /console/overview                       operator: tenants (at most MaxOverviewTenants), events/s,
//	                                             open streams, storage against quota (read at most
//	                                             every UsageRefresh), active policy, plugin health;
//	                                             cluster: true on a cluster node (Options.Cluster), whose
//	                                             overview page then shows GET /v1/cluster: the node's
//	                                             role, the members, the leader's replica check
//	GET  /console/samples/server                 operator: the server's one-second samples
//	GET  /console/samples/tenants/{t}            t's session or the operator: t's samples
//	POST /console/tenants/{t}/policy/evaluate    t's session: a dry-run of t's active policy
//	                                             (tenantpolicy.Manager.Evaluate; body ≤ MaxEvaluateBytes),
//	                                             input.entity read from t's store as a write's is
//	                                             (the answer's entity: exists, clock)
//	                                             one at a time per tenant (another: 429 BUSY); the payload within
//	                                             max_json_depth and the tenant's max_payload_bytes
//
// Samples: every second the console reads the server's own Prometheus
// metrics (events appended, append latency, fsyncs, denials, open
// streams) into a ring of RingSamples, and the store figures (events,
// fsyncs and their mean latency, writer queue, policy denials) of each
// tenant whose dashboard asked in the last WatchWindow — at most
// MaxWatchedTenants at once — into a ring per tenant. A tenant's charts
// start when one of its keys signs in or its dashboard is opened.
//
// In a cluster a session lives on the node that signed it in (its home),
// and the cookie says which: the token, a dot and the node's id in
// unpadded base64url. Any other node relays the session's requests to
// its home as the browser sent them (cookie, CSRF token, Origin, fetch
// metadata and Host; RelayHeader added, and a request carrying it is
// never relayed again), so a browser whose requests a load balancer
// spreads over the nodes keeps one session, checked in one place, and
// the credential never leaves the home node. The home node must be a
// member now: a cookie naming anything else sends nothing anywhere. The
// page and its files, and sign-in, are served where they arrive (a
// sign-in makes the node it reaches the new session's home, and the
// session the browser held on another node is ended there in the
// background, by a sign-out marked as such in place of the CSRF token).
//
// Bounds: at most MaxRelays requests relayed through a node at once (503
// BUSY past it). The home node serves at most MaxRelaysPerTenant relayed
// requests of one tenant's sessions (or the operator's) at once, a
// sign-out excepted, and answers the next 503 BUSY before reading its
// body: relayed requests with a body wait for the home node's 100
// Continue, so a refused upload holds nothing, and the connection of a
// body left unread is closed after the answer. A relay lasts at most
// MaxRelayDuration, a stream's included, and each of its writes at most
// the server's write timeout.
//
// Failures: when the home node is not a member any more, cannot be sent
// the request (no connection, its https check fails), or is plain http
// while the browser came over TLS, the session is answered as one that
// ended (GET /console/session: signed_in false with the reason; anything
// else 401), and the page asks to sign in again — on the node it
// reaches. The cookie is expired then, except when the home could not be
// reached just now: it may be back at the next request. A sign-out that cannot be relayed, or that the
// home node answers 5xx, expires the cookie too. A home node that was
// sent the request but did not answer is answered 503 (OUTCOME_UNKNOWN
// for a change, which may have been made; BUSY for a read), the session
// kept.
//
// Each node's console shows what the node serving the session holds. A
// request its node's API redirects to the leader
// (a change, or a leader-only read) is never answered with the redirect —
// the browser would follow it to the leader without the session's
// credential —: the console forwards it to the leader itself, with the
// session's credential and nothing else of the browser's (no cookie,
// CSRF token, Origin or fetch metadata), and relays the leader's answer
// (without any Set-Cookie). At most MaxForwards requests are forwarded at
// once, at most MaxForwardsPerTenant of one tenant's sessions (503 BUSY
// past either, never queued), each for at most MaxForwardDuration. It answers 503
// NOT_LEADER naming the leader's console instead when the API read the
// body before redirecting, when the browser came over TLS and the
// leader's URL is plain http (the credential would cross the network in
// clear), when the leader cannot be reached or its https certificate does
// not verify (against Options.LeaderTLS's roots, the cluster's
// cluster.api_ca, or the system's), and when the leader redirects
// in turn (never followed further).
package console
