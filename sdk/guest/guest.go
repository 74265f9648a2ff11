//go:build wasip1

package guest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"unsafe"

	"github.com/batpak-go/batpak/plugins/abi"
)

// Batch is a zero-copy view of the events of one call.
type Batch = abi.Batch

// Event is a zero-copy view of one event: Seq, Clock, Timestamp, Kind,
// Category, Type, Flags, ID, Correlation, Causation, Entity, Scope and
// Payload read straight from the host's bytes.
type Event = abi.Event

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

// Projection registers the plugin's fold (call it from init).
func Projection(f FoldFunc) { fold = f }

// Handler registers the plugin's handler (call it from init).
func Handler(f HandleFunc) { handle = f }

//go:wasmimport batpak log
func hostLog(level, ptr, n uint32)

// Log sends a line to the host's log (level abi.LogDebug..abi.LogError),
// within the call's log budget (the manifest's limits.log_lines and
// log_bytes): lines over it are dropped, and asking for more than 16 times
// it faults the call. The host prints msg with control characters escaped.
func Log(level uint32, msg string) {
	if len(msg) == 0 {
		return
	}
	hostLog(level, uint32(uintptr(unsafe.Pointer(unsafe.StringData(msg)))), uint32(len(msg)))
}

// Logf formats a line at info level.
func Logf(format string, args ...any) { Log(abi.LogInfo, fmt.Sprintf(format, args...)) }

// inputs keeps the buffers the host asked for alive until the call that
// reads them returns; output keeps the last result alive until the host
// has read it (the next call).
var (
	inputs [][]byte
	output []byte
)

//go:wasmexport batpak_abi_version
func abiVersion() int32 { return abi.Version }

//go:wasmexport batpak_alloc
func alloc(size uint32) uint32 {
	b := make([]byte, size)
	inputs = append(inputs, b)
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

func view(ptr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), n)
}

func result(out []byte, err error) uint64 {
	inputs = inputs[:0]
	if err != nil {
		output = []byte(err.Error())
		return abi.PackResult(uint32(uintptr(unsafe.Pointer(unsafe.SliceData(output)))), uint32(len(output)), true)
	}
	output = out
	if len(out) == 0 {
		return abi.PackResult(0, 0, false)
	}
	return abi.PackResult(uint32(uintptr(unsafe.Pointer(unsafe.SliceData(output)))), uint32(len(output)), false)
}

// guard turns a panic in plugin code into an error result.
func guard(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("plugin panicked: %v", p)
	}
}

//go:wasmexport batpak_fold
func batpakFold(statePtr, stateLen, batchPtr, batchLen uint32) uint64 {
	var out []byte
	var err error
	func() {
		defer guard(&err)
		if fold == nil {
			err = fmt.Errorf("no projection registered (call guest.Projection in init)")
			return
		}
		// The state is copied: the fold may keep or grow it.
		state := append([]byte(nil), view(statePtr, stateLen)...)
		out, err = fold(state, Batch(view(batchPtr, batchLen)))
	}()
	return result(out, err)
}

//go:wasmexport batpak_handle
func batpakHandle(batchPtr, batchLen uint32) uint64 {
	var out []byte
	var err error
	func() {
		defer guard(&err)
		if handle == nil {
			err = fmt.Errorf("no handler registered (call guest.Handler in init)")
			return
		}
		action, rs, herr := handle(Batch(view(batchPtr, batchLen)))
		if herr != nil {
			err = herr
			return
		}
		out, err = abi.AppendHandlerOutput(nil, uint32(action), rs)
	}()
	return result(out, err)
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
