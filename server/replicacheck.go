package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/httpapi"
)

// DefaultReplicaCheckEvery is ClusterConfig.ReplicaCheckEvery's default.
const DefaultReplicaCheckEvery = 10 * time.Minute

// Bounds of the replica check's work.
const (
	// replicaCheckFullEvery: every this many rounds (and in the first
	// after the node starts to lead) each copy is compared again from the
	// first event, so a copy damaged on disk after it was checked is found
	// too.
	replicaCheckFullEvery = 6
	// replicaChunkEvents and replicaChunkBytes bound one comparison (one
	// digest asked of a member): at most this many events, or about this
	// many bytes of payload.
	replicaChunkEvents = 1 << 18
	replicaChunkBytes  = 64 << 20
	// replicaChunksPerRound bounds the comparisons of one copy in a
	// round: a longer range (a large tenant compared from the first event)
	// goes on in the next rounds from where this one stopped.
	replicaChunksPerRound = 16
	// replicaCheckRequestTimeout bounds one member's answer to a digest (it
	// may wait cluster.read_wait for the events, then reads one chunk).
	replicaCheckRequestTimeout = 2 * time.Minute
	// replicaCheckMaxAnswer bounds the bytes read of a member's answer;
	// replicaCheckMaxHeader its response headers.
	replicaCheckMaxAnswer = 64 << 10
	replicaCheckMaxHeader = 16 << 10
	// replicaCheckMaxText bounds each text a member's answer puts in the
	// status and the log (why it was not compared, why it is damaged).
	replicaCheckMaxText = 512
)

// replicaNode is what the replica checker needs of its cluster node; the
// server's clusterNode is one (replicaSource), a test's stand-in another.
type replicaNode interface {
	// leading reports whether this node leads (ready to serve as leader),
	// and in which term.
	leading() (bool, uint64)
	// self is this node's id, and whether its API is served over https.
	self() (id string, https bool)
	// peers is every other member: id and API URL ("" when unknown).
	peers() []replicaPeer
	// tenants is every live tenant's id.
	tenants() []string
	// mark is what the node knows of a tenant's store without opening it.
	mark(tenant string) cluster.StoreMark
	// inspect runs fn on the tenant's store without creating it or
	// counting as a use of it (cluster.ErrNoTenant when there is none).
	inspect(tenant string, fn func(*core.Store) error) error
}

// replicaPeer is a member the checker asks.
type replicaPeer struct{ id, url string }

// replicaChecker is the leader's automatic replica check: every
// ClusterConfig.ReplicaCheckEvery it compares every other member's copy
// of each tenant's events with its own, a range of global sequences at a
// time: its own digest (cluster.DigestChunk) against the member's answer
// to GET /v1/admin/tenants/{t}/digest?from=&upto= (with the operator
// credential), the comparison `batpak cluster check` makes by hand. A
// copy that differs, or that its node cannot read (a damaged segment, a
// broken chain), is an alarm: logged as an error when found, kept in the
// cluster status (GET /v1/cluster: replica_check.diverged) and counted in
// batpak_cluster_replicas_diverged until that copy has been compared the
// same from the first event to the end (the node restored or replaced). A
// copy the leader itself cannot read is one too.
//
// Each copy has a position: the events before it compared the same.
// A round goes on from there to the leader's last event, in chunks of at
// most replicaChunkEvents events or replicaChunkBytes of payload, at most
// replicaChunksPerRound of them (a long range goes on in the next
// round). Every replicaCheckFullEvery rounds, in the first after the node
// starts to lead, and after an alarm, a copy's position goes back to the
// first event (unless a pass from the first event is still under way). A
// tenant nothing was written to since its last round, whose copies are
// all compared to its end, is not opened. A member that does not answer
// (stopped, not caught up within its read_wait, busy with another digest)
// is not compared and raises nothing; it is not asked again in that
// round. A member's copy of another incarnation of the tenant (deleted
// and created again: another birth index) is not compared either. The
// check sends the credential only to members' recorded API URLs, never
// follows a redirect, and never sends it over plain http from an https
// node.
type replicaChecker struct {
	node   replicaNode
	logger *slog.Logger
	every  time.Duration // <= 0: off
	client *http.Client
	token  string
	// chunkEvents, chunkBytes, chunksPerRound: replicaChunkEvents,
	// replicaChunkBytes, replicaChunksPerRound (a test makes them small).
	chunkEvents    uint64
	chunkBytes     int64
	chunksPerRound int

	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool

	// Owned by run.
	term    uint64
	rounds  uint64
	tenants map[string]*tenantCheck

	mu     sync.Mutex
	report replicaCheckReport
	alarms map[[2]string]replicaAlarm // (tenant, node) → alarm

	roundsTotal atomic.Uint64
	results     [4]atomic.Uint64 // by replicaResult
	ownDigests  atomic.Uint64    // chunks of its own copies this node read
}

