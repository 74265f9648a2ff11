//go:build wasip1

package guest

import (
	"unsafe"

	"github.com/batpak-go/batpak/plugins/abi"
)

// This file is the ABI's side in the module: its exports, and the host's
// log import behind Log (writeLog). Everything else of the package is in
// guest.go, plain Go that compiles natively too.

//lint:file-ignore U1000 the host calls the go:wasmexport functions, which staticcheck takes for unused

//go:wasmimport batpak log
func hostLog(level, ptr, n uint32)

// writeLog hands a line to the host's log.
func writeLog(level uint32, msg string) {
	hostLog(level, uint32(uintptr(unsafe.Pointer(unsafe.StringData(msg)))), uint32(len(msg)))
}

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

// view is the n bytes at ptr in the module's memory, which the host wrote
// into a buffer from alloc (kept alive by inputs). The address is made a
// pointer with unsafe.Add from nil, not unsafe.Pointer(uintptr(ptr)),
// which go vet reports as a possible misuse.
func view(ptr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Add(nil, ptr)), n)
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

//go:wasmexport batpak_fold
func batpakFold(statePtr, stateLen, batchPtr, batchLen uint32) uint64 {
	return result(CallProjection(view(statePtr, stateLen), Batch(view(batchPtr, batchLen))))
}

//go:wasmexport batpak_handle
func batpakHandle(batchPtr, batchLen uint32) uint64 {
	_, _, out, err := callHandler(Batch(view(batchPtr, batchLen)))
	return result(out, err)
}
