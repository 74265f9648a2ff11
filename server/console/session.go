package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"sync"
	"time"

	"github.com/batpak-go/batpak/server/auth"
)

// Session limits (see the package doc).
const (
	// DefaultMaxSessions bounds the sessions held at once, all principals
	// together.
	DefaultMaxSessions = 1024
	// MaxSessionsPerPrincipal bounds one principal's sessions: a new
	// sign-in past it ends that principal's least recently used one.
	MaxSessionsPerPrincipal = 16
	// MaxSessionsPerTenant bounds one tenant's sessions, all its keys
	// together (a tenant admin can issue keys at will): a new sign-in past
	// it ends that tenant's least recently used one. The operator's
	// sessions count against no tenant.
	MaxSessionsPerTenant = 64
	// DefaultIdleTimeout ends a session not used for this long.
	DefaultIdleTimeout = 30 * time.Minute
	// DefaultLifetime ends a session this long after sign-in, used or not.
	DefaultLifetime = 12 * time.Hour
)

// ErrTooManySessions: the session store is full of live sessions.
var ErrTooManySessions = errors.New("console: too many sessions are open; try again when some expire")

// ctEqual compares secrets in constant time (a variable so that a test
// can count the comparisons).
var ctEqual = func(x, y []byte) bool { return subtle.ConstantTimeCompare(x, y) == 1 }

// session is one signed-in browser. The credential stays here, on the
// server: every request the session makes is re-authenticated with it, so
// a revoked key or a suspended tenant ends the session's access at once.
type session struct {
	idHash     [32]byte
	credential string
	principal  auth.Principal
	csrf       string
	created    time.Time
	lastUsed   time.Time
	// ended is closed when the session ends (sign-out, expiry, eviction,
	// a credential that stopped authenticating): its requests in flight,
	// a live tail above all, stop then.
	ended chan struct{}
}

// sessionStore keeps sessions in memory, by the SHA-256 of their id (the
// cookie's value): the store never holds an id a browser could present.
// Safe for concurrent use.
type sessionStore struct {
	mu       sync.Mutex
	m        map[[32]byte]*session
	max      int
	idle     time.Duration
	lifetime time.Duration
	now      func() time.Time
}

func newSessionStore(max int, idle, lifetime time.Duration) *sessionStore {
	return &sessionStore{m: map[[32]byte]*session{}, max: max, idle: idle, lifetime: lifetime, now: time.Now}
}

// randomToken is 256 random bits, base64url without padding (43 chars).
func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func (st *sessionStore) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastUsed) >= st.idle || now.Sub(s.created) >= st.lifetime
}

// create stores a session for credential and principal and returns its
// id (for the cookie) and the session. Expired sessions are dropped;
// past the principal's bound (MaxSessionsPerPrincipal) or its tenant's
// (MaxSessionsPerTenant) the least recently used session of that
// principal or tenant ends; past the store's bound an operator sign-in
// ends the least recently used tenant session, a tenant's sign-in the
// least recently used session of the tenant holding the most (when it
// holds more than the signing tenant would), and any other gets
// ErrTooManySessions.
func (st *sessionStore) create(credential string, p auth.Principal) (string, *session, error) {
	id, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", nil, err
	}
	now := st.now()
	s := &session{idHash: sha256.Sum256([]byte(id)), credential: credential, principal: p, csrf: csrf, created: now, lastUsed: now,
		ended: make(chan struct{})}
	st.mu.Lock()
	defer st.mu.Unlock()
	var mine, tenant []*session
	var lruTenant *session // the least recently used tenant session of all
	byTenant := map[string][]*session{}
	for _, o := range st.m {
		if st.expired(o, now) {
			st.endLocked(o)
			continue
		}
		if o.principal.ID == p.ID && o.principal.Tenant == p.Tenant && o.principal.Operator == p.Operator {
			mine = append(mine, o)
		}
		if !o.principal.Operator {
			if !p.Operator && o.principal.Tenant == p.Tenant {
				tenant = append(tenant, o)
			}
			if lruTenant == nil || o.lastUsed.Before(lruTenant.lastUsed) {
				lruTenant = o
			}
			byTenant[o.principal.Tenant] = append(byTenant[o.principal.Tenant], o)
		}
	}
	if len(mine) >= MaxSessionsPerPrincipal {
		st.dropLRU(mine)
	} else if len(tenant) >= MaxSessionsPerTenant {
		st.dropLRU(tenant)
	} else if p.Operator && len(st.m) >= st.max && lruTenant != nil {
		// The operator is never locked out by tenants' sessions.
		st.endLocked(lruTenant)
	} else if len(st.m) >= st.max {
		// Nor is a tenant by other tenants': the tenant holding the
		// most sessions, more than this one would, gives one up.
		var most []*session
		for _, ss := range byTenant {
			if len(ss) > len(most) {
				most = ss
			}
		}
		if len(most) > len(tenant)+1 {
			st.dropLRU(most)
		}
	}
	if len(st.m) >= st.max {
		return "", nil, ErrTooManySessions
	}
	st.m[s.idHash] = s
	return id, s, nil
}

