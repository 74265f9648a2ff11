package keylock

import (
	"fmt"
	"testing"
	"time"
)

// TestLocksPerKey: a key's holder makes only that key's lockers wait,
// and a key is dropped once nothing holds or waits for it.
func TestLocksPerKey(t *testing.T) {
	var l Locks
	unlock := l.Lock("acme/orders")
	for i := range 1000 {
		done := make(chan struct{})
		go func() { l.Lock(fmt.Sprint("globex/c", i))(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("key c%d waited for acme/orders", i)
		}
	}
	got := make(chan struct{})
	go func() { l.Lock("acme/orders")(); close(got) }()
	select {
	case <-got:
		t.Fatal("a second lock of acme/orders did not wait for the first")
	case <-time.After(30 * time.Millisecond):
	}
	unlock()
	<-got
	if n := l.Len(); n != 0 {
		t.Fatalf("%d keys kept after every lock ended", n)
	}
}
