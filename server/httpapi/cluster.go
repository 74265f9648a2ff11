package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
	"github.com/batpak-go/batpak/server/wire"
)

// Cluster is what the API needs of the replicated cluster this server is
// a node of (Options.Cluster; nil: a single server).
//
// On a cluster node, every request that changes state is served by the
// leader only: a follower answers 307 Temporary Redirect to the same path
// on the leader (Location, and a NOT_LEADER problem naming it), or 503
// NOT_LEADER with Retry-After while no leader is known; nothing is done
// on the follower. Reads are served by any node from what it has applied;
// min_seq=N waits (at most ReadWait) until the tenant's store holds
// sequence N — read-your-writes with the global_sequence of a receipt;
// a read that has to wait counts as one of the tenant's max_subscriptions
// meanwhile (429 QUOTA_EXCEEDED when they are all taken) —
// and consistency=linearizable is served by the leader after it confirms
// its leadership and has applied everything committed before. A
// follower that has not caught up with a leader lately (Current) serves no
// tenant request itself: it redirects them too (or answers 503
// NOT_LEADER while it knows no leader). A
// credential a follower does not know (it may not have applied the key's
// issue yet) is redirected to the leader too, which answers 401 if it is
// not valid; a request with no credential of a shape any node takes
// (none, another scheme, garbage) gets 401 from the follower itself. A
// well-formed key the follower does not know still goes to the leader, so
// the leader's address is no secret. Verify, a POST that changes nothing,
// is served by any node.
type Cluster interface {
	// IsLeader reports whether this node leads now.
	IsLeader() bool
	// Current reports whether this node's view of the control plane is
	// recent enough to judge a tenant's credential: it leads and has
	// applied everything earlier terms committed, or it held everything
	// a leader had committed a moment ago. A node cut off from
	// the others (a network partition, a restart the leader has not
	// replicated to yet) cannot learn of a revocation or a deletion, so
	// while it is not current its tenant requests go to the leader (307)
	// or are refused (503 NOT_LEADER).
	Current() bool
	// Leader is the leader's API base URL ("" while unknown) and node id.
	Leader() (url, id string)
	// Barrier returns once this node, as leader, has applied every entry
	// committed before the call; an error when it is not the leader.
	Barrier(ctx context.Context) error
	// WaitSequence returns once s (this node's store of tenant) holds
	// sequence seq, or ctx's error.
	WaitSequence(ctx context.Context, tenant string, s *core.Store, seq uint64) error
	// ReadWait bounds how long a read waits for min_seq.
	ReadWait() time.Duration
	// Status is the node's view of the cluster, as JSON (GET /v1/cluster),
	// with the members' health when health is not nil (?nodes=all).
	Status(health *cluster.Health) any
	// NodeStatus is this node's raft state.
	NodeStatus() cluster.Status
	// Removed reports whether this node was removed from the cluster
	// (cluster.Node.Removed): it then serves no tenant request (421
	// NOT_A_MEMBER), since it learns of no write, revocation or deletion.
	Removed() bool
	// AddNode makes node id, reached by raft at addr and by clients at
	// url, a voting member (leader only). Adding a member that is already
	// one, unchanged, does nothing.
	// A join that would replace a member (its id at another address, its
	// address under another id) is refused unless replace is set.
	// Unless force is set, a join after which the voters would have no
	// majority able to store new entries, the new node not counted, is
	// refused (cluster.ErrNoQuorum, 409; see cluster.Node.Join).
	AddNode(ctx context.Context, id, addr, url string, replace, force bool) error
	// RemoveNode removes member id (leader only); an id that is not a
	// member is an error (404), and so is removing the last voter (409).
	// Unless force is set, a removal that would leave the cluster without
	// a majority of reachable voters is refused (cluster.ErrNoQuorum,
	// 409; see cluster.Node.Leave).
	RemoveNode(ctx context.Context, id string, force bool) error
	// StoreBorn is the birth index of this node's store of tenant
	// (cluster.StoreMark.Born; 0 unknown): a digest answers it, so that a
	// replica check tells another incarnation of the tenant from a copy
	// that differs.
	StoreBorn(tenant string) uint64
	// ControlStore is this node's copy of the control plane's replicated
	// store (cluster.SystemStore), open for the node's life.
	ControlStore() *core.Store
	// Members is every member of the cluster now (its raft
	// configuration), this node among them, each with the API URL on
	// record.
	Members() []Member
	// MemberClient sends requests to other members' APIs: it verifies
	// their https certificates (cluster.api_ca and the system's roots)
	// and follows no redirect.
	MemberClient() *http.Client
	// ConfirmControl asks every other member of the cluster at once
	// whether its control plane has applied the control plane's store
	// below global sequence seq (GET /v1/cluster/applied?control=seq,
	// with the operator credential), each waiting until it has or ctx
	// ends. It returns the members that did not confirm, each with why
	// (nil when all did).
	ConfirmControl(ctx context.Context, seq uint64) map[string]string
}

