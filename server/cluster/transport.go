package cluster

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// DefaultHandshakeTimeout is Config.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 5 * time.Second

// MaxPendingHandshakes is how many inbound connections a TLS or peer-key node
// handshakes at once; a connection arriving while that many are under way
// displaces the oldest of them (closed, counted as refused), so silent
// connections cannot lock a peer out: to keep one out, a flood must open
// this many connections within the peer's own handshake time. With
// Config.HandshakeTimeout it bounds what unauthenticated peers can hold:
// MaxPendingHandshakes sockets, each for at most the timeout.
const MaxPendingHandshakes = 64

// Raft transport settings: connections pooled per peer, and the I/O
// deadline of one RPC (raft scales it up for snapshots).
const (
	transportMaxPool = 3
	transportTimeout = 10 * time.Second
)

// A raft dial refused by the peer's host (nothing listens on the port:
// the node is down or starting) is tried again, dialRetryFirst later and
// then half as long again each time up to dialRetryMax, for at most
// dialWaitMax. hashicorp/raft backs its retries to an unreachable peer
// off to 10.24 s apart after about ten failed RPCs, and counts a failure
// per dial: a node restarted after a few seconds down waited up to that
// long before the leader's next retry started its catch-up. A dial that
// waits keeps the failures few while the peer is down (one per
// dialWaitMax), and fails once the peer listens again, so that raft's
// next attempt, with a fresh request, follows at once. Only replication
// dials wait (tcpTransport), each on a goroutine of its own in raft (two
// per member: replication and heartbeats; a member removed meanwhile
// keeps its two until the wait ends); Node.Close ends the waits first.
const (
	dialRetryFirst = 20 * time.Millisecond
	dialRetryMax   = 250 * time.Millisecond
	dialWaitMax    = 5 * time.Minute
)

// A replication dial that took slowDialMin or longer (a peer's host
// dropping SYNs while it reboots, a slow handshake) while this node's
// commit index moved (or was still 0) fails, as one that waited for a
// refusing peer does: raft made its request before dialling, so the
// request would name a commit index older than the leader's, which a
// follower takes as current (catchUp). The connection is not wasted: it
// is kept for readyKeep, and the next replication dial to that peer
// (raft's next attempt, after its 10 ms back-off or sooner, with a fresh
// request) takes it at once unless the peer is seen to have closed it
// meanwhile (peerClosed). At most readyMax are kept per peer. slowDialMin
// is stallMin: the staleness a follower's own hold-ups may cause too. The
// accepting side's half of the handshake is timed as well (slowAccept): a
// request the dialler sent while it ran may have waited in the
// connection.
const (
	slowDialMin = stallMin
	readyKeep   = 15 * time.Second // beyond raft's longest retry back-off (10.24 s)
	readyMax    = 4
)

