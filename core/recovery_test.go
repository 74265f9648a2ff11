package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/zeebo/blake3"
)

// closedFixture writes n events over three entities (varying payload sizes),
// closes the store and returns its config and the receipts.
func closedFixture(t *testing.T, n int) (core.Config, []core.Receipt) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs := make([]core.Receipt, n)
	for i := range rs {
		c := mustCoord(t, fmt.Sprintf("ent:%d", i%3), "s")
		rs[i] = mustAppend(t, s, c, kindA, fmt.Sprintf(`{"n":%d,"pad":%q}`, 10+i, strings.Repeat("p", i*7%50)))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return cfg, rs
}

// copyStore copies the store files of cfg.Dir into a new directory.
func copyStore(t *testing.T, cfg core.Config) core.Config {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(cfg.Dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dst, e.Name()), b)
	}
	cfg.Dir = dst
	return cfg
}

// asCrashed removes what only a Close writes — the index checkpoint and
// the footer of the segment being written — so that damage to the last
// segment stands for a torn tail left by a crash rather than for the loss
// of events a Close recorded (see TestDamagedLastSegmentFailsOpen).
func asCrashed(t *testing.T, dir string) {
	t.Helper()
	last := lastSegment(t, dir)
	for _, p := range []string{filepath.Join(dir, "index.ckpt"), strings.TrimSuffix(last, ".seg") + ".idx"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
}

// checkPrefix asserts s holds exactly the first n of rs, verifies, and
// shows the store is writable with clocks and chains continuing.
func checkPrefix(t *testing.T, s *core.Store, rs []core.Receipt, n int) {
	t.Helper()
	evs := mustQuery(t, s, core.All())
	want := make([]core.EventID, n)
	for i := range want {
		want[i] = rs[i].ID
	}
	if got := ids(evs); !reflect.DeepEqual(got, want) && n > 0 {
		t.Fatalf("recovered %d events, want exactly the first %d", len(got), n)
	} else if n == 0 && len(evs) != 0 {
		t.Fatalf("recovered %d events, want none", len(evs))
	}
	for i, e := range evs {
		if !strings.HasPrefix(string(e.Payload), fmt.Sprintf(`{"n":%d,`, 10+i)) {
			t.Fatalf("event %d: payload %q", i, e.Payload)
		}
	}
	if st := s.Stats(); st.Events != uint64(n) {
		t.Fatalf("Stats().Events = %d, want %d", st.Events, n)
	}
	if rep := mustVerify(t, s); rep.Events != n {
		t.Fatalf("Verify counted %d events, want %d", rep.Events, n)
	}
	// Writable: each entity's clock continues from its recovered events.
	for e := 0; e < 3; e++ {
		name := fmt.Sprintf("ent:%d", e)
		have := 0
		for i := 0; i < n; i++ {
			if i%3 == e {
				have++
			}
		}
		r := mustAppend(t, s, mustCoord(t, name, "s"), kindA, `{"after":"recovery"}`)
		if r.Clock != uint64(have) {
			t.Fatalf("%s: clock after recovery %d, want %d", name, r.Clock, have)
		}
	}
	if rep := mustVerify(t, s); rep.Events != n+3 {
		t.Fatalf("Verify after new writes counted %d events, want %d", rep.Events, n+3)
	}
}

func TestTornTailRecovery(t *testing.T) {
	const n = 20
	base, rs := closedFixture(t, n)
	seg := lastSegment(t, base.Dir)
	data, fs := readFrames(t, seg)
	if len(fs) != n || !allZeroBytes(data[fs[n-1].end():]) {
		t.Fatalf("fixture: %d frames ending at %d, want %d followed only by zero fill", len(fs), fs[n-1].end(), n)
	}
	// A torn write: the file ends inside the frames (no zero fill after).
	data = data[:fs[n-1].end()]
	last := fs[n-1]
	full := last.end() - last.Off // the whole last frame
	cuts := map[string]int{
		"one byte of payload":             1,
		"half the payload":                (len(data) - payloadOffset(data, last)) / 2,
		"all the payload":                 len(data) - payloadOffset(data, last),
		"into the fixed record":           full - format.FrameHeaderSize - 100,
		"leaves only the frame header":    full - format.FrameHeaderSize,
		"leaves the length and 2 of CRC":  full - 6,
		"leaves 3 bytes of the length":    full - 3,
		"leaves 1 byte of the length":     full - 1,
		"exactly the last frame":          full,
		"into the previous frame payload": full + 5,
		"three frames and a bit":          fs[n-1].end() - fs[n-3].Off + 17,
	}
	for name, k := range cuts {
		t.Run(name, func(t *testing.T) {
			cfg := copyStore(t, base)
			path := lastSegment(t, cfg.Dir)
			asCrashed(t, cfg.Dir)
			size := int64(len(data) - k)
			if err := os.Truncate(path, size); err != nil {
				t.Fatal(err)
			}
			complete := 0
			end := format.SegmentHeaderSize
			for _, f := range fs {
				if int64(f.end()) <= size {
					complete++
					end = f.end()
				}
			}
			leftover := data[end:size]
			s, err := core.Open(cfg)
			if err != nil {
				t.Fatalf("Open after cutting %d bytes: %v", k, err)
			}
			t.Cleanup(func() { s.Close() })
			if got, _ := readFrames(t, path); len(leftover) > 0 && !allZeroBytes(got[end:]) {
				t.Errorf("torn tail not discarded: bytes after the complete frames (from %d) are not zero", end)
			}
			checkPrefix(t, s, rs, complete)
			// The repaired store reopens cleanly with everything.
			s2 := reopen(t, s)
			if got := s2.Stats().Events; got != uint64(complete+3) {
				t.Fatalf("after second reopen: %d events, want %d", got, complete+3)
			}
			mustVerify(t, s2)
			s2.Close()
			if d, fr := readFrames(t, path); !allZeroBytes(d[fr[len(fr)-1].end():]) {
				t.Errorf("segment holds non-zero bytes after its last frame")
			}
		})
	}
}

func allZeroBytes(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestGarbageAfterLastFrame(t *testing.T) {
	const n = 12
	base, rs := closedFixture(t, n)
	seg := lastSegment(t, base.Dir)
	orig := fileSize(t, seg)
	_, baseFrames := readFrames(t, seg)
	dataEnd := baseFrames[len(baseFrames)-1].end()
	garbage := map[string][]byte{
		"random bytes":           []byte("\x17this is not a frame at all, just junk \xff\xfe\x01"),
		"huge length":            {0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5},
		"plausible frame header": append(binary.LittleEndian.AppendUint32(nil, 300), make([]byte, 40)...),
		"one byte":               {0x42},
		"half-written frame then preallocated zeros": func() []byte {
			d, fs := readFrames(t, seg)
			f := fs[n-1]
			b := append([]byte(nil), d[f.Off:f.Off+(f.end()-f.Off)/2]...)
			return append(b, make([]byte, 8192)...)
		}(),
	}
	for name, g := range garbage {
		t.Run(name, func(t *testing.T) {
			cfg := copyStore(t, base)
			path := lastSegment(t, cfg.Dir)
			// A crash mid-write leaves junk where the zero fill was.
			d, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			d = append(d[:dataEnd], g...)
			if len(d) < int(orig) {
				d = append(d, make([]byte, int(orig)-len(d))...)
			}
			writeFile(t, path, d)
			s, err := core.Open(cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			after, _ := os.ReadFile(path)
			if int64(len(after)) != max(orig, int64(dataEnd+len(g))) || !allZeroBytes(after[dataEnd:]) {
				t.Errorf("garbage not discarded: %d bytes, non-zero bytes after the last frame at %d", len(after), dataEnd)
			}
			checkPrefix(t, s, rs, n)
		})
	}
}

// Zeros after the data are preallocated space (a crash leaves them): a
// clean end, and new writes go right after the data.
func TestPreallocatedZerosAreCleanEnd(t *testing.T) {
	const n = 9
	base, rs := closedFixture(t, n)
	cfg := copyStore(t, base)
	path := lastSegment(t, cfg.Dir)
	appendBytes(t, path, make([]byte, 1<<20))
	s := openWith(t, cfg)
	checkPrefix(t, s, rs, n)
	s = reopen(t, s)
	if got := s.Stats().Events; got != n+3 {
		t.Fatalf("%d events, want %d", got, n+3)
	}
}

// A crash while a new segment was being created leaves an empty or short
// last file: Open recreates it and carries on.
func TestIncompleteNewSegment(t *testing.T) {
	const n = 6
	base, rs := closedFixture(t, n)
	for name, content := range map[string][]byte{
		"empty":          nil,
		"short header":   []byte("BPAKSE"),
		"all-zero block": make([]byte, 4096),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := copyStore(t, base)
			writeFile(t, filepath.Join(cfg.Dir, fmt.Sprintf("%020d.seg", 2)), content)
			s := openWith(t, cfg)
			checkPrefix(t, s, rs, n)
			s = reopen(t, s)
			if got := s.Stats().Events; got != n+3 {
				t.Fatalf("%d events, want %d", got, n+3)
			}
		})
	}
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// expectCorruption opens cfg (read-write and read-only) and asserts a
// *CorruptionError naming path at offset.
func expectCorruption(t *testing.T, cfg core.Config, path string, offset int64) {
	t.Helper()
	sizeBefore := fileSize(t, path)
	for _, ro := range []bool{false, true} {
		open := core.Open
		if ro {
			open = core.OpenReadOnly
		}
		s, err := open(cfg)
		if err == nil {
			s.Close()
			t.Fatalf("Open (read-only %v) of a damaged store succeeded", ro)
		}
		if !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("Open (read-only %v): got %v, want ErrCorrupt", ro, err)
		}
		var ce *core.CorruptionError
		if !errors.As(err, &ce) {
			t.Fatalf("error %T is not a *CorruptionError", err)
		}
		if filepath.Base(ce.File) != filepath.Base(path) {
			t.Errorf("CorruptionError.File = %q, want the segment %q", ce.File, filepath.Base(path))
		}
		if ce.Offset != offset {
			t.Errorf("CorruptionError.Offset = %d, want %d", ce.Offset, offset)
		}
		if !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("message %q does not name the file", err)
		}
	}
	if got := fileSize(t, path); got != sizeBefore {
		t.Errorf("a failed Open changed the damaged file: %d -> %d bytes", sizeBefore, got)
	}
}

