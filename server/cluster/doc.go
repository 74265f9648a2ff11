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
//	                            store's core.Store.Snapshot, plus the index
//	Dir/tenants/<tenant>/       the stores: derived state
//
// Open removes Dir/tenants: raft then restores the latest snapshot and
// replays the log after it, so a restarted node's stores match the log
// whatever it had written (or lost) before it stopped. The cost is a
// restart that rewrites the stores from the snapshot. Raft snapshots every
// SnapshotInterval once SnapshotThreshold entries accumulated (or on
// Node.Snapshot) and then truncates its log to TrailingLogs entries; a
// node too far behind, or new, is sent the snapshot and then the log.
//
// # Upgrades
//
// An entry starts with a command format version byte (see command.go). A
// node that reads a version it does not know halts (Node.Err returns an
// *UnknownFormatError) instead of misapplying the entry; upgrading it and
// restarting resumes it from raft.
package cluster
