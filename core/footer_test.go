package core_test

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// Segment footers: Open replays them instead of reading frames, and any
// footer that is damaged, foreign or stale costs its segment a frame
// scan, never a wrong index.

// ---- footer file surgery (layout: core/internal/format) ----

// footerFile is a decoded footer, edited and encoded again by the tests.
type footerFile = format.Footer

func parseFooter(t testing.TB, b []byte) *footerFile {
	t.Helper()
	f, err := format.DecodeFooter(b)
	if err != nil {
		t.Fatalf("footer (%d bytes): %v", len(b), err)
	}
	return f
}

func readFooterFile(t testing.TB, path string) *footerFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseFooter(t, b)
}

// segmentKey reads the key a segment file's header names.
func segmentKey(t testing.TB, path string) uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := make([]byte, format.SegmentHeaderSize)
	if _, err := f.ReadAt(h, 0); err != nil {
		t.Fatal(err)
	}
	return uint32(le.Uint64(h[12:]))
}

// ---- bases ----

// footerBase builds a closed store with the deterministic order history
// (so two bases with the same seed have the same layout), every sealed
// segment sealed (packed with zstd when packed), and every segment
// footered, the active one included.
func footerBase(t *testing.T, dir string, packed bool) core.Config {
	t.Helper()
	cfg := testConfig(dir)
	smallSegments(&cfg)
	if packed {
		cfg.Compression = core.CompressionZstd
	}
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeOrders(t, s, 900, 7)
	// Big batches and a big committed fence, so that some segment starts
	// or ends inside one (the layout depends on nothing else).
	ctx := context.Background()
	for b := 0; b < 6; b++ {
		rng := rand.New(rand.NewSource(int64(b)))
		var items []core.BatchItem
		for k := 0; k < 24; k++ {
			items = append(items, core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("big:%d", b), "eu"), Kind: kindB, Payload: []byte(orderJSON(rng, k))})
		}
		if _, err := s.AppendBatch(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(99))
	for k := 0; k < 80; k++ {
		if _, err := f.Submit(ctx, mustCoord(t, fmt.Sprintf("fenced:%d", k%4), "us"), kindA, []byte(orderJSON(rng, k))); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, mustCoord(t, "tail", "eu"), kindC, `{"tail":true}`)
	mustSeal(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// An open and a close more, which footers the active segment whole
	// (whatever the footer the writing session's Close left).
	s, err = core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustSeal(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, dir)
	if len(segs) < 5 {
		t.Fatalf("%d segments; want at least 5", len(segs))
	}
	for i, p := range segs {
		if isPackedSegment(t, p) != (packed && i < len(segs)-1) {
			t.Fatalf("%s: packed %v", filepath.Base(p), !(packed && i < len(segs)-1))
		}
		if _, err := os.Stat(footerPath(p)); err != nil {
			t.Fatalf("no footer: %v", err)
		}
	}
	return cfg
}

// ftDamage changes the footer of segs[1] (the victim) of the store in
// dir; segs[2] is another sealed segment, other a store with the same
// layout.
type ftDamage struct {
	name string
	fn   func(t *testing.T, dir string, segs []string, other string)
	// replayOnly: the footer passes every check before replay and is
	// caught while replayed; Open then reads every segment (Footers 0).
	replayOnly bool
	// prefix: the footer is sound but covers only a prefix of its segment.
	prefix bool
}

func rewriteFooter(t *testing.T, seg string, edit func(f *footerFile)) {
	t.Helper()
	f := readFooterFile(t, footerPath(seg))
	edit(f)
	writeFile(t, footerPath(seg), f.Encode())
}

func flipFooterByte(at func(n int) int) func(t *testing.T, dir string, segs []string, _ string) {
	return func(t *testing.T, dir string, segs []string, _ string) {
		p := footerPath(segs[1])
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[at(len(b))] ^= 0x20
		writeFile(t, p, b)
	}
}

func truncateFooter(size func(n int64) int64) func(t *testing.T, dir string, segs []string, _ string) {
	return func(t *testing.T, dir string, segs []string, _ string) {
		p := footerPath(segs[1])
		if err := os.Truncate(p, size(fileSize(t, p))); err != nil {
			t.Fatal(err)
		}
	}
}

