package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins/abi"
	"github.com/batpak-go/batpak/policy"
)

// EncodeBatch encodes events in the ABI's batch layout.
func EncodeBatch(dst []byte, evs []core.StoredEvent) []byte {
	size := 4
	for i := range evs {
		size += int(EncodedSize(&evs[i]))
	}
	dst = slices.Grow(dst, size) // one allocation, not one growth per event
	dst = abi.AppendBatchHeader(dst, len(evs))
	for i := range evs {
		ev := &evs[i]
		h := &ev.Header
		dst = abi.AppendEvent(dst, &abi.EventRecord{
			Seq: ev.GlobalSequence, Clock: h.Clock, Timestamp: h.Timestamp,
			Kind: uint16(h.Kind), Flags: h.Flags,
			ID: h.ID, Correlation: h.CorrelationID, Causation: h.CausationID,
			Entity: []byte(ev.Coordinate.Entity), Scope: []byte(ev.Coordinate.Scope), Payload: ev.Payload,
		})
	}
	return dst
}

// Fold runs a projection plugin over events: fold(state, batch) → state.
func (p *Plugin) Fold(ctx context.Context, state []byte, evs []core.StoredEvent) ([]byte, error) {
	if k := p.Manifest().Kind; k != KindProjection {
		return nil, fmt.Errorf("batpak: plugin %s is a %s plugin, not a projection", p.name, k)
	}
	return p.foldOn(ctx, nil, state, evs)
}

// foldOn folds evs into state on version pin (nil: the current one), in
// as many calls as keep each call's batch within a quarter of the
// plugin's memory (at least one event a call): a fold over many large
// events would otherwise hand the module more than its memory can take,
// and fault every time. Folding in parts is folding the whole: the host
// cuts batches where it likes (core.ProjectBatchSize).
func (p *Plugin) foldOn(ctx context.Context, pin *version, state []byte, evs []core.StoredEvent) ([]byte, error) {
	v := pin
	if v == nil {
		v = p.cur.Load()
	}
	budget := int64(v.m.Limits.MemoryPages) * 65536 / 4
	for first := true; first || len(evs) > 0; first = false { // no events: one call all the same
		n, size := 0, int64(4)
		for n < len(evs) {
			size += EncodedSize(&evs[n])
			if n > 0 && size > budget {
				break
			}
			n++
		}
		out, err := p.callOn(ctx, pin, abi.ExportFold, nil, callInput{state: state, withState: true, evs: evs[:n]})
		if err != nil {
			return nil, err
		}
		state, evs = out, evs[n:]
	}
	return state, nil
}

// EncodedSize is the bytes ev takes in the ABI's batch layout.
func EncodedSize(ev *core.StoredEvent) int64 {
	return int64(4 + abi.EventFixed + len(ev.Coordinate.Entity) + len(ev.Coordinate.Scope) + len(ev.Payload))
}

// batchBufs recycles encoded batches: call copies them into the guest and
// keeps nothing.
var batchBufs = sync.Pool{New: func() any { return new([]byte) }}

// encodeBatch encodes evs into a buffer from batchBufs (put it back when
// done).
func encodeBatch(evs []core.StoredEvent) *[]byte {
	b := batchBufs.Get().(*[]byte)
	if cap(*b) > 4<<20 {
		*b = nil // do not keep a huge one around
	}
	*b = EncodeBatch((*b)[:0], evs)
	return b
}

// Projection adapts a projection plugin to core.Project: the state is the
// plugin's bytes, events are folded a batch per call, and cached states
// are keyed by plugin name, version and module digest (so a new build is
// never served an old build's state).
type Projection struct {
	P    *Plugin
	Ctx  context.Context // for the calls; nil means context.Background()
	Only []core.Kind     // the kinds folded; nil means all
	pin  *version        // see Pinned
}

// ErrSwapped is what a pinned Projection's ApplyBatch returns once its
// plugin was swapped to another version: fold again with a new one.
var ErrSwapped = errors.New("batpak: the plugin was swapped during the fold")

// ErrUnloaded is what a call of a plugin returns once the plugin was
// unloaded (Host.Unload, Host.Close): not a fault, nothing ran. Calls
// running when it was unloaded finish first.
var ErrUnloaded = errors.New("batpak: the plugin was unloaded")

// Pinned returns pr bound to the plugin's current version: its Name (the
// projection cache's key) is that version's, every batch is folded by
// it, and once the plugin is swapped ApplyBatch fails with ErrSwapped
// instead of folding with another version. An unpinned Projection names
// and folds with whatever version is current at each call, so a swap
// during a fold can file one version's state under another's name.
func (pr Projection) Pinned() Projection {
	pr.pin = pr.P.cur.Load()
	return pr
}