// AccessChanged ends the event streams of credentials and tenants that
// lost access since they began (a key revoked, a tenant suspended or
// deleted): a cluster node calls it when it applies such a change made on
// another node.
func (a *API) AccessChanged() { a.accessChanged() }

// clusterStatus answers GET /v1/cluster.
func (a *API) clusterStatus(c *call) error {
	if a.opts.Cluster == nil {
		return errNotFound("this server is not a cluster node")
	}
	all, err := allNodes(c)
	if err == nil && a.opts.Cluster.Removed() {
		// Its members are no longer its own: no health is judged from them.
		all = false
	}
	if err != nil || !all {
		if err != nil {
			return err
		}
		return writeJSON(c.w, http.StatusOK, a.opts.Cluster.Status(nil))
	}
	health, err := a.clusterHealth(c)
	if err != nil {
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.opts.Cluster.Status(&health))
}

// clusterHealth asks every other member for its view of the cluster and
// judges them together. The operator's requests meanwhile share one
// gathering (all hold the operator's privileges: the members are asked
// with the first one's credential), so that consoles refreshing at once
// neither queue nor take more than one of the node's MaxMemberAsks.
func (a *API) clusterHealth(c *call) (cluster.Health, error) {
	v, err, _ := a.healthFlight.Do("", func() (any, error) {
		// This node's own view first: the members' answers come after
		// it, so they are compared with a leader's commit index no newer
		// than their own (a member is not reported behind by entries
		// committed while it was asked).
		self := a.opts.Cluster.NodeStatus()
		answers, g, err := a.askMembers(c, "/v1/cluster")
		if err != nil {
			return nil, err
		}
		defer g.release() // the parts are a few KiB: judged, not written
		byID := make(map[string]memberAnswer, len(answers))
		for _, ans := range answers {
			byID[ans.id] = ans
		}
		var views []cluster.MemberView
		for _, m := range a.opts.Cluster.Members() {
			if m.Self {
				views = append(views, cluster.MemberView{ID: m.ID, Voter: m.Voter, Status: &self})
				continue
			}
			views = append(views, memberView(m, byID[m.ID]))
		}
		return cluster.Assess(views), nil
	})
	if err != nil {
		return cluster.Health{}, err
	}
	return v.(cluster.Health), nil
}

// memberView is member m's view of the cluster, from its answer to
// GET /v1/cluster.
func memberView(m Member, ans memberAnswer) cluster.MemberView {
	switch {
	case ans.id != m.ID: // not asked: it joined while the others were
		return cluster.MemberView{ID: m.ID, Voter: m.Voter, Error: "it joined while the others were asked"}
	case ans.err != "":
		return cluster.MemberView{ID: m.ID, Voter: m.Voter, Error: ans.err}
	}
	return cluster.ReadView(m.ID, m.Voter, ans.body)
}