var ftDamages = []ftDamage{
	{name: "flipped byte in the body", fn: flipFooterByte(func(n int) int { return n / 2 })},
	{name: "flipped byte in the covered end", fn: flipFooterByte(func(int) int { return 12 })},
	{name: "flipped byte in the checksum", fn: flipFooterByte(func(n int) int { return n - 1 })},
	{name: "truncated", fn: truncateFooter(func(n int64) int64 { return n * 2 / 3 })},
	{name: "truncated to its header", fn: truncateFooter(func(int64) int64 { return 32 })},
	{name: "empty", fn: truncateFooter(func(int64) int64 { return 0 })},
	{name: "another segment's footer in its place", fn: func(t *testing.T, dir string, segs []string, _ string) {
		b, err := os.ReadFile(footerPath(segs[2]))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, footerPath(segs[1]), b)
	}},
	{name: "another segment's footer renamed to name it", fn: func(t *testing.T, dir string, segs []string, _ string) {
		f := readFooterFile(t, footerPath(segs[2]))
		f.Key = segmentKey(t, segs[1])
		writeFile(t, footerPath(segs[1]), f.Encode())
	}},
	// The victim ends on a batch-begin record, the same bytes in both stores.
	{name: "another store's footer (same layout)", fn: func(t *testing.T, dir string, segs []string, other string) {
		foreignFooter(t, segs[1], other)
	}},
	{name: "another store's footer (same layout), segment ending on an event", fn: func(t *testing.T, dir string, segs []string, other string) {
		all := segmentFiles(t, dir)
		for _, seg := range all[:len(all)-1] {
			if f := readFooterFile(t, footerPath(seg)); f.Items[len(f.Items)-1][0] == 1 {
				foreignFooter(t, seg, other)
				return
			}
		}
		t.Fatal("no sealed segment ends on an event")
	}},
	{name: "covered end past the data", fn: func(t *testing.T, dir string, segs []string, _ string) {
		rewriteFooter(t, segs[1], func(f *footerFile) { f.End += 200 })
	}},
	{name: "a last frame past the data", fn: func(t *testing.T, dir string, segs []string, _ string) {
		rewriteFooter(t, segs[1], func(f *footerFile) { f.LastOff, f.End = f.End, f.End+8+300 })
	}},
	{name: "a covered end past the end of the file", fn: func(t *testing.T, dir string, segs []string, _ string) {
		rewriteFooter(t, segs[1], func(f *footerFile) { f.End += 1 << 20 })
	}},
	{name: "an event more than the segment holds", replayOnly: true, fn: func(t *testing.T, dir string, segs []string, _ string) {
		rewriteFooter(t, segs[1], func(f *footerFile) { f.Items = append(f.Items, phantomItem(t, f)) })
	}},
	{name: "a footer covering a prefix", prefix: true, fn: func(t *testing.T, dir string, segs []string, _ string) {
		content := segmentContent(t, segs[1])
		rewriteFooter(t, segs[1], func(f *footerFile) {
			k := len(f.Items) / 2
			for k > 0 && f.Items[k-1][0] != 1 { // end after an event, outside any batch or fence markers
				k--
			}
			last := f.Items[k-1]
			off, flen := le.Uint32(last[format.FooterItemOffFrameOff:]), le.Uint32(last[format.FooterItemOffFrameLen:])
			f.Items = f.Items[:k]
			f.LastOff, f.End = uint64(off), uint64(off)+8+uint64(flen)
			f.LastEv = uint64(off)
			copy(f.LastID[:], last[format.FooterItemOffID:])
			_ = content
		})
	}},
}

// foreignFooter puts the footer of the same segment of store other (the
// same layout, other events) in place of seg's.
func foreignFooter(t *testing.T, seg, other string) {
	t.Helper()
	theirs := filepath.Join(other, filepath.Base(footerPath(seg)))
	a, b := readFooterFile(t, footerPath(seg)), readFooterFile(t, theirs)
	if a.Key != b.Key || a.End != b.End || a.LastOff != b.LastOff || len(a.Items) != len(b.Items) {
		t.Fatalf("the other store's footer does not have the same layout: key %d/%d end %d/%d last %d/%d items %d/%d",
			a.Key, b.Key, a.End, b.End, a.LastOff, b.LastOff, len(a.Items), len(b.Items))
	}
	if a.LastID == b.LastID {
		t.Fatalf("%s: both stores' footers name the same last event", filepath.Base(seg))
	}
	data, err := os.ReadFile(theirs)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, footerPath(seg), data)
}

