//go:build amd64 && !purego

package format

import "golang.org/x/sys/cpu"

// haveX16 reports whether compress16 may run: the CPU and the OS support
// AVX-512 (the 32 vector registers and the rotate instruction it uses).
var haveX16 = cpu.X86.HasAVX512F

// compress16 runs one BLAKE3 compression in each of 16 lanes (see
// blake3x16_amd64.s, written by gen_blake3x16.go).
//
//go:noescape
func compress16(st *[16][16]uint32, m *[16][16]uint32)