// clusterAddNode answers POST /v1/cluster/nodes[?force=true]: force
// skips the quorum guard (dangerous: see cluster.Node.ForceJoin).
func (a *API) clusterAddNode(c *call) error {
	if a.opts.Cluster == nil {
		return errNotFound("this server is not a cluster node")
	}
	force, err := forceParam(c)
	if err != nil {
		return err
	}
	var req struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		URL     string `json:"url"`
		Replace bool   `json:"replace"`
	}
	if err := a.decode(c, &req, false); err != nil {
		return err
	}
	if err := cluster.ValidNodeID(req.ID); err != nil {
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "id: " + err.Error(), p: wire.Problem{Field: "id"}}
	}
	if err := cluster.ValidAddress(req.Address); err != nil || len(req.Address) > 256 {
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "address: the node's raft host:port, at most 256 bytes", p: wire.Problem{Field: "address"}}
	}
	if req.URL != "" {
		u, err := url.Parse(req.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || len(req.URL) > 512 {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "url: the node's API base URL, http(s)://host:port", p: wire.Problem{Field: "url"}}
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
			// Followers name it in their redirects: a client would send
			// its request, credential and all, to its own machine.
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "url: " + req.URL + " names a wildcard address, not one clients can reach the node at", p: wire.Problem{Field: "url"}}
		}
	}
	if err := a.opts.Cluster.AddNode(c.r.Context(), req.ID, req.Address, req.URL, req.Replace, force); err != nil {
		if errors.Is(err, cluster.ErrUnreachable) {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: "address: " + err.Error(), p: wire.Problem{Field: "address"}}
		}
		return err
	}
	return writeJSON(c.w, http.StatusOK, a.opts.Cluster.Status(nil))
}

// forceParam is a membership change's force query parameter: "",
// "false" or "true".
func forceParam(c *call) (bool, error) {
	switch v := c.r.URL.Query().Get("force"); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, errInvalid("force", "force must be true or false, got "+strconv.Quote(clip(v)))
	}
}

// clusterRemoveNode answers DELETE /v1/cluster/nodes/{id}[?force=true]:
// force skips the quorum guard (dangerous: see cluster.Node.ForceLeave).
func (a *API) clusterRemoveNode(c *call) error {
	if a.opts.Cluster == nil {
		return errNotFound("this server is not a cluster node")
	}
	force, err := forceParam(c)
	if err != nil {
		return err
	}
	if err := a.opts.Cluster.RemoveNode(c.r.Context(), c.r.PathValue("id"), force); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// errAnswered: the response was written already (a redirect).
var errAnswered = errors.New("answered")

// clusterPlace sends a call this node must not serve to the leader,
// before authenticating it (the leader authenticates: a follower may not
// have applied a key issued a moment ago): state changes, linearizable
// reads, and routes the leader serves (Route.leader: hosted workers).
func (a *API) clusterPlace(c *call) error {
	cl := a.opts.Cluster
	if cl == nil || c.route.Access == Public || c.route.Access == Metrics {
		return nil
	}
	linear := false
	switch v := c.r.URL.Query().Get("consistency"); v {
	case "", "local":
	case "linearizable":
		linear = true
	default:
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: fmt.Sprintf("consistency=%q: want local or linearizable", v), p: wire.Problem{Field: "consistency"}}
	}
	if err := a.planeStopped(); err != nil {
		return err // not NOT_LEADER: a leader whose plane stopped never becomes ready to lead
	}
	if c.route.Access == Tenant && !cl.IsLeader() && cl.Removed() {
		return errRemoved()
	}
	write := c.r.Method != http.MethodGet && c.r.Method != http.MethodHead && !c.route.reads
	if (write || linear || c.route.leader) && !cl.IsLeader() {
		return a.toLeaderWithCredential(c)
	}
	if c.route.Access == Tenant && !cl.IsLeader() && !cl.Current() {
		// It may still hold a key revoked, or a tenant deleted, since
		// it last heard from a leader: the leader judges instead.
		return a.toLeaderWithCredential(c)
	}
	return nil
}

