package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/httpapi"
)

// DefaultHealthCheckEvery is ClusterConfig.HealthCheckEvery's default.
const DefaultHealthCheckEvery = 10 * time.Second

// healthAnswerMax bounds a member's answer to GET /v1/cluster as the
// watch reads it (a few KiB for a handful of members).
const healthAnswerMax = 1 << 20

// clusterHealthWatch is the leader's watch over the members' health:
// every ClusterConfig.HealthCheckEvery it asks each other member for its
// own view of the cluster (GET /v1/cluster, with the operator credential,
// at most httpapi.MemberAskTimeout) and judges them together with
// cluster.Assess, as GET /v1/cluster?nodes=all does on request. A member
// that turns unhealthy is logged as a warning with its problems, and again
// when they change; one healthy again, as information. The last judgement
// is in /metrics while the node leads (batpak_cluster_member_healthy,
// batpak_cluster_member_lag_entries, batpak_cluster_healthy_voters,
// batpak_cluster_failure_tolerance); a follower exports none of them, so
// an alert on them follows the leader. Like the replica check, it sends
// the credential only to members' recorded API URLs, never over plain
// http from an https node, and follows no redirect; without an operator
// credential in the configuration (one generated at the first start is
// kept as a hash only) it is off.
type clusterHealthWatch struct {
	src    healthSource
	logger *slog.Logger
	every  time.Duration // <= 0: off
	client *http.Client
	token  string

	stop    chan struct{}
	done    chan struct{}
	started atomic.Bool
	rounds  atomic.Uint64

	mu   sync.Mutex
	last *cluster.Health // the last judgement while leading; nil: none

	unhealthy map[string]string // owned by run: member → the problems last logged
}

// healthSource is the server's cluster node as the watch sees it.
type healthSource interface {
	leading() (bool, uint64)
	self() (id string, https bool)
	nodeStatus() cluster.Status
	members() []httpapi.Member
}

func newClusterHealthWatch(src healthSource, logger *slog.Logger, every time.Duration, token string, members *tls.Config) *clusterHealthWatch {
	return &clusterHealthWatch{src: src, logger: logger, every: every, token: token,
		client: &http.Client{
			Transport: &http.Transport{Proxy: nil, TLSClientConfig: members.Clone(), MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute,
				ResponseHeaderTimeout: httpapi.MemberAskTimeout, MaxResponseHeaderBytes: 64 << 10},
			Timeout:       httpapi.MemberAskTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		stop: make(chan struct{}), done: make(chan struct{}), unhealthy: map[string]string{}}
}

// start runs the watch in the background (once).
func (w *clusterHealthWatch) start() {
	if w.started.CompareAndSwap(false, true) {
		go w.run()
	}
}

// run judges the members every w.every while the node leads, until close.
func (w *clusterHealthWatch) run() {
	defer close(w.done)
	if w.every <= 0 {
		return
	}
	if w.token == "" {
		w.logger.Info("cluster: the leader's watch over the members' health is off: it asks them with the operator credential, and none is configured (server.operator_token, BATPAK_OPERATOR_TOKEN)")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-w.stop
		cancel()
	}()
	t := time.NewTimer(w.every)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.round(ctx)
		t.Reset(w.every)
	}
}

// close stops run (waiting for a round under way to see the stop); once.
func (w *clusterHealthWatch) close() {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	if w.started.Load() {
		<-w.done
	}
}