// LoadTLS builds a Config.TLS from PEM files, like rqlite's -node-cert,
// -node-key, -node-ca-cert and -node-verify-client: certFile and keyFile
// are this node's certificate (chain) and private key, presented both as
// a server (to nodes that dial it) and as a client (when it dials);
// caFile holds the CA certificates peers' certificates must chain to
// (empty: the system's roots, and then verifyClients is refused). With
// verifyClients the node accepts only connections that present a
// certificate the CA signed: mutual TLS. The minimum version is TLS 1.3.
// Errors name the file that could not be read or parsed.
func LoadTLS(certFile, keyFile, caFile string, verifyClients bool) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("cluster: a node certificate and key file are both required for TLS")
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the node key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster: node certificate %s with key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if caFile != "" {
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: reading the CA certificates: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("cluster: CA file %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs, cfg.ClientCAs = pool, pool
	} else if verifyClients {
		return nil, errors.New("cluster: verifying client certificates needs a CA file")
	}
	if verifyClients {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// newTCPTransport is raft's transport over TCP: inside TLS when cfg.TLS
// is set, behind the peer-key handshake (peerkey.go) when cfg.PeerKey is,
// plain otherwise; stream is its stream layer.
func newTCPTransport(cfg Config) (trans raft.Transport, stream *guardedStream, err error) {
	var adv net.Addr
	if cfg.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: Config.Advertise: %w", err)
		}
		adv = a
	}
	var g guard
	switch {
	case cfg.TLS == nil && len(cfg.PeerKey) == 0:
		g = plainGuard{}
	case cfg.TLS != nil:
		if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil {
			return nil, nil, errors.New("cluster: Config.TLS has no certificate (see LoadTLS)")
		}
		g = tlsGuard{cfg.TLS}
	default:
		if len(cfg.PeerKey) < MinPeerKeyBytes {
			return nil, nil, fmt.Errorf("cluster: Config.PeerKey has %d bytes, the least is %d", len(cfg.PeerKey), MinPeerKeyBytes)
		}
		g = peerKeyGuard{key: cfg.PeerKey, self: adv}
	}
	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: listening on %s: %w", cfg.Bind, err)
	}
	s := newGuardedStream(ln, adv, g, cfg.HandshakeTimeout)
	if a, ok := s.Addr().(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		s.Close()
		return nil, nil, fmt.Errorf("cluster: %s is not an address other nodes can dial: set Config.Advertise", s.Addr())
	}
	logger := newRaftLogger(cfg.Logger, "raft-net "+cfg.ID)
	return &tcpTransport{
		NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: s, MaxPool: transportMaxPool, Timeout: transportTimeout, Logger: logger}),
		once: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: onceStream{s}, MaxPool: transportMaxPool, Timeout: transportTimeout, Logger: logger}),
	}, s, nil
}

// tcpTransport is raft's transport over a guardedStream. Replication
// (AppendEntries, heartbeats, pipelines, InstallSnapshot) dials through
// the stream, waiting for a member that is starting (see
// dialRetryFirst); votes, pre-votes and TimeoutNow dial once, through a
// second transport that only dials: a candidate starts them anew every
// election round (waiting dials would pile up), and a leadership
// transfer waits for its TimeoutNow with the leader's writes refused
// meanwhile.
type tcpTransport struct {
	*raft.NetworkTransport
	once *raft.NetworkTransport
}

var (
	_ raft.WithClose   = (*tcpTransport)(nil)
	_ raft.WithPreVote = (*tcpTransport)(nil)
)

// RequestVote implements raft.Transport, dialling once.
func (t *tcpTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.once.RequestVote(id, target, args, resp)
}

// RequestPreVote implements raft.WithPreVote, dialling once.
func (t *tcpTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.once.RequestPreVote(id, target, args, resp)
}

// TimeoutNow implements raft.Transport, dialling once.
func (t *tcpTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.once.TimeoutNow(id, target, args, resp)
}

// Close closes both transports, their connections and the stream.
func (t *tcpTransport) Close() error {
	t.once.CloseStreams()
	t.once.Close()
	t.NetworkTransport.CloseStreams()
	return t.NetworkTransport.Close()
}

// onceStream is a guardedStream for raft RPCs that dial once and never
// accept: its Accept returns when the stream closes.
type onceStream struct{ s *guardedStream }

func (o onceStream) Accept() (net.Conn, error) {
	<-o.s.ctx.Done()
	return nil, net.ErrClosed
}

func (o onceStream) Close() error   { return nil } // the stream is the replication transport's
func (o onceStream) Addr() net.Addr { return o.s.Addr() }

func (o onceStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return o.s.dialOnce(address, timeout)
}

// guard is how a guardedStream admits connections: TLS, the peer-key
// handshake, or as they are (plain raft).
type guard interface {
	// accept completes an inbound connection's handshake within ctx,
	// answering the connection raft is to use.
	accept(ctx context.Context, c net.Conn) (net.Conn, error)
	// dial connects to a peer and completes the handshake within timeout.
	dial(address string, timeout time.Duration) (net.Conn, error)
}

