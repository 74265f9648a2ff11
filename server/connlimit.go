package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/server/httpapi"
	"github.com/batpak-go/batpak/server/quota"
	"github.com/batpak-go/batpak/server/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// connLimiter bounds the client connections served at once
// (Config.MaxConnections) like netutil.LimitListener, and, when every
// slot is taken, makes room by closing the connection that has been
// idle longest: one kept alive between requests (http.StateIdle) or one
// that has sent nothing yet (http.StateNew). Without that, anyone able
// to open connections — /healthz needs no credential — could hold every
// slot for idle_timeout with one cheap request each and shut every
// tenant out. A connection in the middle of a request (StateActive, an
// event stream included) is never closed for another: a new client then
// waits in the listen backlog as before.
//
// It also bounds the connections open at once from one source
// (Config.MaxConnectionsPerSource): an IPv4 address, or an IPv6 /64 (what
// one host is given). A connection past that bound is refused as soon as
// it is accepted, before it takes a slot of MaxConnections: see refuse.
type connLimiter struct {
	slots chan struct{}
	mu    sync.Mutex
	// idle holds the connections that may be closed for a new one, as
	// the server sees them (a TLS connection, not its TCP one), in the
	// order they became idle.
	idle  map[net.Conn]uint64
	order uint64
	// fresh holds the connections that have sent nothing yet
	// (http.StateNew): a shutdown closes them (closeFresh), which
	// net/http's own Shutdown does only once they are 5 s old.
	fresh map[net.Conn]struct{}
	// held holds the connections whose request holds a rate refusal that
	// may be answered at once for a new client (yield), each with the
	// func that wakes it; reclaim takes them before idle ones.
	held map[net.Conn]func()

	// perSource is the most connections one source may have open (0:
	// no bound); sources counts them (accepted, not yet closed: waiting
	// for a slot included), under srcMu.
	perSource int
	// trusted are the proxies in front of the server
	// (Config.TrustedProxies): their connections carry many clients', and
	// are not held to perSource.
	trusted httpapi.TrustedProxies
	srcMu   sync.Mutex
	sources map[netip.Addr]int
	// refused counts the connections refused for their source;
	// answering bounds the refusals being answered at once, answeringFrom
	// counts them per source (under srcMu).
	refused       atomic.Uint64
	answering     chan struct{}
	answeringFrom map[netip.Addr]int
}

// refusalsAnswered is how many refused connections may be in the middle
// of their answer at once (each for at most refusalLinger); past it, a
// refused connection is closed without one.
const refusalsAnswered = 64

// refusalsAnsweredPerSource is how many of those one source is sure to
// get; it gets more only while fewer than half of refusalsAnswered are
// taken. So one source opening connections past its bound (and sending
// nothing) cannot take every answer and leave the refused clients of
// every other source without theirs, and a client alone may still have
// up to half of them answered at once.
const refusalsAnsweredPerSource = 8

// refusalLinger bounds how long a refused connection is kept to read
// its request's head, and then to write its answer and read what the
// client sent meanwhile (so that closing it does not reset the
// connection before the client reads the answer): at most twice this.
const refusalLinger = time.Second

func newConnLimiter(n, perSource int, trusted httpapi.TrustedProxies) *connLimiter {
	return &connLimiter{slots: make(chan struct{}, n), idle: map[net.Conn]uint64{}, fresh: map[net.Conn]struct{}{}, held: map[net.Conn]func(){},
		perSource: max(perSource, 0), trusted: trusted, sources: map[netip.Addr]int{},
		answering: make(chan struct{}, refusalsAnswered), answeringFrom: map[netip.Addr]int{}}
}

// sourceOf is the source a connection counts against: its IPv4 address
// (an IPv4-mapped IPv6 address as IPv4), or the /64 of its IPv6
// address. ok is false for an address that is not IP, or a trusted
// proxy's (never bounded).
func (l *connLimiter) sourceOf(addr net.Addr) (src netip.Addr, ok bool) {
	tcp, isTCP := addr.(*net.TCPAddr)
	if !isTCP {
		return netip.Addr{}, false
	}
	a := tcp.AddrPort().Addr()
	if l.trusted.Contains(a) {
		return netip.Addr{}, false
	}
	return quota.SourceOfAddr(a)
}

