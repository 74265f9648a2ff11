package tenantpolicy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/batpak-go/batpak/policy"
)

// DefaultDecisionLogSize is how many denials each tenant's decision log
// keeps when Options.DecisionLogSize is 0.
const DefaultDecisionLogSize = 1000

// DefaultDecisionMaxBytes is Options.DecisionMaxBytes's default.
const DefaultDecisionMaxBytes = 4096

// Decision is one recorded policy denial of a tenant's write.
type Decision struct {
	ID        string           `json:"decision_id"` // also the denial problem's "decision_id"
	Time      time.Time        `json:"time"`
	Layer     string           `json:"layer"`    // "platform" or "tenant"
	Revision  string           `json:"revision"` // of the bundle that decided
	Principal policy.Principal `json:"principal"`
	Action    string           `json:"action"`
	Reasons   []policy.Reason  `json:"reasons"`
	// Input holds the input fields the deciding policy reads (its input
	// paths, e.g. "event.entity"), with their values; nil when the policy
	// reads the input as a whole. A value (and a reason's message or
	// context) longer than Options.DecisionMaxBytes as JSON is kept as a
	// string noting its size.
	Input map[string]any `json:"input,omitempty"`
}

// decisionLog keeps the last size denials of one tenant (a ring that
// grows with use up to size, so an idle log takes no memory for its
// capacity).
type decisionLog struct {
	mu   sync.Mutex
	size int
	ring []Decision
	next int
	full bool
}

func (l *decisionLog) add(d Decision) {
	l.mu.Lock()
	if !l.full && len(l.ring) < l.size {
		l.ring = append(l.ring, d)
		l.next = len(l.ring) % l.size
		l.full = len(l.ring) == l.size
		l.mu.Unlock()
		return
	}
	l.ring[l.next] = d
	l.next = (l.next + 1) % len(l.ring)
	l.mu.Unlock()
}

// newest returns up to limit decisions, newest first.
func (l *decisionLog) newest(limit int) []Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.next
	if l.full {
		n = len(l.ring)
	}
	n = min(n, limit)
	out := make([]Decision, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, l.ring[(l.next-i+len(l.ring))%len(l.ring)])
	}
	return out
}

func newDecisionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// inputFields picks the values at paths ("event.entity", …) of in.
func inputFields(in *policy.Input, paths []string) map[string]any {
	if len(paths) == 0 {
		return nil
	}
	raw, err := json.Marshal(in)
	if err != nil {
		return nil
	}
	var doc any
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	out := make(map[string]any, len(paths))
	for _, p := range paths {
		v := doc
		for _, part := range strings.Split(p, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[part]
		}
		out[p] = v
	}
	return out
}

// record logs a denial of tenant's write and returns a copy of d naming
// the decision.
func (m *Manager) record(tenant string, d *policy.Denial, in *policy.Input, paths []string) *policy.Denial {
	if m.opts.DecisionLogSize < 0 {
		return d
	}
	c := *d
	c.DecisionID = newDecisionID()
	max := m.opts.DecisionMaxBytes
	input := inputFields(in, paths)
	for k, v := range input {
		input[k] = bounded(v, max)
	}
	reasons := make([]policy.Reason, len(c.Reasons))
	for i, r := range c.Reasons {
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
	dec := Decision{ID: c.DecisionID, Time: time.Now().UTC(), Layer: c.Layer, Revision: c.Revision,
		Principal: in.Principal, Action: string(in.Action), Reasons: reasons, Input: input}
	m.lmu.Lock()
	l := m.logs[tenant]
	if l == nil {
		l = &decisionLog{size: m.opts.DecisionLogSize}
		m.logs[tenant] = l
	}
	m.lmu.Unlock()
	l.add(dec)
	return &c
}

// Decisions returns up to limit of the tenant's recorded denials, newest
// first (the log keeps the last Options.DecisionLogSize, in memory: a
// restart empties it).
func (m *Manager) Decisions(tenant string, limit int) []Decision {
	m.lmu.Lock()
	l := m.logs[tenant]
	m.lmu.Unlock()
	if l == nil || limit <= 0 {
		return []Decision{}
	}
	return l.newest(limit)
}

// bounded returns v, or when v is longer than max bytes as JSON a string
// noting its size (what the decision log keeps of it).
func bounded(v any, max int) any {
	raw, err := json.Marshal(v)
	if err != nil || len(raw) <= max {
		return v
	}
	return fmt.Sprintf("(%d bytes of JSON, more than the decision log keeps: policy_decision_max_bytes %d)", len(raw), max)
}
