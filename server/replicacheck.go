package server

import (
	"context"
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
	"github.com/batpak-go/batpak/server/cluster"
)

// DefaultReplicaCheckEvery is ClusterConfig.ReplicaCheckEvery's default.
const DefaultReplicaCheckEvery = 10 * time.Minute

// replicaCheckFullEvery: every this many rounds (and in the first after
// the node starts to lead) the check covers every event again, not only
// those appended since the last round, so a copy damaged on disk after it
// was checked is found too.
const replicaCheckFullEvery = 6

// replicaCheckRequestTimeout bounds one member's answer to a digest (it
// may wait cluster.read_wait for the events, then reads them).
const replicaCheckRequestTimeout = 2 * time.Minute

// replicaCheckMaxAnswer bounds the bytes read of a member's answer.
const replicaCheckMaxAnswer = 64 << 10

// replicaNode is what the replica checker needs of its cluster node; the
// server's clusterNode is one (replicaSource), a test's stand-in another.
type replicaNode interface {
	// leading reports whether this node leads (ready to serve as leader),
	// and in which term.
	leading() (bool, uint64)
	// self is this node's id and API URL.
	self() (id, url string)
	// peers is every other member: id and API URL ("" when unknown).
	peers() []replicaPeer
	// tenants is every live tenant's id.
	tenants() []string
	// store opens a tenant's store on this node; release gives it back.
	store(tenant string) (s *core.Store, release func(), err error)
}

// replicaPeer is a member the checker asks.
type replicaPeer struct{ id, url string }

