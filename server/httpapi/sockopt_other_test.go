//go:build !unix

package httpapi_test

import "syscall"

// smallReceiveBuffer leaves the receive buffer as it is on this platform.
func smallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