// plainGuard admits every connection as it is: plain raft, which anyone
// who reaches the port can speak (Config.PeerKey and Config.TLS are the
// guards).
type plainGuard struct{}

func (plainGuard) accept(_ context.Context, c net.Conn) (net.Conn, error) { return c, nil }

func (plainGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", address, timeout)
}

// tlsGuard admits TLS connections (mutual with ClientAuth set).
type tlsGuard struct{ cfg *tls.Config }

func (g tlsGuard) accept(ctx context.Context, c net.Conn) (net.Conn, error) {
	tc := tls.Server(c, g.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// dial verifies the peer's certificate for the host of address unless
// the config names a ServerName.
func (g tlsGuard) dial(address string, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", address, g.cfg)
}

// guardedStream is a raft.StreamLayer that hands raft only connections
// whose handshake (TLS, with the client certificate verified when
// ClientAuth is set; or the peer-key handshake) completed within the
// handshake timeout; handshakes run off the accept loop, at most
// MaxPendingHandshakes at once (the oldest displaced by a newcomer), so a
// slow or silent peer delays nobody else.
type guardedStream struct {
	ln        net.Listener
	advertise net.Addr
	guard     guard
	timeout   time.Duration

	conns chan net.Conn
	// pmu guards pending: the connections whose handshake is under way,
	// oldest first (at most MaxPendingHandshakes).
	pmu     sync.Mutex
	pending *list.List
	ctx     context.Context
	cancel  context.CancelFunc
	once    sync.Once
	wg      sync.WaitGroup
	refused atomic.Uint64 // connections closed before raft saw them
	// dialing ends dials that wait for a refusing peer (stopDialing).
	dialing     context.Context
	stopDialing context.CancelFunc
	// role answers raft's current term and whether this node leads it
	// (set once raft runs): a waiting dial ends when the term it began
	// in, as leader, is over (raft's replication for that term stopped).
	role atomic.Pointer[func() (term uint64, leading bool)]
	// commit answers raft's commit index (set once raft runs): a slow
	// dial fails only if it moved meanwhile.
	commit atomic.Pointer[func() uint64]
	// slowAccept is told how long an inbound connection's handshake took
	// when that was slowDialMin or more, before raft sees the connection
	// (Node: catchUp.stalled): requests the dialler sent once its own half
	// was done may have waited in the connection meanwhile. Only a
	// handshake that succeeds counts, so only a peer that holds the
	// cluster's key or certificate can cause it (at most twice
	// HandshakeTimeout of quiet per handshake).
	slowAccept atomic.Pointer[func(time.Duration)]
	// rmu guards ready, readyL and readyTimer: per peer address, the
	// connections whose dial was failed (a slow dial, or one that waited)
	// for the next dial to take, and the timer that closes them when
	// their time is up.
	rmu        sync.Mutex
	ready      map[string][]*list.Element
	readyL     *list.List // of *readyConn, oldest first
	readyTimer *time.Timer
	keep       time.Duration
}

// readyConn is a connection kept for a peer's next dial, until expires.
type readyConn struct {
	addr    string
	c       net.Conn
	expires time.Time
}

func newGuardedStream(ln net.Listener, advertise net.Addr, g guard, timeout time.Duration) *guardedStream {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &guardedStream{ln: ln, advertise: advertise, guard: g, timeout: timeout,
		conns: make(chan net.Conn), pending: list.New(), ctx: ctx, cancel: cancel,
		ready: map[string][]*list.Element{}, readyL: list.New(), keep: readyKeep}
	s.dialing, s.stopDialing = context.WithCancel(ctx)
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *guardedStream) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			// A transient failure (out of file descriptors): back off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		s.pmu.Lock()
		if s.pending.Len() >= MaxPendingHandshakes {
			// The oldest is the likeliest to be silent: a peer's own
			// handshake takes a few round trips.
			old := s.pending.Remove(s.pending.Front()).(net.Conn)
			old.Close()
		}
		e := s.pending.PushBack(c)
		s.pmu.Unlock()
		s.wg.Add(1)
		go s.handshake(c, e)
	}
}

