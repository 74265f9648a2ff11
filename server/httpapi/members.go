package httpapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/server/wire"
)

// Member is one member of the cluster, as the API asks it for its part
// of a cluster-wide answer (a plugin's status, or the cluster's health,
// with ?nodes=all).
type Member struct {
	ID    string // its node id
	URL   string // its API base URL ("" when none is on record)
	Self  bool   // this node
	Voter bool   // a voting member (not a nonvoter)
}

// Bounds of the requests a node sends other members on a caller's
// behalf (a plugin's status or list, or the cluster's status, with
// ?nodes=all).
const (
	// MaxMemberAsks bounds the cluster-wide answers being gathered or
	// written at once on a node, all tenants together; past it a request
	// gets 503 BUSY with Retry-After. A tenant gathers one at a time
	// (status and list together).
	MaxMemberAsks = 8
	// MemberAskTimeout bounds the wait for each member's part; a member
	// that has not answered by then is reported as not answering.
	MemberAskTimeout = 5 * time.Second
	// MaxMemberAnswerBytes bounds the other members' parts of one answer
	// together (by their Content-Length; a part without one is read up to
	// 8 MiB). A part that would pass it is an error in its place, not
	// read. The parts held count against MaxResponseBytes with the large
	// responses being written, and the answer made of them takes only
	// what it needs beyond them.
	MaxMemberAnswerBytes = 80 << 20
	unframedMemberAnswer = 8 << 20
)

// memberAnswer is one other member's answer: a 200's body, or why there
// is none.
type memberAnswer struct {
	id   string
	body []byte
	err  string
}

// memberAskSlot takes the tenant's one cluster-wide answer and one of the
// node's MaxMemberAsks (503 BUSY when either is taken); release gives
// them back once the answer is written. The operator's (tenant "": the
// cluster's health) are shared by the operator's requests meanwhile
// (clusterHealth), so they take one at a time too.
func (a *API) memberAskSlot(tenant string) (release func(), err error) {
	if _, busy := a.tenantAsks.LoadOrStore(tenant, true); busy {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this tenant's previous cluster-wide answer is still being gathered on this node (one at a time); retry"}
	}
	if !a.memberAsk.TryAcquire(1) {
		a.tenantAsks.Delete(tenant)
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this node is gathering as many cluster-wide answers as it does at once (" + strconv.Itoa(MaxMemberAsks) + "); retry, or ask without ?nodes=all"}
	}
	return func() {
		a.memberAsk.Release(1)
		a.tenantAsks.Delete(tenant)
	}, nil
}

// gathering is what a cluster-wide answer holds until it is written: its
// slot (memberAskSlot) and the response budget its parts take.
type gathering struct {
	mu       sync.Mutex
	held     int64 // bytes of the budget the parts hold
	releases []func()
}

// release gives back everything the gathering holds (once).
func (g *gathering) release() {
	g.mu.Lock()
	rs := g.releases
	g.releases = nil
	g.mu.Unlock()
	for _, r := range rs {
		r()
	}
}

// Held is the response budget the parts hold (writeJSONHolding).
func (g *gathering) Held() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// askMembers sends GET path (an API path, its segments escaped) to every
// other member of the cluster at once, with the caller's credential, and
// gathers their answers in the members' order. Call g.release once the
// answer made of them is written (with writeJSONHolding and g.Held()).
func (a *API) askMembers(c *call, path string) (answers []memberAnswer, g *gathering, err error) {
	slot, err := a.memberAskSlot(c.tenant)
	if err != nil {
		return nil, nil, err
	}
	g = &gathering{releases: []func(){slot}}
	done := false
	defer func() {
		if !done { // a panic: the recovering middleware answers, the slot comes back
			g.release()
		}
	}()
	hold := func(ctx context.Context, n int64) string {
		g.mu.Lock()
		if g.held+n > MaxMemberAnswerBytes {
			g.mu.Unlock()
			return fmt.Sprintf("with it the other nodes' parts would be larger than %d bytes together", MaxMemberAnswerBytes)
		}
		g.held += n
		g.mu.Unlock()
		r, err := a.bodies.take(ctx, "", n, nil) // bounded per tenant by MaxMemberAsks
		g.mu.Lock()
		defer g.mu.Unlock()
		if err != nil {
			g.held -= n
			return "this node is holding as many large answers as it does at once; retry"
		}
		g.releases = append(g.releases, r)
		return ""
	}
	q := memberQuery{auth: c.r.Header.Get("Authorization"), https: c.r.TLS != nil, path: path, hold: hold, log: a.log}
	if c.info != nil {
		q.requestID = c.info.id
	}
	var others []Member
	for _, m := range a.opts.Cluster.Members() {
		if m.Self {
			q.https = q.https || strings.HasPrefix(strings.ToLower(m.URL), "https:")
		} else {
			others = append(others, m)
		}
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), MemberAskTimeout)
	defer cancel()
	out := make([]memberAnswer, len(others))
	var wg sync.WaitGroup
	for i, m := range others {
		out[i].id = m.ID
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].body, out[i].err = q.ask(ctx, a.opts.Cluster.MemberClient(), m)
		}()
	}
	wg.Wait()
	done = true
	return out, g, nil
}