// phantomItem is a copy of the footer's last event item with the next
// sequence and a new id: an event the segment does not hold.
func phantomItem(t *testing.T, f *footerFile) []byte {
	t.Helper()
	var maxSeq uint64
	var last []byte
	for _, it := range f.Items {
		if it[0] == 1 {
			last = it
			maxSeq = max(maxSeq, le.Uint64(it[format.FooterItemOffSeq:]))
		}
	}
	if last == nil {
		t.Fatal("footer without events")
	}
	p := append([]byte(nil), last...)
	le.PutUint64(p[format.FooterItemOffSeq:], maxSeq+1)
	id := core.NewEventID()
	copy(p[format.FooterItemOffID:], id[:])
	p[format.FooterItemOffSysFlags] = 0 // plain system flags (no batch, no fence)
	return p
}

// pickVictim returns a sealed segment (with a sealed neighbour after it)
// that starts or ends inside a batch or a fence, the hardest case for a
// footer, and its neighbour; segs is then {"", victim, neighbour} for the
// damages. footerBase's big batches and fence make one; the test fails if
// there is none.
func pickVictim(t *testing.T, dir string) []string {
	t.Helper()
	segs := segmentFiles(t, dir)
	inside := func(it []byte, end bool) bool {
		if it[0] == 1 {
			return it[format.FooterItemOffSysFlags]&3 != 0 // a batch item or a fenced event
		}
		return end && (it[0] == 2 || it[0] == 4) // ends on a batch or fence begin
	}
	for i := 1; i < len(segs)-2; i++ {
		f := readFooterFile(t, footerPath(segs[i]))
		if inside(f.Items[0], false) || inside(f.Items[len(f.Items)-1], true) {
			return []string{"", segs[i], segs[i+1]}
		}
	}
	t.Fatalf("no sealed segment of %d starts or ends inside a batch or fence", len(segs))
	return nil
}

func TestFooterFallbacks(t *testing.T) {
	for _, packed := range []bool{false, true} {
		mode := "plain"
		if packed {
			mode = "packed"
		}
		t.Run(mode, func(t *testing.T) {
			base := footerBase(t, filepath.Join(t.TempDir(), "a"), packed)
			other := filepath.Join(t.TempDir(), "b")
			footerBase(t, other, packed)
			nseg := len(segmentFiles(t, base.Dir))
			// The reference: a frame scan.
			ref := filepath.Join(t.TempDir(), "ref")
			copyTree(t, base.Dir, ref, noCheckpoint)
			rcfg := base
			rcfg.Dir = ref
			rs, rrep := openPath(t, rcfg)
			if rrep.Path != "scan" {
				t.Fatalf("reference: %+v", rrep)
			}
			want := captureState(t, rs)
			if err := rs.Close(); err != nil {
				t.Fatal(err)
			}
			// Undamaged, every segment opens from its footer.
			{
				dir := filepath.Join(t.TempDir(), "sound")
				copyTree(t, base.Dir, dir, func(n string) bool { return n == checkpointFile })
				c := base
				c.Dir = dir
				s, rep := openPath(t, c)
				if rep.Path != "footers" || rep.SegmentsScanned != 0 || rep.Footers != nseg {
					t.Fatalf("undamaged: %+v", rep)
				}
				sameState(t, "undamaged footers", captureState(t, s), want)
			}
			for _, d := range ftDamages {
				t.Run(d.name, func(t *testing.T) {
					dir := filepath.Join(t.TempDir(), "s")
					copyTree(t, base.Dir, dir, func(n string) bool { return n == checkpointFile })
					segs := pickVictim(t, dir)
					t.Logf("victim %s", filepath.Base(segs[1]))
					d.fn(t, dir, segs, other)
					c := base
					c.Dir = dir
					ro, err := core.OpenReadOnly(c)
					if err != nil {
						t.Fatalf("OpenReadOnly: %v", err)
					}
					sameState(t, "read-only open", captureState(t, ro), want)
					ro.Close()
					s, rep := openPath(t, c)
					sameState(t, "open", captureState(t, s), want)
					noLeak(t, d.name, mustQuery(t, s, core.All()))
					switch {
					case d.replayOnly:
						if rep.SegmentsScanned < 1 {
							t.Errorf("open report %+v: the segment was not scanned", rep)
						}
					case d.prefix && !packed:
						// The footer stands for the frames it covers; the rest are read.
						if rep.Path != "footers" || rep.SegmentsScanned != 1 || rep.Footers != nseg {
							t.Errorf("open report %+v; want %d footers and 1 segment read", rep, nseg)
						}
					default:
						if rep.Path != "footers" || rep.SegmentsScanned != 1 || rep.Footers != nseg-1 {
							t.Errorf("open report %+v; want the victim scanned and %d footers used", rep, nseg-1)
						}
					}
					allGettable(t, s, want.events)
					// Every entity's chain continues from its real last event.
					seen := map[string]bool{}
					for _, ev := range want.events {
						if !seen[ev.Coordinate.Entity] {
							seen[ev.Coordinate.Entity] = true
							mustAppend(t, s, mustCoord(t, ev.Coordinate.Entity, "eu"), kindA, `{"after":"damage"}`)
						}
					}
					mustVerify(t, s)
				})
			}
		})
	}
}

