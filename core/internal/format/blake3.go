package format

import (
	"encoding/binary"
	"math/bits"

	"github.com/zeebo/blake3"
)

// sum256 is the BLAKE3-256 digest of p. Inputs of one chunk (1 KiB) or
// less — payloads and record headers, mostly — take a scalar path
// specialised for them; larger ones go to github.com/zeebo/blake3. Both
// give the standard BLAKE3 digest (the digests are on disk).
func sum256(p []byte) [32]byte {
	if len(p) > chunkLen {
		return blake3.Sum256(p)
	}
	return sumChunk(p)
}

const (
	chunkLen  = 1024
	blockLen  = 64
	flagStart = 1 << 0 // CHUNK_START
	flagEnd   = 1 << 1 // CHUNK_END
	flagRoot  = 1 << 3 // ROOT
)

var blake3IV = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

// sumChunk hashes an input of at most one chunk: the chunk is the root, so
// the digest is the chaining value after its last block, compressed with
// the ROOT flag (chunk counter 0).
func sumChunk(p []byte) (out [32]byte) {
	cv := blake3IV
	flags := uint32(flagStart)
	for len(p) > blockLen {
		compress(&cv, (*[blockLen]byte)(p), blockLen, flags)
		flags = 0
		p = p[blockLen:]
	}
	var last [blockLen]byte
	copy(last[:], p)
	compress(&cv, &last, uint32(len(p)), flags|flagEnd|flagRoot)
	for i, w := range cv {
		binary.LittleEndian.PutUint32(out[4*i:], w)
	}
	return out
}

// g is BLAKE3's quarter-round.
func g(a, b, c, d, x, y uint32) (uint32, uint32, uint32, uint32) {
	a += b + x
	d = bits.RotateLeft32(d^a, -16)
	c += d
	b = bits.RotateLeft32(b^c, -12)
	a += b + y
	d = bits.RotateLeft32(d^a, -8)
	c += d
	b = bits.RotateLeft32(b^c, -7)
	return a, b, c, d
}

// compress folds block b (blen bytes of it used, the rest zero) into the
// chaining value cv, keeping the first half of the output (all a chunk
// chain and a 256-bit root digest need). The seven rounds are unrolled
// with the message permutation applied to the word indexes, so the state
// and message stay in registers.
func compress(cv *[8]uint32, b *[blockLen]byte, blen, flags uint32) {
	m0 := binary.LittleEndian.Uint32(b[0:])
	m1 := binary.LittleEndian.Uint32(b[4:])
	m2 := binary.LittleEndian.Uint32(b[8:])
	m3 := binary.LittleEndian.Uint32(b[12:])
	m4 := binary.LittleEndian.Uint32(b[16:])
	m5 := binary.LittleEndian.Uint32(b[20:])
	m6 := binary.LittleEndian.Uint32(b[24:])
	m7 := binary.LittleEndian.Uint32(b[28:])
	m8 := binary.LittleEndian.Uint32(b[32:])
	m9 := binary.LittleEndian.Uint32(b[36:])
	m10 := binary.LittleEndian.Uint32(b[40:])
	m11 := binary.LittleEndian.Uint32(b[44:])
	m12 := binary.LittleEndian.Uint32(b[48:])
	m13 := binary.LittleEndian.Uint32(b[52:])
	m14 := binary.LittleEndian.Uint32(b[56:])
	m15 := binary.LittleEndian.Uint32(b[60:])
	v0, v1, v2, v3, v4, v5, v6, v7 := cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7]
	v8, v9, v10, v11 := blake3IV[0], blake3IV[1], blake3IV[2], blake3IV[3]
	v12, v13, v14, v15 := uint32(0), uint32(0), blen, flags
	// round 1
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m0, m1)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m2, m3)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m4, m5)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m6, m7)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m8, m9)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m10, m11)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m12, m13)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m14, m15)
	// round 2
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m2, m6)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m3, m10)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m7, m0)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m4, m13)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m1, m11)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m12, m5)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m9, m14)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m15, m8)
	// round 3
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m3, m4)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m10, m12)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m13, m2)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m7, m14)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m6, m5)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m9, m0)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m11, m15)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m8, m1)
	// round 4
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m10, m7)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m12, m9)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m14, m3)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m13, m15)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m4, m0)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m11, m2)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m5, m8)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m1, m6)
	// round 5
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m12, m13)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m9, m11)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m15, m10)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m14, m8)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m7, m2)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m5, m3)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m0, m1)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m6, m4)
	// round 6
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m9, m14)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m11, m5)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m8, m12)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m15, m1)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m13, m3)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m0, m10)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m2, m6)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m4, m7)
	// round 7
	v0, v4, v8, v12 = g(v0, v4, v8, v12, m11, m15)
	v1, v5, v9, v13 = g(v1, v5, v9, v13, m5, m0)
	v2, v6, v10, v14 = g(v2, v6, v10, v14, m1, m9)
	v3, v7, v11, v15 = g(v3, v7, v11, v15, m8, m6)
	v0, v5, v10, v15 = g(v0, v5, v10, v15, m14, m10)
	v1, v6, v11, v12 = g(v1, v6, v11, v12, m2, m12)
	v2, v7, v8, v13 = g(v2, v7, v8, v13, m3, m4)
	v3, v4, v9, v14 = g(v3, v4, v9, v14, m7, m13)
	cv[0], cv[1], cv[2], cv[3] = v0^v8, v1^v9, v2^v10, v3^v11
	cv[4], cv[5], cv[6], cv[7] = v4^v12, v5^v13, v6^v14, v7^v15
}
