package server_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
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

// TestClusterDeleteWithOpenStream: deleting a tenant that holds an event
// stream open answers 204 and drops its store at once. The deletion's
// record makes every node forget the tenant (waiting for the stream to
// end) while the DELETE removes it; the removal waits for the forgetting
// instead of failing as "already being removed" (when the forgetting
// began first, it answered 404 and left the data to the leader's next
// sweep).
func TestClusterDeleteWithOpenStream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster server")
	}
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	key, _ := clusterTenantKey(t, n1.base, "acme", `["reader","writer"]`)
	if code, body := call(t, "POST", n1.base+"/v1/tenants/acme/events", key, `{"entity":"order:1","scope":"shop","kind":"0x1:0x1","payload":{"n":1}}`); code != 201 {
		t.Fatalf("append: %d %v", code, body)
	}
	req, _ := http.NewRequest("GET", n1.base+"/v1/tenants/acme/subscribe?entity=order:", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("subscribe: %d", res.StatusCode)
	}
	if _, err := res.Body.Read(make([]byte, 64)); err != nil { // the stream is under way
		t.Fatal(err)
	}
	go io.Copy(io.Discard, res.Body)
	if code, body := call(t, "DELETE", n1.base+"/v1/admin/tenants/acme?confirm=acme", clusterOperator, ""); code != 204 {
		t.Fatalf("DELETE of a tenant with an open stream: %d %v, want 204", code, body)
	}
	if _, err := os.Stat(filepath.Join(root, "n1", "cluster", "tenants", "acme")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the DELETE the tenant's store: %v, want it gone", err)
	}
}