// tenantCheck is the check's state of one tenant.
type tenantCheck struct {
	born  uint64 // the leader's store's birth index the positions are of
	wrote uint64 // its StoreMark.Wrote when last checked
	upto  uint64 // its end then
	known bool   // this node read its store (wrote and upto are its)
	pairs map[string]*copyCheck
}

// copyCheck is the check's state of one member's copy of a tenant.
type copyCheck struct {
	next uint64 // the events before it compared the same
	// from0 is when the current pass started at the first event (zero
	// when it started later); fullAt when the last pass from the first
	// event reached the end started.
	from0, fullAt time.Time
}

// replicaResult is one comparison's outcome (metrics label).
type replicaResult int

const (
	replicaSame replicaResult = iota
	replicaDifferent
	replicaDamaged
	replicaNotCompared
)

var replicaResultNames = [...]string{"same", "different", "damaged", "not_compared"}

// replicaCheckReport is the check's state in the leader's cluster status.
type replicaCheckReport struct {
	// Every is how often a round runs ("off" when it does not).
	Every string `json:"every"`
	// LastRound is when the last round finished; LastFull is the latest
	// time since which every copy has been compared from the first event
	// to the end (absent before then).
	LastRound *time.Time `json:"last_round,omitempty"`
	LastFull  *time.Time `json:"last_full,omitempty"`
	// Copies is the members' copies of the tenants' events at the last
	// round (tenants × other members); Agreeing how many of them are
	// compared the same as the leader's through its end then (an empty
	// tenant's agree).
	Copies   int `json:"copies"`
	Agreeing int `json:"agreeing"`
	// Compared and NotCompared count the comparisons of the last round:
	// made (whatever the outcome), or not (the member did not answer;
	// NotComparedWhy says why, for the first few).
	Compared       int      `json:"compared"`
	NotCompared    int      `json:"not_compared"`
	NotComparedWhy []string `json:"not_compared_why,omitempty"`
	// Diverged is every copy in alarm.
	Diverged []replicaAlarm `json:"diverged"`
}

// replicaAlarm is a member whose copy of a tenant's events is not the
// leader's.
type replicaAlarm struct {
	Tenant string `json:"tenant"`
	Node   string `json:"node"`
	// Result is "DIFFERENT" (another digest, or another count of events)
	// or "DAMAGED" (the node cannot read its copy; Detail says why).
	Result string `json:"result"`
	// From and Upto are the range compared when it was found.
	From   uint64    `json:"from"`
	Upto   uint64    `json:"upto"`
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
}

