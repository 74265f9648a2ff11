package guest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/batpak-go/batpak/plugins/abi"
)

// This file holds everything of the package that is plain Go, so that a
// plugin's code compiles and runs natively too (go test on the host). The
// ABI's exports and the host's log import are in wasip1.go; native.go is
// where Log writes without a host.

// Batch is a zero-copy view of the events of one call.
type Batch = abi.Batch

// Event is a zero-copy view of one event: Seq, Clock, Timestamp, Kind,
// Category, Type, Flags, ID, Correlation, Causation, Entity, Scope and
// Payload read straight from the host's bytes.
type Event = abi.Event

// EventRecord is one event of a batch built with BatchOf. Kind is
// category<<12 | type (see Kind).
type EventRecord = abi.EventRecord

// Action is a handler's answer.
type Action uint32

const (
	// Continue: the host commits the batch and sends the next one.
	Continue Action = abi.ActionContinue
	// Stop: the host commits the batch and stops the worker.
	Stop Action = abi.ActionStop
)

// Reaction is an event a handler asks the host to write. Source is the
// index in the batch of the event it reacts to (correlation and causation
// follow from it). Kind is category<<12 | type (see Kind). Entity and
// Scope are at most abi.MaxCoordinateBytes (1024) bytes each, as the
// host's coordinates: a handler answering a longer one fails its call
// with an error naming the reaction, and nothing of its answer is
// written.
type Reaction = abi.Reaction

// Kind builds a kind from a category (1..15, not 13) and a type (0..4095).
func Kind(category, typ uint16) uint16 { return category<<12 | typ&0xfff }

// FoldFunc folds a batch of events into a projection's state.
type FoldFunc func(state []byte, events Batch) ([]byte, error)

// HandleFunc handles a batch of events of a cursor worker.
type HandleFunc func(events Batch) (Action, []Reaction, error)

var (
	fold   FoldFunc
	handle HandleFunc
)

// Projection registers the plugin's fold (call it from init). The host
// calls it through the module's exports; a native test calls it with
// CallProjection.
func Projection(f FoldFunc) { fold = f }

// Handler registers the plugin's handler (call it from init). The host
// calls it through the module's exports; a native test calls it with
// CallHandler.
func Handler(f HandleFunc) { handle = f }

// CallProjection calls the registered fold exactly as the host's call into
// the module does: on a copy of state (the fold may keep or grow it), with
// a panic in the fold returned as an error ("plugin panicked: …", which
// the host counts as a fault), and an error when no projection is
// registered. It is how a native test runs a plugin's fold; the module's
// batpak_fold export runs the same code.
func CallProjection(state []byte, events Batch) (out []byte, err error) {
	defer guard(&err)
	if fold == nil {
		return nil, fmt.Errorf("no projection registered (call guest.Projection in init)")
	}
	return fold(append([]byte(nil), state...), events)
}

// CallHandler calls the registered handler as the host's call into the
// module does, and checks its answer as the module and the host do: a
// panic in the handler is returned as an error, as is a reaction whose
// entity or scope is over abi.MaxCoordinateBytes or whose Source is not an
// index of events, and an error when no handler is registered. On an
// error the action and reactions are zero: the host writes nothing of the
// answer. (The manifest's limits.max_reactions is the host's to check.)
// It is how a native test runs a plugin's handler; the module's
// batpak_handle export runs the same code.
func CallHandler(events Batch) (Action, []Reaction, error) {
	action, rs, _, err := callHandler(events)
	if err != nil {
		return 0, nil, err
	}
	for i, r := range rs {
		if int(r.Source) >= events.Len() {
			return 0, nil, fmt.Errorf("reaction %d names source event %d of a batch of %d", i, r.Source, events.Len())
		}
	}
	return action, rs, nil
}

// callHandler is CallHandler also returning the answer encoded for the
// host.
func callHandler(events Batch) (action Action, rs []Reaction, out []byte, err error) {
	defer func() {
		if err != nil {
			action, rs, out = 0, nil, nil
		}
	}()
	defer guard(&err) // runs first: recover works only in a deferred call
	if handle == nil {
		return 0, nil, nil, fmt.Errorf("no handler registered (call guest.Handler in init)")
	}
	action, rs, err = handle(events)
	if err != nil {
		return 0, nil, nil, err
	}
	out, err = abi.AppendHandlerOutput(nil, uint32(action), rs)
	return action, rs, out, err
}

// Log sends a line to the host's log (level abi.LogDebug..abi.LogError),
// within the call's log budget (the manifest's limits.log_lines and
// log_bytes): lines over it are dropped, and asking for more than 16 times
// it faults the call. The host prints msg with control characters escaped.
// An empty msg is not sent.
//
// Built natively (go test of a plugin's code) there is no host: Log
// writes "batpak plugin log LEVEL: msg" to standard error, msg quoted as
// by %q, with no budget; go test shows it for a failing test or with -v.
func Log(level uint32, msg string) {
	if len(msg) == 0 {
		return
	}
	writeLog(level, msg)
}

// Logf formats a line at info level (see Log).
func Logf(format string, args ...any) { Log(abi.LogInfo, fmt.Sprintf(format, args...)) }

// guard turns a panic in plugin code into an error result.
func guard(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("plugin panicked: %v", p)
	}
}

// BatchOf encodes events as the host does for a call, so that a native
// test can hand a plugin's fold or handler the batch it would get:
//
//	b := guest.BatchOf(
//		guest.EventRecord{Seq: 1, Kind: guest.Kind(1, 1), Entity: []byte("order:1"), Payload: []byte(`{"total_cents":998}`)},
//	)
//	state, err := guest.CallProjection(nil, b)
//
// Fields left zero read as zero (an event the host sends always has its
// Seq, Clock, ID, Entity and Scope set; a test sets what the plugin
// reads). It panics if an entity or scope is over 65535 bytes, more than
// the batch layout can hold (the host's are at most 1024).
func BatchOf(events ...EventRecord) Batch {
	b := abi.AppendBatchHeader(nil, len(events))
	for i := range events {
		e := &events[i]
		if len(e.Entity) > 0xffff || len(e.Scope) > 0xffff {
			panic(fmt.Sprintf("guest.BatchOf: event %d: entity or scope over 65535 bytes", i))
		}
		b = abi.AppendEvent(b, e)
	}
	return Batch(b)
}

// Uint64 reads a little-endian counter state (0 for an empty state).
func Uint64(state []byte) uint64 {
	if len(state) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(state)
}

// PutUint64 encodes a counter state.
func PutUint64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// JSON decodes a JSON state into v (an empty state leaves v unchanged).
// It is encoding/json, which matches struct fields case-insensitively: to
// read payload fields exactly as the policy does, compare names with
// escapes decoded and case kept (see ijson.Lookup).
func JSON(state []byte, v any) error {
	if len(state) == 0 {
		return nil
	}
	return json.Unmarshal(state, v)
}

// ToJSON encodes v as the new state.
func ToJSON(v any) ([]byte, error) { return json.Marshal(v) }