// replicaChecker is the leader's automatic replica check: every
// ClusterConfig.ReplicaCheckEvery it computes, for each tenant, the digest
// of its own copy of the events (cluster.Digest) and asks every other
// member for the digest of the same range (GET
// /v1/admin/tenants/{t}/digest?from=&upto=, with the operator credential),
// the comparison `batpak cluster check` makes by hand. A member whose copy
// differs, or that cannot read its copy (a damaged segment, a broken
// chain), is an alarm: logged as an error when found, kept in the cluster
// status (GET /v1/cluster: replica_check.diverged) and counted in
// batpak_cluster_replicas_diverged until a later comparison from the
// first event finds the copy the same (the node restored or replaced). A
// damaged copy on the leader itself is one too.
//
// A round covers, per member, the events appended since the last
// comparison that found its copy the same; every replicaCheckFullEvery
// rounds, the first after the node starts to lead, and for a pair in
// alarm, every event. A member that does not answer (stopped, not caught
// up within its read_wait, busy with another digest) is not compared this
// round: no alarm, and the next round covers its range again. The check
// asks one member at a time and computes one digest at a time; it sends
// the credential only to members' recorded API URLs, never follows a
// redirect, and never sends it over plain http when this node's URL is
// https.
type replicaChecker struct {
	node   replicaNode
	logger *slog.Logger
	every  time.Duration // <= 0: off
	client *http.Client
	token  string

	stop chan struct{}
	done chan struct{}

	// Owned by run.
	term     uint64
	rounds   uint64
	verified map[string]map[string]uint64 // tenant → member → upto found the same

	mu     sync.Mutex
	report replicaCheckReport
	alarms map[[2]string]replicaAlarm // (tenant, node) → alarm

	roundsTotal atomic.Uint64
	results     [4]atomic.Uint64 // by replicaResult
	diverged    atomic.Int64
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
	// LastRound and LastFull are when the last round, and the last one
	// that covered every event, finished (absent before the first).
	LastRound *time.Time `json:"last_round,omitempty"`
	LastFull  *time.Time `json:"last_full,omitempty"`
	// Copies is the members' copies of the tenants' events at the last
	// round (tenants × other members); Agreeing how many of them the
	// latest comparison found the same as the leader's (an empty tenant's
	// agree).
	Copies   int `json:"copies"`
	Agreeing int `json:"agreeing"`
	// Compared and NotCompared count the (tenant, member) pairs of the
	// last round: compared (whatever the outcome), or not (the member did
	// not answer; NotComparedWhy says why, for the first few). A pair
	// with nothing appended since its last comparison is neither.
	Compared       int      `json:"compared"`
	NotCompared    int      `json:"not_compared"`
	NotComparedWhy []string `json:"not_compared_why,omitempty"`
	// Diverged is every pair in alarm.
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

func newReplicaChecker(node replicaNode, logger *slog.Logger, every time.Duration, token string) *replicaChecker {
	return &replicaChecker{node: node, logger: logger, every: every, token: token,
		client: &http.Client{
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: replicaCheckRequestTimeout,
				MaxIdleConnsPerHost:   1,
				IdleConnTimeout:       time.Minute,
			},
			Timeout: replicaCheckRequestTimeout,
			// A digest is never redirected: a redirect is not a
			// member's answer, and the credential stays where it was sent.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		stop: make(chan struct{}), done: make(chan struct{}),
		verified: map[string]map[string]uint64{}, alarms: map[[2]string]replicaAlarm{}}
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
	<-c.done
}

// round runs one check if this node leads; a node that does not lead
// forgets what it found (the next leader's rounds are the news).
func (c *replicaChecker) round(ctx context.Context) {
	lead, term := c.node.leading()
	if !lead {
		if c.term != 0 || c.rounds != 0 {
			c.term, c.rounds, c.verified = 0, 0, map[string]map[string]uint64{}
			c.mu.Lock()
			c.report, c.alarms = replicaCheckReport{}, map[[2]string]replicaAlarm{}
			c.mu.Unlock()
			c.diverged.Store(0)
		}
		return
	}
	if term != c.term {
		c.term, c.rounds, c.verified = term, 0, map[string]map[string]uint64{}
	}
	full := c.rounds%replicaCheckFullEvery == 0
	c.rounds++
	selfID, selfURL := c.node.self()
	peers := c.node.peers()
	tenants := c.node.tenants()
	slices.Sort(tenants)
	c.forgetGone(tenants, selfID, peers)
	rep := replicaCheckReport{}
	for _, t := range tenants {
		if ctx.Err() != nil {
			return
		}
		c.checkTenant(ctx, t, full, selfID, selfURL, peers, &rep)
		rep.Copies += len(peers)
		for _, p := range peers {
			if _, ok := c.verified[t][p.id]; ok && !c.alarmed(t, p.id) {
				rep.Agreeing++
			}
		}
	}
	if lead, term := c.node.leading(); !lead || term != c.term {
		return // what it found may be a deposed leader's view
	}
	now := time.Now()
	c.roundsTotal.Add(1)
	c.mu.Lock()
	rep.LastRound = &now
	rep.LastFull = c.report.LastFull
	if full {
		rep.LastFull = &now
	}
	c.report = rep
	c.mu.Unlock()
}

// forgetGone drops the state of tenants deleted and members removed.
func (c *replicaChecker) forgetGone(tenants []string, selfID string, peers []replicaPeer) {
	live := map[string]bool{selfID: true}
	for _, p := range peers {
		live[p.id] = true
	}
	for t, ms := range c.verified {
		if !slices.Contains(tenants, t) {
			delete(c.verified, t)
			continue
		}
		for m := range ms {
			if !live[m] {
				delete(ms, m)
			}
		}
	}
	c.mu.Lock()
	for k := range c.alarms {
		if !slices.Contains(tenants, k[0]) || !live[k[1]] {
			delete(c.alarms, k)
		}
	}
	c.diverged.Store(int64(len(c.alarms)))
	c.mu.Unlock()
}

// checkTenant compares every member's copy of tenant t with this node's.
func (c *replicaChecker) checkTenant(ctx context.Context, t string, full bool, selfID, selfURL string, peers []replicaPeer, rep *replicaCheckReport) {
	notCompared := func(p replicaPeer, why string) {
		c.results[replicaNotCompared].Add(1)
		rep.NotCompared++
		if len(rep.NotComparedWhy) < 8 {
			rep.NotComparedWhy = append(rep.NotComparedWhy, t+" on "+p.id+": "+why)
		}
	}
	s, release, err := c.node.store(t)
	if err != nil {
		for _, p := range peers {
			notCompared(p, "this node could not open its copy: "+err.Error())
		}
		return
	}
	upto := s.Usage().GlobalSequence
	if c.verified[t] == nil {
		c.verified[t] = map[string]uint64{}
	}
	// Each member's range starts where its last same comparison ended:
	// from the first event in a full round, for a pair in alarm, and
	// while the leader's own copy is in alarm.
	tfull := full || c.alarmed(t, selfID)
	from := map[string]uint64{}
	for _, p := range peers {
		f, ok := c.verified[t][p.id]
		if tfull || !ok || f > upto || c.alarmed(t, p.id) {
			f = 0
		}
		from[p.id] = f
	}
	own := map[uint64]cluster.ReplicaDigest{}
	var ownErr error
	for _, p := range peers {
		f := from[p.id]
		if _, done := own[f]; done || f == upto {
			continue
		}
		d, err := cluster.Digest(ctx, s, f, upto)
		if err != nil {
			ownErr = err
			break
		}
		own[f] = d
	}
	release()
	if ownErr != nil {
		for _, p := range peers {
			notCompared(p, "this node's digest failed: "+ownErr.Error())
		}
		return
	}
	leaderDamaged := false
	for _, d := range own {
		if d.Damaged != "" {
			leaderDamaged = true
			c.raise(t, selfID, "DAMAGED", d)
			break
		}
	}
	if _, whole := own[0]; whole && !leaderDamaged {
		c.clear(t, selfID) // it read every event
	}
	for _, p := range peers {
		if ctx.Err() != nil {
			return
		}
		f := from[p.id]
		if f == upto {
			if upto == 0 {
				c.verified[t][p.id] = 0 // no events: nothing to differ
			}
			continue // nothing appended since its last comparison
		}
		if leaderDamaged {
			notCompared(p, "this node cannot read its own copy")
			continue
		}
		ref := own[f]
		got, why := c.ask(ctx, p, selfURL, t, f, upto)
		if why != "" {
			notCompared(p, why)
			continue
		}
		rep.Compared++
		switch {
		case got.Damaged != "":
			c.results[replicaDamaged].Add(1)
			c.raise(t, p.id, "DAMAGED", got)
			delete(c.verified[t], p.id)
		case got.Digest != ref.Digest || got.Events != ref.Events:
			c.results[replicaDifferent].Add(1)
			c.raise(t, p.id, "DIFFERENT", got)
			delete(c.verified[t], p.id)
		default:
			c.results[replicaSame].Add(1)
			c.verified[t][p.id] = upto
			if f == 0 {
				c.clear(t, p.id)
			}
		}
	}
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
	a := replicaAlarm{Tenant: t, Node: node, Result: result, From: d.From, Upto: d.Upto, Detail: d.Damaged, Since: time.Now()}
	c.alarms[k] = a
	c.diverged.Store(int64(len(c.alarms)))
	what := "differs from the leader's"
	if result == "DAMAGED" {
		what = "cannot be read on that node"
	}
	c.logger.Error("cluster: replica check: a node's copy of a tenant's events "+what+"; once the other nodes agree, take that node out (batpak cluster leave), wipe its data root and let it rejoin",
		"tenant", t, "node", node, "result", result, "from", d.From, "upto", d.Upto, "detail", d.Damaged)
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
	c.diverged.Store(int64(len(c.alarms)))
	c.logger.Info("cluster: replica check: a node's copy of a tenant's events is the leader's again", "tenant", t, "node", node)
}

// ask fetches member p's digest of tenant t's events in [from, upto); why
// says why there is none.
func (c *replicaChecker) ask(ctx context.Context, p replicaPeer, selfURL, t string, from, upto uint64) (d cluster.ReplicaDigest, why string) {
	u, err := url.Parse(p.url)
	switch {
	case p.url == "":
		return d, "its API URL is not recorded"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return d, "its recorded API URL " + strconv.Quote(p.url) + " is not an http(s) URL"
	case u.Scheme == "http" && strings.HasPrefix(strings.ToLower(selfURL), "https:"):
		return d, "its API URL is plain http and this node's is https: the operator credential is not sent in clear"
	}
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "upto": {strconv.FormatUint(upto, 10)}}
	target := strings.TrimRight(p.url, "/") + "/v1/admin/tenants/" + url.PathEscape(t) + "/digest?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
	if err != nil {
		return d, err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return d, "unreachable: " + err.Error()
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, replicaCheckMaxAnswer))
	if err != nil {
		return d, "reading its answer: " + err.Error()
	}
	if res.StatusCode != http.StatusOK {
		var pr struct{ Code, Detail string }
		if json.Unmarshal(body, &pr) == nil && pr.Code != "" {
			return d, fmt.Sprintf("%d %s: %s", res.StatusCode, pr.Code, pr.Detail)
		}
		return d, res.Status
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return d, "its answer is not a digest: " + err.Error()
	}
	if d.From != from || d.Upto != upto {
		return d, fmt.Sprintf("it answered the range [%d, %d), not [%d, %d)", d.From, d.Upto, from, upto)
	}
	return d, ""
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

