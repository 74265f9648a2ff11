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
	// MaxMemberAsks bounds the cluster-wide answers being gathered at
	// once on a node, all tenants together; past it a request gets 503
	// BUSY with Retry-After. A tenant gathers one at a time.
	MaxMemberAsks = 8
	// MemberAskTimeout bounds the wait for each member's part; a member
	// that has not answered by then is reported as not answering.
	MemberAskTimeout = 5 * time.Second
	// MaxMemberAnswerBytes bounds one member's part; a larger one is
	// reported as an error in its place, not read.
	MaxMemberAnswerBytes = 8 << 20
)

// memberAnswer is one other member's answer: a 200's body, or why there
// is none.
type memberAnswer struct {
	id   string
	body []byte
	err  string
}

// askMembers sends GET path (an API path, its segments escaped) to every
// other member of the cluster at once, with the caller's credential, and
// gathers their answers in the members' order. The caller's tenant holds
// one such gathering at a time, the node MaxMemberAsks.
func (a *API) askMembers(c *call, path string) ([]memberAnswer, error) {
	cl := a.opts.Cluster
	members := cl.Members()
	https := c.r.TLS != nil
	for _, m := range members {
		if m.Self && strings.HasPrefix(strings.ToLower(m.URL), "https:") {
			https = true
		}
	}
	if !a.memberAsk.TryAcquire(1) {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this node is gathering as many cluster-wide answers as it does at once (" + strconv.Itoa(MaxMemberAsks) + "); retry, or ask without ?nodes=all"}
	}
	defer a.memberAsk.Release(1)
	if _, busy := a.tenantAsks.LoadOrStore(c.tenant, true); busy {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: wire.CodeBusy, retryAfter: time.Second,
			detail: "this tenant's previous cluster-wide answer is still being gathered on this node (one at a time); retry"}
	}
	defer a.tenantAsks.Delete(c.tenant)

	ctx, cancel := context.WithTimeout(c.r.Context(), MemberAskTimeout)
	defer cancel()
	var others []Member
	for _, m := range members {
		if !m.Self {
			others = append(others, m)
		}
	}
	out := make([]memberAnswer, len(others))
	var wg sync.WaitGroup
	for i, m := range others {
		out[i].id = m.ID
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].body, out[i].err = askMember(ctx, cl.MemberClient(), c.r, m, https, path)
		}()
	}
	wg.Wait()
	return out, nil
}

// askMember is member m's answer to GET path, sent with from's
// credential through hc, or why there is none; https: never send it to a
// plain-http member.
func askMember(ctx context.Context, hc *http.Client, from *http.Request, m Member, https bool, path string) ([]byte, string) {
	u, err := url.Parse(m.URL)
	switch {
	case m.URL == "":
		return nil, "its API URL is not on record"
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, "its API URL on record " + strconv.Quote(printable.Clip(m.URL, 200)) + " is not an http(s) URL"
	case u.Scheme == "http" && https:
		return nil, "its API URL is plain http and this node is reached over https: the credential is not sent in clear"
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(m.URL, "/")+path, nil)
	if err != nil {
		return nil, printable.Clip(err.Error(), 300)
	}
	req.Header.Set("Authorization", from.Header.Get("Authorization"))
	req.Header.Set("Accept", "application/json")
	if id := from.Header.Get("X-Request-Id"); id != "" {
		req.Header.Set("X-Request-Id", id)
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
	body, err := io.ReadAll(io.LimitReader(res.Body, MaxMemberAnswerBytes+1))
	switch {
	case err != nil:
		return nil, "reading its answer: " + printable.Clip(err.Error(), 300)
	case len(body) > MaxMemberAnswerBytes:
		return nil, fmt.Sprintf("its answer is larger than %d bytes", MaxMemberAnswerBytes)
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
