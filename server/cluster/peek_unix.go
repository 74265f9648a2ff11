//go:build unix

package cluster

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether c's peer has closed or reset it, by peeking
// at its socket without waiting and without taking anything from it
// (pending bytes, a TLS session ticket say, count as open).
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
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err == unix.EINTR {
				continue
			}
			closed = err == nil && n == 0 || err != nil && err != unix.EAGAIN && err != unix.EWOULDBLOCK
			return true
		}
	})
	return closed || err != nil
}