var (
	replicaRoundsDesc = prometheus.NewDesc("batpak_cluster_replica_check_rounds_total",
		"Replica check rounds this node finished while leading.", nil, nil)
	replicaComparisonsDesc = prometheus.NewDesc("batpak_cluster_replica_comparisons_total",
		"Comparisons of a member's copy of a tenant's events with the leader's, by result (same, different, damaged, not_compared).", []string{"result"}, nil)
	replicaDivergedDesc = prometheus.NewDesc("batpak_cluster_replicas_diverged",
		"Copies of a tenant's events (tenant, node) the last comparison found different from the leader's or unreadable (0 on a node that does not lead).", nil, nil)
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
	ch <- prometheus.MustNewConstMetric(replicaDivergedDesc, prometheus.GaugeValue, float64(c.diverged.Load()))
}

// replicaSource is the server's cluster node as the checker sees it.
type replicaSource struct{ s *Server }

func (r replicaSource) leading() (bool, uint64) {
	return r.s.node.IsLeader(), r.s.node.n.Status().Term
}

func (r replicaSource) self() (string, string) { return r.s.node.cfg.NodeID, r.s.node.url }

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

func (r replicaSource) tenants() []string {
	var ids []string
	for _, t := range r.s.plane.Tenants() {
		ids = append(ids, t.ID)
	}
	return ids
}

func (r replicaSource) store(tenant string) (*core.Store, func(), error) {
	st, err := r.s.node.n.Store(tenant)
	if err != nil {
		return nil, nil, err
	}
	return st, func() { r.s.node.n.ReleaseStore(st) }, nil
}