// An event item more than the last segment holds, in a footer that
// passes every check (checksum, segment key, last frame).
func TestFooterPhantomEventInLastSegment(t *testing.T) {
	base := footerBase(t, filepath.Join(t.TempDir(), "a"), false)
	ref := filepath.Join(t.TempDir(), "ref")
	copyTree(t, base.Dir, ref, noCheckpoint)
	rcfg := base
	rcfg.Dir = ref
	rs, _ := openPath(t, rcfg)
	want := captureState(t, rs)
	rs.Close()

	dir := filepath.Join(t.TempDir(), "s")
	copyTree(t, base.Dir, dir, func(n string) bool { return n == checkpointFile })
	segs := segmentFiles(t, dir)
	last := segs[len(segs)-1]
	rewriteFooter(t, last, func(f *footerFile) { f.Items = append(f.Items, phantomItem(t, f)) })
	c := base
	c.Dir = dir
	s, rep := openPath(t, c)
	t.Logf("open report %+v", rep)
	got := captureState(t, s)
	sameState(t, "a footer listing an event its segment does not hold", got, want)
}

// Close footers the segment being written: the next Open without a
// checkpoint reads no frame, after a session that rotated and after one
// that only appended to a segment an earlier session footered.
func TestFooterOnClose(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			smallSegments(&cfg)
			if packed {
				cfg.Compression = core.CompressionZstd
			}
			check := func(what string) {
				t.Helper()
				cp, ref := cfg, cfg
				cp.Dir, ref.Dir = filepath.Join(t.TempDir(), "cp"), filepath.Join(t.TempDir(), "ref")
				copyTree(t, cfg.Dir, cp.Dir, func(n string) bool { return n == checkpointFile })
				copyTree(t, cfg.Dir, ref.Dir, noCheckpoint)
				rs := openWith(t, ref)
				want := captureState(t, rs)
				if err := rs.Close(); err != nil {
					t.Fatal(err)
				}
				s, rep := openPath(t, cp)
				sameState(t, what, captureState(t, s), want)
				if rep.Path != "footers" || rep.SegmentsScanned != 0 {
					t.Errorf("%s: open report %+v; want every segment from its footer", what, rep)
				}
			}
			s := openWith(t, cfg)
			for i := 0; i < 40; i++ {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("c:%d", i%3), "eu"), kindA, payloadN(i))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			check("one segment, first session")

			s = openWith(t, cfg)
			for i := 0; i < 40; i++ {
				mustAppend(t, s, mustCoord(t, fmt.Sprintf("c:%d", i%3), "eu"), kindA, payloadN(i))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			check("appended to a footered segment")

			s = openWith(t, cfg)
			rotate(t, s)
			rotate(t, s)
			mustAppend(t, s, mustCoord(t, "c:0", "eu"), kindB, `{"last":true}`)
			mustSeal(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			check("after rotations")
		})
	}
}

