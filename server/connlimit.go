package server

import (
	"net"
	"net/http"
	"sync"
	"time"
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
type connLimiter struct {
	slots chan struct{}
	mu    sync.Mutex
	// idle holds the connections that may be closed for a new one, as
	// the server sees them (a TLS connection, not its TCP one), in the
	// order they became idle.
	idle  map[net.Conn]uint64
	order uint64
}

func newConnLimiter(n int) *connLimiter {
	return &connLimiter{slots: make(chan struct{}, n), idle: map[net.Conn]uint64{}}
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		l.order++
		l.idle[c] = l.order
	default:
		delete(l.idle, c)
	}
}

// reclaim closes the longest idle connection, if any; its slot frees
// when the server has closed it.
func (l *connLimiter) reclaim() {
	l.mu.Lock()
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

// wrap bounds ln's accepted connections.
func (l *connLimiter) wrap(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l, done: make(chan struct{})}
}

type limitedListener struct {
	net.Listener
	l         *connLimiter
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

// Accept takes the next connection, then waits for its slot: a slot is
// reclaimed from an idle connection only for a client that is there (one
// connection past the bound may wait here, accepted, meanwhile).
func (ln *limitedListener) Accept() (net.Conn, error) {
	c, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !ln.acquire() {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	return &limitedConn{Conn: c, release: func() { <-ln.l.slots }}, nil
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