func TestCorruptFrameInTheMiddle(t *testing.T) {
	const n = 20
	base, _ := closedFixture(t, n)
	data, fs := readFrames(t, lastSegment(t, base.Dir))
	victim := fs[7]
	where := map[string]int{
		"payload byte":       payloadOffset(data, victim) + 2,
		"length field":       victim.Off + 1,
		"CRC field":          victim.Off + 5,
		"record type":        victim.recStart(),
		"clock field":        victim.recStart() + format.OffClock,
		"last payload byte":  victim.end() - 1,
		"length, high byte":  victim.Off + 3,
		"entity string byte": victim.recStart() + format.EventFixedSize,
	}
	for name, at := range where {
		t.Run(name, func(t *testing.T) {
			cfg := copyStore(t, base)
			path := lastSegment(t, cfg.Dir)
			d := append([]byte(nil), data...)
			d[at] ^= 0x5a
			writeFile(t, path, d)
			expectCorruption(t, cfg, path, int64(victim.Off))

			// A failed Open released the lock: repairing the file lets the
			// store open in the same process.
			writeFile(t, path, data)
			s := openWith(t, cfg)
			if got := s.Stats().Events; got != n {
				t.Fatalf("after repair: %d events", got)
			}
		})
	}
}

func TestCorruptSegmentHeader(t *testing.T) {
	// Two segments: damage either header.
	base, _ := tamperFixture(t)
	segs := segmentFiles(t, base.Dir)
	if len(segs) < 2 {
		t.Fatalf("fixture has %d segments", len(segs))
	}
	for _, which := range []int{0, len(segs) - 1} {
		for name, at := range map[string]int{"magic": 2, "version": 8, "segment id": 12, "checksum": 21} {
			t.Run(fmt.Sprintf("segment %d %s", which, name), func(t *testing.T) {
				cfg := copyStore(t, base)
				path := segmentFiles(t, cfg.Dir)[which]
				d, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				d[at] ^= 0x01
				writeFile(t, path, d)
				expectCorruption(t, cfg, path, 0)
			})
		}
	}
	// A segment renamed to another id: its header names a different segment.
	t.Run("renamed segment", func(t *testing.T) {
		cfg := copyStore(t, base)
		segs := segmentFiles(t, cfg.Dir)
		renamed := filepath.Join(cfg.Dir, fmt.Sprintf("%020d.seg", 99))
		if err := os.Rename(segs[len(segs)-1], renamed); err != nil {
			t.Fatal(err)
		}
		expectCorruption(t, cfg, renamed, 0)
	})
}

