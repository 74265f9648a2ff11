package cluster

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// blockingStable holds SetUint64 until release is closed.
type blockingStable struct {
	raft.StableStore
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStable) SetUint64(key []byte, val uint64) error {
	close(b.entered)
	<-b.release
	return b.StableStore.SetUint64(key, val)
}

// A node's stable store closes only once the calls under way are done,
// and a call arriving after it never reaches the store (which is closed
// next): a heartbeat answered as the node closes cannot make raft panic
// on a closed database, nor answer with a term it did not record.
func TestStableStoreClosesAfterCallsUnderWay(t *testing.T) {
	inner := raft.NewInmemStore()
	b := &blockingStable{StableStore: inner, entered: make(chan struct{}), release: make(chan struct{})}
	s := newClosingStable(b)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.SetUint64([]byte("term"), 7) }()
	<-b.entered
	closed := make(chan struct{})
	go func() { s.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while a write was under way")
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	<-closed
	wg.Wait()
	if v, _ := inner.GetUint64([]byte("term")); v != 7 {
		t.Fatalf("the write under way at close recorded %d, want 7", v)
	}
	late := make(chan struct{})
	go func() { _ = s.SetUint64([]byte("term"), 8); close(late) }()
	select {
	case <-late:
		t.Fatal("a write after close returned")
	case <-time.After(50 * time.Millisecond):
	}
	if v, _ := inner.GetUint64([]byte("term")); v != 7 {
		t.Fatalf("a write after close recorded %d", v)
	}
}
