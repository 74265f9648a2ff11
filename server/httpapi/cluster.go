package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
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
// sequence N — read-your-writes with the global_sequence of a receipt —
// and consistency=linearizable is served by the leader after it confirms
// its leadership and has applied everything committed before.
type Cluster interface {
	// IsLeader reports whether this node leads now.
	IsLeader() bool
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
}

// errAnswered: the response was written already (a redirect).
var errAnswered = errors.New("answered")

// clusterRoute places a call on a cluster node: state changes go to the
// leader, reads wait for what they asked to see.
func (a *API) clusterRoute(c *call) error {
	cl := a.opts.Cluster
	if cl == nil || c.route.Access == Public || c.route.Access == Metrics {
		return nil
	}
	if c.route.local {
		return &apiError{status: 501, code: wire.CodeNotImplemented,
			detail: "this route changes state a cluster does not replicate yet (tenant policy bundles, plugins and hosted workers); use a single server for it"}
	}
	q := c.r.URL.Query()
	linear := false
	switch v := q.Get("consistency"); v {
	case "", "local":
	case "linearizable":
		linear = true
	default:
		return &apiError{status: 400, code: wire.CodeInvalidRequest, detail: fmt.Sprintf("consistency=%q: want local or linearizable", v), p: wire.Problem{Field: "consistency"}}
	}
	write := c.r.Method != http.MethodGet && c.r.Method != http.MethodHead
	if write || linear {
		if !cl.IsLeader() {
			return a.toLeader(c)
		}
		if linear {
			if err := cl.Barrier(c.r.Context()); err != nil {
				if errors.Is(err, cluster.ErrNotLeader) {
					return a.toLeader(c)
				}
				return err
			}
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
		ctx, cancel := context.WithTimeout(c.r.Context(), cl.ReadWait())
		defer cancel()
		if err := cl.WaitSequence(ctx, c.tenant, s, seq); err != nil {
			if c.r.Context().Err() != nil {
				return err
			}
			return &apiError{status: 503, code: wire.CodeNotCaughtUp, retryAfter: time.Second,
				detail: fmt.Sprintf("this node has not applied sequence %d within %s; retry, or read with consistency=linearizable", seq, cl.ReadWait())}
		}
	}
	return nil
}

// toLeader answers a call this node must not serve: a redirect to the
// leader, or 503 while none is known.
func (a *API) toLeader(c *call) error {
	leader, id := a.opts.Cluster.Leader()
	if leader == "" {
		return &apiError{status: 503, code: wire.CodeNotLeader, retryAfter: time.Second, p: wire.Problem{LeaderID: id},
			detail: "this cluster node does not lead and knows no leader's address yet; retry"}
	}
	u, err := url.Parse(leader)
	if err != nil {
		return fmt.Errorf("cluster: leader URL %q: %w", leader, err)
	}
	loc := *c.r.URL
	loc.Scheme, loc.Host = u.Scheme, u.Host
	loc.Path = u.Path + c.r.URL.Path
	loc.RawPath = ""
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