// A segment whose header was zeroed but which still holds frames is damage,
// not a segment left half-created by a crash: Open must not drop its events.
func TestZeroedHeaderWithDataIsCorruption(t *testing.T) {
	base, _ := closedFixture(t, 10)
	cfg := copyStore(t, base)
	path := lastSegment(t, cfg.Dir)
	d, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clear(d[:format.SegmentHeaderSize])
	writeFile(t, path, d)
	expectCorruption(t, cfg, path, 0)
}

// Damage at the end of a sealed (not last) segment is corruption, not a
// torn tail to truncate.
func TestDamagedSealedSegmentTail(t *testing.T) {
	base, _ := tamperFixture(t)
	cfg := copyStore(t, base)
	path := segmentFiles(t, cfg.Dir)[0]
	d, fs := readFrames(t, path)
	lastF := fs[len(fs)-1]
	if !allZeroBytes(d[lastF.end():]) {
		t.Fatalf("sealed segment has non-zero bytes after its frames")
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped byte in its last frame": func(b []byte) []byte { b[lastF.end()-3] ^= 0xff; return b },
		"last frame cut short":           func(b []byte) []byte { return b[:lastF.end()-10] },
	} {
		t.Run(name, func(t *testing.T) {
			b := mutate(append([]byte(nil), d...))
			writeFile(t, path, b)
			expectCorruption(t, cfg, path, int64(lastF.Off))
			writeFile(t, path, d)
		})
	}
}

