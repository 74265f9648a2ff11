package cluster_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// TestRestartedFollowerCatchesUpPromptly: a follower down long enough for
// the leader's raft to space its retries ~10 s apart (hashicorp/raft backs
// off exponentially after failed RPCs) catches up within a few seconds of
// starting again at its address, not at the leader's next retry: the
// leader's dial waits, within bounds, for a peer whose host refuses the
// connection because nothing listens on its port yet.
func TestRestartedFollowerCatchesUpPromptly(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps a follower down for 12 s")
	}
	for _, key := range [][]byte{testPeerKey, nil} {
		name := "peer key"
		if key == nil {
			name = "plain raft"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			restartedFollowerCatchesUp(t, key)
		})
	}
}

func restartedFollowerCatchesUp(t *testing.T, key []byte) {
	root := t.TempDir()
	open := func(id, bind string) *cluster.Node {
		return openTCP(t, cluster.Config{ID: id, Dir: filepath.Join(root, id), PeerKey: key, Bind: bind})
	}
	var nodes []*cluster.Node
	var servers []cluster.Server
	for i := 1; i <= 3; i++ {
		n := open(fmt.Sprintf("r%d", i), "127.0.0.1:0")
		nodes = append(nodes, n)
		servers = append(servers, cluster.Server{ID: n.ID(), Address: n.Addr()})
	}
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	l := waitLeader(t, nodes, 10*time.Second)
	mustAppend(t, l, "acme", item("e", `{"i":0}`, core.AppendOptions{}))
	var f *cluster.Node
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	id, addr := f.ID(), f.Addr()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The leader's retries fail and back off meanwhile: after about
	// 10 s of failures raft waits 10.24 s before the next.
	down := time.Now()
	var last uint64
	for i := 1; time.Since(down) < 12*time.Second; i++ {
		last = mustAppend(t, l, "acme", item("e", fmt.Sprintf(`{"i":%d}`, i), core.AppendOptions{}))[0].Index
		time.Sleep(100 * time.Millisecond)
	}
	started := time.Now()
	f = open(id, addr)
	for f.AppliedIndex() < last {
		if time.Since(started) > 4*time.Second {
			t.Fatalf("a follower restarted after 12 s down had applied %d of %d entries 4 s later: it waited for the leader's backed-off retry", f.AppliedIndex(), last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("caught up %v after restarting", time.Since(started))

	// A node closing does not wait for its dials to a member that is down.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "acme", item("e", `{"i":-1}`, core.AppendOptions{}))
	time.Sleep(time.Second) // the leader's raft is dialling f meanwhile
	closing := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(closing); took > 5*time.Second {
		t.Fatalf("the leader took %v to close while it dialled a member that is down", took)
	}
}
