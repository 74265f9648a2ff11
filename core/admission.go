package core

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/batpak-go/batpak/internal/trusted"
)

// Admission is the store's write gate: every path that writes — Append,
// Submit, TrySubmit, reactions, batches (each item, then the batch as a
// whole), outbox flushes, fence writes, imports, writes made for plugins
// and system records written by application code (AppendSystem, action
// ActionSystem) — asks it before anything is queued. Destructive
// operations (Redact, EraseEntity, Compact) ask it too, through
// MaintenanceAdmission, which an Admission must also implement for them
// to run at all. A non-nil error refuses
// the write: nothing is written and nothing is announced, and the error is
// returned to the writer as is (so a *policy.Denial stays reachable with
// errors.As; batch items are wrapped in *BatchItemError naming the item).
// Admit runs on the writing goroutine, concurrently with other writers;
// it must be safe for concurrent use. Set it with Config.Admission.
type Admission interface {
	Admit(ctx context.Context, p *Proposal) error
}

// BatchAdmission is implemented by gates that also judge a batch as a
// whole, after each of its items was admitted.
type BatchAdmission interface {
	AdmitBatch(ctx context.Context, items []*Proposal) error
}

// ItemsAdmission is implemented by gates that judge a batch's items in one
// call (a gate in another process answers them all in one round trip):
// the store then calls AdmitItems once, with every item, instead of Admit
// once per item. It returns nil when every item is admitted, else a
// *BatchItemError naming the first item refused (an error of another type
// refuses the batch as a whole). BatchAdmission, if also implemented, is
// asked after it.
type ItemsAdmission interface {
	AdmitItems(ctx context.Context, items []*Proposal) error
}

// SwitchedAdmission is implemented by gates that judge writes only some of
// the time (a tenant's policy that may be uploaded later): while Judging
// reports false, writes are admitted without building a Proposal, so an
// idle gate costs the write path nothing. Destructive operations are asked
// through MaintenanceAdmission as always.
type SwitchedAdmission interface {
	Judging() bool
}

// idleAdmission reports whether writes need not be proposed at all: no
// Admission, or one that is not judging now.
func (s *Store) idleAdmission() bool {
	if s.cfg.Admission == nil {
		return true
	}
	sw, ok := s.cfg.Admission.(SwitchedAdmission)
	return ok && !sw.Judging()
}

// Action names the write path a proposal came through.
type Action string

// The write paths.
const (
	ActionAppend   Action = "append"   // Append, Submit, TrySubmit
	ActionBatch    Action = "batch"    // AppendBatch, SubmitBatch, outbox flushes
	ActionFence    Action = "fence"    // writes through a visibility fence
	ActionImport   Action = "import"   // imports of exported events
	ActionReaction Action = "reaction" // AppendReaction, SubmitReaction, React
	ActionPlugin   Action = "plugin"   // writes a plugin emitted
	ActionSystem   Action = "system"   // AppendSystem by application code
)

// The destructive operations (see MaintenanceAdmission).
const (
	ActionRedact  Action = "redact"  // Redact
	ActionErase   Action = "erase"   // EraseEntity
	ActionCompact Action = "compact" // Compact
)

// Proposal describes one write for admission.
type Proposal struct {
	Action     Action
	Coordinate Coordinate
	Kind       Kind
	ID         EventID // the id the event will have
	// Payload is one valid JSON value; do not modify it. It is valid
	// only during the call: copy it to keep it (a batch's payloads share
	// one buffer, which a kept slice would hold whole).
	Payload []byte
	Options AppendOptions
	// BatchSize and BatchIndex place a batch item (BatchIndex is -1 and
	// BatchSize 0 outside batches).
	BatchSize  int
	BatchIndex int
	// EntityExists and EntityClock describe the entity's visible events
	// when the write was proposed (queued writes not included).
	EntityExists bool
	EntityClock  uint64
	// Plugin names the plugin that emitted the write (WithPlugin); nil
	// for writes no plugin made.
	Plugin *PluginRef
}

// PluginRef identifies a plugin to the gates: its name, version and the
// digest of its module.
type PluginRef struct {
	Name    string
	Version string
	Digest  string
}

type pluginKey struct{}

// WithPlugin marks writes made with ctx as emitted by plugin p (a plugin
// host sets it, with WithAction(ctx, ActionPlugin)); gates see it as the
// proposal's Plugin.
func WithPlugin(ctx context.Context, p PluginRef) context.Context {
	return context.WithValue(ctx, pluginKey{}, p)
}

