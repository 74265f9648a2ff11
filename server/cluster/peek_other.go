//go:build !unix

package cluster

import "net"

// peerClosed reports whether c's peer has closed it; where sockets cannot
// be peeked at, it assumes not (raft's next request on a closed
// connection fails, and raft dials anew).
func peerClosed(net.Conn) bool { return false }
