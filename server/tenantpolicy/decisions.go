package tenantpolicy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/ijson"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// DefaultDecisionLogSize is how many decisions each tenant's decision
// log keeps when Options.DecisionLogSize is 0.
const DefaultDecisionLogSize = 1000

// DefaultDecisionMaxBytes is Options.DecisionMaxBytes's default.
const DefaultDecisionMaxBytes = 4096

// DefaultDecisionLogBytes is Options.DecisionLogBytes's default (4 MiB).
const DefaultDecisionLogBytes = 4 << 20

// DefaultDecisionQueue is Options.DecisionQueue's default.
const DefaultDecisionQueue = 4096

// DecisionQueueMaxBytes bounds the decisions waiting for the decision
// log's writer together (their JSON); past it, as past
// Options.DecisionQueue, a decision is dropped and counted.
const DecisionQueueMaxBytes = 32 << 20

// maxDecisionReasons is how many reasons a decision log entry keeps.
const maxDecisionReasons = 16

// Decision results.
const (
	ResultDenied  = "denied"
	ResultAllowed = "allowed"
)

// Decision is one recorded policy decision about a tenant's write: a
// denial, or an allowed write the tenant's sample picked.
type Decision struct {
	ID     string    `json:"decision_id"` // a denial's: also the denial problem's "decision_id"
	Time   time.Time `json:"time"`
	Result string    `json:"result"` // ResultDenied or ResultAllowed
	// Layer is the layer that refused ("platform" or "tenant"); for an
	// allowed write, the last layer that judged it ("tenant" when the
	// tenant has an active bundle).
	Layer string `json:"layer"`
	// Revision is the revision of the tenant bundle that decided (for a
	// platform denial: "", or the platform bundle's own revision), the
	// revision active when the write was judged.
	Revision  string           `json:"revision"`
	Principal policy.Principal `json:"principal"`
	Action    string           `json:"action"`
	Reasons   []policy.Reason  `json:"reasons,omitempty"`
	// Input holds the input fields the deciding policies read (their
	// input paths, e.g. "event.entity"), with their values; nil when the
	// policies read the input as a whole. A value (and a reason's message
	// or context) longer than Options.DecisionMaxBytes as JSON is kept as
	// a string noting its size; an entry whose input and reasons together
	// pass 8 × DecisionMaxBytes keeps a note in place of its input and
	// only its first reason. At most 16 reasons are kept.
	Input map[string]any `json:"input,omitempty"`
	// SuppressedBefore is how many of this principal's decisions were not
	// recorded, since its previous recorded one, because it had used its
	// share of the log (Options.DecisionPrincipalRefill).
	SuppressedBefore uint64 `json:"suppressed_before,omitempty"`
}

// DecisionCounts are one tenant's decision log counts since the server
// started (not kept across restarts).
type DecisionCounts struct {
	Denied  uint64 `json:"denied"`  // denials recorded
	Allowed uint64 `json:"allowed"` // allowed writes sampled and recorded
	// Dropped counts decisions not recorded because the writer's queue
	// was full (Options.DecisionQueue, DecisionQueueMaxBytes).
	Dropped uint64 `json:"dropped"`
	// Suppressed counts decisions not recorded because their principal
	// had used its share of the log (Options.DecisionPrincipalRefill).
	Suppressed uint64 `json:"suppressed"`
}

// DecisionStats are the decision log's counts over every tenant since
// the server started, for metrics.
type DecisionStats struct {
	// Recorded counts the decisions queued for the log by layer and
	// result ("platform"/"tenant", "denied"/"allowed").
	Recorded    map[[2]string]uint64
	Dropped     uint64 // refused because the queue was full
	WriteErrors uint64 // queued, but writing them failed (logged)
}

type tenantCounts struct {
	denied, allowed, dropped, suppressed atomic.Uint64
}

// principalPace is one principal's share of its tenant's decision log
// (Options.DecisionPrincipalRefill): entries and bytes, and the decisions
// suppressed since its last recorded one.
type principalPace struct {
	entries, bytes *rate.Limiter
	suppressed     uint64
}