// enter counts a new connection from src: false (nothing counted) when
// src already has perSource open.
func (l *connLimiter) enter(src netip.Addr) (open int, ok bool) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	n := l.sources[src]
	if n >= l.perSource {
		return n, false
	}
	l.sources[src] = n + 1
	return n + 1, true
}

// leave uncounts a connection from src that enter counted.
func (l *connLimiter) leave(src netip.Addr) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if n := l.sources[src]; n > 1 {
		l.sources[src] = n - 1
	} else {
		delete(l.sources, src)
	}
}

// openFrom is how many connections are counted against src.
func (l *connLimiter) openFrom(src netip.Addr) int {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	return l.sources[src]
}

// refuse ends a connection refused for its source without blocking the
// accept loop. With answer (plain HTTP), the client is told why: once
// its request's head is in (or after refusalLinger without one), a 429
// TOO_MANY_CONNECTIONS problem document with Retry-After, written (and
// what the client sends meanwhile read and dropped) in a goroutine of
// its own for at most 2×refusalLinger; at most refusalsAnswered at once
// (and from one source at most half of them, see
// refusalsAnsweredPerSource), past which (and without
// answer: TLS, where an answer would need a handshake) the connection is
// only closed.
func (l *connLimiter) refuse(c net.Conn, src netip.Addr, answer bool) {
	l.refused.Add(1)
	if !answer || !l.startAnswer(src) {
		_ = c.Close()
		return
	}
	go func() {
		defer l.endAnswer(src)
		// The answer follows the request's head, as HTTP clients expect
		// (one answered before it may be taken for a stray response on
		// an idle connection, and the request retried elsewhere).
		_ = c.SetDeadline(time.Now().Add(refusalLinger))
		readRequestHead(c)
		_ = c.SetDeadline(time.Now().Add(refusalLinger))
		_, _ = c.Write(refusalAnswer(src, l.perSource))
		if tcp, ok := c.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		_ = c.Close()
	}()
}

// startAnswer takes one of the answers to refusals, if one of
// refusalsAnswered is free and src has fewer than
// refusalsAnsweredPerSource or fewer than half are taken.
func (l *connLimiter) startAnswer(src netip.Addr) bool {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if l.answeringFrom[src] >= refusalsAnsweredPerSource && len(l.answering) >= refusalsAnswered/2 {
		return false
	}
	select {
	case l.answering <- struct{}{}:
	default:
		return false
	}
	l.answeringFrom[src]++
	return true
}

// endAnswer gives back what startAnswer took.
func (l *connLimiter) endAnswer(src netip.Addr) {
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if n := l.answeringFrom[src]; n > 1 {
		l.answeringFrom[src] = n - 1
	} else {
		delete(l.answeringFrom, src)
	}
	<-l.answering
}

// readRequestHead reads from c up to the end of a request's head (an
// empty line), at most 16 KiB, or until the read fails (the deadline).
func readRequestHead(c net.Conn) {
	r := bufio.NewReaderSize(io.LimitReader(c, 16<<10), 4<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if err == nil && len(bytes.TrimRight(line, "\r\n")) == 0 {
			return
		}
	}
}

// refusalAnswer is the whole HTTP response to a connection refused for
// its source.
func refusalAnswer(src netip.Addr, limit int) []byte {
	shown := src.String()
	if src.Is6() {
		shown += "/64"
	}
	body, _ := json.Marshal(wire.Problem{
		Type:   wire.ProblemTypeBase + strings.ToLower(wire.CodeTooManyConnections),
		Title:  "Too many connections from this address",
		Status: http.StatusTooManyRequests,
		Detail: fmt.Sprintf("%s already has %d connections open to this server, the most server.max_connections_per_source allows: reuse one (keep-alive) or close one", shown, limit),
		Code:   wire.CodeTooManyConnections,
	})
	body = append(body, '\n')
	head := fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/problem+json\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", len(body))
	return append([]byte(head), body...)
}