// toLeaderWithCredential sends c to the leader, unless it carries no
// credential of a shape any node takes (none, another scheme, garbage):
// that is refused here as the leader would refuse it (401), without
// naming the leader to a caller that presented no credential. The
// redirect is charged as any request this node answers (chargeCaller):
// to the credential's tenant, or to the request's source for a
// credential this node does not know (the leader may: a key issued a
// moment ago) or a JWT naming a tenant it does not hold.
func (a *API) toLeaderWithCredential(c *call) error {
	if !a.opts.Auth.Plausible(c.r) {
		if err := a.admit(c); err != nil {
			return err
		}
	}
	p, err := a.opts.Auth.Authenticate(c.r)
	if ex := a.chargeCaller(c, p, err); ex != nil {
		return ex
	}
	return a.toLeader(c)
}

// clusterUnknownCredential: a follower that does not know a credential
// may not have applied its issue yet (a node restarted, rejoined or
// behind): instead of 401 it sends the call to the leader, which knows
// every key it acknowledged (or answers 503 NOT_LEADER while no leader is
// known). Other errors, every error on the leader, and a credential of no
// shape any node takes (Authenticator.Plausible) pass unchanged.
func (a *API) clusterUnknownCredential(c *call, err error) error {
	if a.opts.Cluster == nil || err != errUnauthenticated || a.opts.Cluster.IsLeader() || !a.opts.Auth.Plausible(c.r) {
		return err
	}
	return a.toLeader(c)
}

// clusterRead makes an authorized read see what it asked for: everything
// committed before it (consistency=linearizable, on the leader), or the
// tenant's sequence min_seq.
func (a *API) clusterRead(c *call) error {
	cl := a.opts.Cluster
	if cl == nil || c.route.Access == Public || c.route.Access == Metrics {
		return nil
	}
	q := c.r.URL.Query()
	if q.Get("consistency") == "linearizable" {
		if err := cl.Barrier(c.r.Context()); err != nil {
			if errors.Is(err, cluster.ErrNotLeader) {
				return a.toLeader(c)
			}
			return err
		}
	}
	if v := q.Get("min_seq"); v != "" && c.route.Access == Tenant {
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: fmt.Sprintf("min_seq=%q: want a global sequence (a receipt's global_sequence)", v), p: wire.Problem{Field: "min_seq"}}
		}
		s, err := c.store()
		if err != nil {
			return err
		}
		return a.clusterWaitSequence(c, s, seq)
	}
	return nil
}

// clusterWaitSequence waits (at most ReadWait) until s, this node's store
// of the call's tenant, holds sequence seq: 503 NOT_CAUGHT_UP otherwise.
// A call that has to wait holds its connection like a stream: it takes
// one of the tenant's max_subscriptions while it waits, so one tenant
// cannot hold the server's connections with reads of a sequence not
// written yet.
func (a *API) clusterWaitSequence(c *call, s *core.Store, seq uint64) error {
	cl := a.opts.Cluster
	if s.Usage().GlobalSequence <= seq {
		release, ex := a.quotaOf(c).AcquireSubscription()
		if ex != nil {
			return ex
		}
		defer release()
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), cl.ReadWait())
	defer cancel()
	if err := cl.WaitSequence(ctx, c.tenant, s, seq); err != nil {
		if c.r.Context().Err() != nil {
			return err
		}
		return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
			detail: fmt.Sprintf("this node has not applied sequence %d within %s; retry, or read with consistency=linearizable", seq, cl.ReadWait())}
	}
	return nil
}

// errRemoved answers a tenant request on a node removed from the
// cluster: not to be retried here (421, no Retry-After).
func errRemoved() *apiError {
	return &apiError{status: http.StatusMisdirectedRequest, code: wire.CodeNotAMember,
		detail: "this node was removed from the cluster: it serves no tenant request; send requests to a member (GET /v1/cluster on this node lists the members it last knew), or join this node again with an empty data directory"}
}

