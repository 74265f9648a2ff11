package format

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

// sum256Many gives every input its standard BLAKE3-256 digest, whatever
// the mix of lengths in one call (block and chunk boundaries, empty
// inputs, inputs longer than a chunk, lanes finishing at different
// blocks) and whether or not the 16-lane kernel runs.
func TestSum256ManyIsBLAKE3(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	lengths := []int{0, 1, 55, 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 511, 1000, 1023, 1024, 1025, 3000}
	for _, kernel := range []bool{true, false} {
		if kernel && !haveX16 {
			t.Log("no AVX-512 here: only the one-at-a-time path is tested")
			continue
		}
		t.Run(fmt.Sprintf("kernel=%v", kernel), func(t *testing.T) {
			defer func(h bool) { haveX16 = h }(haveX16)
			haveX16 = kernel
			for round := 0; round < 300; round++ {
				n := 1 + rng.IntN(40)
				in := make([][]byte, n)
				for i := range in {
					var size int
					if rng.IntN(2) == 0 {
						size = lengths[rng.IntN(len(lengths))]
					} else {
						size = rng.IntN(1100)
					}
					in[i] = make([]byte, size, size+rng.IntN(70))
					for j := range in[i][:cap(in[i])] {
						in[i][:cap(in[i])][j] = byte(rng.Uint32())
					}
				}
				out := make([][32]byte, n)
				sum256Many(in, out)
				for i, p := range in {
					if want := blake3.Sum256(p); out[i] != want {
						t.Fatalf("round %d: input %d of %d (%d bytes): %x, want %x", round, i, n, len(p), out[i], want)
					}
				}
			}
		})
	}
}

// BenchmarkSum256Many compares 16-lane hashing with one input at a time
// for a group's 100-byte payloads and ~210-byte chained headers.
//
//	go test ./core/internal/format -run '^$' -bench Sum256Many
func BenchmarkSum256Many(b *testing.B) {
	for _, size := range []int{100, 210} {
		for _, n := range []int{1, 4, 8, 16, 64} {
			in := make([][]byte, n)
			for i := range in {
				in[i] = make([]byte, size)
			}
			out := make([][32]byte, n)
			b.Run(fmt.Sprintf("bytes=%d/inputs=%d/many", size, n), func(b *testing.B) {
				for b.Loop() {
					sum256Many(in, out)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/input")
			})
			b.Run(fmt.Sprintf("bytes=%d/inputs=%d/one", size, n), func(b *testing.B) {
				for b.Loop() {
					for i, p := range in {
						out[i] = sum256(p)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/input")
			})
		}
	}
}

// The committed kernel is what its generator writes: an edit to one
// without the other fails here.
func TestGeneratedKernelIsCurrent(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to run the generator")
	}
	out := filepath.Join(t.TempDir(), "kernel.s")
	cmd := exec.Command(goBin, "run", "gen_blake3x16.go", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen_blake3x16.go: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("blake3x16_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("blake3x16_amd64.s differs from what gen_blake3x16.go writes: run go generate ./core/internal/format")
	}
}
