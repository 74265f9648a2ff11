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
// K = Config.PeerKey, mac = HMAC-SHA256, to = the acceptor's address as
// the dialer reached it: host:port of the TCP connection, one length
// byte before it):
//
//	dialer   → acceptor   "BPKRAFT1" ‖ nd ‖ len ‖ to
//	acceptor → dialer     na ‖ mac(K, "accept" ‖ nd ‖ na ‖ to)
//	dialer   → acceptor   mac(K, "dial" ‖ nd ‖ na ‖ to)
//
// Each end checks the other's MAC before anything else: the acceptor
// hands raft only a connection whose dialer proved it holds the key for
// the acceptor's fresh nonce (no replay), and the dialer talks raft only
// to a peer that proved it too. The two labels keep one side's MAC from
// being reflected as the other's. The acceptor takes only a to that is
// its own address (the connection's local address, or the one it
// advertises), and both MACs cover it: a process that takes over a
// stopped member's port and is dialled by the others cannot relay their
// handshake to another node (or back to the dialer), since their proofs
// name the port it holds, not the one it relays to.
const (
	peerNonceBytes = 32
	peerMACBytes   = sha256.Size
)

// peerKeyGuard admits connections that complete the peer-key handshake;
// self is the address the node advertises (nil: its listener's).
type peerKeyGuard struct {
	key  []byte
	self net.Addr
}

// errPeerKey: the other end does not hold the cluster's peer key (or
// speaks another protocol).
var errPeerKey = errors.New("cluster: the peer did not prove it holds the cluster's peer key")

func (g peerKeyGuard) mac(label string, nd, na []byte, to string) []byte {
	m := hmac.New(sha256.New, g.key)
	m.Write([]byte(label))
	m.Write(nd)
	m.Write(na)
	m.Write([]byte(to))
	return m.Sum(nil)
}

// mine reports whether to names this node as c's dialer reached it.
func (g peerKeyGuard) mine(c net.Conn, to string) bool {
	return to == c.LocalAddr().String() || (g.self != nil && to == g.self.String())
}

func (g peerKeyGuard) accept(ctx context.Context, c net.Conn) (net.Conn, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	hello := make([]byte, len(peerKeyMagic)+peerNonceBytes+1)
	if _, err := io.ReadFull(c, hello); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	if string(hello[:len(peerKeyMagic)]) != peerKeyMagic {
		return nil, errPeerKey
	}
	nd := hello[len(peerKeyMagic) : len(peerKeyMagic)+peerNonceBytes]
	toBytes := make([]byte, hello[len(hello)-1])
	if _, err := io.ReadFull(c, toBytes); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	to := string(toBytes)
	if !g.mine(c, to) {
		return nil, fmt.Errorf("cluster: a peer-key handshake for %q reached this node (%s): refused, it may be relayed", to, c.LocalAddr())
	}
	na := make([]byte, peerNonceBytes)
	if _, err := rand.Read(na); err != nil {
		return nil, err
	}
	if _, err := c.Write(append(append([]byte{}, na...), g.mac("accept", nd, na, to)...)); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	proof := make([]byte, peerMACBytes)
	if _, err := io.ReadFull(c, proof); err != nil {
		return nil, fmt.Errorf("cluster: peer-key handshake: %w", err)
	}
	if !hmac.Equal(proof, g.mac("dial", nd, na, to)) {
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
	to := c.RemoteAddr().String()
	if len(to) > 255 {
		return fmt.Errorf("cluster: peer address %q is too long", to)
	}
	hello := append(append([]byte(peerKeyMagic), nd...), byte(len(to)))
	if _, err := c.Write(append(hello, to...)); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w", c.RemoteAddr(), err)
	}
	reply := make([]byte, peerNonceBytes+peerMACBytes)
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w (does it hold the same peer key?)", c.RemoteAddr(), err)
	}
	na := reply[:peerNonceBytes]
	if !hmac.Equal(reply[peerNonceBytes:], g.mac("accept", nd, na, to)) {
		return fmt.Errorf("cluster: %s did not prove it holds the cluster's peer key", c.RemoteAddr())
	}
	if _, err := c.Write(g.mac("dial", nd, na, to)); err != nil {
		return fmt.Errorf("cluster: peer-key handshake with %s: %w", c.RemoteAddr(), err)
	}
	return c.SetDeadline(time.Time{})
}