// OpenReadOnly recovers a torn tail in memory but changes nothing on disk.
func TestReadOnlyDoesNotRepair(t *testing.T) {
	const n = 8
	base, rs := closedFixture(t, n)
	cfg := copyStore(t, base)
	path := lastSegment(t, cfg.Dir)
	appendBytes(t, path, []byte("junk-junk-junk"))
	size := fileSize(t, path)
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	evs := mustQuery(t, ro, core.All())
	if len(evs) != n || evs[n-1].Header.ID != rs[n-1].ID {
		t.Fatalf("read-only store sees %d events", len(evs))
	}
	ro.Close()
	if got := fileSize(t, path); got != size {
		t.Fatalf("OpenReadOnly changed the file: %d -> %d", size, got)
	}
}

// tamperFixture writes events across several segments and returns the
// closed store's config with its receipts.
func tamperFixture(t *testing.T) (core.Config, []core.Receipt) {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var rs []core.Receipt
	pad := strings.Repeat("q", 900)
	for i := 0; i < 200; i++ {
		c := mustCoord(t, fmt.Sprintf("t:%d", i%4), "s")
		rs = append(rs, mustAppend(t, s, c, kindA, fmt.Sprintf(`{"n":%d,"pad":%q}`, 100+i, pad)))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(segmentFiles(t, cfg.Dir)) < 3 {
		t.Fatal("tamper fixture needs at least 3 segments")
	}
	return cfg, rs
}

// locate returns the segment path, file contents and frame of event id.
func locate(t *testing.T, dir string, id core.EventID) (string, []byte, frame) {
	t.Helper()
	for _, p := range segmentFiles(t, dir) {
		d, fs := readFrames(t, p)
		for _, f := range fs {
			if recordID(d, f) == id {
				return p, d, f
			}
		}
	}
	t.Fatalf("event %s not found on disk", id)
	return "", nil, frame{}
}

func expectChainError(t *testing.T, s *core.Store, path string, f frame, id core.EventID, reason string) {
	t.Helper()
	_, err := s.Verify()
	if !errors.Is(err, core.ErrChainBroken) {
		t.Fatalf("Verify: got %v, want ErrChainBroken", err)
	}
	var ce *core.ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("error %T is not a *ChainError", err)
	}
	if ce.Segment != filepath.Base(path) || ce.Offset != int64(f.Off) || ce.ID != id {
		t.Fatalf("ChainError names %s offset %d event %s; want %s offset %d event %s",
			ce.Segment, ce.Offset, ce.ID, filepath.Base(path), f.Off, id)
	}
	if reason != "" && !strings.Contains(ce.Reason, reason) {
		t.Errorf("ChainError.Reason = %q, want it to mention %q", ce.Reason, reason)
	}
	msg := err.Error()
	if !strings.Contains(msg, filepath.Base(path)) || !strings.Contains(msg, id.String()) || !strings.Contains(msg, fmt.Sprint(f.Off)) {
		t.Errorf("message %q does not name segment, offset and event", msg)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	base, rs := tamperFixture(t)
	victim := rs[117] // in a middle segment
	cases := []struct {
		name   string
		edit   func(d []byte, f frame)
		reason string
	}{
		{"payload byte", func(d []byte, f frame) {
			p := payloadOffset(d, f) + len(`{"n":`)
			d[p]++ // 2 -> 3: still valid JSON
		}, "payload"},
		{"clock", func(d []byte, f frame) {
			p := f.recStart() + format.OffClock
			binary.LittleEndian.PutUint64(d[p:], binary.LittleEndian.Uint64(d[p:])+1)
		}, ""},
		{"kind", func(d []byte, f frame) { d[f.recStart()+40] ^= 0x03 }, ""},
		{"user flags", func(d []byte, f frame) { d[f.recStart()+42] = 0x80 }, ""},
		{"timestamp", func(d []byte, f frame) { d[f.recStart()+72] ^= 0x10 }, ""},
		{"causation id", func(d []byte, f frame) { d[f.recStart()+120] ^= 0x01 }, ""},
		{"scope byte", func(d []byte, f frame) {
			r := d[f.recStart():]
			el := int(binary.LittleEndian.Uint16(r[format.OffEntityLen:]))
			d[f.recStart()+format.EventFixedSize+el] = 'S'
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := copyStore(t, base)
			path, d, f := locate(t, cfg.Dir, victim.ID)
			c.edit(d, f)
			fixFrameCRC(d, f.Off)
			writeFile(t, path, d)
			s := openWith(t, cfg) // frames are valid: Open accepts the store
			expectChainError(t, s, path, f, victim.ID, c.reason)
		})
	}
}

// An attacker who also recomputes the event's digests is caught by the next
// event of the same entity, whose previous-hash link no longer holds.
func TestVerifyDetectsForgedEvent(t *testing.T) {
	base, rs := tamperFixture(t)
	victim := rs[117]
	next := rs[121] // same entity (117 % 4 == 121 % 4)
	cfg := copyStore(t, base)
	path, d, f := locate(t, cfg.Dir, victim.ID)
	p := payloadOffset(d, f) + len(`{"n":`)
	d[p]++
	rec := d[f.recStart():f.end()]
	ph := blake3.Sum256(d[payloadOffset(d, f):f.end()])
	copy(rec[128:160], ph[:])
	eh := blake3.Sum256(rec[40 : payloadOffset(d, f)-f.recStart()])
	copy(rec[8:40], eh[:])
	fixFrameCRC(d, f.Off)
	writeFile(t, path, d)

	s := openWith(t, cfg)
	ev, err := s.Get(victim.ID)
	if err != nil || !strings.HasPrefix(string(ev.Payload), `{"n":317`) {
		t.Fatalf("forged event not read back as forged (%q, %v): the forgery helper is wrong", ev.Payload, err)
	}
	npath, _, nf := locate(t, cfg.Dir, next.ID)
	expectChainError(t, s, npath, nf, next.ID, "previous")
}

// Removing an event from the middle of the log leaves a gap in the global
// sequences: Open refuses the store, naming the frame after the gap
// (events are never silently missing).
func TestOpenDetectsRemovedEvent(t *testing.T) {
	base, rs := tamperFixture(t)
	cfg := copyStore(t, base)
	path, d, f := locate(t, cfg.Dir, rs[117].ID)
	cut := append(append([]byte(nil), d[:f.Off]...), d[f.end():]...)
	writeFile(t, path, cut)
	os.Remove(filepath.Join(cfg.Dir, checkpointFile))
	for _, open := range []func(core.Config) (*core.Store, error){core.Open, core.OpenReadOnly} {
		s, err := open(cfg)
		if err == nil {
			s.Close()
			t.Fatal("Open succeeded over a log with an event cut out")
		}
		var ce *core.CorruptionError
		if !errors.As(err, &ce) || ce.File != path || ce.Offset != int64(f.Off) || !strings.Contains(ce.Reason, "global sequence 117 is missing before this event's 118") {
			t.Fatalf("got %v, want a *CorruptionError naming %s at %d (sequence 117 missing)", err, path, f.Off)
		}
	}
}

// TestOpenNamesAMissingSegment: a segment removed from the middle of the
// log is named as missing, not reported as damage of the one after it.
func TestOpenNamesAMissingSegment(t *testing.T) {
	base, _ := tamperFixture(t)
	cfg := copyStore(t, base)
	segs := segmentFiles(t, cfg.Dir)
	missing := segs[1]
	for _, p := range []string{missing, strings.TrimSuffix(missing, ".seg") + ".idx"} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(cfg.Dir, checkpointFile))
	_, err := core.Open(cfg)
	var ce *core.CorruptionError
	if !errors.As(err, &ce) || ce.File != segs[2] || !strings.Contains(ce.Reason, "; segment "+filepath.Base(missing)+" is missing") {
		t.Fatalf("a middle segment removed: %v, want a *CorruptionError saying %s is missing", err, filepath.Base(missing))
	}
}