// memberQuery is one GET sent to the other members on a caller's behalf.
type memberQuery struct {
	auth      string // the caller's Authorization
	requestID string // the request's id, for the members' logs
	https     bool   // this node is reached over https: no plain-http member is sent the credential
	path      string
	// hold takes n bytes of the node's response memory for an answer
	// read (MaxResponseBytes), or says why it cannot.
	hold func(ctx context.Context, n int64) string
	// log gets what the tenant is not shown of a failure (addresses,
	// certificate names).
	log *slog.Logger
}

// MemberURLProblem says why a node does not send a credential to the
// member API URL on record raw ("" when it does): none on record, not
// an http(s) URL, or plain http while the node is reached over https
// (the credential would cross the network in clear).
func MemberURLProblem(raw string, https bool) string {
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		return "its API URL is not on record"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "its API URL on record is not an http(s) URL"
	case u.Scheme == "http" && https:
		return "its API URL is plain http and this node is reached over https: the credential is not sent in clear"
	}
	return ""
}

// MemberRefusal is the text of a member's answer other than 200 (clip it
// to print it): the status with the code and detail of its problem
// document, or the status line.
func MemberRefusal(res *http.Response, body []byte) string {
	var pr struct{ Code, Detail string }
	if json.Unmarshal(body, &pr) == nil && pr.Code != "" {
		return fmt.Sprintf("%d %s: %s", res.StatusCode, pr.Code, pr.Detail)
	}
	return res.Status
}

// ask is member m's answer through hc, or why there is none.
func (q memberQuery) ask(ctx context.Context, hc *http.Client, m Member) ([]byte, string) {
	if why := MemberURLProblem(m.URL, q.https); why != "" {
		return nil, why
	}
	u, _ := url.Parse(m.URL)
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(m.URL, "/")+q.path, nil)
	if err != nil {
		return nil, printable.Clip(err.Error(), 300)
	}
	req.Header.Set("Authorization", q.auth)
	req.Header.Set("Accept", "application/json")
	if q.requestID != "" {
		req.Header.Set("X-Request-Id", q.requestID)
	}
	res, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "it did not answer within " + MemberAskTimeout.String()
		}
		// The tenant is told what happened, not the member's address or
		// certificate names; the log has them.
		q.log.Info("cluster: asking a member for its part failed", "node", m.ID, "url", u.Redacted(), "request_id", q.requestID, "err", err)
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			return nil, "unreachable: its TLS certificate did not verify"
		}
		return nil, "unreachable"
	}
	defer res.Body.Close()
	// A member's answer has a Content-Length (writeJSON); one without is
	// read up to unframedMemberAnswer.
	n, limit := res.ContentLength, int64(MaxMemberAnswerBytes)
	if n > limit {
		return nil, fmt.Sprintf("its answer is larger than %d bytes", limit)
	}
	if n < 0 {
		n, limit = unframedMemberAnswer, unframedMemberAnswer
	}
	if why := q.hold(ctx, n); why != "" {
		return nil, why
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	switch {
	case err != nil:
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "its answer did not come within " + MemberAskTimeout.String()
		}
		q.log.Info("cluster: reading a member's part failed", "node", m.ID, "request_id", q.requestID, "err", err)
		return nil, "its answer was cut off"
	case int64(len(body)) > limit:
		return nil, fmt.Sprintf("its answer is larger than %d bytes", limit)
	case res.StatusCode == http.StatusOK:
		return body, ""
	case res.StatusCode == http.StatusTemporaryRedirect:
		return nil, "it sends this tenant's requests to the leader for now (not caught up with it, or it does not know the credential yet)"
	}
	return nil, printable.Clip(MemberRefusal(res, body), 300)
}
