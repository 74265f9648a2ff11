// Package cluster replicates tenant stores with raft
// (github.com/hashicorp/raft, raft-boltdb for its log): raft replicates
// write commands, and every node's core stores are the state machine — the
// shape of rqlite.
//
// # A write
//
//	client ── Append / AppendBatch ──▶ leader
//	  leader fixes each event's id and timestamp (core.AppendOptions.ID,
//	  Timestamp), encodes one command {tenant, batch, items} and proposes it:
//	  writes proposed while earlier entries are on their way to a quorum
//	  share the next raft entry (a write group; Config.SingleWriteEntries:
//	  one entry each), each keeping its own result
//	  raft appends it to a majority of nodes' logs (raft.db, fsynced)
//	  every node applies committed entries in log order to its stores
//	  the leader answers with its own apply's []Result
//
// Because everything not deterministic is fixed before proposing, every
// replica's apply of an entry yields the same receipts and the same
// refusals (compare-and-set conflicts, idempotency decisions, validation),
// and every replica's stores end with the same events, clocks, global
// sequences and hash chains.
//
// # What an answer means
//
//	answer                      the write is …
//	Result with a receipt       committed on a majority of nodes' disks and
//	                            applied on the answering leader; it survives
//	                            the loss of any minority of nodes
//	Result with Err             refused alike by every replica (nothing written)
//	*NotLeaderError             not proposed: send it to the leader it names
//	ErrOutcomeUnknown           proposed, then leadership was lost (or the
//	                            node closed): it may or may not be written;
//	                            retry with idempotency keys
//	ctx's error                 unknown as above (the entry may still commit)
//	ErrHalted                   this node stopped applying (see Node.Err)
//
// A write sent to a follower is answered with the leader's address; it is
// not forwarded.
//
// # Other operations
//
// Besides writes, three operations travel through the log (format 2, see
// command.go), proposed on the leader and applied on every node after the
// writes before them:
//
//	named cursor commit   Cursor.Commit on a named cursor of a store from
//	                      Node.Store (core.CursorReplicator): every node
//	                      writes the position (core's
//	                      Store.CommitReplicatedCursor), so a consumer
//	                      resumes there on any node, after a failover too
//	drop store            Node.DropStore: every node closes the tenant's
//	                      store (ErrClosed to whoever holds it) and removes
//	                      its directory (renamed into Dir/trash, then
//	                      removed); a later write creates it again, empty
//	put blob              Node.PutBlob: every node writes the bytes (at
//	                      most Config.MaxBytes) durably to
//	                      Dir/blobs/<sha256 hex>; Node.Blob reads them.
//	                      The server keeps tenants' policy bundles and
//	                      plugin modules there, named by the control
//	                      plane's events. Putting the same bytes again
//	                      proposes them again: every node then holds them
//	                      with a fresh modification time
//
// # Blob collection
//
// Node.CollectBlobs removes, on the node it runs on and without a raft
// entry, each blob its caller reports unreferenced whose last put was
// applied there more than a grace period ago (the file's modification
// time, refreshed by every apply of a put of the same bytes and by a
// snapshot install that carries it), and temporary files older than the
// grace period (a write a crash cut short). The grace period covers the
// window between a put (one entry) and the entry that records what
// references it (the control plane's change, a later entry): a blob put
// but not yet referenced is never removed within it. The server computes
// the referenced set from its control plane (every live tenant's kept
// policy revisions and plugin versions) and collects periodically and
// after a deletion is applied (see server's package doc); a node that
// halted (Node.Err) does not collect. A snapshot taken while a blob is
// removed leaves it out; a removal never races an apply of the same blob.
//
// # Reads
//
// A node's stores (Node.View) show what that node has applied. For
// read-your-writes on any node, pass a Result's Index to WaitApplied first;
// for a linearizable read on the leader, call Barrier first.
//
// # Open stores
//
// Every tenant ever written has a store on every node, but a node keeps a
// store open (its index in memory, its file descriptors) only while it is
// in use, and a while after. A store is held:
//
//	by                               from                until
//	Node.Store's caller              Node.Store          Node.ReleaseStore
//	a Node.View callback             the call            fn returns
//	raft's apply                     writes queued       they are written
//	a cursor commit, a snapshot      its start           its end
//
// A held store is never closed but by DropStore, a restore that finds it
// in another incarnation, or Close; Store returns the same object while
// anyone holds it. A store nobody holds is closed (its checkpoint
// written) once unused for Config.StoreIdleTimeout (5m; a janitor checks
// every quarter of it, at most every 5s), or earlier, least recently used
// first, when opening another would pass Config.MaxOpenStores (10000);
// when every open store is held the node opens one more anyway rather
// than stall raft's apply (StoreStats.OverBound counts it). Its next use
// opens it again: a new *core.Store over the same directory. Node.StoreStats
// counts open and held stores, opens, idle closes and evictions.
//
// # On disk, restarts and snapshots
//
//	Dir/raft/raft.db            raft's log and stable store (raft-boltdb)
//	Dir/raft/node-id            the id of the node the state is of: Open
//	                            under another Config.ID fails (such a node
//	                            would vote and replicate as two members)
//	Dir/raft/snapshots/         raft snapshots: a tar of every tenant
//	                            store's copy (core.Store.Snapshot of an
//	                            open one, a closed one's files; events and
//	                            named cursor positions), the applied index,
//	                            and each store's birth index (the first
//	                            entry applied to it since it was created)
//	Dir/tenants/<tenant>/       the stores: derived state
//	Dir/blobs/<sha256 hex>      the blobs: kept across restarts, carried in
//	                            snapshots (blobs/ in the tar, each checked
//	                            against its name on restore), removed only
//	                            by Node.CollectBlobs
//	Dir/trash/                  dropped stores being removed
//	Dir/restoring/              a snapshot being unpacked
//
// Open removes Dir/tenants (and trash, restoring), never Dir/blobs: raft then restores the
// latest snapshot and replays the log after it, so a restarted node's
// stores match the log whatever it had written (or lost) before it
// stopped. The cost is a restart that rewrites the stores from the
// snapshot. Raft snapshots every SnapshotInterval once SnapshotThreshold
// entries accumulated (or on Node.Snapshot) and then truncates its log to
// TrailingLogs entries; a node too far behind, or new, is sent the
// snapshot and then the log.
//
// A snapshot copies every tenant's store into a staging directory: an
// open one with core.Store.SnapshotWithOptions, a closed one by copying
// its directory (as its Close left it: synced, checkpoint written) while
// the node keeps it closed — a read of it waits for the copy. A snapshot
// opens no store and leaves none open. raft's applies wait while the
// copies are made (between two applies, so that they hold exactly the
// entries applied), so the copies are kept short: sealed segments, their
// footers and the index checkpoint are hard-linked into the staging
// directory rather than copied (a replicated store refuses Redact, the
// one operation that changes a sealed segment in place; the others are
// replaced whole: core.SnapshotOptions.LinkSealed, core.CopyFilesLinked),
// so only each store's active segment (at most a tenant store's 64 MiB)
// is copied; and the copies are not synced: Persist streams them at once
// into raft's snapshot file, which raft syncs, and a node empties its
// staging directory when it opens. For 320 MiB of stores on a 2-core VM
// applies wait 1.7–9.7 ms, against 97–107 ms copying every file and about
// 300 ms syncing the copies too (TestSnapshotPause, a figure). Where the
// staging directory cannot link (another file system) the files are
// copied.
//
// A running node that installs a snapshot keeps the store objects held
// (the server holds them, with subscriptions and cursors on them): each
// is caught up in place from the snapshot's copy — its events must be a
// prefix of the copy's (else the restore fails with an error naming the
// tenant, and raft retries it) and the missing ones are applied in order
// with their ids, timestamps, keys, correlation and causation ids and
// flags, so the stores end identical to the leader's. Subscribers and
// cursors see them as ordinary new events, each once. The events of an
// atomic batch are applied one by one there: a reader may see part of
// such a batch for a moment. A held store the snapshot holds in another
// incarnation (dropped and created again meanwhile), or not at all, is
// dropped; open stores nobody holds are closed, and they and the stores
// not open are replaced by the snapshot's directories.
//
// # Membership
//
// Node.Join adds a voter. Joining again with the same id and address is a
// no-op; a member with the same id at another address (or another id at
// the same address) is removed, then the new one added, so the leader
// starts the new member's log from nothing instead of crediting it with
// what the old one had. Node.Status reports a node's role, term, indexes,
// the leader and the members (JSON for the admin API). Assess judges the
// cluster's health from every member's Status, as Consul's autopilot and
// rqlite's /nodes do: a member is healthy when it answered, is not
// halted, follows the leader in the leader's term, heard from it within
// HealthyMaxContact, has caught up with it since it started, and trails its commit index by at most HealthyMaxLag
// entries; the failure tolerance is the healthy voters beyond a quorum.
//
// A member that is down costs the leader's raft a failed RPC per dial,
// and hashicorp/raft spaces its retries to it up to 10.24 s apart after
// about ten. A node's replication dials over TCP therefore wait for a
// peer whose host refuses the connection (nothing listens on its port:
// the node is down or starting), trying again every 20–250 ms for at
// most 5 minutes, so that a member that is down costs one failure per
// wait. Once the member listens the waiting dial fails rather than send
// the request raft made before it (whose commit index a restarted
// follower would take for a current one), and raft's next attempt, a few
// milliseconds on, catches the member up: as soon as it listens rather
// than at the leader's next backed-off retry. A replication dial that
// took 50 ms or more without being refused (a host dropping SYNs while it
// reboots, a slow handshake), while entries were committed, fails the
// same way, for the same reason, as does any dial that outlives the term
// it began in as leader; its connection is kept for up to 15 s (at most 4
// per peer), and raft's next dial to that peer, with a fresh request,
// takes it at once unless it is seen to be closed (on Linux, by the
// socket's TCP state). A follower whose half of a handshake took 50 ms or
// more notes no leader's commit index for twice that plus 50 ms: the
// requests sent meanwhile may have waited in the connection. A request
// held up in the network itself, on a connection already open, is not
// detected. A wait also
// ends when the term it began in as leader is over, and Close ends them
// all first. Votes, pre-votes and leadership transfers'
// TimeoutNow dial once (a candidate sends them anew every round, and a
// leader refuses writes while a transfer waits), as does Node.Join's
// check that a new member answers.
//
// # Security
//
// Node-to-node traffic is raft's RPCs: log entries (every event's
// payload), snapshots (every tenant's stores), votes and membership
// changes. Without Config.TLS it is plain TCP: anyone who can reach the
// raft port can read it. Without Config.PeerKey either, anyone who can
// reach the port can, by speaking raft, append to the log, win an
// election or change the membership — even make one replica apply an
// entry the others never see. With Config.PeerKey (the server derives it
// from the operator credential every node holds) every connection first
// completes a challenge-response in which both ends prove they hold the
// key (peerkey.go), within HandshakeTimeout and under the same bounds on
// pending handshakes as TLS: a process without the key — another user's
// on a shared host — never reaches raft. Both proofs name the address
// the dialer reached, and a node takes only its own (the connection's
// local address or Config.Advertise): a process that takes over a
// stopped member's port cannot relay the others' handshakes to a live
// node. It does not protect the traffic from an attacker on the network
// path, who could read it or take over a connection after its handshake:
// off a private network, use TLS. For the same reason Config.Advertise
// must reach this node's own listener for as long as it runs: a port
// forward in between that can go down leaves a port a local process
// could take and sit in the path. A tunnel whose entry address differs
// from the advertised one (ssh -L, socat) is refused as a relay.
//
// With Config.TLS (LoadTLS: a node certificate and key, a CA, and client
// verification on) every connection is TLS 1.3 and mutually
// authenticated: a node dials only peers whose certificate chains to the
// CA and names the host it dialled, and accepts only peers presenting a
// certificate the CA signed. That protects the traffic from being read or
// altered on the wire and keeps out anyone without a CA-signed
// certificate.
//
// What it does not do:
//   - Authorize a peer beyond its certificate. Raft has no per-message
//     authentication: any holder of a certificate the CA signed is a full
//     peer — it can send entries, votes and snapshots as any server id.
//     Use a CA that signs only this cluster's nodes, and keep node keys
//     as secret as the data.
//   - Bind server ids to certificates: the id a node claims is not
//     checked against its certificate's name.
//   - Revoke: there is no CRL or OCSP check; to evict a node whose key
//     leaked, remove it (Leave) and re-key the cluster under a new CA.
//   - Protect data at rest (Dir), or the admin API and clients (the
//     server's own TLS and keys do that).
//
// Limits on unauthenticated peers: a TLS or peer-key node handshakes inbound
// connections off its accept loop, at most MaxPendingHandshakes at once
// (a newcomer past that closes the oldest pending one, so silent
// connections cannot lock the node's peers out), each bounded by
// Config.HandshakeTimeout
// (default 5s): a peer that connects and sends nothing, or speaks plain
// TCP (or, with the peer key, fails its proof), is disconnected within it
// and never reaches raft. Each refusal
// counts in Status.RefusedConnections. An authenticated peer's
// connection is raft's: raft pools idle connections, and holds them
// without a deadline. Without TLS there is no such bound: raft itself
// holds every accepted connection until it is closed.
//
// Memory per node: one write's entry holds at most Config.MaxItems items
// and Config.MaxBytes of payload, a write group's at most 1,024 writes
// and 4 MiB of encoded writes (or one write of any allowed size); the
// leader's queue of writes waiting for an entry holds at most 64Ki writes
// and 256 MiB (past either, a write is refused with a *core.RetryError,
// nothing proposed); the cache of recently written entries (from which
// the leader replicates and a follower applies without reading raft.db
// back, and reads an entry's term from for the AppendEntries after it)
// holds at most 1,024 entries and 3 × Config.MaxBytes + 16 MiB of their
// data (64 MiB by default), the newest pushing out the oldest; entries
// past that are read from raft.db.
//
// # Upgrades
//
// An entry starts with a command format version byte (see command.go):
// format 1 is a write, format 2 an op byte and its body (a write, a
// named cursor commit, a drop, a blob, a write group). A lone write is
// still proposed in format 1, but a write group, a cursor commit or a drop
// halts nodes that predate them: during a rolling upgrade from a version
// without write groups, set Config.SingleWriteEntries on the upgraded
// nodes until every node is upgraded. A node that reads a version, or a
// format-2 op, it does not know halts (Node.Err returns an
// *UnknownFormatError) instead of misapplying the entry; upgrading it and
// restarting resumes it from raft. A snapshot from a newer node with
// entries an older one does not know fails that node's restore (raft
// retries it) rather than being half-read — a snapshot holding blobs/
// is refused by a node that predates blobs —: upgrade every node before
// relying on the new operations. Older snapshots (without blobs/) restore
// on a newer node.
package cluster
