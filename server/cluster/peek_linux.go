package cluster

import "golang.org/x/sys/unix"

// socketClosed reports whether the TCP socket fd has left the established
// state: the peer sent a FIN (close-wait), or a reset (closed). Bytes
// waiting ahead of the FIN, a TLS close_notify or session ticket say, do
// not hide it.
func socketClosed(fd uintptr) bool {
	info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	return err != nil || info.State != unix.BPF_TCP_ESTABLISHED // TCP_ESTABLISHED of the kernel's state enum
}
