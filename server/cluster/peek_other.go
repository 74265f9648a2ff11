//go:build !unix

package cluster

// socketClosed cannot tell here: it answers false (see peerClosed).
func socketClosed(uintptr) bool { return false }
