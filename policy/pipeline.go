package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/trusted"
)

// Receipt proves that a proposal passed a GateSet (or was bypassed, with a
// reason). Only gate evaluation and Pipeline.Bypass make receipts, and a
// receipt can be committed once.
type Receipt struct {
	in     *Input
	gates  []string
	issuer *GateSet  // the gate set that evaluated (or the bypassing pipeline's)
	pipe   *Pipeline // the pipeline that issued a bypass receipt
	bypass string    // the reason, for a bypass receipt
	who    Principal // who asked for the bypass
	used   atomic.Bool
	spent  atomic.Bool // a bypass receipt let its one write through, or its Commit returned
}

// Input is the proposal the receipt is for.
func (r *Receipt) Input() *Input { return r.in }

// Gates lists the gates the proposal passed (none for a bypass).
func (r *Receipt) Gates() []string { return r.gates }

// Bypassed reports whether the receipt came from Bypass.
func (r *Receipt) Bypassed() bool { return r.bypass != "" }

// ErrReceiptUsed: a receipt was committed twice.
var ErrReceiptUsed = errors.New("batpak: policy receipt already used")

// ErrForeignReceipt: a receipt not made by the pipeline's gate set (or,
// for a bypass, by this very pipeline's Bypass) was committed.
var ErrForeignReceipt = errors.New("batpak: policy receipt not made by this pipeline")

// ErrNoReason: Bypass needs a reason.
var ErrNoReason = errors.New("batpak: a bypass needs a reason")

// Committed reports a committed proposal.
type Committed struct {
	Gates    []string
	Bypassed bool
	Audit    *core.Receipt // the audit record of a bypass
}

// Pipeline evaluates proposals through a GateSet and commits them.
// Bypass lets a proposal through without evaluation, for a stated reason;
// committing a bypass first records an audit event in the store (who, why,
// what) — a bypass is never silent. A bypass receipt is honoured only by
// the Admitter the pipeline was made from (Admitter.Pipeline) and
// committed only by the pipeline that issued it: a receipt from any other
// pipeline — one over an empty gate set, one recording in another store —
// lets nothing through.
type Pipeline struct {
	gates    *GateSet
	store    *core.Store
	admitter *Admitter // whose Admit honours this pipeline's bypasses; nil: none does
}

// NewPipeline returns a pipeline over gates that records bypasses in store.
// No Admitter honours its bypass receipts (a bypassed write is then judged
// like any other); use Admitter.Pipeline for a pipeline whose bypasses the
// store's Admitter lets through.
func NewPipeline(gates *GateSet, store *core.Store) *Pipeline {
	return &Pipeline{gates: gates, store: store}
}

// Pipeline returns a pipeline over a's gates that records bypasses in
// store, and whose bypass receipts a (and only a) honours. store must be
// the store a admits writes for: give each store its own Admitter, since
// an Admitter shared by two stores honours a bypass recorded in either.
func (a *Admitter) Pipeline(store *core.Store) *Pipeline {
	return &Pipeline{gates: a.gates, store: store, admitter: a}
}

// Evaluate runs the gates (fail-fast); the error is a *Denial.
func (p *Pipeline) Evaluate(ctx context.Context, in *Input) (*Receipt, error) {
	return p.gates.Evaluate(ctx, in)
}

// Bypass returns a receipt for in without evaluating it. reason must say
// why; the principal in ctx is recorded as who (the one in Commit's ctx
// if this one has none).
func (p *Pipeline) Bypass(ctx context.Context, in *Input, reason string) (*Receipt, error) {
	if reason == "" {
		return nil, ErrNoReason
	}
	if in == nil {
		return nil, errors.New("batpak: a bypass needs the proposal it lets through")
	}
	return &Receipt{in: in, bypass: reason, issuer: p.gates, pipe: p, who: PrincipalFrom(ctx)}, nil
}

// AuditEntity is the entity bypass audit records are written to (scope
// "policy"); KindBypassAudit is their kind.
const AuditEntity = "batpak:audit:bypass"

// KindBypassAudit is the system kind of bypass audit records.
const KindBypassAudit core.Kind = 0x001

