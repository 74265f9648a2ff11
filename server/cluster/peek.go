package cluster

import (
	"crypto/tls"
	"net"
	"syscall"
)

// peerClosed reports whether c's peer is seen to have closed or reset it
// (socketClosed: on Linux the socket's TCP state, elsewhere a peek at it
// that neither waits nor takes anything from it). It never blocks; where
// it cannot tell it answers false, and raft's next request on a closed
// connection fails and raft dials anew.
func peerClosed(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	if err := raw.Control(func(fd uintptr) { closed = socketClosed(fd) }); err != nil {
		return true
	}
	return closed
}
