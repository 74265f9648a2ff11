//go:build unix

package httpapi_test

import "syscall"

// smallReceiveBuffer shrinks a connection's receive buffer (a net.Dialer
// Control func), so a client that stops reading stalls the server's
// writes soon.
func smallReceiveBuffer(_, _ string, rc syscall.RawConn) error {
	return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
}
