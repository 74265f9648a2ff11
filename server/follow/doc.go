// Package follow is the fan-out behind the server's Server-Sent Events
// subscriptions: any number of subscribers, each on a region of one
// tenant's store, each receiving every visible event of its region after
// a start position, in global order, exactly once — what the store held
// (catch-up), then live — across reconnects: a client resumes After the
// last sequence it saw.
//
// # How it works
//
// One Hub per store (a Set keeps them, one per open tenant store). While
// it has subscribers, one goroutine follows the store: a core.Cursor over
// every event, woken once per group commit by a lossy core subscription.
// It encodes each new event once (Options.Encode) into a ring of recent
// frames shared by every subscriber; a Frame's Data is the same slice for
// all of them. Subscribers read the ring, each filtering by its region,
// and are woken only when a publication holds something of their region.
// A subscriber behind the ring — catching up from an old position, or
// slow — reads the store with its own cursor until it reaches the ring.
// When the last subscriber leaves, the goroutine stops and nothing holds
// the store, so an idle tenant can close.
//
// # Memory and slow consumers
//
//	what                      bound
//	------------------------  ---------------------------------------------------------
//	ring (per running hub)    Options.RingEvents frames and Options.RingBytes bytes
//	one Next                  Options.MaxBacklogEvents frames, Options.MaxBacklogBytes
//	                          bytes (one larger frame alone is allowed); from the
//	                          store (catching up, or live and behind the ring),
//	                          1 MiB of payload (so a subscriber that does not read
//	                          holds about that much)
//	read from the store and   Options.StoreReadBytes (256 MiB) for all hubs of a Set,
//	held (until the next      a quarter of it for one hub (one store); a Next that
//	Next, or Close)           finds no room waits (within its context)
//	live subscriber backlog   more than MaxBacklogEvents events of its region, or more
//	                          than MaxBacklogBytes of their frames, waiting for Next
//	                          in the ring, or read from the store since it fell
//	                          behind the ring: cut off,
//	                          *EndError{Cause: ErrSlowConsumer, Resume}
//
// Nothing is buffered per subscriber: its backlog stays in the ring or the
// store until Next takes it. Catching up is not a backlog: a subscriber
// that has not yet reached the newest events reads at its own pace.
//
// # Endings
//
// Every ending a client can recover from is an *EndError whose Resume is
// After the last event delivered (the subscription's start if none was):
// slow consumer (ErrSlowConsumer), the store closing (ErrStoreClosed), the
// server shutting down (Hub.Close, Set.Close: ErrHubClosed). A new
// subscription from Resume continues with no gap and no repeat. The HTTP
// layer sends heartbeats itself: Next only returns with events or an
// error, and takes a context.
package follow