// toLeader answers a call this node must not serve: a redirect to the
// leader, or 503 while none is known.
func (a *API) toLeader(c *call) error {
	leader, id := a.opts.Cluster.Leader()
	if leader == "" {
		return &apiError{status: 503, code: wire.CodeNotLeader, retryAfter: time.Second, p: wire.Problem{LeaderID: id},
			detail: "this cluster node does not lead and knows no leader: an election is under way, or this node cannot reach a majority of the cluster (cut off, or too many members down); nothing was done; retry"}
	}
	u, err := url.Parse(leader)
	if err != nil {
		return fmt.Errorf("cluster: leader URL %q: %w", leader, err)
	}
	// The path keeps its escapes (an entity "a/b" is sent as a%2Fb): the
	// leader must see the same route. Only the leader's own URL and this
	// request's path and query make it: nothing else of the request.
	loc := *c.r.URL
	loc.Scheme, loc.Host, loc.User, loc.Fragment = u.Scheme, u.Host, nil, ""
	loc.Path = u.Path + c.r.URL.Path
	loc.RawPath = u.EscapedPath() + c.r.URL.EscapedPath()
	e := &apiError{status: http.StatusTemporaryRedirect, code: wire.CodeNotLeader,
		detail: "this cluster node does not lead; send the request to the leader", p: wire.Problem{Leader: leader, LeaderID: id}}
	c.w.Header().Set("Location", loc.String())
	writeProblem(c.w, c.info.id, e)
	return errAnswered
}

// clusterProblem maps the errors of a write that reached raft.
func clusterProblem(a *API, err error) *apiError {
	var nl *cluster.NotLeaderError
	switch {
	case errors.As(err, &nl):
		leader, id := "", nl.LeaderID
		if a.opts.Cluster != nil {
			leader, id = a.opts.Cluster.Leader()
		}
		return &apiError{status: 503, code: wire.CodeNotLeader, retryAfter: time.Second, p: wire.Problem{Leader: leader, LeaderID: id},
			detail: "leadership moved before the write was proposed: nothing was written; send it to the leader"}
	case errors.Is(err, cluster.ErrNoQuorum):
		return &apiError{status: 409, code: wire.CodeConflict,
			detail: strings.TrimPrefix(err.Error(), "cluster: ") + ". Nothing was changed. ?force=true (batpak cluster leave --force, batpak cluster join --force) makes the change all the same: dangerous, the cluster then takes no write until enough of those members can store it, and is lost if they never can"}
	case errors.Is(err, cluster.ErrMembershipUnknown):
		return &apiError{status: 503, code: wire.CodeOutcomeUnknown, retryAfter: time.Second,
			detail: "the membership change was proposed, then this node lost leadership before learning its outcome, or it did not commit in time: it may or may not take effect; check the members (GET /v1/cluster, batpak cluster status) once a leader is elected (" + strings.TrimPrefix(err.Error(), "cluster: ") + ")"}
	case errors.Is(err, cluster.ErrMembershipChanging):
		return &apiError{status: 503, code: wire.CodeBusy, retryAfter: time.Second, detail: strings.TrimPrefix(err.Error(), "cluster: ")}
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return &apiError{status: 503, code: wire.CodeOutcomeUnknown, retryAfter: time.Second,
			detail: "the write was proposed, then this node lost leadership before learning its outcome: it may or may not be written; retry with the same Idempotency-Key"}
	case errors.Is(err, cluster.ErrHalted), errors.Is(err, cluster.ErrClosed), errors.Is(err, cluster.ErrTooLarge):
		if errors.Is(err, cluster.ErrTooLarge) {
			return &apiError{status: 413, code: wire.CodePayloadTooLarge, detail: err.Error()}
		}
		return &apiError{status: 503, code: wire.CodeBusy, retryAfter: time.Second, detail: "this cluster node is not applying writes; retry on another"}
	case errors.Is(err, core.ErrReplicated):
		return &apiError{status: 501, code: wire.CodeNotImplemented, detail: err.Error()}
	}
	return nil
}