// maxPaces bounds the principals whose shares are kept, across tenants;
// past it (after forgetting the full shares with nothing suppressed, at
// most every paceForgetEvery), further principals of a tenant share one
// overflow share per result.
const (
	maxPaces        = 4096
	paceForgetEvery = 10 * time.Second
)

// paceKey names a principal's share for decisions of result (denied and
// allowed each have one, so sampled allows never use up a principal's
// share for its denials): by API key, else by subject, namespaced so
// that a subject never names a key's share.
func paceKey(tenant, result string, p policy.Principal) string {
	who := "sub:" + p.ID
	if p.KeyID != "" {
		who = "key:" + p.KeyID
	}
	return tenant + "\x00" + result + "\x00" + who
}

// pace takes one entry of size bytes from the share of the principal's
// decisions of result: false (and one more suppressed) when the share
// cannot pay for it; else the share and how many were suppressed before
// it, the share's count cleared (unsettle gives it back when the entry
// is not queued after all).
func (m *Manager) pace(tenant, result string, p policy.Principal, size int) (pp *principalPace, suppressed uint64, ok bool) {
	refill := m.opts.DecisionPrincipalRefill
	if refill < 0 {
		return nil, 0, true
	}
	key := paceKey(tenant, result, p)
	now := time.Now()
	m.lmu.Lock()
	defer m.lmu.Unlock()
	pp = m.paces[key]
	if pp == nil && len(m.paces) >= maxPaces {
		if now.Sub(m.pacesForgot) >= paceForgetEvery {
			m.pacesForgot = now
			for k, q := range m.paces {
				if q.suppressed == 0 && q.entries.TokensAt(now) >= float64(q.entries.Burst()) && q.bytes.TokensAt(now) >= float64(q.bytes.Burst()) {
					delete(m.paces, k)
				}
			}
		}
		if len(m.paces) >= maxPaces {
			key = tenant + "\x00" + result + "\x00*"
			pp = m.paces[key]
		}
	}
	if pp == nil {
		n := max(m.opts.DecisionLogSize/8, 1)
		b := max(int(m.opts.DecisionLogBytes/8), 1)
		pp = &principalPace{
			entries: rate.NewLimiter(rate.Limit(float64(n)/refill.Seconds()), n),
			bytes:   rate.NewLimiter(rate.Limit(float64(b)/refill.Seconds()), b),
		}
		if m.paces == nil {
			m.paces = map[string]*principalPace{}
		}
		m.paces[key] = pp
	}
	if pp.entries.TokensAt(now) < 1 || pp.bytes.TokensAt(now) < float64(min(size, pp.bytes.Burst())) {
		pp.suppressed++
		return nil, 0, false
	}
	pp.entries.AllowN(now, 1)
	pp.bytes.AllowN(now, min(size, pp.bytes.Burst()))
	suppressed, pp.suppressed = pp.suppressed, 0
	return pp, suppressed, true
}

// unsettle gives back to the share the n suppressed decisions an entry
// that was not queued would have reported.
func (m *Manager) unsettle(pp *principalPace, n uint64) {
	if pp == nil || n == 0 {
		return
	}
	m.lmu.Lock()
	pp.suppressed += n
	m.lmu.Unlock()
}

func newDecisionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// inputFields picks the values at paths ("event.entity", …) of in, each
// as the raw JSON the policy read (numbers kept exactly, however large),
// JSON null where the input has no such value. It reads the encoded input
// member by member rather than decoding it whole, so a large payload of
// which the policy read one field costs one pass over it.
func inputFields(in *policy.Input, paths []string, max int) map[string]any {
	if len(paths) == 0 {
		return nil
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil
	}
	paths = paths[:min(len(paths), MaxLoggedFields)]
	out := make(map[string]any, len(paths))
	idx := ijson.NewIndex(raw) // each object read once, however many paths
	idx.MaxRead = 8*int64(len(raw)) + 64<<10
	for _, p := range paths {
		keys, ok := opa.SplitPath(p)
		var v []byte
		if ok {
			v, ok = idx.At(keys...)
		}
		switch {
		case idx.Exceeded():
			// Paths down a deep chain of objects: each level would list
			// nearly the whole input again.
			out["note"] = fmt.Sprintf("(fields after the first %d not kept: reading them would read more than 8 times the input)", len(out))
			return out
		case !ok:
			out[p] = nil
		case len(v) > max:
			out[p] = tooLarge(len(v), max) // not copied, nor encoded again
		default:
			out[p] = json.RawMessage(bytes.Clone(v))
		}
	}
	return out
}