func (s *guardedStream) handshake(c net.Conn, e *list.Element) {
	defer s.wg.Done()
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	tc, err := s.guard.accept(ctx, c)
	cancel()
	if took := time.Since(start); err == nil && took >= slowDialMin {
		// The peer's requests sent meanwhile may have waited in the
		// connection (told before raft can read them).
		if f := s.slowAccept.Load(); f != nil {
			(*f)(took)
		}
	}
	s.pmu.Lock()
	s.pending.Remove(e) // a no-op when a newcomer displaced it
	s.pmu.Unlock()
	if err != nil {
		s.refused.Add(1)
		c.Close()
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection whose handshake completed.
func (s *guardedStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops listening, interrupts handshakes under way and closes the
// connections kept for a next dial; connections already handed to raft
// are raft's to close.
func (s *guardedStream) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
		s.rmu.Lock()
		var spent []net.Conn
		for e := s.readyL.Front(); e != nil; e = e.Next() {
			spent = append(spent, e.Value.(*readyConn).c)
		}
		s.readyL.Init()
		clear(s.ready)
		if s.readyTimer != nil {
			s.readyTimer.Stop()
		}
		s.rmu.Unlock()
		closeAll(spent)
	})
	return err
}

// keepReady keeps c, a connection to addr whose dial was failed, for the
// next dial to addr (at most readyMax per address; the oldest makes way).
// After Close it closes c.
func (s *guardedStream) keepReady(addr string, c net.Conn) {
	s.rmu.Lock()
	spent := s.expireLocked(time.Now())
	if s.ctx.Err() != nil {
		s.rmu.Unlock()
		closeAll(append(spent, c))
		return
	}
	if kept := s.ready[addr]; len(kept) >= readyMax {
		spent = append(spent, s.dropLocked(kept[0]))
	}
	e := s.readyL.PushBack(&readyConn{addr: addr, c: c, expires: time.Now().Add(s.keep)})
	s.ready[addr] = append(s.ready[addr], e)
	s.armLocked()
	s.rmu.Unlock()
	closeAll(spent)
}

// takeReady returns the newest connection kept for addr that peerClosed
// does not find closed, if any; those it finds closed it closes.
func (s *guardedStream) takeReady(addr string) net.Conn {
	for {
		s.rmu.Lock()
		spent := s.expireLocked(time.Now())
		kept := s.ready[addr]
		if len(kept) == 0 || s.ctx.Err() != nil {
			s.armLocked()
			s.rmu.Unlock()
			closeAll(spent)
			return nil
		}
		c := s.dropLocked(kept[len(kept)-1])
		s.armLocked()
		s.rmu.Unlock()
		closeAll(spent)
		if !peerClosed(c) {
			return c
		}
		c.Close()
	}
}

// expireReady closes the kept connections whose time is up (readyTimer).
func (s *guardedStream) expireReady() {
	s.rmu.Lock()
	spent := s.expireLocked(time.Now())
	s.armLocked()
	s.rmu.Unlock()
	closeAll(spent)
}

// armLocked sets readyTimer for the oldest kept connection's expiry.
// Caller holds rmu.
func (s *guardedStream) armLocked() {
	front := s.readyL.Front()
	if front == nil || s.ctx.Err() != nil {
		return
	}
	d := time.Until(front.Value.(*readyConn).expires)
	if s.readyTimer == nil {
		s.readyTimer = time.AfterFunc(d, s.expireReady)
		return
	}
	s.readyTimer.Reset(d)
}

