// Package client is the Go client of a batpak server (`batpak serve`): the
// HTTP API of /v1 as typed calls.
//
//	c, err := client.New("http://127.0.0.1:7070", os.Getenv("BATPAK_TOKEN"))
//	t := c.Tenant("acme")
//	r, err := t.Append(ctx, client.AppendRequest{
//		Entity: "order:1", Scope: "shop", Kind: "1:1", Payload: json.RawMessage(`{"total":3}`),
//	})
//	for ev, err := range t.Query(ctx, client.Query{Entity: "order:"}) { … }
//	sub := t.Subscribe(ctx, client.Query{Entity: "order:"}, client.FromStart())
//	for ev, err := range sub.Events() { … }
//
// # Contracts
//
//   - Every call takes a context; cancelling it ends the call (and, for
//     iterators, the iteration) with ctx.Err().
//   - A failed request is an *Error carrying the server's problem document
//     (RFC 9457): its Code is one of the Code constants, and errors.Is
//     matches the sentinels (ErrConflict, ErrPolicyDenied, …) by code.
//   - Retries are bounded (Options.MaxRetries, default 3, exponential
//     backoff from 50 ms, honouring Retry-After up to 5 s; while the server
//     cannot be had — no connection, 502/504, a cluster between leaders —
//     until Options.RetryFor, 10 s, has passed) and only where they
//     are safe: reads, and writes that carry an idempotency key. Append and
//     AppendBatch give a write without one a fresh key (AppendRequest's
//     IdempotencyKey; a batch's items get "<batch key>/<index>"), so the
//     client's own retry after a lost response returns the original
//     receipts rather than writing twice. A write whose answer was lost
//     and that ran out of retries fails with an *OutcomeUnknownError
//     (errors.Is(err, ErrOutcomeUnknown)): it may have been written, and
//     only sending it again with the keys it names writes it once — a
//     caller retrying on its own must reuse its keys, so give each write
//     its key (IdempotencyKey) where a retry matters. A 2xx answer to a
//     write without a receipt per event is no acknowledgement: the same
//     error. Retried: BUSY (503), QUOTA_EXCEEDED with a Retry-After,
//     TOO_MANY_REQUESTS (429: the address's requests without a valid
//     credential passed the server's rate) and transport errors; TOO_MANY_CONNECTIONS (429: the server refused
//     the connection before reading the request) for any request. Never
//     retried: every other 4xx, STORE_DAMAGED (500: the tenant's store
//     is damaged on the server's disk; the operator must recover it), an
//     answer whose Retry-After asks for more than 5 s (returned at once,
//     RetryAfter set, for the caller to decide), and a server gone silent
//     (*IdleError). A DELETE whose answer was lost and whose retry finds
//     nothing left to delete succeeded (so a mistyped id whose first
//     answer was lost also reports success).
//   - A server that sends nothing is not waited on for ever: a request
//     during which it neither takes the body nor answers, or sends nothing
//     while the caller waits to read, for Options.IdleTimeout (5 minutes)
//     fails with an *IdleError (find it with errors.As); a JSON answer
//     must come at a MiB per IdleTimeout or faster. Calls the server works
//     on before it answers (Verify, Import, uploads, snapshots, digests)
//     wait for its headers, once sent, as long as their context lets
//     them. Other transport failures (connection refused, reset) are
//     *url.Error. For a bound on the whole call, give the context a
//     deadline.
//   - Import streams an export: it sends it in requests of at most
//     DefaultImportChunkBytes (ImportWithOptions: ImportOptions.ChunkBytes),
//     cut at line ends, each acknowledged before the next is read, so it
//     holds about one request in memory and imports an export of any
//     size; a request the server refuses as larger than its
//     max_body_bytes (413) is sent again in halves, down to a line alone.
//     A failure part way is an *ImportError with the stats so far: run
//     the import again to resume (events already there are skipped).
//   - Query pages through the results (Query.Limit is the page size: the
//     iterator still yields every event) in global order; Subscribe
//     follows a region over Server-Sent Events, catching up from a
//     position and then live, and reconnects on its own after a dropped
//     connection, a stream silent for 45 s (three missed heartbeats), a
//     slow-consumer cut-off or a server shutdown or restart, resuming after
//     the last event it yielded: no event is skipped or repeated. It gives
//     up when the server refuses it for good (UNAUTHENTICATED, FORBIDDEN,
//     …), when no connection brought anything (an event, or a stream up
//     10 s) for Options.ReconnectFor (2 minutes) or the server's
//     Retry-After would pass that, or when 8 connections in a row ended
//     at once with nothing (what it cannot read); subscribe again with
//     After(sub.Position()) to go on, and Close the old one.
//   - On a replicated cluster, a read is served by the node asked, from
//     what it has applied. Options.Consistency "linearizable" has the
//     leader serve every read; "session" makes a Client read its own
//     writes (each tenant's reads carry min_seq, the highest
//     global_sequence of that tenant's receipts this Client received,
//     and each named cursor's polls min_position, the position it last
//     committed); WithMinSequence asks for one sequence explicitly.
package client
