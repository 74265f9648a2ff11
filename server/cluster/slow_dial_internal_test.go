package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/internal/testca"
)

// delayProxy forwards TCP connections to upstream, opening each new one
// after delay (0: at once), as a peer that drops SYNs while it reboots,
// or answers a handshake slowly, delays a dial; with midDelay it forwards
// a new connection's first bytes from the dialler at once and the rest
// midDelay later, so the accepting side's handshake finishes that much
// after the dialler's. cut closes every connection it carries.
type delayProxy struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // nanoseconds
	midDelay atomic.Int64 // nanoseconds
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newDelayProxy(t *testing.T) *delayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &delayProxy{ln: ln}
	t.Cleanup(p.close)
	return p
}

func (p *delayProxy) start(upstream string) {
	p.upstream = upstream
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.carry(c)
			}()
		}
	}()
}

func (p *delayProxy) carry(c net.Conn) {
	time.Sleep(time.Duration(p.delay.Load()))
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	mid := time.Duration(p.midDelay.Load())
	go func() {
		if mid > 0 {
			buf := make([]byte, 4096)
			n, err := c.Read(buf)
			if err != nil {
				u.Close()
				return
			}
			u.Write(buf[:n])
			time.Sleep(mid)
		}
		io.Copy(u, c)
		u.Close()
	}()
	io.Copy(c, u)
	c.Close()
}

func (p *delayProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *delayProxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// proxiedNodes starts three peer-key nodes under root, the others
// dialling the third (the follower returned) through proxy, and returns
// the leader (never the third: the test is skipped if it leads).
func proxiedNodes(t *testing.T, proxy *delayProxy) (leader, follower *Node) {
	t.Helper()
	root := t.TempDir()
	var nodes []*Node
	var servers []Server
	for i := 1; i <= 3; i++ {
		cfg := keyedConfig(root, fmt.Sprintf("t%d", i), "127.0.0.1:0")
		if i == 3 {
			cfg.Advertise = proxy.ln.Addr().String() // the others dial t3 through the proxy
		}
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
		servers = append(servers, Server{ID: n.ID(), Address: n.Addr()})
	}
	follower = nodes[2]
	proxy.start(follower.stream.ln.Addr().String())
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); leader == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10 s")
		}
		for _, n := range nodes[:2] {
			if n.IsLeader() {
				leader = n
			}
		}
		if follower.IsLeader() {
			t.Skip("the node behind the proxy leads")
		}
	}
	return leader, follower
}