// expireLocked forgets the kept connections whose time is up and returns
// them, to be closed once rmu is released. Caller holds rmu.
func (s *guardedStream) expireLocked(now time.Time) []net.Conn {
	var spent []net.Conn
	for e := s.readyL.Front(); e != nil && !now.Before(e.Value.(*readyConn).expires); e = s.readyL.Front() {
		spent = append(spent, s.dropLocked(e))
	}
	return spent
}

// dropLocked forgets the kept connection e and returns it. Caller holds
// rmu.
func (s *guardedStream) dropLocked(e *list.Element) net.Conn {
	rc := e.Value.(*readyConn)
	s.readyL.Remove(e)
	kept := s.ready[rc.addr]
	for i, k := range kept {
		if k == e {
			kept = append(kept[:i], kept[i+1:]...)
			break
		}
	}
	if s.ready[rc.addr] = kept; len(kept) == 0 {
		delete(s.ready, rc.addr)
	}
	return rc.c
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// Addr is the advertised address, or the listener's.
func (s *guardedStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.ln.Addr()
}

// Dial connects to a peer and completes the handshake within timeout
// (raft's replication dials), or hands out a connection kept for it. A
// peer whose host refuses the connection is dialled again until it
// listens, for at most dialWaitMax, or until the stream closes or
// stopDialing is called: see dialRetryFirst. A dial that waited, that
// took slowDialMin or more while the commit index moved (or before raft
// has committed anything), or that outlived this node's term as leader
// fails and keeps its connection for the next Dial to address
// (keepReady).
func (s *guardedStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	until := time.Now().Add(dialWaitMax)
	wait := dialRetryFirst
	role := s.role.Load()
	var began uint64
	if role != nil {
		began, _ = (*role)()
	}
	// termOver: this node no longer leads in the term the dial began in,
	// so raft's replication of that term is over, and a request it made
	// then names a commit index the next leader may have passed.
	termOver := func() bool {
		if role == nil {
			return false
		}
		term, leading := (*role)()
		return !leading || term != began
	}
	if c := s.takeReady(string(address)); c != nil {
		return c, nil
	}
	for refused := false; ; refused = true {
		start, committed := time.Now(), s.commitIndex()
		c, err := s.dialOnce(address, min(timeout, max(time.Until(until), wait)))
		took := time.Since(start)
		slow := took >= slowDialMin && (committed == 0 || s.commitIndex() != committed)
		if err == nil && termOver() {
			s.keepReady(string(address), c)
			return nil, fmt.Errorf("cluster: this node's term %d as leader ended while the connection to %s opened (the request made before is dropped)", began, address)
		}
		if err == nil && (refused || slow) {
			// raft made its request before dialling: sent now, it would
			// name a commit index from before the wait, which a
			// restarted follower takes for how far it must apply before
			// it serves reads (catchUp). Refused instead, the request is
			// made anew at raft's next attempt, after its 10 ms back-off
			// or sooner, which takes this connection (keepReady): one
			// failure, where a dial failing at once counted one per
			// attempt.
			s.keepReady(string(address), c)
			if refused {
				return nil, fmt.Errorf("cluster: %s listens again after refusing connections (the request made before is dropped; raft makes it anew)", address)
			}
			return nil, fmt.Errorf("cluster: the connection to %s took %v to open (the request made before may name a commit index since passed: dropped; raft makes it anew)", address, took.Round(time.Millisecond))
		}
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().Add(wait).After(until) {
			return c, err
		}
		select {
		case <-s.dialing.Done():
			return nil, err
		case <-time.After(wait):
		}
		if termOver() {
			return nil, err
		}
		wait = min(wait+wait/2, dialRetryMax)
	}
}

// commitIndex is raft's commit index, or 0 before raft runs.
func (s *guardedStream) commitIndex() uint64 {
	if f := s.commit.Load(); f != nil {
		return (*f)()
	}
	return 0
}

// dialOnce connects to a peer and completes the handshake within timeout,
// once (Node.Join's check that a new member answers).
func (s *guardedStream) dialOnce(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return s.guard.dial(string(address), timeout)
}
