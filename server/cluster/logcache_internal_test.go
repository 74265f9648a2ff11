package cluster

import (
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore counts the reads that reach raft.db.
type countingStore struct {
	raft.LogStore
	reads int
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.reads++
	return s.LogStore.GetLog(idx, l)
}

// TestLogCacheHoldsTheLargestEntries: the newest entries of the largest
// size a write may have (Config.MaxBytes of payload, and their encoding)
// are read from memory, not decoded from raft.db again — raft reads an
// entry once per follower to send it and again for the term of the
// AppendEntries after it, and a follower once to apply it, and a 16 MiB
// entry took about 125 ms to decode each time. Older entries make room
// for new ones, and the cache stays within its bound.
func TestLogCacheHoldsTheLargestEntries(t *testing.T) {
	store := &countingStore{LogStore: raft.NewInmemStore()}
	bound := logCacheBytes(DefaultMaxBytes)
	c := newLogCache(store, logCacheEntries, bound)
	large := make([]byte, DefaultMaxBytes+256<<10)
	idx := uint64(0)
	put := func(data []byte) {
		t.Helper()
		idx++
		if err := c.StoreLogs([]*raft.Log{{Index: idx, Term: 1, Data: data}}); err != nil {
			t.Fatal(err)
		}
		if c.bytes > bound {
			t.Fatalf("after entry %d the cache holds %d bytes, more than its bound %d", idx, c.bytes, bound)
		}
	}
	for round := 0; round < 4; round++ {
		for i := 0; i < 200; i++ {
			put(make([]byte, 20<<10))
		}
		put(large)
		put(large)
		put(make([]byte, 100))
		for back := uint64(0); back < 3; back++ {
			var l raft.Log
			if err := c.GetLog(idx-back, &l); err != nil || l.Index != idx-back {
				t.Fatalf("entry %d: %v (got %d)", idx-back, err, l.Index)
			}
		}
		if store.reads != 0 {
			t.Fatalf("round %d: %d of the newest entries (two of %d bytes) read back from the store", round, store.reads, len(large))
		}
	}
	// An entry larger than the whole bound is not cached; the others
	// stay readable either way.
	put(make([]byte, bound+1))
	var l raft.Log
	if err := c.GetLog(idx, &l); err != nil || len(l.Data) != bound+1 || store.reads != 1 {
		t.Fatalf("an entry past the bound: %v, %d bytes, %d reads from the store", err, len(l.Data), store.reads)
	}
	if err := c.GetLog(idx-1, &l); err != nil || len(l.Data) != 100 || store.reads != 1 {
		t.Fatalf("the entry before it: %v, %d bytes, %d reads from the store", err, len(l.Data), store.reads)
	}
}

// TestLogCacheKeepsTheNewestAfterATruncation: raft truncates its log
// behind a snapshot (DeleteRange of the oldest entries); the newest stay
// cached, the deleted ones are gone from the cache and the store, and
// the byte count follows.
func TestLogCacheKeepsTheNewestAfterATruncation(t *testing.T) {
	store := &countingStore{LogStore: raft.NewInmemStore()}
	c := newLogCache(store, 64, 1<<20)
	for i := uint64(1); i <= 100; i++ {
		if err := c.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: make([]byte, 1000)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteRange(1, 90); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	for i := uint64(91); i <= 100; i++ {
		if err := c.GetLog(i, &l); err != nil || l.Index != i {
			t.Fatalf("entry %d after the truncation: %v", i, err)
		}
	}
	if store.reads != 0 {
		t.Fatalf("%d of the newest entries read back from the store after a truncation", store.reads)
	}
	if err := c.GetLog(90, &l); err == nil {
		t.Fatal("entry 90 readable after its deletion")
	}
	if c.bytes != 10*1000 {
		t.Fatalf("the cache counts %d bytes for the 10 entries left, want 10000", c.bytes)
	}
	// More entries after it: the bound and the order still hold.
	for i := uint64(101); i <= 300; i++ {
		if err := c.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: make([]byte, 1000)}}); err != nil {
			t.Fatal(err)
		}
	}
	if c.bytes != 64*1000 {
		t.Fatalf("the cache counts %d bytes, want the 64 newest entries' 64000", c.bytes)
	}
}
