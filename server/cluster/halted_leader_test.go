package cluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// A leader that stops applying (its stores cannot take an entry: a full
// or failing disk) refuses every write, and its heartbeats keep the
// followers from replacing it: it hands leadership to a follower, so the
// cluster goes on taking writes on the nodes still applying.
func TestHaltedLeaderHandsOverLeadership(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	mustAppend(t, l, "t1", item("e", `{"n":1}`, core.AppendOptions{}))
	// Tenant t2's store cannot be created on the leader: a file stands
	// where its directory goes.
	if err := os.WriteFile(filepath.Join(c.root, l.ID(), "tenants", "t2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// The entry commits, but the leader halts applying it (the writer
	// learns no outcome, or the halt).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := l.Append(ctx, "t2", item("e", `{"n":1}`, core.AppendOptions{}))
	if !errors.Is(err, cluster.ErrOutcomeUnknown) || !errors.Is(err, cluster.ErrHalted) || time.Since(start) > 3*time.Second {
		t.Fatalf("the write the leader halted on: %v after %s; want ErrOutcomeUnknown and ErrHalted at once", err, time.Since(start))
	}
	waitFor(t, 5*time.Second, "the leader halted", func() bool { return l.Err() != nil })
	halted := time.Now()

	for time.Since(halted) < 10*time.Second {
		if _, err = appendRetrying(c.list, "t1", time.Second, item("e", `{"n":2}`, core.AppendOptions{})); err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrHalted) && !errors.Is(err, cluster.ErrNotLeader) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no write taken %s after the leader halted: %v", time.Since(halted), err)
	}
	if l.IsLeader() {
		t.Fatal("the halted node still leads")
	}
}