// cutWhileCommitting breaks the proxied follower f's connections with
// slow set on the proxy for the connections that replace them (700 ms),
// and checks that f never counts itself caught up past a commit its
// stores lack while l commits on with the third node.
func cutWhileCommitting(t *testing.T, proxy *delayProxy, slow *atomic.Int64, l, f *Node) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.WaitApplied(ctx, l.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	slow.Store(int64(700 * time.Millisecond))
	proxy.cut()
	cut := time.Now()
	for time.Since(cut) < 400*time.Millisecond {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	idxE := l.raft.CommitIndex()
	tE := time.Now() // "the revocation" (index idxE) was committed before tE
	slow.Store(0)
	// Writes go on (the stale request would arrive ~700 ms after the
	// cut) while the follower is watched.
	done := make(chan error, 1)
	go func() {
		for time.Since(cut) < 1200*time.Millisecond {
			if err := appendOne(ctx, l); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	t.Logf("committed %d by %s", idxE, tE.Format("15:04:05.000"))
	neverCaughtUpPast(t, f, idxE, tE)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSlowDialSendsNoStaleCommit: when the leader's connections to a
// follower break and its next dial takes 700 ms (a slow handshake; a
// peer dropping SYNs), the follower must not count itself caught up,
// after the dial, as of a time past a commit its stores lack. raft makes
// its AppendEntries request, naming its commit index, before it dials:
// sent once the dial completed, that request announced a commit index
// 700 ms old as current.
func TestSlowDialSendsNoStaleCommit(t *testing.T) {
	proxy := newDelayProxy(t)
	l, f := proxiedNodes(t, proxy)
	cutWhileCommitting(t, proxy, &proxy.delay, l, f)
}

// TestSlowHandshakeSendsNoStaleCommit: the same when the leader's dial is
// quick but the follower's half of the handshake finishes 700 ms later
// (the leader's last handshake message held up on the way): the request
// the leader sent right after its half waited in the connection, and
// arrived naming a commit index 700 ms old.
func TestSlowHandshakeSendsNoStaleCommit(t *testing.T) {
	proxy := newDelayProxy(t)
	l, f := proxiedNodes(t, proxy)
	cutWhileCommitting(t, proxy, &proxy.midDelay, l, f)
}

// slowGuard dials as plainGuard, taking at least delay.
type slowGuard struct{ delay time.Duration }

func (slowGuard) accept(_ context.Context, c net.Conn) (net.Conn, error) { return c, nil }

func (g slowGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	time.Sleep(g.delay)
	return plainGuard{}.dial(address, timeout)
}

// slowDialPeer starts a guardedStream whose dials through g are slow and
// a peer that accepts connections, handing each to accepted (the peer's
// end), and returns the stream and the peer's address. Both close with
// the test.
func slowDialPeer(t *testing.T, g guard) (s *guardedStream, addr raft.ServerAddress, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s = newGuardedStream(ln, nil, g, 0)
	t.Cleanup(func() { s.Close() })
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 16)
	done := make(chan struct{})
	t.Cleanup(func() {
		peer.Close()
		<-done
		for len(ch) > 0 {
			(<-ch).Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			select {
			case ch <- c:
			default:
				c.Close()
			}
		}
	}()
	return s, raft.ServerAddress(peer.Addr().String()), ch
}

// TestSlowDialKeepsItsConnection: a replication dial that takes longer
// than slowDialMin fails (its request is stale), and keeps the
// connection for the next dial to that peer, which takes it at once; a
// kept connection is closed once its time is up, and when the stream
// closes.
func TestSlowDialKeepsItsConnection(t *testing.T) {
	s, addr, accepted := slowDialPeer(t, slowGuard{delay: 2 * slowDialMin})
	closedByDialer := func(c net.Conn) bool { // the peer's end sees EOF
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
	}

	if c, err := s.Dial(addr, time.Second); err == nil || !strings.Contains(err.Error(), "to open") {
		t.Fatalf("a dial that took %v answered %v, %v; want an error (its request is stale)", 2*slowDialMin, c, err)
	}
	first := <-accepted
	start := time.Now()
	c, err := s.Dial(addr, time.Second)
	if err != nil {
		t.Fatalf("the dial after a slow one: %v", err)
	}
	if took := time.Since(start); took >= slowDialMin {
		t.Fatalf("the dial after a slow one took %v: it should take the kept connection", took)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	first.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := first.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the kept connection is not the slow dial's: %v", err)
	}
	c.Close()

	s.rmu.Lock()
	s.keep = 100 * time.Millisecond
	s.rmu.Unlock()
	if _, err := s.Dial(addr, time.Second); err == nil {
		t.Fatal("a slow dial succeeded")
	}
	if !closedByDialer(<-accepted) {
		t.Fatal("a kept connection outlived its time")
	}

	s.rmu.Lock()
	s.keep = time.Minute
	s.rmu.Unlock()
	if _, err := s.Dial(addr, time.Second); err == nil {
		t.Fatal("a slow dial succeeded")
	}
	kept := <-accepted
	s.Close()
	if !closedByDialer(kept) {
		t.Fatal("a kept connection outlived the stream's Close")
	}
}

// TestKeptConnectionsThePeerClosedAreNotHandedOut: connections kept from
// slow dials whose peer closed them meanwhile (it restarted) are closed,
// not handed to raft, and the next dial connects anew.
func TestKeptConnectionsThePeerClosedAreNotHandedOut(t *testing.T) {
	s, addr, accepted := slowDialPeer(t, slowGuard{delay: 2 * slowDialMin})
	var wg sync.WaitGroup
	for range readyMax {
		wg.Add(1)
		go func() { defer wg.Done(); s.Dial(addr, time.Second) }()
	}
	wg.Wait()
	for range readyMax {
		(<-accepted).Close() // the peer restarts: its ends close
	}
	time.Sleep(50 * time.Millisecond)
	c, err := s.Dial(addr, time.Second)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Dial handed out a connection its peer had closed (read: %v)", err)
		}
		t.Fatal("a fresh slow dial succeeded")
	}
	select {
	case <-accepted: // dialled anew
	case <-time.After(2 * time.Second):
		t.Fatal("the dial after the kept connections closed did not connect anew")
	}
	s.rmu.Lock()
	left := s.readyL.Len()
	s.rmu.Unlock()
	if left != 1 { // the fresh slow dial's
		t.Fatalf("%d connections kept, want 1", left)
	}
}

// TestSlowDialWithNothingCommittedSucceeds: a slow dial during which the
// commit index did not move hands its connection to raft (the request
// made before it is current), so an idle cluster over a slow network
// does not fail every dial.
func TestSlowDialWithNothingCommittedSucceeds(t *testing.T) {
	s, addr, _ := slowDialPeer(t, slowGuard{delay: 2 * slowDialMin})
	var index atomic.Uint64
	index.Store(7)
	commit := index.Load
	s.commit.Store(&commit)
	c, err := s.Dial(addr, time.Second)
	if err != nil {
		t.Fatalf("a slow dial with nothing committed meanwhile: %v", err)
	}
	c.Close()
	done := make(chan error, 1)
	go func() {
		c, err := s.Dial(addr, time.Second)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(slowDialMin / 2)
	index.Add(1) // committed during the dial
	if err := <-done; err == nil || !strings.Contains(err.Error(), "to open") {
		t.Fatalf("a slow dial during which the commit index moved: %v, want an error", err)
	}
}

// slowTLSGuard dials as tlsGuard, taking at least delay first.
type slowTLSGuard struct {
	tlsGuard
	delay time.Duration
}

func (g slowTLSGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	time.Sleep(g.delay)
	return g.tlsGuard.dial(address, timeout)
}

// TestKeptTLSConnectionsThePeerClosedAreNotHandedOut: a kept TLS
// connection whose peer closed it, gracefully (close_notify, then FIN) or
// by exiting (FIN only, a session ticket unread ahead of it), is not
// handed out: bytes waiting ahead of the FIN do not make it look open.
func TestKeptTLSConnectionsThePeerClosedAreNotHandedOut(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux tells a closed socket from one with bytes waiting (socketClosed)")
	}
	ca := testca.NewCA(t, "slow dial CA")
	certPEM, keyPEM := ca.Issue(t, "node")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	cliCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "127.0.0.1",
		ClientSessionCache: tls.NewLRUClientSessionCache(4)} // the server sends session tickets
	for _, graceful := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := newGuardedStream(ln, nil, slowTLSGuard{tlsGuard{cliCfg}, 2 * slowDialMin}, 0)
		peer, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan *tls.Conn, 4)
		go func() {
			for {
				c, err := peer.Accept()
				if err != nil {
					return
				}
				if tc := tls.Server(c, srvCfg); tc.Handshake() == nil {
					accepted <- tc
				}
			}
		}()
		addr := raft.ServerAddress(peer.Addr().String())
		if _, err := s.Dial(addr, time.Second); err == nil {
			t.Fatal("a slow dial succeeded")
		}
		srv := <-accepted
		time.Sleep(50 * time.Millisecond)
		if graceful {
			srv.Close()
		} else {
			srv.NetConn().Close()
		}
		time.Sleep(50 * time.Millisecond)
		if c, err := s.Dial(addr, time.Second); err == nil {
			c.Close()
			t.Errorf("graceful=%v: Dial handed out a kept connection its peer had closed", graceful)
		}
		s.Close()
		peer.Close()
	}
}

// TestSlowDialOutlivingLeadershipFails: a dial during which this node
// stopped leading fails, however its commit index went (a deposed leader
// commits nothing): the request raft made before it, in the old term,
// names a commit index the next leader may have passed, and a follower
// that has not heard of the new term yet would take it as current.
func TestSlowDialOutlivingLeadershipFails(t *testing.T) {
	s, addr, _ := slowDialPeer(t, slowGuard{delay: 3 * slowDialMin})
	commit := func() uint64 { return 7 }
	s.commit.Store(&commit)
	var stepped atomic.Bool
	role := func() (uint64, bool) {
		if stepped.Load() {
			return 6, false
		}
		return 5, true
	}
	s.role.Store(&role)
	go func() { time.Sleep(slowDialMin); stepped.Store(true) }()
	c, err := s.Dial(addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatal("a dial that outlived this node's term as leader handed raft its connection")
	}
	if !strings.Contains(err.Error(), "term 5 as leader ended") {
		t.Fatalf("the error names no term: %v", err)
	}
}
