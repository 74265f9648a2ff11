package cluster

import "github.com/hashicorp/raft"

type raftLog = raft.Log

// RaftLogSize returns how many entries node n's raft log holds and the
// bytes of their data.
func RaftLogSize(n *Node) (entries int, bytes int64, err error) {
	first, err := n.bolt.FirstIndex()
	if err != nil {
		return 0, 0, err
	}
	last, err := n.bolt.LastIndex()
	if err != nil || first == 0 {
		return 0, 0, err
	}
	for i := first; i <= last; i++ {
		var l raftLog
		if err := n.bolt.GetLog(i, &l); err != nil {
			continue // a gap a truncation left
		}
		entries++
		bytes += int64(len(l.Data))
	}
	return entries, bytes, nil
}
