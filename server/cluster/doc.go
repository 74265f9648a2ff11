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
// # Membership
//
// Node.Join adds a voter. Joining again with the same id and address is a
// no-op; a member with the same id at another address (or another id at
// the same address) is removed, then the new one added, so the leader
// starts the new member's log from nothing instead of crediting it with
// what the old one had. Node.Status reports a node's role, term, indexes,
// the leader and the members (JSON for the admin API).
//
// # Security
//
// Node-to-node traffic is raft's RPCs: log entries (every event's
// payload), snapshots (every tenant's stores), votes and membership
// changes. Without Config.TLS it is plain TCP: anyone who can reach the
// raft port can read it and, by speaking raft, append to the log, win an
// election or change the membership. Run it only on a private network.
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
// Limits on unauthenticated peers: a TLS node handshakes inbound
// connections off its accept loop, at most MaxPendingHandshakes at once
// (more are closed at once), each bounded by Config.HandshakeTimeout
// (default 5s): a peer that connects and sends nothing, or speaks plain
// TCP, is disconnected within it and never reaches raft. Each refusal
// counts in Status.RefusedConnections. An authenticated peer's
// connection is raft's: raft pools idle connections, and holds them
// without a deadline. Without TLS there is no such bound: raft itself
// holds every accepted connection until it is closed.
//
// # Upgrades
//
// An entry starts with a command format version byte (see command.go). A
// node that reads a version it does not know halts (Node.Err returns an
// *UnknownFormatError) instead of misapplying the entry; upgrading it and
// restarting resumes it from raft.
package cluster
