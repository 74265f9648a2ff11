package policy

import (
	"context"
	"fmt"
	"runtime/debug"
)

// Gate judges proposed writes. Evaluate returns nil to let the write
// through or a *Denial to refuse it. It runs on the writing goroutine,
// concurrently with other writers: it must be safe for concurrent use.
type Gate interface {
	Name() string
	Evaluate(ctx context.Context, in *Input) *Denial
}

// GateFunc turns a function into a Gate.
func GateFunc(name string, f func(ctx context.Context, in *Input) *Denial) Gate {
	return funcGate{name, f}
}

type funcGate struct {
	name string
	f    func(context.Context, *Input) *Denial
}

func (g funcGate) Name() string                                    { return g.name }
func (g funcGate) Evaluate(ctx context.Context, in *Input) *Denial { return g.f(ctx, in) }

// GateSet is an ordered list of gates.
type GateSet struct {
	gates []Gate
}

// NewGateSet returns the gates in the order given.
func NewGateSet(gates ...Gate) *GateSet { return &GateSet{gates: gates} }

// Names lists the gates in order.
func (gs *GateSet) Names() []string {
	out := make([]string, len(gs.gates))
	for i, g := range gs.gates {
		out[i] = g.Name()
	}
	return out
}

// Evaluate runs the gates in order and stops at the first denial
// (returned as the error, a *Denial). When every gate passes it returns a
// Receipt: the proof Pipeline.Commit asks for.
func (gs *GateSet) Evaluate(ctx context.Context, in *Input) (*Receipt, error) {
	if d := gs.check(ctx, in); d != nil {
		return nil, d
	}
	return &Receipt{in: in, gates: gs.Names(), issuer: gs}, nil
}

// check is Evaluate without the receipt (the Admitter's hot path).
func (gs *GateSet) check(ctx context.Context, in *Input) *Denial {
	for _, g := range gs.gates {
		if d := runGate(ctx, g, in); d != nil {
			return d
		}
	}
	return nil
}

// EvaluateAll runs every gate and returns every denial (none: the write
// would pass).
func (gs *GateSet) EvaluateAll(ctx context.Context, in *Input) []*Denial {
	var out []*Denial
	for _, g := range gs.gates {
		if d := runGate(ctx, g, in); d != nil {
			out = append(out, d)
		}
	}
	return out
}

// runGate evaluates one gate; a panic becomes a GATE_DEFECT denial.
func runGate(ctx context.Context, g Gate, in *Input) (d *Denial) {
	defer func() {
		if p := recover(); p != nil {
			d = Deny(CodeGateDefect, fmt.Sprintf("gate panicked: %v", p), map[string]any{"stack": string(debug.Stack())})
			d.Gate = g.Name()
		}
	}()
	d = g.Evaluate(ctx, in)
	if d != nil && (d.Gate == "" || len(d.Reasons) == 0) {
		c := *d // the gate may hand the same denial to every writer: complete a copy
		if c.Gate == "" {
			c.Gate = g.Name()
		}
		if len(c.Reasons) == 0 {
			c.Reasons = []Reason{{Code: c.Code, Message: c.Message, Context: c.Context}}
		}
		d = &c
	}
	return d
}