// round judges the members once if this node leads; a node that does not
// lead forgets its last judgement.
func (w *clusterHealthWatch) round(ctx context.Context) {
	if lead, _ := w.src.leading(); !lead {
		w.mu.Lock()
		w.last = nil
		w.mu.Unlock()
		clear(w.unhealthy)
		return
	}
	self := w.src.nodeStatus()
	_, https := w.src.self()
	ms := w.src.members()
	views := make([]cluster.MemberView, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		if m.Self {
			views[i] = cluster.MemberView{ID: m.ID, Voter: m.Voter, Status: &self}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			views[i] = w.ask(ctx, m, https)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // closing: not a judgement
	}
	h := cluster.Assess(views)
	w.report(h)
	w.mu.Lock()
	w.last = &h
	w.mu.Unlock()
	w.rounds.Add(1)
}

// report logs the members whose health changed since the last round.
func (w *clusterHealthWatch) report(h cluster.Health) {
	seen := map[string]bool{}
	for _, n := range h.Nodes {
		seen[n.ID] = true
		was, wasBad := w.unhealthy[n.ID]
		if n.Healthy {
			if wasBad {
				w.logger.Info("cluster: member is healthy again", "node", n.ID, "failure_tolerance", h.FailureTolerance)
				delete(w.unhealthy, n.ID)
			}
			continue
		}
		problems := strings.Join(n.Problems, "; ")
		if problems != was || !wasBad {
			w.logger.Warn("cluster: member is unhealthy", "node", n.ID, "problems", problems, "failure_tolerance", h.FailureTolerance)
			w.unhealthy[n.ID] = problems
		}
	}
	for id := range w.unhealthy {
		if !seen[id] { // no longer a member
			delete(w.unhealthy, id)
		}
	}
}

// ask is member m's own view of the cluster, or why there is none.
func (w *clusterHealthWatch) ask(ctx context.Context, m httpapi.Member, https bool) cluster.MemberView {
	v := cluster.MemberView{ID: m.ID, Voter: m.Voter}
	if why := httpapi.MemberURLProblem(m.URL, https); why != "" {
		v.Error = why
		return v
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(m.URL, "/")+"/v1/cluster", nil)
	if err != nil {
		v.Error = printable.Clip(err.Error(), 300)
		return v
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", httpapi.HealthWatchAgent)
	res, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		v.Error = "unreachable: " + printable.Clip(err.Error(), 300)
		return v
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, healthAnswerMax+1))
	switch {
	case err != nil:
		v.Error = "reading its answer: " + printable.Clip(err.Error(), 300)
	case len(body) > healthAnswerMax:
		v.Error = "its answer is larger than 1 MiB"
	case res.StatusCode != http.StatusOK:
		v.Error = printable.Clip(httpapi.MemberRefusal(res, body), 300)
	}
	if v.Error != "" {
		return v
	}
	return cluster.ReadView(m.ID, m.Voter, body)
}

// judgement is the last judgement, nil unless this node leads now.
func (w *clusterHealthWatch) judgement() *cluster.Health {
	if lead, _ := w.src.leading(); !lead {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

var (
	healthRoundsDesc = prometheus.NewDesc("batpak_cluster_health_checks_total",
		"Judgements of every member's health this node made while leading (cluster.health_check_every).", nil, nil)
	memberHealthyDesc = prometheus.NewDesc("batpak_cluster_member_healthy",
		"1 when the member was healthy at the leader's last judgement: it answered, is not halted, follows the leader in its term, heard from it within 2 s, has caught up since it started and trails its commit index by at most 256 entries (the leader only).", []string{"node"}, nil)
	memberLagDesc = prometheus.NewDesc("batpak_cluster_member_lag_entries",
		"Entries the leader had committed that the member had not applied, at the leader's last judgement (the leader only; absent for a member that did not answer).", []string{"node"}, nil)
	healthyVotersDesc = prometheus.NewDesc("batpak_cluster_healthy_voters",
		"Voting members healthy at the leader's last judgement (the leader only).", nil, nil)
	failureToleranceDesc = prometheus.NewDesc("batpak_cluster_failure_tolerance",
		"Healthy voters beyond a quorum at the leader's last judgement: how many more may fail with writes still committing; negative: none commit (the leader only).", nil, nil)
)

// Describe implements prometheus.Collector.
func (w *clusterHealthWatch) Describe(ch chan<- *prometheus.Desc) {
	ch <- healthRoundsDesc
	ch <- memberHealthyDesc
	ch <- memberLagDesc
	ch <- healthyVotersDesc
	ch <- failureToleranceDesc
}

// Collect implements prometheus.Collector.
func (w *clusterHealthWatch) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(healthRoundsDesc, prometheus.CounterValue, float64(w.rounds.Load()))
	h := w.judgement()
	if h == nil {
		return
	}
	for _, n := range h.Nodes {
		healthy := 0.0
		if n.Healthy {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(memberHealthyDesc, prometheus.GaugeValue, healthy, n.ID)
		if n.Reachable {
			ch <- prometheus.MustNewConstMetric(memberLagDesc, prometheus.GaugeValue, float64(n.Lag), n.ID)
		}
	}
	ch <- prometheus.MustNewConstMetric(healthyVotersDesc, prometheus.GaugeValue, float64(h.HealthyVoters))
	ch <- prometheus.MustNewConstMetric(failureToleranceDesc, prometheus.GaugeValue, float64(h.FailureTolerance))
}
