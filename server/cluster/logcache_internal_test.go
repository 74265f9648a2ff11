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
