package core

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/vfs"
)

// Segments read a chunk at a time (the sealer's footers, the frames a
// checkpoint covers) give the same results as the same segments read
// through the mapping.

type scanCall struct{ off, n int }

type failReadsFrom struct {
	vfs.File
	at int64
}

func (f failReadsFrom) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.at {
		return 0, errors.New("injected EIO")
	}
	return f.File.ReadAt(p, off)
}

// scanSegment calls fn for the same frames, in the same order, and ends
// the same way (offset, tail, error) as format.ScanFrames over the
// mapping, whatever the checkpoint covers (from) and whatever damage the
// segment carries, and also when reading the file fails part way.
func TestScanSegmentMatchesMappedScan(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	seg := format.EncodeSegmentHeader(1)
	var offs []int
	for len(seg) < 4<<20 {
		n := 16 + rng.Intn(200<<10)
		if rng.Intn(30) == 0 {
			n = 1<<20 + rng.Intn(600<<10)
		}
		rec := make([]byte, n)
		rng.Read(rec)
		rec[0] = format.RecEvent
		offs = append(offs, len(seg))
		seg = format.AppendFrame(seg, rec)
	}
	offs = append(offs, len(seg))
	dir := t.TempDir()
	fsys := vfs.Default()
	for iter := 0; iter < 120; iter++ {
		data := append([]byte(nil), seg...)
		switch rng.Intn(5) {
		case 1: // flip a byte
			data[32+rng.Intn(len(data)-32)] ^= 0x40
		case 2: // zero a tail
			p := 32 + rng.Intn(len(data)-32)
			clear(data[p:])
		case 3: // torn
			data = data[:32+rng.Intn(len(data)-32)]
		case 4: // zero tail padding (preallocation)
			data = append(data, make([]byte, rng.Intn(2<<20))...)
		}
		var from int
		switch rng.Intn(4) {
		case 0:
			from = math.MaxInt
		case 1:
			from = offs[rng.Intn(len(offs))]
		case 2:
			from = 32 + rng.Intn(len(data)+100)
		case 3:
			from = len(data) + rng.Intn(1000)
		}
		errAt := -1
		if rng.Intn(6) == 0 {
			errAt = offs[rng.Intn(len(offs))]
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.seg", iter))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := fsys.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := fsys.MmapRead(f, len(data))
		if err != nil {
			t.Fatal(err)
		}
		mk := func(calls *[]scanCall) func(int, []byte) error {
			return func(off int, rec []byte) error {
				*calls = append(*calls, scanCall{off, len(rec)})
				if off < from && off+8+len(rec) > from {
					return fmt.Errorf("straddle %d", off)
				}
				if off == errAt {
					return fmt.Errorf("fn error at %d", off)
				}
				return nil
			}
		}
		var want, got, got2 []scanCall
		we, wt, werr := format.ScanFrames(m, 32, mk(&want))
		var chunk []byte
		ge, gt, gerr := scanSegment(f, m, 32, from, &chunk, mk(&got))
		var failf vfs.File = failReadsFrom{f, int64(32 + rng.Intn(len(data)))}
		ge2, gt2, gerr2 := scanSegment(failf, m, 32, from, &chunk, mk(&got2))
		es := func(e error) string {
			if e == nil {
				return ""
			}
			return e.Error()
		}
		if we != ge || wt != gt || es(werr) != es(gerr) || !reflect.DeepEqual(want, got) {
			t.Fatalf("iter %d from %d: ScanFrames (%d,%v,%v,%d calls) != scanSegment (%d,%v,%v,%d calls)", iter, from, we, wt, werr, len(want), ge, gt, gerr, len(got))
		}
		if we != ge2 || wt != gt2 || es(werr) != es(gerr2) || !reflect.DeepEqual(want, got2) {
			t.Fatalf("iter %d from %d (read error): ScanFrames (%d,%v,%v,%d calls) != scanSegment (%d,%v,%v,%d calls)", iter, from, we, wt, werr, len(want), ge2, gt2, gerr2, len(got2))
		}
		fsys.Munmap(m)
		f.Close()
		os.Remove(path)
	}
}

// mappedFooter is the footer built from the mapped segment, as before
// footers were built from chunks.
func mappedFooter(fsys vfs.FS, path string, key uint32, end int64) ([]byte, error) {
	data, _, release, err := loadSegment(fsys, path, key)
	if err != nil {
		return nil, err
	}
	defer release()
	if end > 0 && int64(len(data)) > end {
		data = data[:end]
	}
	p, err := format.EncodeFooterParts(data, key)
	if err != nil {
		return nil, err
	}
	return bytes.Join(p, nil), nil
}

// sealerFooter is the footer writeSegmentFooter builds.
func sealerFooter(fsys vfs.FS, path string, key uint32, end int64) ([]byte, error) {
	parts, err := footerFromFile(fsys, path, key, end)
	if err != nil {
		return nil, err
	}
	if parts == nil {
		return mappedFooter(fsys, path, key, end)
	}
	return bytes.Join(parts, nil), nil
}

// The sealer's footer, built from chunks with the mapped scan as its
// fallback, is byte for byte the footer built from the mapped segment, and
// fails with the same error, over intact and damaged segments, recorded
// ends at and between frames, and frames larger than a chunk.
func TestSealerFooterMatchesMappedFooter(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	const key = 3
	seg := format.EncodeSegmentHeader(key)
	var offs []int
	for i := 0; len(seg) < 3<<20; i++ {
		offs = append(offs, len(seg))
		switch rng.Intn(12) {
		case 0:
			seg = format.AppendMarker(seg, format.RecBatchCommit, uint32(rng.Intn(5)), uint64(i))
			continue
		}
		n := rng.Intn(40 << 10)
		if rng.Intn(40) == 0 {
			n = 1<<20 + rng.Intn(300<<10)
		}
		p := bytes.Repeat([]byte{'a' + byte(i%26)}, n)
		e := format.Event{Seq: uint64(i), Entity: fmt.Sprintf("e:%d", rng.Intn(30)), Scope: []string{"", "s", "scope-long"}[rng.Intn(3)],
			ID: [16]byte{byte(i), byte(i >> 8), 7}, Clock: uint64(i), Kind: 1, Timestamp: int64(i), PayloadHash: format.PayloadHash(p), Payload: p}
		if rng.Intn(4) == 0 {
			e.Idem = strings.Repeat("k", 1+rng.Intn(200))
		}
		seg = format.AppendEvent(seg, &e)
	}
	offs = append(offs, len(seg))
	dir := t.TempDir()
	fsys := vfs.Default()
	errs, oks := 0, 0
	defer func() { t.Logf("errors %d, footers %d", errs, oks) }()
	for iter := 0; iter < 120; iter++ {
		data := append([]byte(nil), seg...)
		end := int64(offs[rng.Intn(len(offs))])
		switch rng.Intn(7) {
		case 1:
			data[32+rng.Intn(len(data)-32)] ^= 0x10
		case 2:
			clear(data[32+rng.Intn(len(data)-32):])
		case 3:
			data = data[:32+rng.Intn(len(data)-32)]
		case 4:
			end = int64(32 + rng.Intn(len(data)))
		case 5: // a CRC-valid frame holding a malformed event / unknown record
			o := offs[rng.Intn(len(offs)-1)]
			bad := make([]byte, 40)
			bad[0] = []byte{format.RecEvent, 0x7f}[rng.Intn(2)]
			data = format.AppendFrame(append([]byte(nil), data[:o]...), bad)
			data = append(data, seg[o:]...)
		case 6:
			end = 0
		}
		path := filepath.Join(dir, format.SegmentName(key))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		o, oerr := mappedFooter(fsys, path, key, end)
		n, nerr := sealerFooter(fsys, path, key, end)
		if oerr != nil {
			errs++
		} else if len(n) > 0 && end > 0 {
			oks++
		}
		if fmt.Sprint(oerr) != fmt.Sprint(nerr) || !bytes.Equal(o, n) {
			t.Fatalf("iter %d end %d size %d: old (%d bytes, %v) new (%d bytes, %v)", iter, end, len(data), len(o), oerr, len(n), nerr)
		}
	}
}
