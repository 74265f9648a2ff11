package policy_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/internal/policytest"
)

// Fixtures shared by the policy packages' tests (policytest): a gated
// store, denial helpers, a watch proving a refused write left no trace.
var (
	kindA       = policytest.KindA
	kindB       = policytest.KindB
	clerk       = policytest.Clerk
	clerkCtx    = policytest.ClerkCtx
	mustCoord   = policytest.MustCoord
	openGated   = policytest.OpenGated
	admitterOf  = policytest.AdmitterOf
	asDenial    = policytest.AsDenial
	reasonCodes = policytest.ReasonCodes
	watchStore  = policytest.WatchStore
)

// recorder is a gate that remembers every input it judged and refuses the
// writes to entities starting with "deny:" with two reasons.
type recorder struct {
	mu   sync.Mutex
	seen []policy.Input
}

func (r *recorder) Name() string { return "recorder" }

func (r *recorder) Evaluate(_ context.Context, in *policy.Input) *policy.Denial {
	r.mu.Lock()
	r.seen = append(r.seen, *in)
	r.mu.Unlock()
	if strings.HasPrefix(in.Event.Entity, "deny:") {
		return &policy.Denial{
			Code: "ENTITY_REFUSED", Message: "refused " + in.Event.Entity,
			Reasons: []policy.Reason{
				{Code: "ENTITY_REFUSED", Message: "refused " + in.Event.Entity, Context: map[string]any{"entity": in.Event.Entity}},
				{Code: "SECOND_REASON", Message: "and another reason"},
			},
		}
	}
	return nil
}

// inputs returns what the recorder saw so far.
func (r *recorder) inputs() []policy.Input {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]policy.Input(nil), r.seen...)
}

// last returns the last input the recorder saw.
func (r *recorder) last(t testing.TB) policy.Input {
	t.Helper()
	in := r.inputs()
	if len(in) == 0 {
		t.Fatal("the gate saw no input")
	}
	return in[len(in)-1]
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.seen = nil
	r.mu.Unlock()
}
