package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// of a cluster-wide answer (a plugin's status with ?nodes=all).
type Member struct {
	ID   string // its node id
	URL  string // its API base URL ("" when none is on record)
	Self bool   // this node
}

// Bounds of the requests a node sends other members on a caller's
// behalf (a plugin's status with ?nodes=all).
const (
	// MaxMemberAsks bounds the cluster-wide answers being gathered or
	// written at once on a node, all tenants together; past it a request
	// gets 503 BUSY with Retry-After. A tenant gathers one at a time.
	MaxMemberAsks = 8
	// MemberAskTimeout bounds the wait for each member's part; a member
	// that has not answered by then is reported as not answering.
	MemberAskTimeout = 5 * time.Second
	// MaxMemberAnswerBytes bounds one member's part (a plugin's status
	// with server.plugin_log_lines at its ceiling of 10,000 is under
	// 48 MiB); a larger one is an error in its place, not read. The
	// parts being held count against MaxResponseBytes, with the large
	// responses being written.
	MaxMemberAnswerBytes = 64 << 20
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
// them back once the answer is written.
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

// askMembers sends GET path (an API path, its segments escaped) to every
// other member of the cluster at once, with the caller's credential, and
// gathers their answers in the members' order. release gives back the
// slot (memberAskSlot) and the memory the answers hold: call it once the
// answer made of them is written.
func (a *API) askMembers(c *call, path string) (answers []memberAnswer, release func(), err error) {
	release, err = a.memberAskSlot(c.tenant)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	releases := []func(){release}
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	hold := func(ctx context.Context, n int) error {
		r, err := a.bodies.hold(ctx, n)
		if err == nil {
			mu.Lock()
			releases = append(releases, r)
			mu.Unlock()
		}
		return err
	}
	members := a.opts.Cluster.Members()
	q := memberQuery{auth: c.r.Header.Get("Authorization"), https: c.r.TLS != nil, path: path, hold: hold}
	if c.info != nil {
		q.requestID = c.info.id
	}
	var others []Member
	for _, m := range members {
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
	return out, release, nil
}

// memberQuery is one GET sent to the other members on a caller's behalf.
type memberQuery struct {
	auth      string // the caller's Authorization
	requestID string // the request's id, for the members' logs
	https     bool   // this node is reached over https: no plain-http member is sent the credential
	path      string
	// hold takes n bytes of the node's response memory for an answer
	// read (MaxResponseBytes), or fails.
	hold func(ctx context.Context, n int) error
}

// ask is member m's answer through hc, or why there is none.
func (q memberQuery) ask(ctx context.Context, hc *http.Client, m Member) ([]byte, string) {
	u, err := url.Parse(m.URL)
	switch {
	case m.URL == "":
		return nil, "its API URL is not on record"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, "its API URL on record " + strconv.Quote(printable.Clip(m.URL, 200)) + " is not an http(s) URL"
	case u.Scheme == "http" && q.https:
		return nil, "its API URL is plain http and this node is reached over https: the credential is not sent in clear"
	}
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
		return nil, "unreachable: " + printable.Clip(err.Error(), 300)
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
	if err := q.hold(ctx, int(n)); err != nil {
		return nil, "this node is holding as many large answers as it does at once; retry"
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	switch {
	case err != nil:
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, "its answer did not come within " + MemberAskTimeout.String()
		}
		return nil, "reading its answer: " + printable.Clip(err.Error(), 300)
	case int64(len(body)) > limit:
		return nil, fmt.Sprintf("its answer is larger than %d bytes", limit)
	case res.StatusCode == http.StatusOK:
		return body, ""
	case res.StatusCode == http.StatusTemporaryRedirect:
		return nil, "it sends this tenant's requests to the leader for now (not caught up with it, or it does not know the credential yet)"
	}
	var pr struct{ Code, Detail string }
	if json.Unmarshal(body, &pr) == nil && pr.Code != "" {
		return nil, printable.Clip(fmt.Sprintf("%d %s: %s", res.StatusCode, pr.Code, pr.Detail), 300)
	}
	return nil, printable.Clip(res.Status, 300)
}
