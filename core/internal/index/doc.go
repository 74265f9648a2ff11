// Package index is the store's in-memory index: where every event of the
// log is (segment and offset, by global sequence), which entity, scope and
// kind it has, and the lookups built over that — event id to sequence, an
// entity's stream in clock order, postings per scope and per kind,
// idempotency keys, entity-name prefix search, and the causal links: each
// event's children (what it caused) and each conversation's members
// (causal.go). It holds no event
// bodies and does no I/O: package core plans a read here, then reads the
// frames from the segment files.
//
// It imports nothing from core. Ids are [16]byte, hashes [32]byte and
// kinds uint16 (core's EventID, Hash and Kind convert for free); core
// turns a Region into a Filter in one place (Region.filter).
//
// # Layout
//
// Entries live in fixed-size chunks of 65536 addressed by global sequence,
// so the index never copies as the store grows (the first chunk starts at
// 256 entries so that small stores stay small). Every sequence up to Len
// has an entry: a gap left by a batch that never committed is an entry
// flagged Removed, an event written under a fence that did not commit is
// flagged Hidden; neither is in any posting list, the id table or the
// idempotency keys. An open-addressing table (linear probing, grown at
// 70 % load) maps event ids to sequences.
//
// # Locking
//
// One RWMutex (Lock, RLock) guards the index:
//
//   - The writer goroutine is the only one that adds entities, scopes and
//     entries. It calls EntityFor and ScopeFor without the lock (they take
//     it themselves when they create), reads entities and Head without the
//     lock, and inserts with InsertLocked under Lock.
//   - A compaction changes locations and drops removed events
//     (Entry fields through At, RemoveLocked) under Lock.
//   - Every other reader holds RLock around methods named …Locked and
//     around At, Len, Entity, EntityNamed, ScopeName, Lookup, Idem,
//     Sibling, CorrelationGroups and the counts; Plan, PlanFrom, Stream,
//     CountMatching, EntityEvents, Descendants, Correlation, Published and
//     MemoryBytes take RLock themselves.
//   - Open fills a new index (AddEntity, AddScope, InsertLocked, SetIdem,
//     SetSibling, SetCorrelationGroup) before any other goroutine can see
//     it, without the lock.
//
// Head (the writer's view of an entity's newest event, including events
// assigned but not yet published) belongs to the writer goroutine alone,
// and to Open before the writer starts.
//
// # Limits
//
// Sequences and entity and scope numbers are uint32: core refuses to
// write past math.MaxUint32 events (ErrStoreFull). The whole index is in
// memory — about 48 bytes per entry, 4 more for the causal sibling link,
// plus postings, correlation groups, names and keys
// (MemoryBytes estimates it). A query with no posting list to narrow it
// (no scope, kind or entity) examines every entry.
package index
