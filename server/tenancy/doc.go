// Package tenancy keeps one core.Store per tenant of the server, opened on
// first use and closed when idle, so that many tenants share one process
// without sharing anything else: a tenant's store lives in its own
// directory, <Root>/<id>, with its own lock, segments, index, cursors and
// checkpoint, and the only way to it is a Lease from Registry.Acquire for
// that id.
//
// # Isolation
//
// A tenant id is checked (ValidID: ^[a-z0-9][a-z0-9-]{0,62}$) before any
// path is built from it, so <Root>/<id> is always one directory directly
// inside Root, and Config.Exists must say yes before the store is opened
// (and its directory created). Nothing in this package hands out a store
// for any id but the one asked for.
//
// # What the registry promises
//
//	Operation            Guarantee
//	-------------------  ------------------------------------------------------------
//	Acquire              opens the store if it is closed; concurrent Acquires of one
//	                     closed tenant open it once and share the outcome; a failed
//	                     open (corrupt, locked) is returned wrapped and the next
//	                     Acquire tries again
//	MaxOpen              never more stores open (opening and closing included);
//	                     room is made by closing the least recently acquired store
//	                     with no lease; all leased: ErrTooManyOpen
//	Lease                the store stays open and is never evicted or closed for
//	                     idleness until Release (idempotent)
//	IdleTimeout          an unleased store unused this long is closed
//	every close          core.Store.Close: the writer drains, the log is synced,
//	                     the footer and index checkpoint are written, so the next
//	                     open is fast and nothing acknowledged is lost
//	Remove               refuses Acquire from its start, waits for leases (up to
//	                     ctx; nothing deleted if it ends first), closes, renames the
//	                     directory to <Root>/.trash-<id>-<n>, deletes that; New
//	                     deletes trash a crash left
//	Close                refuses later calls, waits for leases up to ctx, then
//	                     closes every store
//
// # What a tenant costs
//
// An open idle tenant store costs one file descriptor, two goroutines and
// about 48 KiB of memory with StoreConfig's settings; see StoreConfig for
// the figures and the command that measures them. 10,000 tenants open at
// once fit in a descriptor limit of 20,000.
package tenancy
