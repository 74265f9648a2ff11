// Package cluster replicates tenant stores with raft
// (github.com/hashicorp/raft, raft-boltdb for its log): raft replicates
// write commands, and every node's core stores are the state machine — the
// shape of rqlite.
//
// # A write
//
//	client ── Append / AppendBatch ──▶ leader
//	  leader fixes each event's id and timestamp (core.AppendOptions.ID,
//	  Timestamp), encodes one command {tenant, batch, items} and proposes it
//	  as one raft entry
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
// Besides writes, two operations travel through the log (format 2, see
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
//
// # Reads
//
// A node's stores (Node.View) show what that node has applied. For
// read-your-writes on any node, pass a Result's Index to WaitApplied first;
// for a linearizable read on the leader, call Barrier first.
//
// # On disk, restarts and snapshots
//
//	Dir/raft/raft.db            raft's log and stable store (raft-boltdb)
//	Dir/raft/snapshots/         raft snapshots: a tar of every tenant
//	                            store's core.Store.Snapshot (events and
//	                            named cursor positions), the applied index,
//	                            and each store's birth index (the first
//	                            entry applied to it since it was created)
//	Dir/tenants/<tenant>/       the stores: derived state
//	Dir/trash/                  dropped stores being removed
//	Dir/restoring/              a snapshot being unpacked
//
// Open removes Dir/tenants (and trash, restoring): raft then restores the
// latest snapshot and replays the log after it, so a restarted node's
// stores match the log whatever it had written (or lost) before it
// stopped. The cost is a restart that rewrites the stores from the
// snapshot. Raft snapshots every SnapshotInterval once SnapshotThreshold
// entries accumulated (or on Node.Snapshot) and then truncates its log to
// TrailingLogs entries; a node too far behind, or new, is sent the
// snapshot and then the log.
//
// A running node that installs a snapshot keeps the store objects it has
// open (the server holds them, with subscriptions and cursors on them): each
// is caught up in place from the snapshot's copy — its events must be a
// prefix of the copy's (else the restore fails with an error naming the
// tenant, and raft retries it) and the missing ones are applied in order
// with their ids, timestamps, keys, correlation and causation ids and
// flags, so the stores end identical to the leader's. Subscribers and
// cursors see them as ordinary new events, each once. The events of an
// atomic batch are applied one by one there: a reader may see part of
// such a batch for a moment. An open store the snapshot holds in another
// incarnation (dropped and created again meanwhile), or not at all, is
// dropped; stores not open are replaced by the snapshot's directories.
//
// # Upgrades
//
// An entry starts with a command format version byte (see command.go):
// format 1 is a write, format 2 an op byte and its body (a write, a
// named cursor commit, a drop). Writes are still proposed in format 1, so
// nodes not yet upgraded keep applying them during a rolling upgrade; a
// cursor commit or a drop halts them. A node that reads a version, or a
// format-2 op, it does not know halts (Node.Err returns an
// *UnknownFormatError) instead of misapplying the entry; upgrading it and
// restarting resumes it from raft. A snapshot from a newer node with
// entries an older one does not know fails that node's restore (raft
// retries it) rather than being half-read: upgrade every node before
// relying on the new operations.
package cluster
