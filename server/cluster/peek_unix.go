//go:build unix && !linux

package cluster

import "golang.org/x/sys/unix"

// socketClosed reports whether a peek at the socket fd, which neither
// waits nor takes anything from it, finds the peer's FIN (nothing ahead
// of it) or an error other than "nothing yet".
func socketClosed(fd uintptr) bool {
	var b [1]byte
	for {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n == 0 || err != nil && err != unix.EAGAIN && err != unix.EWOULDBLOCK
	}
}