// MaxLoggedFields is the most input fields a decision log entry keeps:
// the first the policy reads.
const MaxLoggedFields = 256

// record logs a denial of tenant's write and returns a copy of d naming
// the decision (no decision id when its principal's share of the log
// suppressed it).
func (m *Manager) record(tenant string, d *policy.Denial, in *policy.Input, paths []string) *policy.Denial {
	if m.dlog == nil {
		return d
	}
	c := *d
	c.DecisionID = newDecisionID()
	if m.enqueue(tenant, Decision{ID: c.DecisionID, Result: ResultDenied, Layer: c.Layer, Revision: c.Revision,
		Principal: in.Principal, Action: string(in.Action), Reasons: c.Reasons}, in, paths) == errSuppressed {
		c.DecisionID = ""
	}
	return &c
}

// errSuppressed: enqueue did not record a decision, its principal having
// used its share of the log.
var errSuppressed = errors.New("tenantpolicy: the principal's share of the decision log is used")

// enqueue bounds dec's input and reasons and hands it to the writer;
// errSuppressed when the principal's share of the log suppressed it, and
// another error when it was not recorded for another reason (counted).
func (m *Manager) enqueue(tenant string, dec Decision, in *policy.Input, paths []string) error {
	max := m.opts.DecisionMaxBytes
	dec.Time = time.Now().UTC()
	dec.Input = inputFields(in, paths, max) // each field bounded there
	reasons := make([]policy.Reason, min(len(dec.Reasons), maxDecisionReasons))
	for i, r := range dec.Reasons[:len(reasons)] {
		reasons[i] = policy.Reason{Code: r.Code, Message: r.Message, Context: r.Context}
		if msg, ok := bounded(r.Message, max).(string); ok {
			reasons[i].Message = msg
		}
		if _, ok := bounded(r.Context, max).(string); ok {
			reasons[i].Context = map[string]any{"note": bounded(r.Context, max)}
		}
		if len(reasons[i].Code) > max {
			reasons[i].Code = reasons[i].Code[:max]
		}
	}
	dec.Reasons = reasons
	line, err := json.Marshal(dec)
	if err == nil && len(line) > 8*max {
		dec.Input = map[string]any{"note": fmt.Sprintf("(the input fields took %d bytes of JSON, more than the decision log keeps: 8 x policy_decision_max_bytes %d)", len(line), max)}
		dec.Reasons = dec.Reasons[:min(1, len(dec.Reasons))]
		line, err = json.Marshal(dec)
	}
	if err != nil {
		m.opts.Logger.Warn("a policy decision could not be encoded for the decision log", "tenant", tenant, "error", err)
		return err
	}
	tc := m.counts(tenant)
	pp, suppressed, ok := m.pace(tenant, dec.Result, dec.Principal, len(line)+1)
	if !ok {
		tc.suppressed.Add(1)
		return errSuppressed
	}
	if suppressed > 0 {
		dec.SuppressedBefore = suppressed
		if line, err = json.Marshal(dec); err != nil {
			m.unsettle(pp, suppressed)
			return err
		}
	}
	line = append(line, '\n')
	if !m.dlog.enqueue(tenant, line) {
		m.unsettle(pp, suppressed)
		tc.dropped.Add(1)
		return errors.New("tenantpolicy: the decision log's queue is full")
	}
	if dec.Result == ResultDenied {
		tc.denied.Add(1)
	} else {
		tc.allowed.Add(1)
	}
	m.recorded[layerIndex(dec.Layer)][resultIndex(dec.Result)].Add(1)
	return nil
}