func pluginOf(ctx context.Context) *PluginRef {
	if p, ok := ctx.Value(pluginKey{}).(PluginRef); ok {
		return &p
	}
	return nil
}

type actionKey struct{}

// WithAction marks writes made with ctx as coming through a path the
// store cannot see itself: ActionImport for an importer, ActionPlugin for
// a plugin host, ActionReaction for a reaction loop. Gates see it as the
// proposal's Action.
func WithAction(ctx context.Context, a Action) context.Context {
	return context.WithValue(ctx, actionKey{}, a)
}

func actionOf(ctx context.Context, def Action) Action {
	if a, ok := ctx.Value(actionKey{}).(Action); ok && a != "" {
		return a
	}
	return def
}

// admit asks the configured Admission about one prepared event. index is
// the batch position (-1 outside a batch).
func (s *Store) admit(ctx context.Context, action Action, ev *eventReq, index, size int) error {
	if s.idleAdmission() {
		return nil
	}
	return s.cfg.Admission.Admit(ctx, s.proposal(ctx, action, ev, index, size))
}

func (s *Store) proposal(ctx context.Context, action Action, ev *eventReq, index, size int) *Proposal {
	p := &Proposal{
		Action: actionOf(ctx, action), Coordinate: ev.coord, Kind: ev.kind, ID: ev.id,
		Payload: ev.payload, Options: ev.opts, BatchIndex: index, BatchSize: size,
		Plugin: pluginOf(ctx),
	}
	p.EntityClock, p.EntityExists = s.EntityClock(ev.coord.Entity)
	return p
}

// EntityClock is the clock of the entity's latest visible event and
// true, or 0 and false when it has none (queued writes not included):
// what a write proposed now carries to admission as Proposal.EntityClock
// and EntityExists. A dry run of a policy fills a Proposal with it to be
// judged as the write would be.
func (s *Store) EntityClock(entity string) (clock uint64, exists bool) {
	ix := s.ix
	ix.RLock()
	defer ix.RUnlock()
	if n, ok := ix.EntityNamed(entity); ok {
		if seqs := ix.Entity(n).Seqs; len(seqs) > 0 {
			return ix.At(seqs[len(seqs)-1]).Clock, true
		}
	}
	return 0, false
}

// admitBatch asks about every item, then about the batch as a whole.
func (s *Store) admitBatch(ctx context.Context, action Action, evs []eventReq) error {
	if s.idleAdmission() {
		return nil
	}
	ps := make([]*Proposal, len(evs))
	ia, items := s.cfg.Admission.(ItemsAdmission)
	for i := range evs {
		ps[i] = s.proposal(ctx, action, &evs[i], i, len(evs))
		if items {
			continue
		}
		if err := s.cfg.Admission.Admit(ctx, ps[i]); err != nil {
			return &BatchItemError{Index: i, Err: err}
		}
	}
	if items {
		if err := ia.AdmitItems(ctx, ps); err != nil {
			return err
		}
	}
	if ba, ok := s.cfg.Admission.(BatchAdmission); ok {
		return ba.AdmitBatch(ctx, ps)
	}
	return nil
}

// SystemKind returns the kind of batpak's own records: category 0x0, type
// typ (at most 0xFFF). CustomKind refuses category 0x0.
func SystemKind(typ uint16) (Kind, error) {
	if typ > MaxKindType {
		return 0, &KindError{CategorySystem, typ, "type must be at most 0xFFF"}
	}
	return Kind(typ), nil
}