// Commit runs fn once for a receipt of this pipeline's making. For a
// bypass receipt it first writes the audit record (and fails without
// running fn if it cannot), then runs fn with a context that lets the
// bypassed write through the store's Admitter.
func (p *Pipeline) Commit(ctx context.Context, r *Receipt, fn func(ctx context.Context) error) (Committed, error) {
	if r == nil {
		return Committed{}, errors.New("batpak: nil policy receipt")
	}
	if r.issuer == nil || r.issuer != p.gates || (r.Bypassed() && r.pipe != p) {
		return Committed{}, ErrForeignReceipt
	}
	if !r.used.CompareAndSwap(false, true) {
		return Committed{}, ErrReceiptUsed
	}
	c := Committed{Gates: r.gates, Bypassed: r.Bypassed()}
	if r.Bypassed() {
		rc, err := p.audit(ctx, r)
		if err != nil {
			return Committed{}, fmt.Errorf("batpak: bypass not committed, its audit record failed: %w", err)
		}
		c.Audit = &rc
		ctx = context.WithValue(ctx, bypassKey{}, r)
		// A context fn kept lets nothing through once Commit returned.
		defer r.spent.Store(true)
	}
	return c, fn(ctx)
}

type bypassKey struct{}

// bypassed reports whether ctx carries a bypass receipt for this write
// that a honours: issued by a pipeline made from a, for the same
// coordinate, kind and payload bytes (and action, when the bypassed Input
// names one), not yet spent. It spends the
// receipt: one bypass lets one write through, and only while its Commit
// runs.
func (a *Admitter) bypassed(ctx context.Context, in *Input) bool {
	r, ok := ctx.Value(bypassKey{}).(*Receipt)
	if !ok || r.pipe == nil || r.pipe.admitter != a || (r.in.Action != "" && r.in.Action != in.Action) ||
		r.in.Event.Entity != in.Event.Entity || r.in.Event.Scope != in.Event.Scope || r.in.Event.Kind != in.Event.Kind ||
		!bytes.Equal(r.in.Event.Payload, in.Event.Payload) {
		return false
	}
	return r.spent.CompareAndSwap(false, true)
}

// auditRecord is the payload of a bypass audit event.
type auditRecord struct {
	Who  Principal `json:"who"`
	Why  string    `json:"why"`
	What *Input    `json:"what"`
	At   time.Time `json:"at"`
}

func (p *Pipeline) audit(ctx context.Context, r *Receipt) (core.Receipt, error) {
	if p.store == nil {
		return core.Receipt{}, errors.New("batpak: the pipeline has no store to record the bypass in")
	}
	who := r.who
	if who.ID == "" && who.Tenant == "" && len(who.Roles) == 0 {
		who = PrincipalFrom(ctx)
	}
	// Not HTML-escaped: the record keeps the payload's bytes as they are
	// (json.Marshal would write each < as \u003c).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(auditRecord{Who: who, Why: r.bypass, What: r.in, At: time.Now().UTC()}); err != nil {
		return core.Receipt{}, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	coord, err := core.NewCoordinate(AuditEntity, "policy")
	if err != nil {
		return core.Receipt{}, err
	}
	// Marked: the gate is not asked about its own audit record.
	return p.store.AppendSystem(trusted.Mark(ctx), coord, KindBypassAudit, b, core.AppendOptions{})
}

// Admitter is the store's write gate (core.Admission) made of a GateSet:
// set it as core.Config.Admission. Every write's proposal becomes an Input
// (principal from the context) and goes through the gates, fail-fast; a
// denial is returned to the writer as a *Denial. A write committed through
// a bypass of one of its own pipelines (Admitter.Pipeline) passes. It
// judges destructive operations too (core.MaintenanceAdmission): Redact,
// EraseEntity and Compact become an Input with action "redact", "erase"
// or "compact" and Maintenance set, through the same gates; no bypass
// applies to them.
type Admitter struct {
	gates *GateSet
}

// NewAdmitter returns an admitter over the gates, in order.
func NewAdmitter(gates ...Gate) *Admitter { return &Admitter{gates: NewGateSet(gates...)} }

// Admit implements core.Admission.
func (a *Admitter) Admit(ctx context.Context, p *core.Proposal) error {
	in := InputFromProposal(ctx, p)
	if a.bypassed(ctx, in) {
		return nil
	}
	if d := a.gates.check(ctx, in); d != nil {
		return d
	}
	return nil
}

// AdmitMaintenance implements core.MaintenanceAdmission: the operation
// goes through the gates as an Input from InputFromMaintenance; the grant
// names the principal, which the store's audit record keeps as "who".
func (a *Admitter) AdmitMaintenance(ctx context.Context, p *core.MaintenanceProposal) (core.MaintenanceGrant, error) {
	in := InputFromMaintenance(ctx, p)
	if d := a.gates.check(ctx, in); d != nil {
		return core.MaintenanceGrant{}, d
	}
	who, err := json.Marshal(in.Principal)
	if err != nil {
		return core.MaintenanceGrant{}, err
	}
	return core.MaintenanceGrant{Who: who}, nil
}

// Gates returns the admitter's gate set.
func (a *Admitter) Gates() *GateSet { return a.gates }