// A segment written on after the Close that footered it: the footer
// covers a prefix and the frames after it are read, through batches and
// fences that straddle the covered end.
func TestFooterCoversPrefix(t *testing.T) {
	for _, packed := range []bool{false, true} {
		t.Run(map[bool]string{false: "none", true: "zstd"}[packed], func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t.TempDir())
			cfg.SegmentMaxBytes = 1 << 20
			if packed {
				cfg.Compression = core.CompressionZstd
			}
			s := openWith(t, cfg)
			h := writeOrders(t, s, 300, 8)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// (An open and a close more footer the segment as it stands.)
			s = openWith(t, cfg)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			seg := segmentFiles(t, cfg.Dir)[0]
			if f := readFooterFile(t, footerPath(seg)); len(f.Items) < 300 {
				t.Fatalf("the footer covers %d records (up to %d); want the first session's", len(f.Items), f.End)
			}
			s = openWith(t, cfg)
			h2 := writeOrdersKeyed(t, s, 300, 9, "second-")
			// A fence left open by the crash below: hidden for ever.
			f, err := s.BeginFence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Submit(ctx, mustCoord(t, "cust:005", "eu"), kindA, []byte(`{"leak":true}`)); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			// What a crash would leave: the footer of the first Close, the
			// frames written since.
			crashed := cfg
			crashed.Dir = filepath.Join(t.TempDir(), "crashed")
			copyTree(t, cfg.Dir, crashed.Dir, func(n string) bool { return n == checkpointFile })
			if err := f.Cancel(ctx); err != nil {
				t.Fatal(err)
			}
			ref := crashed
			ref.Dir = filepath.Join(t.TempDir(), "ref")
			copyTree(t, crashed.Dir, ref.Dir, noCheckpoint)
			rs, rrep := openPath(t, ref)
			if rrep.Path != "scan" {
				t.Fatalf("reference %+v", rrep)
			}
			want := captureState(t, rs)
			c, rep := openPath(t, crashed)
			if rep.Path != "footers" || rep.Footers != 1 || rep.SegmentsScanned != 1 {
				t.Errorf("open report %+v; want the footer used and the frames after it read", rep)
			}
			sameState(t, "footer and tail vs scan", captureState(t, c), want)
			all := append(append([]sampleEvent(nil), h.events...), h2.events...)
			got := mustQuery(t, c, core.All())
			if len(got) != len(all) {
				t.Fatalf("%d events, want %d", len(got), len(all))
			}
			for i, ev := range got {
				sameAsWritten(t, "footer and tail", ev, all[i])
			}
			mustVerify(t, c)
		})
	}
}

// A footer that Open could not use is written again: the next Open
// without a checkpoint reads no frame.
func TestFooterRewrittenAfterDamage(t *testing.T) {
	var damages []ftDamage
	for _, d := range ftDamages {
		switch d.name {
		case "flipped byte in the body", "truncated", "another store's footer (same layout), segment ending on an event":
			damages = append(damages, d)
		}
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			cfg := footerBase(t, filepath.Join(t.TempDir(), "a"), true)
			other := filepath.Join(t.TempDir(), "b")
			footerBase(t, other, true)
			removeGlob(t, cfg.Dir, checkpointFile)
			d.fn(t, cfg.Dir, pickVictim(t, cfg.Dir), other)
			s, rep := openPath(t, cfg)
			if rep.SegmentsScanned != 1 {
				t.Fatalf("first open %+v", rep)
			}
			want := captureState(t, s)
			mustSeal(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			removeGlob(t, cfg.Dir, checkpointFile)
			s, rep = openPath(t, cfg)
			sameState(t, "second open", captureState(t, s), want)
			if rep.Path != "footers" || rep.SegmentsScanned != 0 {
				t.Errorf("second open %+v: the unusable footer was kept (%s)", rep, strings.TrimSpace(d.name))
			}
		})
	}
}

// Redacting the last event of a sealed plain segment rewrites its last
// frame (new checksum) in place: SealSegments brings the footer up to
// date, so the next Open without a checkpoint still reads no frame.
func TestFooterAfterRedactInPlace(t *testing.T) {
	ctx := context.Background()
	cfg := footerBase(t, filepath.Join(t.TempDir(), "a"), false)
	s := openWith(t, cfg)
	// A sealed segment whose last frame is a visible event.
	var lastEvent core.EventID
	segs := segmentFiles(t, cfg.Dir)
	for _, seg := range segs[:len(segs)-1] {
		data, fs := readFrames(t, seg)
		f := fs[len(fs)-1]
		if data[f.recStart()] != 1 {
			continue
		}
		if _, err := s.Get(recordID(data, f)); err == nil {
			lastEvent = recordID(data, f)
			break
		}
	}
	if lastEvent.IsZero() {
		t.Fatal("no sealed segment ends on a visible event")
	}
	if err := s.Redact(ctx, lastEvent); err != nil {
		t.Fatal(err)
	}
	mustSeal(t, s)
	want := captureState(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeGlob(t, cfg.Dir, checkpointFile)
	s, rep := openPath(t, cfg)
	sameState(t, "after redaction", captureState(t, s), want)
	if ev, err := s.Get(lastEvent); err != nil || !ev.Redacted {
		t.Fatalf("redacted event reads %+v, %v", ev, err)
	}
	if rep.Path != "footers" || rep.SegmentsScanned != 0 {
		t.Errorf("open report %+v: the footer of the segment redacted in place is no longer used", rep)
	}
}
