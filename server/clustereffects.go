package server

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/control"
)

// nodeBlobs is a cluster node's replicated blob store as the tenant
// policy and plugin managers see it (tenantpolicy.Blobs,
// tenantplugin.Blobs).
type nodeBlobs struct{ n *cluster.Node }

// Put implements tenantpolicy.Blobs and tenantplugin.Blobs: committed on
// a majority of nodes (leader only).
func (b nodeBlobs) Put(ctx context.Context, data []byte) (string, error) {
	return b.n.PutBlob(ctx, data)
}

// Get implements tenantpolicy.Blobs and tenantplugin.Blobs.
func (b nodeBlobs) Get(digest string) ([]byte, error) { return b.n.Blob(digest) }

// effects applies, off the control plane's tail, what a cluster node must
// do when it learns of a change (control.Options.OnChange; see
// server/control's package doc): a tenant's policy, plugins or workers
// changed, on this node or another. The hook only notes the tenant;
// effectWorkers goroutines then, for each tenant noted (each once however
// many changes came meanwhile, and one tenant's never two at once, so a
// tenant whose bundle or module takes the check timeout to load holds up
// its own effects only), load the active policy revision
// (tenantpolicy.Manager.Refresh), brings the plugins to their active
// versions (tenantplugin.Manager.Sync) and the hosted workers to their
// recorded states (hostedworker.Supervisor.TenantChanged; nothing runs
// on a node that does not lead); a deleted tenant's compiled policies and
// plugins are dropped (Remove). Every effect is idempotent: on the node
// that made a change it finds the work done. After each, the blob
// collector is asked to run (blobCollector: a deleted tenant's or
// version's bundles and modules leave this node's cluster/blobs/).
type effects struct {
	s *Server

	mu      sync.Mutex
	pending map[string]bool // noted, not yet taken
	order   []string        // the pending tenants, oldest first
	running map[string]bool // taken by a worker
	// applyFn applies one tenant's effects: apply (tests watch it).
	applyFn func(ctx context.Context, tenant string)
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

func newEffects(s *Server) *effects {
	e := &effects{s: s, pending: map[string]bool{}, running: map[string]bool{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	e.applyFn = e.apply
	return e
}

// note is the OnChange hook's part: cheap and lock-free of the plane.
func (e *effects) note(c control.Change) {
	switch {
	case strings.HasPrefix(c.Kind, "policy."), strings.HasPrefix(c.Kind, "plugin."),
		strings.HasPrefix(c.Kind, "worker."), strings.HasPrefix(c.Kind, "tenant."):
	default:
		return
	}
	t := c.TenantID()
	if t == "" {
		return
	}
	e.mu.Lock()
	if !e.pending[t] {
		e.pending[t] = true
		e.order = append(e.order, t)
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// effectWorkers is how many tenants' effects are applied at once.
const effectWorkers = 4

// run applies the noted tenants' effects on effectWorkers goroutines
// until close.
func (e *effects) run() {
	defer close(e.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-e.stop
		cancel()
	}()
	var wg sync.WaitGroup
	for range effectWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work(ctx)
		}()
	}
	wg.Wait()
}

// work takes noted tenants one at a time and applies their effects until
// ctx ends.
func (e *effects) work(ctx context.Context) {
	for {
		t, more, ok := e.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-e.wake:
			}
			continue
		}
		if more {
			e.poke() // another worker takes the next
		}
		e.applyFn(ctx, t)
		e.mu.Lock()
		delete(e.running, t)
		more = len(e.order) > 0
		e.mu.Unlock()
		if more {
			e.poke() // t may have been noted again, and passed over, while it ran
		}
		if ctx.Err() != nil {
			return
		}
		if e.s != nil && e.s.blobs != nil {
			// A deleted tenant, plugin version or policy revision
			// may have left blobs nothing references.
			e.s.blobs.poke()
		}
	}
}

// next takes the oldest noted tenant whose effects are not being applied,
// and says whether others are left.
func (e *effects) next() (tenant string, more, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, t := range e.order {
		if e.running[t] {
			continue
		}
		e.order = append(e.order[:i], e.order[i+1:]...)
		delete(e.pending, t)
		e.running[t] = true
		return t, len(e.order) > 0, true
	}
	return "", false, false
}

// poke wakes a waiting worker, if none is woken already.
func (e *effects) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *effects) apply(ctx context.Context, tenant string) {
	s := e.s
	if _, ok := s.plane.Tenant(tenant); !ok {
		// Deleted: its workers stop, its compiled policies and loaded
		// plugins go (the node that took the deletion did so already).
		if s.workers != nil {
			s.workers.TenantChanged(tenant)
		}
		if s.policies != nil {
			if err := s.policies.Remove(tenant); err != nil {
				s.cfg.Logger.Warn("cluster: removing a deleted tenant's policies", "tenant", tenant, "err", err)
			}
		}
		if s.plugins != nil {
			if err := s.plugins.Remove(tenant); err != nil {
				s.cfg.Logger.Warn("cluster: removing a deleted tenant's plugins", "tenant", tenant, "err", err)
			}
		}
		return
	}
	if s.policies != nil {
		s.policies.Refresh(ctx, tenant)
	}
	if s.plugins != nil {
		s.plugins.Sync(ctx, tenant)
	}
	if s.workers != nil {
		s.workers.TenantChanged(tenant)
	}
}

