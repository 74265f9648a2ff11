package core

import (
	"context"
	"strings"

	"github.com/batpak-go/batpak/core/internal/format"
)

// Append writes one event and waits for its receipt. payload must be one
// JSON value of at most Config.SingleAppendMaxBytes bytes. Errors: a
// *CoordinateError, *KindError, ErrInvalidPayload, ErrPayloadTooLarge
// (nothing written), ErrClosed, ErrReadOnly, or the writer's I/O error.
// Durability of the returned receipt follows Config.Sync (see the package
// documentation). If ctx ends first, Append returns ctx.Err() and the
// write may still happen.
func (s *Store) Append(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (Receipt, error) {
	return s.AppendWithOptions(ctx, coord, kind, payload, AppendOptions{})
}

// AppendWithOptions is Append with compare-and-set, idempotency,
// correlation, causation and flags (see AppendOptions). A failed
// expectation returns a *ConflictError carrying expected and actual.
func (s *Store) AppendWithOptions(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (Receipt, error) {
	return s.appendAs(ctx, ActionAppend, coord, kind, payload, opts)
}

func (s *Store) appendAs(ctx context.Context, action Action, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (Receipt, error) {
	r, err := s.newAppend(ctx, action, coord, kind, payload, opts, false)
	if err != nil {
		return Receipt{}, err
	}
	t, err := s.enqueue(r)
	if err != nil {
		return Receipt{}, err
	}
	return t.Wait(ctx)
}

// AppendReaction appends an event caused by another: correlation ties it to
// the conversation (usually the cause's CorrelationID), causation names the
// event it reacts to.
func (s *Store) AppendReaction(ctx context.Context, coord Coordinate, kind Kind, payload []byte, correlation, causation EventID) (Receipt, error) {
	return s.appendAs(ctx, ActionReaction, coord, kind, payload, AppendOptions{CorrelationID: correlation, CausationID: causation})
}

// Submit validates the event and queues it for the writer without waiting
// for the write; the returned Ticket resolves with the receipt. It blocks
// only while the mailbox is full. The payload is copied, so the caller may
// reuse its buffer at once.
func (s *Store) Submit(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (*Ticket, error) {
	return s.SubmitWithOptions(ctx, coord, kind, payload, AppendOptions{})
}

// SubmitWithOptions is Submit with AppendOptions.
func (s *Store) SubmitWithOptions(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (*Ticket, error) {
	return s.submitAs(ctx, ActionAppend, coord, kind, payload, opts)
}

func (s *Store) submitAs(ctx context.Context, action Action, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (*Ticket, error) {
	r, err := s.newAppend(ctx, action, coord, kind, payload, opts, true)
	if err != nil {
		return nil, err
	}
	return s.enqueue(r)
}

// SubmitReaction is Submit for a reaction (see AppendReaction).
func (s *Store) SubmitReaction(ctx context.Context, coord Coordinate, kind Kind, payload []byte, correlation, causation EventID) (*Ticket, error) {
	return s.submitAs(ctx, ActionReaction, coord, kind, payload, AppendOptions{CorrelationID: correlation, CausationID: causation})
}

// TrySubmitReaction is SubmitReaction that never blocks: under
// back-pressure (see TrySubmit) it writes nothing and returns a
// *RetryError; while a fence is active, ErrFenceActive.
func (s *Store) TrySubmitReaction(ctx context.Context, coord Coordinate, kind Kind, payload []byte, correlation, causation EventID) (*Ticket, error) {
	r, err := s.newAppend(ctx, ActionReaction, coord, kind, payload, AppendOptions{CorrelationID: correlation, CausationID: causation}, true)
	if err != nil {
		return nil, err
	}
	return s.tryEnqueue(r)
}

// TrySubmit is Submit that never blocks: when the writer mailbox holds at
// least Config.PressureRetryPct percent of its capacity it writes nothing
// and returns a *RetryError (errors.Is(err, ErrRetry)) with a suggested
// wait.
func (s *Store) TrySubmit(ctx context.Context, coord Coordinate, kind Kind, payload []byte) (*Ticket, error) {
	return s.TrySubmitWithOptions(ctx, coord, kind, payload, AppendOptions{})
}

// TrySubmitWithOptions is TrySubmit with AppendOptions.
func (s *Store) TrySubmitWithOptions(ctx context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions) (*Ticket, error) {
	r, err := s.newAppend(ctx, ActionAppend, coord, kind, payload, opts, true)
	if err != nil {
		return nil, err
	}
	return s.tryEnqueue(r)
}

// newAppend validates, admits and prepares a request on the caller's
// goroutine. The event is built in place in the request (one allocation
// besides the payload copy).
func (s *Store) newAppend(ctx context.Context, action Action, coord Coordinate, kind Kind, payload []byte, opts AppendOptions, copyPayload bool) (*request, error) {
	if err := s.checkEvent(coord, kind, payload, &opts, action == ActionReaction); err != nil {
		return nil, err
	}
	r := &request{op: opAppend}
	r.t = &r.ticket
	r.ev.fillFields(coord, kind, payload, &opts, copyPayload, EventID{})
	r.ev.hashNowOrLater()
	if err := s.admit(ctx, action, &r.ev, -1, 0); err != nil {
		return nil, err
	}
	return r, nil
}

// prepareEvent validates one event and computes what the writer needs:
// id and payload digest. fresh, when not zero, is the id to give an event
// whose options fix none (drawn by the caller, see idSource.fill).
func (s *Store) prepareEvent(_ context.Context, coord Coordinate, kind Kind, payload []byte, opts AppendOptions, copyPayload, reaction bool, fresh EventID) (eventReq, error) {
	if err := s.checkEvent(coord, kind, payload, &opts, reaction); err != nil {
		return eventReq{}, err
	}
	var ev eventReq
	ev.fill(coord, kind, payload, &opts, copyPayload, fresh)
	return ev, nil
}

// prepareUnhashed is prepareEvent leaving the payload's digest to the
// caller, who hashes many payloads at once (hashPayloads).
func (s *Store) prepareUnhashed(coord Coordinate, kind Kind, payload []byte, opts AppendOptions, reaction bool, fresh EventID) (eventReq, error) {
	if err := s.checkEvent(coord, kind, payload, &opts, reaction); err != nil {
		return eventReq{}, err
	}
	var ev eventReq
	ev.fillFields(coord, kind, payload, &opts, false, fresh)
	return ev, nil
}

// hashPayloads sets every event's payload digest, many at once
// (format.Digests): a batch's payloads are independent inputs.
func hashPayloads(evs []eventReq) {
	format.Digests(len(evs), func(i int) []byte { return evs[i].payload },
		func(i int, d [32]byte) { evs[i].phash = d })
}

// checkEvent is prepareEvent's validation: a kind the application may
// write (a named effect kind only in a reaction), an unreserved entity, a
// writable store, then validateWrite.
func (s *Store) checkEvent(coord Coordinate, kind Kind, payload []byte, opts *AppendOptions, reaction bool) error {
	if err := kind.validWrite(reaction, opts.CausationID); err != nil {
		return err
	}
	if err := checkUnreserved(coord); err != nil {
		return err
	}
	if s.readOnly {
		return ErrReadOnly
	}
	return s.validateWrite(coord, payload, opts)
}

// ReservedEntityPrefix starts the entities of the store's own records
// (audit records, log salvage, expired fences). Application writes to
// such an entity — Append, batches, fences, Import, reactions, and
// AppendSystem from application code — are refused with a
// *CoordinateError, so no application can forge or bury those records.
const ReservedEntityPrefix = "batpak:"

// checkUnreserved refuses an application write to a reserved entity.
func checkUnreserved(coord Coordinate) error {
	if strings.HasPrefix(coord.Entity, ReservedEntityPrefix) {
		return &CoordinateError{Part: "entity", Value: coord.Entity, Reason: "the prefix " + ReservedEntityPrefix + " is reserved for the store's own records"}
	}
	return nil
}

// prepareAnyKind is prepareEvent without the user-kind check (system
// events written by application code).
func (s *Store) prepareAnyKind(coord Coordinate, kind Kind, payload []byte, opts AppendOptions, copyPayload bool) (eventReq, error) {
	ev, err := s.prepareAnyKindUnhashed(coord, kind, payload, opts, copyPayload)
	if err == nil {
		ev.phash = format.PayloadHash(ev.payload)
	}
	return ev, err
}

// prepareAnyKindUnhashed is prepareAnyKind leaving the payload's digest
// to the caller: hashPayloads for a batch, or the writer's seal
// (eventReq.hashLater) for a single event without an idempotency key.
func (s *Store) prepareAnyKindUnhashed(coord Coordinate, kind Kind, payload []byte, opts AppendOptions, copyPayload bool) (eventReq, error) {
	if s.readOnly {
		return eventReq{}, ErrReadOnly
	}
	if err := s.validateWrite(coord, payload, &opts); err != nil {
		return eventReq{}, err
	}
	var ev eventReq
	ev.fillFields(coord, kind, payload, &opts, copyPayload, EventID{})
	return ev, nil
}

// hashNowOrLater leaves a single event's payload digest to the writer's
// seal, which takes a group's digests 16 at once, when that is faster
// (format.HashedTogether: AVX-512, at most 1 KiB) and nothing needs the
// digest before the seal (no idempotency key: a repeat's digest is
// compared while placing); else it takes it now, on the caller's
// goroutine, in parallel with other callers rather than on the writer.
func (ev *eventReq) hashNowOrLater() {
	if ev.opts.IdempotencyKey == "" && format.HashedTogether(len(ev.payload)) {
		ev.hashLater = true
	} else {
		ev.phash = format.PayloadHash(ev.payload)
	}
}

// newEventReq is a validated event as the writer takes it.
func newEventReq(coord Coordinate, kind Kind, payload []byte, opts AppendOptions, copyPayload bool) eventReq {
	var ev eventReq
	ev.fill(coord, kind, payload, &opts, copyPayload, EventID{})
	return ev
}

// fill makes ev the validated event as the writer takes it (id, payload
// digest, the payload copied when the caller keeps its buffer), writing
// in place rather than copying the whole request. An event whose options
// fix no id gets fresh, or a new id when fresh is zero.
func (ev *eventReq) fill(coord Coordinate, kind Kind, payload []byte, opts *AppendOptions, copyPayload bool, fresh EventID) {
	ev.fillFields(coord, kind, payload, opts, copyPayload, fresh)
	ev.phash = format.PayloadHash(ev.payload)
}

// fillFields is fill without the payload's digest.
func (ev *eventReq) fillFields(coord Coordinate, kind Kind, payload []byte, opts *AppendOptions, copyPayload bool, fresh EventID) {
	if copyPayload {
		payload = append([]byte(nil), payload...)
	}
	ev.coord, ev.kind, ev.payload, ev.opts = coord, kind, payload, *opts
	ev.ts = opts.Timestamp
	switch {
	case !opts.ID.IsZero():
		ev.id, ev.imported = opts.ID, true // a fixed id: refuse one the store holds
	case !fresh.IsZero():
		ev.id = fresh
	default:
		ev.id = NewEventID()
	}
}