// Name implements core.Projection: plugin name, version, module digest
// and a digest of the manifest (the projection cache's key: states made
// under another manifest, one with other grants or environment, are not
// this version's).
func (pr Projection) Name() string {
	v := pr.pin
	if v == nil {
		v = pr.P.cur.Load()
	}
	return fmt.Sprintf("plugin:%s@%s:%s:%s", v.m.Name, v.m.Version, v.digest[:16], v.manifestSum)
}

// manifestSum is the first 16 hex digits of the SHA-256 of m as JSON.
func manifestSum(m Manifest) string {
	b, _ := json.Marshal(m)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// SchemaVersion implements core.Projection.
func (pr Projection) SchemaVersion() uint32 { return abi.Version }

// Kinds implements core.Projection.
func (pr Projection) Kinds() []core.Kind { return pr.Only }

// Init implements core.Projection: an empty state.
func (pr Projection) Init() []byte { return nil }

// Apply implements core.Projection for one event. core.Project uses
// ApplyBatch instead; Apply keeps the state unchanged if the plugin faults.
func (pr Projection) Apply(state []byte, ev core.StoredEvent) []byte {
	out, err := pr.ApplyBatch(state, []core.StoredEvent{ev})
	if err != nil {
		return state
	}
	return out
}

// ApplyBatch implements core.BatchApplier.
func (pr Projection) ApplyBatch(state []byte, evs []core.StoredEvent) ([]byte, error) {
	ctx := pr.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if pr.pin == nil {
		return pr.P.Fold(ctx, state, evs)
	}
	if pr.P.cur.Load() != pr.pin {
		return nil, ErrSwapped
	}
	if k := pr.pin.m.Kind; k != KindProjection {
		return nil, fmt.Errorf("batpak: plugin %s is a %s plugin, not a projection", pr.P.name, k)
	}
	return pr.P.foldOn(ctx, pr.pin, state, evs)
}

// SupportsIncremental implements core.Incremental: a fold continues from
// any state.
func (pr Projection) SupportsIncremental() bool { return true }

// EncodeState implements core.StateCodec (the bytes as they are).
func (pr Projection) EncodeState(s []byte) ([]byte, error) { return s, nil }

// DecodeState implements core.StateCodec.
func (pr Projection) DecodeState(b []byte) ([]byte, error) { return b, nil }

// Handle runs a handler plugin over events and returns its action and the
// reactions it asks for (aliasing nothing of the plugin's memory).
func (p *Plugin) Handle(ctx context.Context, evs []core.StoredEvent) (uint32, []abi.Reaction, error) {
	v := p.cur.Load()
	if v.m.Kind != KindHandler {
		return 0, nil, fmt.Errorf("batpak: plugin %s is a %s plugin, not a handler", p.name, v.m.Kind)
	}
	var action uint32
	var rs []abi.Reaction
	// The answer is checked inside the call, so that a malformed one is a
	// fault that counts toward quarantine like any other.
	limit := p.Manifest().Limits.MaxReactions
	_, err := p.call(ctx, abi.ExportHandle, func(out []byte) error {
		if len(out) >= 8 {
			if n := binary.LittleEndian.Uint32(out[4:]); n > limit {
				return fmt.Errorf("%w: batpak_handle returned %d reactions, the limit is %d (limits.max_reactions)", errOutputLimit, n, limit)
			}
		}
		var err error
		if action, rs, err = abi.ParseHandlerOutput(out); err != nil {
			return err
		}
		for _, r := range rs {
			if int(r.Source) >= len(evs) {
				return fmt.Errorf("reaction names source event %d of a batch of %d", r.Source, len(evs))
			}
		}
		return nil
	}, callInput{evs: evs})
	if err != nil {
		return 0, nil, err
	}
	return action, rs, nil
}

// LoadFor loads wasm as Load does, on behalf of owner: the principal
// (id, tenant, roles) that loads it. The plugin's writes carry owner to the
// store's gates as input.principal, and the plugin's name, version and
// module digest as input.plugin, so a tenant policy admits a tenant's
// plugin into that tenant only and can tell one tenant's plugin from
// another's. Errors as Load.
func (h *Host) LoadFor(ctx context.Context, owner policy.Principal, wasm []byte, m Manifest) (*Plugin, error) {
	owner.Roles = slices.Clone(owner.Roles)
	return h.load(ctx, wasm, m, owner)
}

// Principal is the identity a plugin's writes carry to the store's gates:
// the principal it was loaded for (LoadFor); for a plugin loaded with
// Load, "plugin:NAME" with role "plugin" and no tenant (which a tenant
// policy refuses).
func (p *Plugin) Principal() policy.Principal {
	if o := p.owner; o.ID != "" || o.Tenant != "" || len(o.Roles) > 0 {
		o.Roles = slices.Clone(o.Roles)
		return o
	}
	return policy.Principal{ID: "plugin:" + p.name, Roles: []string{"plugin"}}
}

// Ref identifies the plugin's current version to the store's gates (core
// Proposal.Plugin, policy input.plugin): name, version and the sha256 of
// its module, hex.
func (p *Plugin) Ref() core.PluginRef {
	v := p.cur.Load()
	return core.PluginRef{Name: v.m.Name, Version: v.m.Version, Digest: v.digest}
}

// AppendReactions writes the reactions to one source event as one atomic
// batch (store.AppendBatch; ctx carries the action, principal and plugin
// the gates see), waiting out the refusals that ask to be retried
// (*core.RetryError: the tenant's policy evaluations all busy, the
// writer's mailbox full) — the wait each asks, at most a second at a time
// — until ctx ends, when it returns the last refusal. That is
// back-pressure, nobody's fault, so it must not count against a plugin's
// restart budget. A refused write wrote nothing, and reactions carry
// idempotency keys, so a retry is safe in any case. Any other error is
// returned as AppendBatch returned it.
func AppendReactions(ctx context.Context, store *core.Store, items []core.BatchItem) error {
	for {
		_, err := store.AppendBatch(ctx, items)
		var re *core.RetryError
		if !errors.As(err, &re) {
			return err
		}
		t := time.NewTimer(min(max(re.After, 10*time.Millisecond), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// reactionKeyPrefix is what the idempotency keys of plugin name's
// reactions to the event src begin with (numbered after it).
func reactionKeyPrefix(name string, src core.EventID) string {
	return "plugin:" + name + ":" + src.String() + ":"
}

// Handler adapts a handler plugin to core.CursorWorker. For each batch it
// calls the plugin and writes the reactions it returns, those of each
// source event as one atomic batch, through the store's write gates
// (action "plugin", principal Principal(), plugin Ref()), with correlation = the
// source event's correlation, causation = the source event's id, and an
// idempotency key numbered within the source, so a redelivery
// (at-least-once) writes nothing twice however the batches are cut. A
// plugin fault is the handler's error: the worker restarts from its last
// commit within its restart budget. A reaction refused with a
// *core.RetryError is written again after the wait it asks (at most a
// second at a time) until ctx ends, and is not an error. A redelivered
// source whose reactions were stored before, to which the plugin now
// answers otherwise (another version, a clock read), keeps the reactions
// written first and the worker goes on (core.Store.KeptReactions).
func (p *Plugin) Handler(store *core.Store) core.Handler {
	return func(ctx context.Context, batch []core.StoredEvent) (core.WorkerAction, error) {
		action, rs, err := p.Handle(ctx, batch)
		if err != nil {
			return core.Continue, err
		}
		// The reactions to each source event are written as one atomic
		// batch, numbered within that source: a redelivery finds the same
		// keys however the worker cuts its batches (a restart with another
		// BatchSize, more events arrived), so nothing is written twice.
		bySource := map[uint32][]core.BatchItem{}
		var order []uint32
		for i, r := range rs {
			src := &batch[r.Source]
			coord, err := core.NewCoordinate(string(r.Entity), string(r.Scope))
			if err != nil {
				return core.Continue, fmt.Errorf("batpak: plugin %s reaction %d: %w", p.name, i, err)
			}
			if _, seen := bySource[r.Source]; !seen {
				order = append(order, r.Source)
			}
			n := len(bySource[r.Source])
			bySource[r.Source] = append(bySource[r.Source], core.BatchItem{
				Coordinate: coord, Kind: core.Kind(r.Kind), Payload: append([]byte(nil), r.Payload...),
				Options: core.AppendOptions{
					CorrelationID:  src.Header.CorrelationID,
					CausationID:    src.Header.ID,
					IdempotencyKey: reactionKeyPrefix(p.name, src.Header.ID) + strconv.Itoa(n),
				},
			})
		}
		wctx := core.WithPlugin(core.WithAction(ctx, core.ActionPlugin), p.Ref())
		wctx = policy.WithPrincipal(wctx, p.Principal())
		for _, src := range order {
			id := batch[src].Header.ID
			if err := AppendReactions(wctx, store, bySource[src]); err != nil {
				if store.KeptReactions(wctx, err, reactionKeyPrefix(p.name, id), bySource[src]) {
					// A redelivered source whose reactions were written
					// before, and the plugin (swapped, or reading a clock)
					// now answers otherwise: those stand, none is written
					// twice, the worker goes on.
					p.h.log.Info("batpak: plugin reactions to this event were written before and are kept (the plugin now answers otherwise)",
						"plugin", p.name, "event", id.String(), "err", err)
					continue
				}
				return core.Continue, fmt.Errorf("batpak: plugin %s reactions to %s: %w", p.name, id, err)
			}
		}
		if action == abi.ActionStop {
			return core.Stop, nil
		}
		return core.Continue, nil
	}
}
