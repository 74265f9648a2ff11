package cluster

import "time"

// AgeBlobPut makes node n remember its last put of digest as d ago on the
// monotonic clock (a test's stand-in for time passing).
func AgeBlobPut(n *Node, digest string, d time.Duration) {
	n.fsm.blobMu.Lock()
	defer n.fsm.blobMu.Unlock()
	if _, ok := n.fsm.recentPuts[digest]; ok {
		n.fsm.recentPuts[digest] = time.Now().Add(-d)
	}
}
