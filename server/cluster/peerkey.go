package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MinPeerKeyBytes is the shortest Config.PeerKey taken.
const MinPeerKeyBytes = 16

// peerKeyMagic opens the dialling side's first message: it names the
// handshake and its version, so a peer speaking something else (plain
// raft, TLS) is refused at its first bytes.
const peerKeyMagic = "BPKRAFT1"

// The peer-key handshake, before any raft byte (n = 32 random bytes each,
// K = Config.PeerKey, mac = HMAC-SHA256):
//
//	dialer   → acceptor   "BPKRAFT1" ‖ nd
//	acceptor → dialer     na ‖ mac(K, "accept" ‖ nd ‖ na)
//	dialer   → acceptor   mac(K, "dial" ‖ nd ‖ na)
//
// Each end checks the other's MAC before anything else: the acceptor
// hands raft only a connection whose dialer proved it holds the key for
// the acceptor's fresh nonce (no replay), and the dialer talks raft only
// to a peer that proved it too. The two labels keep one side's MAC from
// being reflected as the other's.
const (
	peerNonceBytes = 32
	peerMACBytes   = sha256.Size
)

// peerKeyGuard admits connections that complete the peer-key handshake.
type peerKeyGuard struct{ key []byte }

// errPeerKey: the other end does not hold the cluster's peer key (or
// speaks another protocol).
var errPeerKey = errors.New("cluster: the peer did not prove it holds the cluster's peer key")

func (g peerKeyGuard) mac(label string, nd, na []byte) []byte {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(label))
	m.Write(nd)
	m.Write(na)
	return m.Sum(nil)
}

func (g peerKeyGuard) accept(ctx context.Context, c net.Conn) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	hello := make([]byte, len(peerKeyMagic)+peerNonceBytes)
	if _, err := io.ReadFull(c, hello); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	if string(hello[:len(peerKeyMagic)]) != peerKeyMagic {
		return nil, errPeerKey
	}
	nd := hello[len(peerKeyMagic):]
	na := make([]byte, peerNonceBytes)
	if _, err := rand.Read(na); err != nil {
		return nil, err
	}
	if _, err := c.Write(append(append([]byte{}, na...), g.mac("accept", nd, na)...)); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	proof := make([]byte, peerMACBytes)
	if _, err := io.ReadFull(c, proof); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	if !hmac.Equal(proof, g.mac("dial", nd, na)) {
		return nil, errPeerKey
	}
	if !stop() {
		return nil, ctx.Err() // the deadline was set: the connection is spent
	}
	return c, nil
}

func (g peerKeyGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", address, timeout)
	if err != nil {
		return nil, err
	}
	if err := g.greet(c, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// greet runs the dialling side of the handshake on c within timeout.
func (g peerKeyGuard) greet(c net.Conn, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	nd := make([]byte, peerNonceBytes)
	if _, err := rand.Read(nd); err != nil {
		return err
	}
	if _, err := c.Write(append([]byte(peerKeyMagic), nd...)); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w", c.RemoteAddr(), err)
	}
	reply := make([]byte, peerNonceBytes+peerMACBytes)
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w (does it hold the same peer key?)", c.RemoteAddr(), err)
	}
	na := reply[:peerNonceBytes]
	if !hmac.Equal(reply[peerNonceBytes:], g.mac("accept", nd, na)) {
		return fmt.Errorf("cluster: %s did not prove it holds the cluster's peer key", c.RemoteAddr())
	}
	if _, err := c.Write(g.mac("dial", nd, na)); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w", c.RemoteAddr(), err)
	}
	return c.SetDeadline(time.Time{})
}
