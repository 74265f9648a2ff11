package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// delayProxy forwards TCP connections to upstream, opening each new one
// after delay (0: at once), as a peer that drops SYNs while it reboots,
// or answers a handshake slowly, delays a dial; cut closes every
// connection it carries.
type delayProxy struct {
	ln       net.Listener
	upstream string
	delay    atomic.Int64 // nanoseconds
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
	go func() { io.Copy(u, c); u.Close() }()
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

// TestSlowDialSendsNoStaleCommit: when the leader's connections to a
// follower break and its next dial takes 700 ms (a slow handshake; a
// peer dropping SYNs), the follower must not count itself caught up,
// after the dial, as of a time past a commit its stores lack. raft makes
// its AppendEntries request, naming its commit index, before it dials:
// sent once the dial completed, that request announced a commit index
// 700 ms old as current.
func TestSlowDialSendsNoStaleCommit(t *testing.T) {
	root := t.TempDir()
	proxy := newDelayProxy(t)
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
	f := nodes[2]
	proxy.start(f.stream.ln.Addr().String())
	if err := nodes[0].Bootstrap(servers...); err != nil {
		t.Fatal(err)
	}
	var l *Node
	for deadline := time.Now().Add(10 * time.Second); l == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader within 10 s")
		}
		for _, n := range nodes[:2] {
			if n.IsLeader() {
				l = n
			}
		}
		if f.IsLeader() {
			t.Skip("the node behind the proxy leads")
		}
	}
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

	proxy.delay.Store(int64(700 * time.Millisecond))
	proxy.cut()
	cut := time.Now()
	for time.Since(cut) < 400*time.Millisecond {
		if err := appendOne(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	idxE := l.raft.CommitIndex()
	tE := time.Now() // "the revocation" (index idxE) was committed before tE
	proxy.delay.Store(0)
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

// slowGuard dials as plainGuard, taking at least delay.
type slowGuard struct{ delay time.Duration }

func (slowGuard) accept(_ context.Context, c net.Conn) (net.Conn, error) { return c, nil }

func (g slowGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	time.Sleep(g.delay)
	return plainGuard{}.dial(address, timeout)
}

// TestSlowDialKeepsItsConnection: a replication dial that takes longer
// than slowDialMin fails (its request is stale), and keeps the
// connection for the next dial to that peer, which takes it at once; a
// kept connection is closed once its time is up, and when the stream
// closes.
func TestSlowDialKeepsItsConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newGuardedStream(ln, nil, slowGuard{delay: 2 * slowDialMin}, 0)
	defer s.Close()
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := raft.ServerAddress(peer.Addr().String())
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