func layerIndex(layer string) int {
	if layer == "tenant" {
		return 1
	}
	return 0
}

func resultIndex(result string) int {
	if result == ResultAllowed {
		return 1
	}
	return 0
}

func (m *Manager) counts(tenant string) *tenantCounts {
	m.lmu.Lock()
	defer m.lmu.Unlock()
	c := m.tcounts[tenant]
	if c == nil {
		c = &tenantCounts{}
		m.tcounts[tenant] = c
	}
	return c
}

// sampleAllow records an allowed write when the tenant's
// decision_allow_sample setting picks it, with the input fields at
// paths().
func (a *admission) sampleAllow(ctx context.Context, p *core.Proposal, rev string, paths func() []string) {
	if a.m.dlog == nil {
		return
	}
	t, ok := a.m.opts.Plane.Tenant(a.tenant)
	if !ok || t.Settings.DecisionAllowSample <= 0 || (t.Settings.DecisionAllowSample < 1 && mrand.Float64() >= t.Settings.DecisionAllowSample) {
		return
	}
	layer := "platform"
	if rev != "" {
		layer = "tenant"
	}
	in := policy.InputFromProposal(ctx, p)
	a.m.enqueue(a.tenant, Decision{ID: newDecisionID(), Result: ResultAllowed, Layer: layer, Revision: rev,
		Principal: in.Principal, Action: string(in.Action)}, in, paths())
}

// QueryDecisions returns a page of the tenant's decision log, newest
// first, after the decisions queued so far are written (or ctx ends).
// The log shows exactly the newest Options.DecisionLogSize decisions
// within Options.DecisionLogBytes; it is kept on disk and survives a
// restart (see the package documentation). ErrBadCursor for a cursor
// this log did not hand out; an empty page when the server keeps no log.
func (m *Manager) QueryDecisions(ctx context.Context, tenant string, q DecisionQuery) (DecisionPage, error) {
	if m.dlog == nil {
		return DecisionPage{Decisions: []Decision{}}, nil
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	if err := m.dlog.flush(ctx); err != nil {
		return DecisionPage{}, err
	}
	return m.dlog.query(tenant, q)
}

// DecisionCounts returns the tenant's decision log counts since the
// server started.
func (m *Manager) DecisionCounts(tenant string) DecisionCounts {
	m.lmu.Lock()
	c := m.tcounts[tenant]
	m.lmu.Unlock()
	if c == nil {
		return DecisionCounts{}
	}
	return DecisionCounts{Denied: c.denied.Load(), Allowed: c.allowed.Load(), Dropped: c.dropped.Load(), Suppressed: c.suppressed.Load()}
}

// DecisionStats returns the decision log's counts over every tenant.
func (m *Manager) DecisionStats() DecisionStats {
	st := DecisionStats{Recorded: map[[2]string]uint64{}}
	for li, layer := range []string{"platform", "tenant"} {
		for ri, result := range []string{ResultDenied, ResultAllowed} {
			st.Recorded[[2]string{layer, result}] = m.recorded[li][ri].Load()
		}
	}
	if m.dlog != nil {
		st.Dropped, st.WriteErrors = m.dlog.dropped.Load(), m.dlog.writeErrs.Load()
	}
	return st
}

// bounded returns v, or when v is longer than max bytes as JSON a string
// noting its size (what the decision log keeps of it).
func bounded(v any, max int) any {
	if s, ok := v.(string); ok && len(s) > max+2 {
		return tooLarge(len(s)+2, max) // longer as JSON still: not encoded to say so
	}
	raw, err := json.Marshal(v)
	if err != nil || len(raw) <= max {
		return v
	}
	return tooLarge(len(raw), max)
}

// tooLarge notes a value of n bytes of JSON the decision log does not
// keep.
func tooLarge(n, max int) string {
	return fmt.Sprintf("(%d bytes of JSON, more than the decision log keeps: policy_decision_max_bytes %d)", n, max)
}
