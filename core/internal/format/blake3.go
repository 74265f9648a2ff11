package format

import (
	"encoding/binary"

	"github.com/zeebo/blake3"
)

//go:generate go run gen_blake3x16.go

// sum256 is the BLAKE3-256 digest of p (github.com/zeebo/blake3: SSE4.1
// and AVX2 where the CPU has them; on this project's 2-core AMD EPYC it
// hashes a 100-byte payload in about 185 ns, a quarter faster than the
// scalar one-chunk path this package used to carry). The digests are on
// disk: they are the standard BLAKE3 digests.
func sum256(p []byte) [32]byte { return blake3.Sum256(p) }

// BLAKE3's initial chaining value and the block flags a one-chunk input
// uses.
var blake3IV = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

const (
	blake3ChunkStart = 1
	blake3ChunkEnd   = 2
	blake3Root       = 8
	blake3BlockLen   = 64
	blake3ChunkLen   = 1024
)

// minLanes is the fewest inputs worth one 16-lane compression: below
// it, hashing them one at a time is faster (BenchmarkSum256Many).
const minLanes = 2

// HashedTogether reports whether an input of n bytes is hashed faster
// with others, 16 at once, than alone: the CPU has AVX-512 and the input
// fits one BLAKE3 chunk (1 KiB). A writer defers the digests of such
// inputs to hash a group's together; any other is better hashed where it
// comes from, in parallel with other callers.
func HashedTogether(n int) bool { return haveX16 && n <= blake3ChunkLen }

// sum256Many sets out[i] to sum256(in[i]) for every i. Where the CPU has
// AVX-512, inputs of at most one BLAKE3 chunk (1 KiB) are hashed 16 at a
// time, one per vector lane: a group commit's payloads and record headers
// are independent inputs of a few blocks each, which the one-input code
// hashes one 64-byte block after another. len(out) must be len(in).
func sum256Many(in [][]byte, out [][32]byte) {
	_ = out[len(in)-1:] // one bounds check
	if !haveX16 || len(in) < minLanes {
		for i, p := range in {
			out[i] = sum256(p)
		}
		return
	}
	var lanes [16]int32
	k := 0
	for i, p := range in {
		if len(p) > blake3ChunkLen {
			out[i] = sum256(p)
			continue
		}
		lanes[k] = int32(i)
		k++
		if k == len(lanes) {
			sum256x16(in, out, lanes[:k])
			k = 0
		}
	}
	if k >= minLanes {
		sum256x16(in, out, lanes[:k])
		return
	}
	for _, i := range lanes[:k] {
		out[i] = sum256(in[i])
	}
}

// sum256x16 hashes the inputs in[lanes[l]] (each at most one chunk), one
// per lane of compress16, into out.
func sum256x16(in [][]byte, out [][32]byte, lanes []int32) {
	var st, m [16][16]uint32
	var blocks [16]int
	most := 0
	for l, i := range lanes {
		blocks[l] = max(1, (len(in[i])+blake3BlockLen-1)/blake3BlockLen)
		most = max(most, blocks[l])
	}
	for l := range 16 {
		for w := range 8 {
			st[w][l] = blake3IV[w]
		}
		for w := range 4 {
			st[8+w][l] = blake3IV[w]
		}
		// st[12] and st[13], the chunk counter, stay 0: every input is
		// the first chunk of its own message.
	}
	var pad [blake3BlockLen]byte
	for b := 0; b < most; b++ {
		for l, i := range lanes {
			if b >= blocks[l] {
				continue // finished: its lane computes garbage, never read
			}
			p := in[i][b*blake3BlockLen:]
			flags := uint32(0)
			if b == 0 {
				flags = blake3ChunkStart
			}
			if b == blocks[l]-1 {
				flags |= blake3ChunkEnd | blake3Root
			}
			st[14][l] = uint32(min(len(p), blake3BlockLen))
			st[15][l] = flags
			if len(p) < blake3BlockLen {
				pad = [blake3BlockLen]byte{}
				copy(pad[:], p)
				p = pad[:]
			}
			p = p[:blake3BlockLen]
			for w := range 16 {
				m[w][l] = binary.LittleEndian.Uint32(p[4*w:])
			}
		}
		compress16(&st, &m)
		for l, i := range lanes {
			if b == blocks[l]-1 {
				for w := range 8 {
					binary.LittleEndian.PutUint32(out[i][4*w:], st[w][l])
				}
			}
		}
	}
}
