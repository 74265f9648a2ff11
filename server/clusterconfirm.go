package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/batpak-go/batpak/internal/printable"
	"github.com/batpak-go/batpak/server/httpapi"
)

// confirmAnswerMax bounds a member's answer to GET /v1/cluster/applied
// as ConfirmControl reads it (a few dozen bytes, or a problem document).
const confirmAnswerMax = 64 << 10

// ConfirmControl implements httpapi.Cluster: it sends GET
// /v1/cluster/applied?control=seq to every other member of the raft
// configuration at once, voters and nonvoters, with the operator
// credential, at the API URL the member recorded (never over plain http
// from a node reached over https; no redirect followed), and returns
// each member that did not answer 200 before ctx ended with why. A
// member answers once its control plane has applied the control
// plane's store below seq, so a 200 means it judges credentials with
// every change up to there. A member that refuses the connection fails
// at once; one that does not answer takes until ctx ends.
func (c *clusterNode) ConfirmControl(ctx context.Context, seq uint64) map[string]string {
	var others []httpapi.Member
	for _, m := range c.Members() {
		if !m.Self {
			others = append(others, m)
		}
	}
	if len(others) == 0 {
		return nil
	}
	// The members learn that an entry is committed from the leader's
	// next AppendEntries request, which raft sends when there is a new
	// entry to replicate or else only after its commit timeout (50 ms):
	// a barrier's entry, replicated at once, tells them now.
	go func() { _ = c.Barrier(ctx) }()
	var mu sync.Mutex
	var missing map[string]string
	var wg sync.WaitGroup
	for _, m := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if why := c.confirmApplied(ctx, m, seq); why != "" {
				mu.Lock()
				if missing == nil {
					missing = map[string]string{}
				}
				missing[m.ID] = why
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return missing
}

// confirmApplied asks member m whether its control plane has applied
// the control plane's store below seq: "" when it answered that it has,
// otherwise why not.
func (c *clusterNode) confirmApplied(ctx context.Context, m httpapi.Member, seq uint64) string {
	if why := httpapi.MemberURLProblem(m.URL, c.https); why != "" {
		return why
	}
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(m.URL, "/")+"/v1/cluster/applied?control="+strconv.FormatUint(seq, 10), nil)
	if err != nil {
		return printable.Clip(err.Error(), 300)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	res, err := c.members.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil {
			return "it had not confirmed when the wait ended"
		}
		return "unreachable: " + printable.Clip(err.Error(), 300)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, confirmAnswerMax))
	if res.StatusCode != http.StatusOK {
		return printable.Clip(httpapi.MemberRefusal(res, body), 300)
	}
	return ""
}
