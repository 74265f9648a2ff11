package cluster_test

import (
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server/cluster"
)

// TestOpenRefusesAnotherNodesDir: a data directory belongs to the node
// that first opened it; opening it under another id (a unit file copied
// from another node, another node's data root) fails naming the owner,
// before raft starts — such a node would vote and replicate as two
// members, and win an election alone. The owner opens it again.
func TestOpenRefusesAnotherNodesDir(t *testing.T) {
	dir := t.TempDir()
	open := func(id string) (*cluster.Node, error) {
		cfg := cluster.Config{ID: id, Dir: dir, Bind: "127.0.0.1:0"}
		fastTimeouts(&cfg)
		return cluster.Open(cfg)
	}
	n, err := open("n3")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap(cluster.Server{ID: "n3", Address: n.Addr()}); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if n, err := open("n2"); err == nil {
		n.Close()
		t.Fatal("n3's directory opened as node n2")
	} else if !strings.Contains(err.Error(), `"n3"`) {
		t.Fatalf("opening n3's directory as n2: %v, want an error naming n3", err)
	}
	n, err = open("n3")
	if err != nil {
		t.Fatalf("n3 reopening its own directory: %v", err)
	}
	n.Close()
}
