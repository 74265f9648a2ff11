package httpapi

import (
	"fmt"
	"testing"
	"time"
)

// TestCommitLockPerCursor: a cursor's commit lock makes only commits of
// that tenant's cursor wait — none of another tenant's, whatever their
// names — and is dropped once nothing holds or waits for it.
func TestCommitLockPerCursor(t *testing.T) {
	a := &API{}
	unlock := a.commitLock("acme", "orders")
	for i := range 1000 {
		done := make(chan struct{})
		go func() { a.commitLock("globex", fmt.Sprint("c", i))(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("globex's cursor c%d waited for acme's orders", i)
		}
	}
	got := make(chan struct{})
	go func() { a.commitLock("acme", "orders")(); close(got) }()
	select {
	case <-got:
		t.Fatal("a second commit of acme's orders did not wait for the first")
	case <-time.After(30 * time.Millisecond):
	}
	unlock()
	<-got
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	if n := len(a.commitLocks); n != 0 {
		t.Fatalf("%d cursor locks kept after every commit ended", n)
	}
}
