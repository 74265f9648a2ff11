package core

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/batpak-go/batpak/core/internal/format"
)

// ExportedEvent is one line of an export: an event with everything an
// import needs to recreate it (global sequence and clock are informative:
// the importing store assigns its own).
type ExportedEvent struct {
	ID             EventID         `json:"id"`
	Entity         string          `json:"entity"`
	Scope          string          `json:"scope"`
	Kind           string          `json:"kind"`
	Clock          uint64          `json:"clock"`
	GlobalSequence uint64          `json:"global_sequence"`
	CorrelationID  EventID         `json:"correlation_id"`
	CausationID    *EventID        `json:"causation_id"`
	Timestamp      int64           `json:"timestamp_us"`
	Flags          uint16          `json:"flags,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	Redacted       bool            `json:"redacted,omitempty"`
	Payload        json.RawMessage `json:"payload"`
}

// Exported converts a stored event to its export form.
func Exported(ev StoredEvent) ExportedEvent {
	h := ev.Header
	x := ExportedEvent{
		ID: h.ID, Entity: ev.Coordinate.Entity, Scope: ev.Coordinate.Scope, Kind: h.Kind.String(),
		Clock: h.Clock, GlobalSequence: ev.GlobalSequence, CorrelationID: h.CorrelationID,
		Timestamp: h.Timestamp, Flags: h.Flags, IdempotencyKey: ev.IdempotencyKey,
		Redacted: ev.Redacted, Payload: ev.Payload,
	}
	if !h.CausationID.IsZero() {
		c := h.CausationID
		x.CausationID = &c
	}
	if x.Payload == nil {
		x.Payload = json.RawMessage("null")
	}
	return x
}

// Export writes the visible events in r, in global order, as
// newline-delimited JSON (one ExportedEvent per line) and returns how many
// it wrote. progress, when set, is called after each event. System
// records (category 0x0: the audit records of this store's erasures and
// bypasses) are left out: they are this store's own history, which Import
// refuses to forge into another store (read them with Query).
//
// The events are those of the log as it ends when Export starts (later
// appends are left out), read in steps of at most exportStepEvents events
// and exportStepBytes of payload: an export holds about one step in
// memory, however long the log (not a plan of every event).
func (s *Store) Export(w io.Writer, r Region, progress func(n int)) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	n := 0
	end := s.Usage().GlobalSequence
	cur := s.Cursor(r)
	for {
		evs, _, err := cur.PollBytes(exportStepEvents, exportStepBytes)
		if err != nil {
			return n, err
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			if ev.GlobalSequence >= end {
				return n, bw.Flush()
			}
			if ev.Header.Kind.Category() == CategorySystem {
				continue
			}
			if err := enc.Encode(Exported(ev)); err != nil {
				return n, err
			}
			n++
			if progress != nil {
				progress(n)
			}
		}
	}
	return n, bw.Flush()
}

// An export's read step (see Export).
const (
	exportStepEvents = 256
	exportStepBytes  = 1 << 20
)

// ImportStats reports an import.
type ImportStats struct {
	Imported int // written
	Skipped  int // already in the store with the same id and content
}

// importChunk is how many events one import batch carries at most.
const importChunk = 256

// importMaxAhead is how far past the store's clock an imported timestamp
// may be: an entity's later events never go back in time, so an event
// from the far future would stamp every write to its entity after it.
const importMaxAhead = 24 * time.Hour

// Import reads newline-delimited ExportedEvents and writes them, keeping
// their ids, correlation and causation ids, timestamps (never before the
// entity's last), flags and idempotency keys; the store assigns clocks and
// global sequences (so an entity whose source had hidden events gets
// contiguous clocks). Events are written in atomic batches through the
// write gates (action "import"); a refused batch writes nothing. An event
// whose id the store already holds with the same coordinate, kind and
// payload is skipped, so an import can be run again after a failure; one
// whose id is held by a different event fails with ErrDuplicateID. A
// redacted event (exported with "redacted":true and a null payload) is
// imported as an ordinary event whose payload is the JSON null — the
// erased payload cannot be restored — or skipped when the store holds its
// id with the same coordinate and kind; a line with "redacted":true and
// any payload but null (or none) fails the import at its line
// (ErrInvalidOptions). Kinds are those an application
// may write: user kinds, and the named effect kinds with a causation id
// (as a reaction writes them); anything else fails with ErrInvalidKind.
// An event whose idempotency key the store holds for another event, two
// events of the input with one key, a payload over
// Config.SingleAppendMaxBytes and a timestamp more than a day ahead of the
// store's clock fail the import at their line. Batches hold at most 256
// events and Config.Batch.MaxBytes of payload (a larger event alone), so
// an import holds no more than that and one line before it writes.
// Lines are numbered in errors. progress, when set, is called after each
// batch with the lines read so far. Once ctx ends, no further batch is
// written and Import returns ctx's error (the batch in flight when it
// ended may still be written). Import is ImportWithOptions with only
// Progress set.
func (s *Store) Import(ctx context.Context, rd io.Reader, progress func(lines int)) (ImportStats, error) {
	return s.ImportWithOptions(ctx, rd, ImportOptions{Progress: progress})
}

// ImportOptions tune ImportWithOptions.
type ImportOptions struct {
	// Progress, when set, is called after each batch with the lines read
	// so far.
	Progress func(lines int)
	// Check, when set, is asked about each event as its line is read,
	// before its batch is written: an error fails the import at that
	// line ("import line N: " wrapping the error; the batches before it
	// stay written). A host holds imports to its own limits with it (a
	// tenant's largest payload, say).
	Check func(it BatchItem) error
	// BeforeBatch, when set, is called before each batch is written with
	// its events and the lines read so far: an error ends the import with
	// it, writing nothing of that batch. A host charges an import to its
	// rates with it (it may wait: the batch waits with it).
	BeforeBatch func(items []BatchItem, lines int) error
	// MaxLineBytes bounds one line of the input (0: the store's own
	// bound, twice Config.SingleAppendMaxBytes plus 1 MiB; larger values
	// are that bound too): a longer line fails the import at that line
	// with bufio.ErrTooLong, having buffered at most this many bytes.
	MaxLineBytes int
}

// ImportWithOptions is Import with opts: see Import for what is read and
// written, and ImportOptions for the hooks.
func (s *Store) ImportWithOptions(ctx context.Context, rd io.Reader, opts ImportOptions) (ImportStats, error) {
	progress := opts.Progress
	var st ImportStats
	ctx = WithAction(ctx, ActionImport)
	sc := bufio.NewScanner(rd)
	maxLine := s.cfg.SingleAppendMaxBytes*2 + 1<<20
	if opts.MaxLineBytes > 0 {
		maxLine = min(maxLine, opts.MaxLineBytes)
	}
	sc.Buffer(make([]byte, min(1<<20, maxLine)), maxLine)
	line := 0
	var items []BatchItem
	var metas []importMeta
	// A batch holds at most importChunk events (and Batch.MaxSize) and
	// Batch.MaxBytes of payload, one larger event alone: what an import
	// holds before it writes stays within a batch's bounds.
	chunk, batchBytes := min(importChunk, s.cfg.Batch.MaxSize), 0
	horizon := s.nowMicros() + importMaxAhead.Microseconds()
	flush := func() error {
		if len(items) == 0 {
			return nil
		}
		// A write with an ended ctx may still happen: an import whose
		// ctx ended (its client gone, its access lost while paced by
		// progress) writes no further batch.
		if err := ctx.Err(); err != nil {
			return err
		}
		if opts.BeforeBatch != nil {
			if err := opts.BeforeBatch(items, line); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n, err := s.importBatch(ctx, items, metas)
		if err == nil {
			st.Imported += n
			st.Skipped += len(items) - n
		}
		items, metas, batchBytes = items[:0], metas[:0], 0
		if progress != nil {
			progress(line)
		}
		return err
	}
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var x ExportedEvent
		if err := json.Unmarshal(b, &x); err != nil {
			return st, importLineError(line, err)
		}
		coord, err := NewCoordinate(x.Entity, x.Scope)
		if err != nil {
			return st, importLineError(line, err)
		}
		kind, err := parseWrittenKind(x.Kind)
		if err != nil {
			return st, importLineError(line, err)
		}
		if x.ID.IsZero() {
			return st, fmt.Errorf("batpak: import line %d: no id", line)
		}
		ao := AppendOptions{CorrelationID: x.CorrelationID, Flags: x.Flags, IdempotencyKey: x.IdempotencyKey}
		if x.CausationID != nil {
			ao.CausationID = *x.CausationID
		}
		payload := []byte(x.Payload)
		if len(payload) == 0 {
			payload = []byte("null")
		}
		if x.Redacted && string(payload) != "null" {
			// Export writes a redacted event's payload as null: a line
			// claiming redaction while carrying a payload would store that
			// payload, or pass for an event held with another payload.
			return st, importLineError(line, fmt.Errorf("%w: a line with \"redacted\":true carries \"payload\":null or none (its payload was erased), not a payload of %d bytes", ErrInvalidOptions, len(payload)))
		}
		if len(payload) > s.cfg.SingleAppendMaxBytes {
			return st, importLineError(line, fmt.Errorf("%w: payload of %d bytes, the limit is %d (Config.SingleAppendMaxBytes)", ErrPayloadTooLarge, len(payload), s.cfg.SingleAppendMaxBytes))
		}
		if x.Timestamp < 0 {
			return st, importLineError(line, fmt.Errorf("%w: timestamp_us %d is negative: want microseconds since the Unix epoch (0 or none: the time of the import)", ErrInvalidOptions, x.Timestamp))
		}
		if x.Timestamp > horizon {
			return st, fmt.Errorf("batpak: import line %d: timestamp_us %d is more than %v ahead of this store's clock: a later write to %s would carry it", line, x.Timestamp, importMaxAhead, coord.Entity)
		}
		it := BatchItem{Coordinate: coord, Kind: kind, Payload: payload, Options: ao}
		if opts.Check != nil {
			if err := opts.Check(it); err != nil {
				return st, importLineError(line, err)
			}
		}
		if len(items) > 0 && batchBytes+len(payload) > s.cfg.Batch.MaxBytes {
			if err := flush(); err != nil {
				return st, err
			}
		}
		items = append(items, it)
		metas = append(metas, importMeta{id: x.ID, ts: x.Timestamp, line: line, redacted: x.Redacted})
		batchBytes += len(payload)
		if len(items) >= chunk {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return st, importLineError(line+1, err)
	}
	return st, flush()
}

type importMeta struct {
	id       EventID
	ts       int64
	line     int
	redacted bool // exported redacted: its payload is gone
}

// importBatch writes one chunk as an atomic batch, skipping events already
// imported. It returns how many it wrote.
func (s *Store) importBatch(ctx context.Context, items []BatchItem, metas []importMeta) (int, error) {
	keep := make([]int, 0, len(items))
	for i := range items {
		ev, err := s.Get(metas[i].id)
		switch {
		case errors.Is(err, ErrNotFound):
			keep = append(keep, i)
		case err != nil:
			return 0, err
		case ev.Coordinate == items[i].Coordinate && ev.Header.Kind == items[i].Kind &&
			(ev.Header.PayloadHash == format.PayloadHash(items[i].Payload) || metas[i].redacted):
			// already imported (a redacted export of it has no payload to compare)
		default:
			return 0, importLineError(metas[i].line, fmt.Errorf("%w: %s is %s, not this event", ErrDuplicateID, metas[i].id, ev.Coordinate))
		}
	}
	if len(keep) == 0 {
		return 0, nil
	}
	evs := make([]eventReq, len(keep))
	keys := map[string]int{}
	for j, i := range keep {
		it := &items[i]
		if k := it.Options.IdempotencyKey; k != "" {
			if prev, dup := keys[k]; dup {
				return 0, importLineError(metas[i].line, fmt.Errorf("%w: idempotency key %q is also line %d's", ErrInvalidOptions, k, metas[prev].line))
			}
			keys[k] = i
		}
		// As a reaction: a named effect kind is accepted with its cause.
		ev, err := s.prepareEvent(ctx, it.Coordinate, it.Kind, it.Payload, it.Options, true, true, EventID{})
		if err != nil {
			return 0, importLineError(metas[i].line, err)
		}
		ev.id, ev.ts, ev.imported, ev.restore = metas[i].id, metas[i].ts, true, true
		evs[j] = ev
	}
	// An item's error names its line.
	lineErr := func(err error) error {
		var bie *BatchItemError
		if errors.As(err, &bie) && bie.Index >= 0 && bie.Index < len(keep) {
			return importLineError(metas[keep[bie.Index]].line, err)
		}
		return err
	}
	if err := s.admitBatch(ctx, ActionImport, evs); err != nil {
		return 0, lineErr(err)
	}
	r := &request{op: opBatch, items: evs, bt: &BatchTicket{}}
	if _, err := s.enqueue(r); err != nil {
		return 0, err
	}
	rcs, err := r.bt.Wait(ctx)
	if err != nil {
		return 0, lineErr(err)
	}
	// A replicated store applies the batch as its log says, where an
	// idempotency key held by another event answers the whole batch with
	// the holders' receipts and writes nothing: that is a refusal too.
	for j, rc := range rcs {
		if j < len(evs) && rc.ID != evs[j].id {
			ie := &IdempotencyError{Key: evs[j].opts.IdempotencyKey, Original: rc.ID, Reason: fmt.Sprintf("the imported event %s cannot carry it too", evs[j].id)}
			return 0, importLineError(metas[keep[j]].line, ie)
		}
	}
	return len(keep), nil
}

// importLineError is an import's failure at one line of its input: its
// message is "batpak: import line N: " and the cause's own, without the
// cause's "batpak: " prefix (one prefix a message); errors.Is and As see
// the cause.
func importLineError(line int, err error) error { return &lineError{line: line, err: err} }

type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string {
	return fmt.Sprintf("batpak: import line %d: %s", e.line, strings.TrimPrefix(e.err.Error(), "batpak: "))
}

func (e *lineError) Unwrap() error { return e.err }