// close stops the goroutine (the effects still pending are dropped: a
// restart loads every active revision and version at Open).
func (e *effects) close() {
	select {
	case <-e.stop:
		return
	default:
	}
	close(e.stop)
	<-e.done
}

// leadership runs the hosted workers on this node while it leads: once it
// is ready to lead (clusterNode.IsLeader: it has applied the whole log
// and its control plane has caught up, so worker definitions and cursor
// positions are the latest committed) it resumes every worker recorded as
// running from its cursor, and finishes interrupted tenant deletions;
// when it stops leading it puts the workers on standby. It polls
// every leadershipPoll until stop closes, then returns (Supervisor.Close
// stops what runs).
func (s *Server) leadership(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(leadershipPoll)
	defer t.Stop()
	leading := false
	var swept time.Time
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		// It leads, has applied everything committed before its term,
		// and its control plane has caught up (clusterNode.IsLeader).
		now := s.node.IsLeader()
		switch {
		case now && !leading:
			leading = true
			s.workers.Resume()
			s.cfg.Logger.Info("cluster: this node leads: hosted workers resumed")
			s.removeDeletedTenants()
			swept = time.Now()
		case now && time.Since(swept) >= deletedTenantSweep:
			s.removeDeletedTenants()
			swept = time.Now()
		case !now && leading:
			leading = false
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := s.workers.Standby(ctx); err != nil {
				s.cfg.Logger.Warn("cluster: this node no longer leads: stopping its hosted workers", "err", err)
			}
			cancel()
		}
	}
}

// removeDeletedTenants, on the leader, finishes tenant deletions that a
// change of leader cut short: the deletion is on record but the store
// drop that follows it was never proposed, so every node still holds the
// deleted tenant's events. It drops the store of every tenant this node
// holds one of and the control plane does not (httpapi.API.
// RemoveDeletedTenants, under the lock tenant creation takes).
func (s *Server) removeDeletedTenants() {
	ids, err := s.node.n.Tenants()
	if err != nil {
		s.cfg.Logger.Warn("cluster: listing tenant stores", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	removed, err := s.api.RemoveDeletedTenants(ctx, ids)
	for _, id := range removed {
		s.cfg.Logger.Warn("cluster: removed the data of a deleted tenant whose removal a change of leader cut short", "tenant", id)
	}
	if err != nil {
		s.cfg.Logger.Warn("cluster: removing deleted tenants' data", "err", err)
	}
}

// deletedTenantSweep is how often the leader looks for deleted tenants'
// stores besides when it begins to lead: a deletion whose store drop
// failed on this leader (raft refused it, or it timed out) is finished
// within about this.
const deletedTenantSweep = time.Minute

// leadershipPoll is how often a cluster node checks whether it leads (a
// new leader's hosted workers start within about this after it is
// elected and has applied the log).
const leadershipPoll = 100 * time.Millisecond
