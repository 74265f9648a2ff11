package core_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// An event's timestamp is read when its group is placed, never before the
// write was submitted: with every event synced, while the writer waits for
// the rest of a group the writes that arrive meanwhile are not stamped with
// a time from before they existed.
func TestTimestampNotBeforeSubmission(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.Sync.EveryNEvents = 1 })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := mustCoord(t, fmt.Sprintf("ts:%d", w), "s")
			for i := range 200 {
				before := time.Now().UnixMicro()
				r, err := s.Append(ctx, c, kindA, []byte(`{}`))
				if err != nil {
					errs <- err
					return
				}
				if r.Timestamp < before {
					errs <- fmt.Errorf("writer %d event %d: timestamp %d is %dµs before its submission", w, i, r.Timestamp, before-r.Timestamp)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
