//go:build !amd64 || purego

package format

// haveX16 is false where there is no 16-lane kernel: every digest is
// taken one input at a time.
var haveX16 = false

func compress16(st *[16][16]uint32, m *[16][16]uint32) {
	panic("format: compress16 without a 16-lane kernel")
}