// members verifies members' https certificates (nil: the system's roots).
func newReplicaChecker(node replicaNode, logger *slog.Logger, every time.Duration, token string, members *tls.Config) *replicaChecker {
	return &replicaChecker{node: node, logger: logger, every: every, token: token,
		chunkEvents: replicaChunkEvents, chunkBytes: replicaChunkBytes, chunksPerRound: replicaChunksPerRound,
		client: &http.Client{
			Transport: &http.Transport{
				DialContext:            (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSHandshakeTimeout:    10 * time.Second,
				TLSClientConfig:        members.Clone(),
				ResponseHeaderTimeout:  replicaCheckRequestTimeout,
				MaxResponseHeaderBytes: replicaCheckMaxHeader,
				MaxIdleConnsPerHost:    1,
				IdleConnTimeout:        time.Minute,
			},
			Timeout: replicaCheckRequestTimeout,
			// A digest is never redirected: a redirect is not a
			// member's answer, and the credential stays where it was sent.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		stop: make(chan struct{}), done: make(chan struct{}),
		tenants: map[string]*tenantCheck{}, alarms: map[[2]string]replicaAlarm{}}
}

// start runs the check in the background (once).
func (c *replicaChecker) start() {
	if c.started.CompareAndSwap(false, true) {
		go c.run()
	}
}

// run checks every c.every while the node leads, until close.
func (c *replicaChecker) run() {
	defer close(c.done)
	if c.every <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	t := time.NewTimer(c.every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.round(ctx)
		t.Reset(c.every)
	}
}

// close stops run (waiting for a round under way to see the stop); once.
func (c *replicaChecker) close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	if c.started.Load() {
		<-c.done
	}
}

// round runs one check if this node leads; a node that does not lead
// forgets what it found (the next leader's rounds are the news).
func (c *replicaChecker) round(ctx context.Context) {
	lead, term := c.node.leading()
	if !lead {
		if c.term != 0 || c.rounds != 0 {
			c.term, c.rounds, c.tenants = 0, 0, map[string]*tenantCheck{}
			c.mu.Lock()
			c.report, c.alarms = replicaCheckReport{}, map[[2]string]replicaAlarm{}
			c.mu.Unlock()
		}
		return
	}
	if term != c.term {
		c.term, c.rounds, c.tenants = term, 0, map[string]*tenantCheck{}
	}
	full := c.rounds%replicaCheckFullEvery == 0
	c.rounds++
	selfID, https := c.node.self()
	peers := c.node.peers()
	tenants := c.node.tenants()
	slices.Sort(tenants)
	c.forgetGone(tenants, selfID, peers)
	r := &roundState{full: full, start: time.Now(), selfID: selfID, https: https, peers: peers, failed: map[string]string{}}
	for _, t := range tenants {
		if ctx.Err() != nil {
			return
		}
		c.checkTenant(ctx, t, r)
	}
	if lead, term := c.node.leading(); !lead || term != c.term {
		return // what it found may be a deposed leader's view
	}
	now := time.Now()
	c.roundsTotal.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	// Every copy's last pass from the first event: the oldest is when
	// the whole check last covered everything.
	var lastFull time.Time
	whole := true
	for _, t := range tenants {
		tc := c.tenants[t]
		for _, p := range peers {
			r.rep.Copies++
			var cc *copyCheck
			if tc != nil {
				cc = tc.pairs[p.id]
			}
			if _, alarmed := c.alarms[[2]string{t, p.id}]; cc != nil && tc.known && cc.next >= tc.upto && !alarmed {
				r.rep.Agreeing++
			}
			switch {
			case cc == nil || cc.fullAt.IsZero():
				whole = false
			case lastFull.IsZero() || cc.fullAt.Before(lastFull):
				lastFull = cc.fullAt
			}
		}
	}
	if r.rep.Copies == 0 {
		lastFull = now
	}
	r.rep.LastRound = &now
	if whole && !lastFull.IsZero() {
		r.rep.LastFull = &lastFull
	}
	c.report = r.rep
}

// roundState is what one round carries from tenant to tenant.
type roundState struct {
	full   bool
	start  time.Time
	selfID string
	https  bool
	peers  []replicaPeer
	failed map[string]string // members not asked again this round, and why
	rep    replicaCheckReport
	// own holds this node's digests of the tenant in hand, by range
	// start: members at the same position share one reading of it.
	own map[uint64]cluster.ReplicaDigest
}

func (r *roundState) notCompared(c *replicaChecker, t, node, why string) {
	c.results[replicaNotCompared].Add(1)
	r.rep.NotCompared++
	if len(r.rep.NotComparedWhy) < 8 {
		r.rep.NotComparedWhy = append(r.rep.NotComparedWhy, t+" on "+node+": "+why)
	}
}

// forgetGone drops the state of tenants deleted and members removed.
func (c *replicaChecker) forgetGone(tenants []string, selfID string, peers []replicaPeer) {
	liveTenant := make(map[string]bool, len(tenants))
	for _, t := range tenants {
		liveTenant[t] = true
	}
	liveNode := map[string]bool{selfID: len(peers) > 0}
	for _, p := range peers {
		liveNode[p.id] = true
	}
	for t, tc := range c.tenants {
		if !liveTenant[t] {
			delete(c.tenants, t)
			continue
		}
		for m := range tc.pairs {
			if !liveNode[m] {
				delete(tc.pairs, m)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.alarms {
		// A leader with no other member compares nothing: its own alarm
		// has nothing to lift it.
		if !liveTenant[k[0]] || !liveNode[k[1]] {
			delete(c.alarms, k)
		}
	}
}

// checkTenant compares the members' copies of tenant t with this node's.
func (c *replicaChecker) checkTenant(ctx context.Context, t string, r *roundState) {
	if tc := c.tenants[t]; tc != nil && !r.full {
		if mark := c.node.mark(t); mark.Born == tc.born && tc.known && mark.Wrote == tc.wrote && c.settled(t, tc, r) {
			return // nothing written since its last round, every copy compared to its end
		}
	}
	r.own = map[uint64]cluster.ReplicaDigest{} // this tenant's, while its store is held
	err := c.node.inspect(t, func(s *core.Store) error {
		// The mark read with the store held: a drop closes a held store,
		// so the birth index it names is the store's read here.
		mark := c.node.mark(t)
		tc := c.tenants[t]
		if tc == nil || mark.Born != tc.born {
			// New, or another incarnation of the tenant (deleted and
			// created again; or its birth learnt since: a write applied):
			// compared from the first event.
			tc = &tenantCheck{born: mark.Born, pairs: map[string]*copyCheck{}}
			c.tenants[t] = tc
		}
		tc.wrote, tc.upto, tc.known = mark.Wrote, s.Usage().GlobalSequence, true
		for _, p := range r.peers {
			cc := tc.pairs[p.id]
			if cc == nil {
				cc = &copyCheck{from0: r.start}
				tc.pairs[p.id] = cc
			}
			switch {
			case cc.next > tc.upto:
				cc.next, cc.from0 = 0, r.start // a shorter store: another incarnation
			case (r.full || c.alarmed(t, p.id) || c.alarmed(t, r.selfID)) && (cc.from0.IsZero() || cc.next == 0):
				// Again from the first event, unless a pass from it is
				// under way already.
				cc.next, cc.from0 = 0, r.start
			}
		}
		for _, p := range r.peers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if why, failed := r.failed[p.id]; failed {
				if tc.pairs[p.id].next < tc.upto {
					r.notCompared(c, t, p.id, why)
				}
				continue
			}
			if stop := c.compareCopy(ctx, s, t, tc, p, r); stop {
				return nil
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, cluster.ErrNoTenant):
		// No store here (deleted meanwhile, or never written): nothing
		// for a copy to differ from.
		tc := &tenantCheck{known: true, pairs: map[string]*copyCheck{}}
		for _, p := range r.peers {
			tc.pairs[p.id] = &copyCheck{fullAt: r.start}
		}
		c.tenants[t] = tc
	case err != nil && ctx.Err() == nil:
		if cluster.Damaged(err) {
			// This node cannot open its own copy: an alarm of its own,
			// and every copy is compared from the first event once it
			// can.
			c.raise(t, r.selfID, "DAMAGED", cluster.ReplicaDigest{Damaged: err.Error()})
			if tc := c.tenants[t]; tc != nil {
				tc.known = false
				for _, cc := range tc.pairs {
					cc.next, cc.from0 = 0, time.Time{}
				}
			}
		}
		for _, p := range r.peers {
			r.notCompared(c, t, p.id, "this node could not read its copy: "+err.Error())
		}
	}
}

// settled reports whether every member's copy of t is compared to its
// end, and no copy of it is in alarm.
func (c *replicaChecker) settled(t string, tc *tenantCheck, r *roundState) bool {
	if !tc.known || c.alarmed(t, r.selfID) {
		return false
	}
	for _, p := range r.peers {
		cc := tc.pairs[p.id]
		if cc == nil || cc.next < tc.upto || c.alarmed(t, p.id) {
			return false
		}
	}
	return true
}

// compareCopy compares member p's copy of t with this node's (s) from
// its position on, a chunk at a time. stop: this node cannot read its
// own copy (an alarm of its own): nothing more of t is compared.
func (c *replicaChecker) compareCopy(ctx context.Context, s *core.Store, t string, tc *tenantCheck, p replicaPeer, r *roundState) (stop bool) {
	cc := tc.pairs[p.id]
	for chunks := 0; cc.next < tc.upto && chunks < c.chunksPerRound; chunks++ {
		own, ok := r.own[cc.next]
		if !ok {
			var err error
			if own, err = cluster.DigestChunk(ctx, s, cc.next, tc.upto, c.chunkEvents, c.chunkBytes); err != nil {
				if ctx.Err() == nil {
					r.notCompared(c, t, p.id, "this node's digest failed: "+err.Error())
				}
				return false
			}
			r.own[cc.next] = own
			c.ownDigests.Add(1)
		}
		if own.Damaged != "" {
			c.raise(t, r.selfID, "DAMAGED", own)
			for _, q := range r.peers {
				if q.id != p.id || cc.next < tc.upto {
					r.notCompared(c, t, q.id, "this node cannot read its own copy")
				}
				if qc := tc.pairs[q.id]; qc != nil {
					qc.next, qc.from0 = 0, time.Time{}
				}
			}
			return true
		}
		got, why, busy := c.ask(ctx, p, r.https, t, own.From, own.Upto)
		if why == "" && got.Born != 0 && tc.born != 0 && got.Born != tc.born {
			why = "its copy is of another incarnation of the tenant (deleted and created again; it has not applied the same changes yet)"
		}
		if why != "" {
			r.notCompared(c, t, p.id, why)
			if busy {
				// Stopped, not caught up, busy: not asked again this round.
				r.failed[p.id] = "not asked again this round (" + why + ")"
			}
			return false
		}
		r.rep.Compared++
		switch {
		case got.Damaged != "":
			c.results[replicaDamaged].Add(1)
			c.raise(t, p.id, "DAMAGED", got)
			cc.next, cc.from0 = 0, time.Time{}
			return false
		case got.Digest != own.Digest || got.Events != own.Events:
			c.results[replicaDifferent].Add(1)
			c.raise(t, p.id, "DIFFERENT", got)
			cc.next, cc.from0 = 0, time.Time{}
			return false
		}
		c.results[replicaSame].Add(1)
		cc.next = own.Upto
	}
	if cc.next >= tc.upto && !cc.from0.IsZero() {
		// A pass from the first event reached the end, the same.
		cc.fullAt, cc.from0 = cc.from0, time.Time{}
		c.clear(t, p.id)
		c.clear(t, r.selfID)
	}
	return false
}

func (c *replicaChecker) alarmed(t, node string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.alarms[[2]string{t, node}]
	return ok
}

// raise records an alarm (logged when new, or when its result changes).
func (c *replicaChecker) raise(t, node, result string, d cluster.ReplicaDigest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{t, node}
	if a, ok := c.alarms[k]; ok && a.Result == result {
		return
	}
	detail := printable.Clip(d.Damaged, replicaCheckMaxText)
	c.alarms[k] = replicaAlarm{Tenant: t, Node: node, Result: result, From: d.From, Upto: d.Upto, Detail: detail, Since: time.Now()}
	what := "differs from the leader's"
	if result == "DAMAGED" {
		what = "cannot be read on that node"
	}
	c.logger.Error("cluster: replica check: a node's copy of "+copyOf(t)+" "+what+"; once the other nodes agree, take that node out (batpak cluster leave), wipe its data root and let it rejoin",
		"tenant", t, "node", node, "result", result, "from", d.From, "upto", d.Upto, "detail", detail)
}

// copyOf names what a copy of t holds, for the log.
func copyOf(t string) string {
	if t == httpapi.ControlStoreLabel {
		return "the control plane"
	}
	return "a tenant's events"
}

// clear lifts an alarm (logged).
func (c *replicaChecker) clear(t, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [2]string{t, node}
	if _, ok := c.alarms[k]; !ok {
		return
	}
	delete(c.alarms, k)
	c.logger.Info("cluster: replica check: a node's copy of "+copyOf(t)+" is the leader's again", "tenant", t, "node", node)
}

// ask fetches member p's digest of tenant t's events in [from, upto); why
// says why there is none, and busy whether the member should not be asked
// again this round (unreachable, unavailable: 503 NOT_CAUGHT_UP or BUSY,
// answering nonsense); any other refusal costs only this tenant.
func (c *replicaChecker) ask(ctx context.Context, p replicaPeer, https bool, t string, from, upto uint64) (d cluster.ReplicaDigest, why string, busy bool) {
	if why := httpapi.MemberURLProblem(p.url, https); why != "" {
		if p.url != "" {
			why += " (" + strconv.Quote(printable.Clip(p.url, 200)) + ")"
		}
		return d, why, true
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "upto": {strconv.FormatUint(upto, 10)}}
	path := "/v1/admin/tenants/" + url.PathEscape(t) + "/digest"
	if t == httpapi.ControlStoreLabel {
		path = "/v1/cluster/digest"
	}
	target := strings.TrimRight(p.url, "/") + path + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return d, err.Error(), true
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return d, "unreachable: " + printable.Clip(err.Error(), replicaCheckMaxText), true
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, replicaCheckMaxAnswer))
	if err != nil {
		return d, "reading its answer: " + printable.Clip(err.Error(), replicaCheckMaxText), true
	}
	if res.StatusCode == http.StatusNotFound && t == httpapi.ControlStoreLabel {
		return d, "this version of the node has no digest of the control plane (a rolling upgrade)", false
	}
	if res.StatusCode != http.StatusOK {
		// Only an unavailable member is not asked again this round; any
		// other refusal may be this tenant's alone.
		return d, printable.Clip(httpapi.MemberRefusal(res, body), replicaCheckMaxText), res.StatusCode == http.StatusServiceUnavailable
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, "its answer is not a digest: " + printable.Clip(err.Error(), replicaCheckMaxText), true
	}
	if d.From != from || d.Upto != upto {
		return d, fmt.Sprintf("it answered the range [%d, %d), not [%d, %d)", d.From, d.Upto, from, upto), true
	}
	return d, "", false
}

// status is the check's part of this node's cluster status.
func (c *replicaChecker) status() replicaCheckReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	rep := c.report
	rep.Every = "off"
	if c.every > 0 {
		rep.Every = c.every.String()
	}
	rep.NotComparedWhy = slices.Clone(rep.NotComparedWhy)
	rep.Diverged = make([]replicaAlarm, 0, len(c.alarms))
	for _, a := range c.alarms {
		rep.Diverged = append(rep.Diverged, a)
	}
	slices.SortFunc(rep.Diverged, func(a, b replicaAlarm) int {
		return strings.Compare(a.Tenant+"\x00"+a.Node, b.Tenant+"\x00"+b.Node)
	})
	return rep
}

// diverged is the number of copies in alarm (0 on a node that does not
// lead: what it found as leader is no longer news).
func (c *replicaChecker) diverged() int {
	if lead, _ := c.node.leading(); !lead {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.alarms)
}

var (
	replicaRoundsDesc = prometheus.NewDesc("batpak_cluster_replica_check_rounds_total",
		"Replica check rounds this node finished while leading.", nil, nil)
	replicaComparisonsDesc = prometheus.NewDesc("batpak_cluster_replica_comparisons_total",
		"Comparisons of a range of a member's copy of a tenant's events with the leader's, by result (same, different, damaged, not_compared).", []string{"result"}, nil)
	replicaDivergedDesc = prometheus.NewDesc("batpak_cluster_replicas_diverged",
		"Copies of a tenant's events (tenant, node) found different from the leader's or unreadable, until compared the same again (0 on a node that does not lead).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *replicaChecker) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaRoundsDesc
	ch <- replicaComparisonsDesc
	ch <- replicaDivergedDesc
}

// Collect implements prometheus.Collector.
func (c *replicaChecker) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(replicaRoundsDesc, prometheus.CounterValue, float64(c.roundsTotal.Load()))
	for i, name := range replicaResultNames {
		ch <- prometheus.MustNewConstMetric(replicaComparisonsDesc, prometheus.CounterValue, float64(c.results[i].Load()), name)
	}
	ch <- prometheus.MustNewConstMetric(replicaDivergedDesc, prometheus.GaugeValue, float64(c.diverged()))
}

// replicaSource is the server's cluster node as the checker sees it.
type replicaSource struct{ s *Server }

func (r replicaSource) leading() (bool, uint64) {
	return r.s.node.IsLeader(), r.s.node.n.Status().Term
}

func (r replicaSource) self() (string, bool) {
	return r.s.node.cfg.NodeID, r.s.cfg.TLSCert != "" || strings.HasPrefix(strings.ToLower(r.s.node.cfg.URL), "https:")
}

func (r replicaSource) nodeStatus() cluster.Status { return r.s.node.NodeStatus() }

func (r replicaSource) members() []httpapi.Member { return r.s.node.Members() }

func (r replicaSource) peers() []replicaPeer {
	var ps []replicaPeer
	for _, m := range r.s.node.n.Status().Servers {
		if m.ID == r.s.node.cfg.NodeID {
			continue
		}
		rec, _ := r.s.node.member(m.ID)
		ps = append(ps, replicaPeer{id: m.ID, url: rec.URL})
	}
	return ps
}

// tenants is every tenant, and the control plane's store
// (httpapi.ControlStoreLabel).
func (r replicaSource) tenants() []string {
	ids := []string{httpapi.ControlStoreLabel}
	for _, t := range r.s.plane.Tenants() {
		ids = append(ids, t.ID)
	}
	return ids
}

func (r replicaSource) mark(tenant string) cluster.StoreMark {
	if tenant == httpapi.ControlStoreLabel {
		tenant = cluster.SystemStore
	}
	return r.s.node.n.Mark(tenant)
}

func (r replicaSource) inspect(tenant string, fn func(*core.Store) error) error {
	if tenant == httpapi.ControlStoreLabel {
		return fn(r.s.node.sys) // open for the node's life
	}
	if _, ok := r.s.plane.Tenant(tenant); !ok {
		return cluster.ErrNoTenant // deleted since the round listed it
	}
	return r.s.node.n.Inspect(tenant, fn)
}