// batchFixture is a closed store of atomic batches (of 40 events each, or
// as sizes gives) written with 64 KiB segments, so that batches span
// segment files (an import writes the same); a size of 1 is a single
// Append.
func batchFixture(t *testing.T, sizes ...int) core.Config {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s := openWith(t, cfg)
	pad := strings.Repeat("q", 900)
	if len(sizes) == 0 {
		sizes = []int{40, 40, 40, 40, 40, 40, 40, 40}
	}
	for b, n := range sizes {
		items := make([]core.BatchItem, n)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("t:%d", i%4), "s"), Kind: kindA,
				Payload: fmt.Appendf(nil, `{"b":%d,"i":%d,"pad":%q}`, b, i, pad)}
		}
		if n == 1 {
			mustAppend(t, s, items[0].Coordinate, kindA, string(items[0].Payload))
			continue
		}
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(segmentFiles(t, cfg.Dir)) < 3 {
		t.Fatal("batch fixture needs at least 3 segments")
	}
	return cfg
}

// TestOpenNamesAMissingSegmentInsideABatch: a segment removed from the
// middle of a batch-written log is named as missing — whether the batch's
// commit record or its items come after it, and whether the checkpoint
// and footers are there or not — not reported as a batch of the next
// segment whose items do not add up; and the checkpoint the missing
// segment makes unusable is reported once.
func TestOpenNamesAMissingSegmentInsideABatch(t *testing.T) {
	batches := batchFixture(t)
	// 70 single events fill the first segment and start the second, where
	// a batch begins that ends in the third: removing the second leaves
	// batch items with no batch open before them.
	singles := make([]int, 71)
	for i := range singles {
		singles[i] = 1
	}
	singles[70] = 80
	begun := batchFixture(t, singles...)
	for _, base := range []core.Config{batches, begun} {
		segs := segmentFiles(t, base.Dir)
		for i := 1; i < len(segs)-1; i++ {
			for _, withIndex := range []bool{true, false} {
				t.Run(fmt.Sprintf("%d segments, segment %d removed, checkpoint and footers %v", len(segs), i+1, withIndex), func(t *testing.T) {
					cfg := copyStore(t, base)
					missing := filepath.Join(cfg.Dir, filepath.Base(segs[i]))
					if err := os.Remove(missing); err != nil {
						t.Fatal(err)
					}
					if !withIndex {
						os.Remove(filepath.Join(cfg.Dir, checkpointFile))
						idx, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.idx"))
						for _, p := range idx {
							os.Remove(p)
						}
					}
					var logs bytes.Buffer
					cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
					for _, open := range []func(core.Config) (*core.Store, error){core.Open, core.OpenReadOnly} {
						logs.Reset()
						s, err := open(cfg)
						if err == nil {
							s.Close()
							t.Fatal("Open succeeded with a middle segment removed")
						}
						var ce *core.CorruptionError
						if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "segment "+filepath.Base(missing)+" is missing") {
							t.Fatalf("got %v, want a *CorruptionError saying %s is missing", err, filepath.Base(missing))
						}
						if n := strings.Count(logs.String(), "index checkpoint not used"); withIndex && n != 1 {
							t.Errorf("the unusable checkpoint reported %d times, want once:\n%s", n, logs.String())
						}
					}
				})
			}
		}
	}
}

func TestVerifyCleanStore(t *testing.T) {
	base, rs := tamperFixture(t)
	s := openWith(t, base)
	rep := mustVerify(t, s)
	if rep.Events != len(rs) || rep.Entities != 4 || rep.Segments != len(segmentFiles(t, base.Dir)) {
		t.Fatalf("Verify report %+v", rep)
	}
	// Verify also passes while writes go on.
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			c, _ := core.NewCoordinate(fmt.Sprintf("t:%d", i%5), "s")
			if _, err := s.Append(ctx, c, kindA, []byte(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("w", 500)))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if _, err := s.Verify(); err != nil {
			t.Fatalf("Verify during writes: %v", err)
		}
	}
	<-done
	if rep := mustVerify(t, s); rep.Events != len(rs)+300 {
		t.Fatalf("Verify after writes: %+v", rep)
	}
}
