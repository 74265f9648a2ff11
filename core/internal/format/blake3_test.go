package format_test

import (
	"encoding/hex"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/zeebo/blake3"
)

// PayloadHash and ChainHash are standard BLAKE3-256 for every input size,
// across block and chunk boundaries: the digests are on disk.
func TestDigestsAreBLAKE3(t *testing.T) {
	if got := format.PayloadHash(nil); hex.EncodeToString(got[:]) != "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" {
		t.Fatalf("BLAKE3 of the empty input = %x", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 3*1024+format.ChainStart)
	for n := 0; n <= 3*1024; n++ {
		for _, fill := range []string{"counter", "random"} {
			p := buf[:n]
			for i := range p {
				if fill == "counter" {
					p[i] = byte(i % 251) // the pattern of the official test vectors
				} else {
					p[i] = byte(rng.Uint32())
				}
			}
			want := blake3.Sum256(p)
			if got := format.PayloadHash(p); got != want {
				t.Fatalf("PayloadHash of %d %s bytes = %x, want %x", n, fill, got, want)
			}
			rec := buf[:format.ChainStart+n]
			want = blake3.Sum256(rec[format.ChainStart:])
			if got := format.ChainHash(rec, len(rec)); got != want {
				t.Fatalf("ChainHash over %d %s bytes = %x, want %x", n, fill, got, want)
			}
		}
	}
}

// The digest of a payload never reads past its end or depends on what
// follows it in the buffer.
func TestPayloadHashIgnoresSpareCapacity(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 100, 1023, 1024} {
		a := make([]byte, n, n+64)
		b := make([]byte, n, n+64)
		for i := range b[:cap(b)] {
			b[:cap(b)][i] = 0xff
		}
		for i := range n {
			a[i], b[i] = byte(i), byte(i)
		}
		if format.PayloadHash(a) != format.PayloadHash(b) {
			t.Fatalf("%d bytes: the digest depends on spare capacity", n)
		}
	}
}

func BenchmarkPayloadHash(b *testing.B) {
	for _, n := range []int{100, 1024} {
		p := make([]byte, n)
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				format.PayloadHash(p)
			}
		})
	}
}
