package server_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// TestClusterNewLeaderFinishesInterruptedDeletion: a tenant deletion is
// on record but its store drop never followed (the leader stopped in
// between, as when leadership moves mid-DELETE). Every node still holds
// the deleted tenant's events until the next leader, on taking over,
// drops the store everywhere, without the DELETE repeated; a live
// tenant's store is untouched, and the restarted old leader, rebuilding
// its stores from the log, ends without the deleted one too.
func TestClusterNewLeaderFinishesInterruptedDeletion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	bind := freeAddr(t) // the leader's raft address, kept across its restart
	fixed := func(c *server.Config) { c.Cluster.Bind = bind }
	leader := startClusterLeader(t, root, fixed)
	nodes := []*clusterServer{leader, startClusterServer(t, root, "n2", false, leader.base), startClusterServer(t, root, "n3", false, leader.base)}
	for _, n := range nodes[1:] {
		waitFollowerOf(t, n, 3)
	}
	for _, tenant := range []string{"gone", "kept"} {
		key, _ := clusterTenantKey(t, leader.base, tenant, `["writer"]`)
		if code, body := call(t, "POST", leader.base+"/v1/tenants/"+tenant+"/events", key, `{"entity":"order:1","scope":"shop","kind":"0x1:0x1","payload":{"n":1}}`); code != 201 {
			t.Fatalf("append to %s: %d %v", tenant, code, body)
		}
	}
	storeDir := func(n *clusterServer, tenant string) string {
		return filepath.Join(root, n.id, "cluster", "tenants", tenant)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.id+" holds both stores", func() bool {
			_, e1 := os.Stat(storeDir(n, "gone"))
			_, e2 := os.Stat(storeDir(n, "kept"))
			return e1 == nil && e2 == nil
		})
	}
	// The deletion's record, without the drop that DELETE proposes next.
	if err := leader.srv.Plane().DeleteTenant(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	leader.stop()
	rest := without(nodes, leader)
	next := leaderOf(t, rest, 20*time.Second)
	for _, n := range rest {
		waitFor(t, 20*time.Second, n.id+" drops the deleted tenant's store", func() bool {
			_, err := os.Stat(storeDir(n, "gone"))
			return errors.Is(err, fs.ErrNotExist)
		})
		if _, err := os.Stat(storeDir(n, "kept")); err != nil {
			t.Fatalf("%s: the live tenant's store: %v", n.id, err)
		}
	}
	if code, _ := call(t, "GET", next.base+"/v1/admin/tenants/gone", clusterOperator, ""); code != 404 {
		t.Fatalf("the deleted tenant: %d, want 404", code)
	}
	again := startClusterServer(t, root, leader.id, false, "", fixed)
	// A node rebuilds its stores from raft's snapshot and log when it
	// starts: once it has the live tenant's store back, it has applied
	// the drop too.
	waitFor(t, 20*time.Second, again.id+" rebuilds the live tenant's store", func() bool {
		_, err := os.Stat(storeDir(again, "kept"))
		return err == nil
	})
	waitFor(t, 5*time.Second, again.id+" applies the drop after its restart", func() bool {
		_, err := os.Stat(storeDir(again, "gone"))
		return errors.Is(err, fs.ErrNotExist)
	})
}