// dropLRU ends the least recently used of ss (st.mu held).
func (st *sessionStore) dropLRU(ss []*session) {
	oldest := ss[0]
	for _, o := range ss[1:] {
		if o.lastUsed.Before(oldest.lastUsed) {
			oldest = o
		}
	}
	st.endLocked(oldest)
}

// endLocked removes s and closes its ended channel (st.mu held; a
// session not held any more is left alone).
func (st *sessionStore) endLocked(s *session) {
	if st.m[s.idHash] == s {
		delete(st.m, s.idHash)
		close(s.ended)
	}
}

// get returns the live session of id and marks it used; nil when there is
// none (unknown, signed out or expired: an expired one is dropped).
func (st *sessionStore) get(id string) *session {
	if id == "" || len(id) > 64 {
		return nil
	}
	h := sha256.Sum256([]byte(id))
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[h]
	if !ok || !ctEqual(s.idHash[:], h[:]) {
		return nil
	}
	if st.expired(s, now) {
		st.endLocked(s)
		return nil
	}
	s.lastUsed = now
	return s
}

// remove ends the session of id (sign-out); false when there was none.
func (st *sessionStore) remove(id string) bool {
	h := sha256.Sum256([]byte(id))
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[h]
	if ok {
		st.endLocked(s)
	}
	return ok
}

// drop ends s (its credential no longer authenticates).
func (st *sessionStore) drop(s *session) {
	st.mu.Lock()
	st.endLocked(s)
	st.mu.Unlock()
}

// sweep ends every expired session (idle for the idle timeout, or at
// its lifetime), closing its ended channel so that its requests in
// flight (a live tail) end now rather than at a later request of the
// session, or never. It returns how many it ended.
func (st *sessionStore) sweep() int {
	now := st.now()
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, s := range st.m {
		if st.expired(s, now) {
			st.endLocked(s)
			n++
		}
	}
	return n
}

// sweepInterval is how often the store is swept: a quarter of the
// shorter of the idle timeout and the lifetime, at most a minute (a
// session ends at most that long after it expired) and at least 10 ms.
func (st *sessionStore) sweepInterval() time.Duration {
	return min(max(min(st.idle, st.lifetime)/4, 10*time.Millisecond), time.Minute)
}

// sweepEvery sweeps the store every sweepInterval until ctx ends.
func (st *sessionStore) sweepEvery(ctx context.Context) {
	t := time.NewTicker(st.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			st.sweep()
		}
	}
}

// len is the number of sessions held (expired ones not yet dropped
// included).
func (st *sessionStore) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.m)
}

// checkCSRF reports whether token is s's CSRF token (constant time).
func (s *session) checkCSRF(token string) bool {
	return token != "" && ctEqual([]byte(token), []byte(s.csrf))
}