// AppendSystem writes one of batpak's own records (a kind from SystemKind)
// and waits for it. With an Admission set, the record is proposed to it
// like any write, as ActionSystem, so application code cannot use system
// kinds to go around the gate; only the packages of this module (policy,
// recording the audit record of a bypass) can write a system record the
// gate is not asked about (see internal/trusted), and only they can write
// to the store's own entities (ReservedEntityPrefix). Applications should
// write their own kinds with Append. Errors: ErrNotSystemKind, a
// *CoordinateError for a reserved entity, the gate's refusal, Append's
// errors. Durability as Append.
func (s *Store) AppendSystem(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (Receipt, error) {
	if kind.Category() != CategorySystem {
		return Receipt{}, fmt.Errorf("%w: %s", ErrNotSystemKind, kind)
	}
	if trusted.Marked(ctx) {
		// batpak's own packages (a bypass's audit record): a store record.
		return s.writeStoreRecord(ctx, coord, kind, payload)
	}
	if err := checkUnreserved(coord); err != nil {
		return Receipt{}, err
	}
	ev, err := s.prepareAnyKind(coord, kind, payload, opts, false)
	if err != nil {
		return Receipt{}, err
	}
	if err := s.admit(WithAction(ctx, ActionSystem), ActionSystem, &ev, -1, 0); err != nil {
		return Receipt{}, err
	}
	r := &request{op: opAppend, ev: ev}
	r.t = &r.ticket
	t, err := s.enqueue(r)
	if err != nil {
		return Receipt{}, err
	}
	return t.Wait(ctx)
}

// MaintenanceAdmission is implemented by gates that judge the destructive
// operations: Redact (ActionRedact), EraseEntity (ActionErase) and Compact
// (ActionCompact). Each operation first works out exactly what it would
// erase or remove, then asks AdmitMaintenance, then — under the same lock,
// so the plan cannot change in between — records the audit event and
// carries it out. A non-nil error refuses the operation: nothing is erased,
// removed or recorded, and the error is returned as is. The grant's Who is
// written into the audit record.
//
// Fail closed: when Config.Admission is set but does not implement
// MaintenanceAdmission, the destructive operations are refused with
// ErrMaintenanceNotAdmitted. Without an Admission they run unasked (and
// are still recorded).
type MaintenanceAdmission interface {
	AdmitMaintenance(ctx context.Context, p *MaintenanceProposal) (MaintenanceGrant, error)
}

// MaintenanceGrant is what a gate says when it admits a destructive
// operation.
type MaintenanceGrant struct {
	// Who is recorded as the audit record's "who" (one JSON value; empty
	// is recorded as null).
	Who json.RawMessage
}

// MaintenanceProposal describes a destructive operation for admission:
// what it would erase or remove, worked out before anything is done.
type MaintenanceProposal struct {
	Action Action // ActionRedact, ActionErase or ActionCompact
	// Reason is why (WithReason); "" when the caller gave none.
	Reason string
	// IDs lists the events whose payloads Redact or EraseEntity would
	// erase (visible, not yet redacted); nil for Compact.
	IDs []EventID
	// Entity is the entity asked for: EraseEntity's argument, or the
	// entity of Redact's event.
	Entity string
	// Entities maps every entity whose events the operation would erase or
	// remove to how many; the tenants of the data at stake, for a policy
	// that names tenants in entities.
	Entities map[string]int
	// Compact is what Compact was asked to do; nil for the others.
	Compact *CompactStrategy
	// EventsErased counts the payloads the operation would erase (Redact,
	// EraseEntity, Compact's tombstones); EventsRemoved the events Compact
	// would remove; Segments the sealed segments Compact would rewrite.
	EventsErased  int
	EventsRemoved int
	Segments      int
}

// CompactStrategy describes a CompactConfig for admission. Keep and
// Tombstone are Go predicates: the gate sees only whether they are set
// (and, in the proposal's counts, what they picked).
type CompactStrategy struct {
	Merge        bool
	MaxAge       time.Duration
	MaxPerEntity int
	Keep         bool
	Tombstone    bool
}

type reasonKey struct{}

// WithReason states why the destructive operations made with ctx are done
// ("GDPR request 1234"); gates see it as MaintenanceProposal.Reason, and
// the audit record keeps it.
func WithReason(ctx context.Context, why string) context.Context {
	return context.WithValue(ctx, reasonKey{}, why)
}

func reasonOf(ctx context.Context) string {
	r, _ := ctx.Value(reasonKey{}).(string)
	return r
}

// MaintenanceAuditEntity is the entity (scope MaintenanceAuditScope) of
// the audit records of destructive operations; KindMaintenanceAudit is
// their kind. Each record is a JSON object:
//
//	{"action": "redact"|"erase"|"compact", "who": <the grant's Who or null>,
//	 "why": "...", "entity": "...", "ids": [...], "entities": {"e": n, ...},
//	 "compact": {...} or null, "events_erased": n, "events_removed": n,
//	 "segments": n, "truncated": false,
//	 "at": "RFC 3339 time, UTC, always with microseconds"}
//
// ids and entities list at most MaintenanceAuditListMax items each, and
// why at most MaintenanceAuditWhyMax bytes (truncated is then true; the
// counts are always complete). A record is written and synced before the
// operation takes effect, so it says what was admitted and attempted: an
// operation that fails afterwards (an I/O error, a crash) leaves its
// record and changes nothing.
const (
	MaintenanceAuditEntity = "batpak:audit:maintenance"
	MaintenanceAuditScope  = "batpak"
	// MaintenanceAuditListMax bounds the ids and entities an audit record
	// lists, keeping records small (store records are not held to
	// Config.SingleAppendMaxBytes).
	MaintenanceAuditListMax = 256
	// MaintenanceAuditWhyMax bounds the reason (WithReason) a record keeps.
	MaintenanceAuditWhyMax = 4096
)

// KindMaintenanceAudit is the system kind (0x0:0x2) of the audit records
// of destructive operations. (0x0:0x1 is the policy package's bypass
// audit record.)
const KindMaintenanceAudit Kind = 0x002

// auditTimeFormat is RFC 3339 with a fixed six-digit fraction, so audit
// records of the same operation have the same size.
const auditTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

type maintenanceRecord struct {
	Action        Action           `json:"action"`
	Who           json.RawMessage  `json:"who"`
	Why           string           `json:"why"`
	Entity        string           `json:"entity,omitempty"`
	IDs           []EventID        `json:"ids,omitempty"`
	Entities      map[string]int   `json:"entities"`
	Compact       *compactStrategy `json:"compact"`
	EventsErased  int              `json:"events_erased"`
	EventsRemoved int              `json:"events_removed"`
	Segments      int              `json:"segments"`
	Truncated     bool             `json:"truncated"`
	At            string           `json:"at"`
}

type compactStrategy struct {
	Merge         bool    `json:"merge"`
	MaxAgeSeconds float64 `json:"max_age_seconds"`
	MaxPerEntity  int     `json:"max_per_entity"`
	Keep          bool    `json:"keep"`
	Tombstone     bool    `json:"tombstone"`
}

// admitMaintenance asks the gate about p (fail closed: an Admission that
// cannot judge maintenance refuses it) and, when admitted and the
// operation erases or removes anything, records the audit event and syncs
// it before returning: no erasure without its record. The caller holds
// erasureMu, so the plan in p stays true until it is carried out.
func (s *Store) admitMaintenance(ctx context.Context, p *MaintenanceProposal) error {
	p.Reason = reasonOf(ctx)
	var grant MaintenanceGrant
	if s.cfg.Admission != nil {
		ma, ok := s.cfg.Admission.(MaintenanceAdmission)
		if !ok {
			return ErrMaintenanceNotAdmitted
		}
		var err error
		if grant, err = ma.AdmitMaintenance(ctx, p); err != nil {
			return err
		}
	}
	if p.EventsErased+p.EventsRemoved == 0 {
		return nil
	}
	rec := maintenanceRecord{
		Action: p.Action, Who: grant.Who, Why: truncateUTF8(p.Reason, MaintenanceAuditWhyMax), Entity: p.Entity,
		EventsErased: p.EventsErased, EventsRemoved: p.EventsRemoved, Segments: p.Segments,
		Entities: map[string]int{}, At: time.UnixMicro(s.nowMicros()).UTC().Format(auditTimeFormat),
	}
	if len(rec.Who) == 0 || !json.Valid(rec.Who) {
		rec.Who = json.RawMessage("null")
	}
	rec.Truncated = len(rec.Why) < len(p.Reason)
	rec.IDs = p.IDs
	if len(rec.IDs) > MaintenanceAuditListMax {
		rec.IDs, rec.Truncated = rec.IDs[:MaintenanceAuditListMax], true
	}
	names := make([]string, 0, len(p.Entities))
	for e := range p.Entities {
		names = append(names, e)
	}
	slices.Sort(names)
	if len(names) > MaintenanceAuditListMax {
		names, rec.Truncated = names[:MaintenanceAuditListMax], true
	}
	for _, e := range names {
		rec.Entities[e] = p.Entities[e]
	}
	if c := p.Compact; c != nil {
		rec.Compact = &compactStrategy{Merge: c.Merge, MaxAgeSeconds: c.MaxAge.Seconds(), MaxPerEntity: c.MaxPerEntity, Keep: c.Keep, Tombstone: c.Tombstone}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("batpak: %s not done, its audit record failed: %w", p.Action, err)
	}
	coord, err := NewCoordinate(MaintenanceAuditEntity, MaintenanceAuditScope)
	if err != nil {
		return err
	}
	_, err = s.writeStoreRecord(ctx, coord, KindMaintenanceAudit, b)
	if err == nil {
		err = s.Sync(context.WithoutCancel(ctx))
	}
	if err != nil {
		return fmt.Errorf("batpak: %s not done, its audit record failed: %w", p.Action, err)
	}
	return nil
}

// truncateUTF8 cuts s to at most n bytes at a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
