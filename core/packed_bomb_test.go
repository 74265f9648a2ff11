package core_test

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/klauspost/compress/zstd"
)

// craftPackedBomb writes a packed segment (key 1) of n blocks of 64 KiB of
// zeros each, every checksum right: a file of a few bytes per block that
// decodes to n × 64 KiB.
func craftPackedBomb(t *testing.T, path string, n int) int64 {
	return craftPacked(t, path, n, make([]byte, 64<<10))
}

// craftPacked writes a packed segment (key 1) of n blocks each holding
// block, every checksum right.
func craftPacked(t *testing.T, path string, n int, block []byte) int64 {
	t.Helper()
	cast := crc32.MakeTable(crc32.Castagnoli)
	le := binary.LittleEndian
	enc, _ := zstd.NewWriter(nil)
	stored := enc.EncodeAll(block, nil)
	h := make([]byte, 32)
	copy(h, "BPAKSEG\x00")
	le.PutUint16(h[8:], 2) // packed version
	h[10] = 1              // zstd
	le.PutUint64(h[12:], 1)
	le.PutUint32(h[20:], crc32.Checksum(h[:20], cast))
	out := append([]byte(nil), h...)
	var table []byte
	logical := uint64(32)
	for i := 0; i < n; i++ {
		at := len(out)
		out = append(out, stored...)
		table = le.AppendUint32(table, uint32(logical))
		table = le.AppendUint64(table, uint64(at))
		table = le.AppendUint32(table, uint32(len(stored)))
		table = le.AppendUint32(table, uint32(len(block)))
		table = le.AppendUint32(table, crc32.Checksum(stored, cast))
		logical += uint64(len(block))
	}
	tableAt := len(out)
	out = append(out, table...)
	out = append(out, "BPAKBLKS"...)
	out = le.AppendUint64(out, uint64(tableAt))
	out = le.AppendUint32(out, uint32(n))
	out = le.AppendUint64(out, logical)
	out = le.AppendUint32(out, crc32.Checksum(out[tableAt:], cast))
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return int64(len(out))
}

// TestPackedBombRefusedAtItsFirstBlock: a crafted packed segment of
// 4,096 blocks of zeros (156 KiB decoding to 256 MiB, every checksum
// right) is refused by Open, OpenReadOnly and Verify at its first block,
// naming the file, in a block's memory: it allocated 448 MiB when the
// whole segment was decoded before its frames were read.
func TestPackedBombRefusedAtItsFirstBlock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "00000000000000000001.seg")
	size := craftPackedBomb(t, path, 4096)
	for _, c := range []struct {
		name string
		open func() error
	}{
		{"Open", func() error {
			s, err := core.Open(testConfig(dir))
			if err == nil {
				s.Close()
			}
			return err
		}},
		{"OpenReadOnly", func() error {
			s, err := core.OpenReadOnly(testConfig(dir))
			if err == nil {
				s.Close()
			}
			return err
		}},
	} {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		err := c.open()
		runtime.ReadMemStats(&m1)
		var ce *core.CorruptionError
		if !errors.As(err, &ce) || ce.File != path || !strings.Contains(err.Error(), "block 0") {
			t.Fatalf("%s of a crafted packed segment: %v; want a *CorruptionError naming %s and its block 0", c.name, err, path)
		}
		if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s of a %d KiB crafted packed segment allocated %d MiB before refusing it", c.name, size>>10, alloc>>20)
		}
	}
}

// TestPackedMarkerBombRefused: a crafted packed segment whose blocks are
// whole frames, every checksum right, but only batch-begin records
// (1,024 blocks: 83 KiB on disk, 64 MiB decoded; at 4 MB a file reaches
// the 4 GiB a segment may cover) is refused at Open naming the file,
// before the sealer or Verify would decode it whole.
func TestPackedMarkerBombRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "00000000000000000001.seg")
	var block []byte
	for len(block)+24 <= 64<<10 {
		block = format.AppendMarker(block, format.RecBatchBegin, 1, 7)
	}
	craftPacked(t, path, 1024, block)
	var ce *core.CorruptionError
	if s, err := core.Open(testConfig(dir)); !errors.As(err, &ce) || ce.File != path || !strings.Contains(err.Error(), "batch and fence records") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of a packed segment of batch markers alone: %v; want a *CorruptionError naming %s", err, path)
	}
}

// TestVerifyReadsPackedSegmentsABlockAtATime: Verify checks a packed
// segment one block at a time: a store whose sealed segment holds 40 MiB
// of events verifies in a few MiB (it allocated the whole decoded segment
// when Verify decoded it at once), with every event counted.
func TestVerifyReadsPackedSegmentsABlockAtATime(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.Compression = core.CompressionZstd
	cfg.SegmentMaxBytes = 40 << 20
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := []byte(`{"p":"` + strings.Repeat("a", 64<<10) + `"}`)
	c, _ := core.NewCoordinate("doc:1", "s")
	n := 0
	for s.Diagnostics().Segments < 2 {
		if _, err := s.Append(t.Context(), c, core.MustKind(1, 1), payload); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := s.SealSegments(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := s.Diagnostics(); d.PackedSegments != 1 {
		t.Fatalf("%d packed segments, want the sealed one packed", d.PackedSegments)
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	rep, err := s.Verify()
	runtime.ReadMemStats(&m1)
	if err != nil || rep.Events != n {
		t.Fatalf("Verify: %+v, %v; want %d events", rep, err, n)
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20 {
		t.Errorf("Verify of a 40 MiB packed segment allocated %d MiB", alloc>>20)
	}
}