// metrics are the limiter's counters for /metrics.
func (l *connLimiter) metrics() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "batpak_connections_refused_per_source_total",
			Help: "Client connections refused because their source address (IPv4 address, IPv6 /64) already had server.max_connections_per_source open."},
			func() float64 { return float64(l.refused.Load()) }),
	}
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st == http.StateNew {
		l.fresh[c] = struct{}{}
	} else {
		delete(l.fresh, c)
	}
	switch st {
	case http.StateNew, http.StateIdle:
		l.order++
		l.idle[c] = l.order
	default:
		delete(l.idle, c)
	}
}

// closeFresh closes the connections that have sent nothing yet: at a
// shutdown, a client's spare connection (dialled ahead, never used)
// would otherwise hold net/http's Shutdown for 5 s. Connections in the
// middle of a request, and idle ones, are left to Shutdown.
func (l *connLimiter) closeFresh() {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.fresh))
	for c := range l.fresh {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// connKey carries a request's connection in its context.
type connKey struct{}

// connContext is the http.Server's ConnContext hook: a request's context
// carries its connection, for yield.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// yield lets the request r, holding a rate refusal, give up its
// connection slot to a new client until release is called: when every
// slot is taken, reclaim calls wake (at most once), and the request
// answers its refusal at once and closes its connection
// (httpapi.Options.YieldConn).
func (l *connLimiter) yield(r *http.Request, wake func()) (release func()) {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	if c == nil {
		return func() {}
	}
	l.mu.Lock()
	l.held[c] = wake
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.held, c)
		l.mu.Unlock()
	}
}

// reclaim wakes a held rate refusal (yield) to be answered at once and
// its connection closed, or else closes the longest idle connection, if
// any; the slot frees when the server has closed it.
func (l *connLimiter) reclaim() {
	l.mu.Lock()
	for c, wake := range l.held {
		delete(l.held, c)
		l.mu.Unlock()
		wake()
		return
	}
	var oldest net.Conn
	var at uint64
	for c, o := range l.idle {
		if oldest == nil || o < at {
			oldest, at = c, o
		}
	}
	if oldest != nil {
		delete(l.idle, oldest)
	}
	l.mu.Unlock()
	if oldest != nil {
		_ = oldest.Close()
	}
}

// wrap bounds ln's accepted connections. answer: ln serves plain HTTP,
// so a connection refused for its source is answered (see refuse).
func (l *connLimiter) wrap(ln net.Listener, answer bool) net.Listener {
	return &limitedListener{Listener: ln, l: l, answer: answer, done: make(chan struct{})}
}

type limitedListener struct {
	net.Listener
	l         *connLimiter
	answer    bool
	closeOnce sync.Once
	done      chan struct{}
}

// reclaimEvery is how often a full listener looks again for an idle
// connection to close (one may have become idle while it waited).
const reclaimEvery = 50 * time.Millisecond

func (ln *limitedListener) acquire() bool {
	for {
		select {
		case ln.l.slots <- struct{}{}:
			return true
		default:
		}
		ln.l.reclaim()
		t := time.NewTimer(reclaimEvery)
		select {
		case ln.l.slots <- struct{}{}:
			t.Stop()
			return true
		case <-ln.done:
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// Accept takes the next connection whose source is within its bound
// (refusing the others, see refuse), then waits for its slot: a slot is
// reclaimed from an idle connection only for a client that is there (one
// connection past the bound may wait here, accepted, meanwhile). The
// connection's source count and slot are given back once, at its first
// Close.
func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src, counted := netip.Addr{}, false
		if ln.l.perSource > 0 {
			if src, counted = ln.l.sourceOf(c.RemoteAddr()); counted {
				if _, ok := ln.l.enter(src); !ok {
					ln.l.refuse(c, src, ln.answer)
					continue
				}
			}
		}
		leave := func() {
			if counted {
				ln.l.leave(src)
			}
		}
		if !ln.acquire() {
			_ = c.Close()
			leave()
			return nil, net.ErrClosed
		}
		return &limitedConn{Conn: c, release: func() { <-ln.l.slots; leave() }}, nil
	}
}

func (ln *limitedListener) Close() error {
	err := ln.Listener.Close()
	ln.closeOnce.Do(func() { close(ln.done) })
	return err
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
