package core_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// TestSalvageExport: from a store whose middle segment has a damaged
// frame (which Open and OpenReadOnly refuse), SalvageExport writes every
// other event, in log order, reports the skipped range, changes nothing;
// a batch whose commit record is in the damaged range is left out and
// counted unconfirmed.
func TestSalvageExport(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	dir := s.Dir()
	c := mustCoord(t, "order:1", "shop")
	k := core.MustKind(1, 1)
	pad := string(bytes.Repeat([]byte("x"), 400))
	const n = 300
	for i := range n {
		mustAppend(t, s, c, k, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	var want bytes.Buffer
	if _, err := s.Export(&want, core.All(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Intact: the same lines as Export.
	var got bytes.Buffer
	rep, err := core.SalvageExport(dir, &got)
	if err != nil || rep.Events != n || len(rep.Skipped) != 0 || len(rep.Missing) != 0 || got.String() != want.String() {
		t.Fatalf("intact store: %+v, %v; same as Export: %v", rep, err, got.String() == want.String())
	}

	segs := segmentFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	data, frs := readFrames(t, segs[1])
	victim := frs[len(frs)/2]
	data[victim.recStart()+victim.Len-3] ^= 0xFF // inside the payload: the frame's checksum fails
	if err := os.WriteFile(segs[1], data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := core.OpenReadOnly(testConfig(dir)); !errors.Is(err, core.ErrCorrupt) {
		t.Fatalf("OpenReadOnly of the damaged store: %v, want ErrCorrupt", err)
	}
	before := dirSizes(t, dir)

	got.Reset()
	rep, err = core.SalvageExport(dir, &got)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != n-1 || len(rep.Skipped) != 1 || rep.Skipped[0].File != segs[1] ||
		rep.Skipped[0].Offset != int64(victim.Off) || rep.Skipped[0].Length != int64(victim.end()-victim.Off) {
		t.Fatalf("salvage report %+v; damaged frame at %d..%d of %s", rep, victim.Off, victim.end(), segs[1])
	}
	// In log order, the damaged event missing, every other line as Export wrote it.
	wantLines := bytes.Split(bytes.TrimSpace(want.Bytes()), []byte("\n"))
	gotLines := bytes.Split(bytes.TrimSpace(got.Bytes()), []byte("\n"))
	j := 0
	for _, l := range wantLines {
		if j < len(gotLines) && bytes.Equal(l, gotLines[j]) {
			j++
		}
	}
	if j != len(gotLines) || len(gotLines) != n-1 {
		t.Errorf("salvaged lines are not Export's lines in order less one (%d matched of %d)", j, len(gotLines))
	}
	if after := dirSizes(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("SalvageExport changed the directory: %v → %v", before, after)
	}
}

// TestSalvageExportUnconfirmedBatch: the items of a batch whose commit
// record is lost are read but not exported.
func TestSalvageExportUnconfirmedBatch(t *testing.T) {
	s := openStore(t)
	dir := s.Dir()
	c := mustCoord(t, "order:1", "shop")
	mustAppend(t, s, c, core.MustKind(1, 1), `{}`)
	items := make([]core.BatchItem, 3)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: core.MustKind(1, 2), Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
	}
	if _, err := s.AppendBatch(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, c, core.MustKind(1, 3), `{"after":true}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	seg := lastSegment(t, dir)
	data, frs := readFrames(t, seg)
	// Frames: event, batch-begin, 3 items, batch-commit, event.
	commit := frs[len(frs)-2]
	data[commit.recStart()] ^= 0xFF
	if err := os.WriteFile(seg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep, err := core.SalvageExport(dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Events != 2 || rep.Unconfirmed != 3 || len(rep.Skipped) != 1 {
		t.Fatalf("report %+v", rep)
	}
	sc := bufio.NewScanner(&out)
	var kinds []string
	for sc.Scan() {
		var ev core.ExportedEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Kind)
	}
	if fmt.Sprint(kinds) != "[0x1:0x1 0x1:0x3]" {
		t.Errorf("exported kinds %v, want the two events outside the batch", kinds)
	}
}

// TestVerifyCountsStubsApart: after a compaction removes events, Verify
// still checks their stubs but reports them in Removed, and calls its
// progress function once per segment with the true total.
func TestVerifyCountsStubsApart(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	c := mustCoord(t, "order:1", "shop")
	pad := string(bytes.Repeat([]byte("x"), 400))
	for i := range 300 {
		mustAppend(t, s, c, core.MustKind(1, 1), fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
	}
	crep, err := s.Compact(context.Background(), core.CompactConfig{MaxPerEntity: 10})
	if err != nil || crep.EventsRemoved == 0 {
		t.Fatalf("Compact: %+v, %v", crep, err)
	}
	var calls []int
	total := -1
	rep, err := s.VerifyProgress(func(done, all int) { calls = append(calls, done); total = all })
	if err != nil {
		t.Fatal(err)
	}
	visible := len(mustQuery(t, s, core.All()))
	if rep.Removed != crep.EventsRemoved || rep.Events-rep.Removed != visible {
		t.Errorf("Verify %+v after removing %d; %d events visible", rep, crep.EventsRemoved, visible)
	}
	if total != rep.Segments || len(calls) != rep.Segments || calls[len(calls)-1] != rep.Segments {
		t.Errorf("progress calls %v of %d, report %+v", calls, total, rep)
	}
}

// TestSalvageExportReportsMissingEvents: acknowledged events that no
// readable segment holds are reported as missing sequences — a middle
// segment deleted (a gap between the events read), the newest deleted (the
// checkpoint records more than was read) — so the salvage is known to be
// incomplete; a newest segment shorter than its header (a crash while
// rotating, which Open repairs) is neither damage nor loss.
func TestSalvageExportReportsMissingEvents(t *testing.T) {
	build := func(t *testing.T) (string, []string) {
		s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
		c := mustCoord(t, "order:1", "shop")
		pad := string(bytes.Repeat([]byte("x"), 400))
		for i := range 300 {
			mustAppend(t, s, c, core.MustKind(1, 1), fmt.Sprintf(`{"n":%d,"pad":%q}`, i, pad))
		}
		dir := s.Dir()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		segs := segmentFiles(t, dir)
		if len(segs) < 3 {
			t.Fatalf("%d segments, want several", len(segs))
		}
		return dir, segs
	}
	salvage := func(t *testing.T, dir string) core.SalvageReport {
		rep, err := core.SalvageExport(dir, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	lost := func(rep core.SalvageReport) (n uint64) {
		for _, g := range rep.Missing {
			n += g.To - g.From
		}
		return n
	}

	t.Run("middle segment deleted", func(t *testing.T) {
		dir, segs := build(t)
		if err := os.Remove(segs[1]); err != nil {
			t.Fatal(err)
		}
		rep := salvage(t, dir)
		if len(rep.Missing) != 1 || lost(rep) != uint64(300-rep.Events) || !strings.Contains(rep.Missing[0].Reason, "could be read") {
			t.Fatalf("report %+v: want the %d events of the deleted segment as one missing range", rep, 300-rep.Events)
		}
	})
	t.Run("oldest segment deleted", func(t *testing.T) {
		dir, segs := build(t)
		if err := os.Remove(segs[0]); err != nil {
			t.Fatal(err)
		}
		rep := salvage(t, dir)
		if len(rep.Missing) != 1 || rep.Missing[0].From != 0 || lost(rep) != uint64(300-rep.Events) {
			t.Fatalf("report %+v: want the %d events of the first segment missing from sequence 0", rep, 300-rep.Events)
		}
	})
	t.Run("newest segment deleted", func(t *testing.T) {
		dir, segs := build(t)
		if err := os.Remove(segs[len(segs)-1]); err != nil {
			t.Fatal(err)
		}
		rep := salvage(t, dir)
		if len(rep.Missing) != 1 || rep.Missing[0].To != 300 || lost(rep) != uint64(300-rep.Events) || !strings.Contains(rep.Missing[0].Reason, "records 300") {
			t.Fatalf("report %+v: want sequences %d to 300 missing, named by what records the end", rep, rep.Events)
		}
		// A salvaged open records the loss (KindLogSalvaged): the
		// sequences it names hold no event by design.
		cfg := testConfig(dir)
		cfg.Salvage = true
		s, err := core.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if rep := salvage(t, dir); len(rep.Missing) != 0 {
			t.Fatalf("after a salvaged open recorded the loss: missing %+v, want none", rep.Missing)
		}
	})
	t.Run("damaged header", func(t *testing.T) {
		dir, segs := build(t)
		b, err := os.ReadFile(segs[1])
		if err != nil {
			t.Fatal(err)
		}
		b[3] ^= 0xFF // the magic
		if err := os.WriteFile(segs[1], b, 0o644); err != nil {
			t.Fatal(err)
		}
		rep := salvage(t, dir)
		if rep.Events != 300 || len(rep.Missing) != 0 || len(rep.Skipped) != 1 || rep.Skipped[0].Length != 32 || rep.Skipped[0].File != segs[1] {
			t.Fatalf("report %+v: want every event, the damaged header alone skipped", rep)
		}
	})
	t.Run("foreign file", func(t *testing.T) {
		dir, segs := build(t)
		junk := bytes.Repeat([]byte{1}, 4<<20) // every length field reads 16 MiB
		if err := os.WriteFile(segs[1], junk, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep := salvage(t, dir)
		if len(rep.Skipped) != 1 || rep.Skipped[0].Length != int64(len(junk)) || len(rep.Missing) != 1 {
			t.Fatalf("report %+v: want the foreign file skipped whole and its sequences missing", rep)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("salvage beside a 4 MiB foreign file took %v", took)
		}
	})
	t.Run("short newest segment", func(t *testing.T) {
		dir, segs := build(t)
		next := filepath.Join(dir, fmt.Sprintf("%020d.seg", len(segs)+1))
		if filepath.Base(next) <= filepath.Base(segs[len(segs)-1]) {
			t.Fatalf("segment names: %s after %s", next, segs[len(segs)-1])
		}
		if err := os.WriteFile(next, []byte("BPAK"), 0o644); err != nil {
			t.Fatal(err)
		}
		if rep := salvage(t, dir); rep.Events != 300 || len(rep.Skipped) != 0 || len(rep.Missing) != 0 {
			t.Fatalf("report %+v: a newest segment cut short while rotating is neither damage nor loss", rep)
		}
	})
}

// TestSalvageBoundsItsSearchesPerSegment: damage crafted to be found
// again and again through one segment (runs of bytes whose every offset
// claims a record of 33 MB of a known type, each run followed by a valid
// frame) costs one bounded search for the whole segment, not one per run:
// past it the rest of the segment is skipped, saying why, and the salvage
// ends.
func TestSalvageBoundsItsSearchesPerSegment(t *testing.T) {
	s := openStore(t)
	dir := s.Dir()
	for i := range 5 {
		mustAppend(t, s, mustCoord(t, "order:1", "shop"), core.MustKind(1, 1), fmt.Sprintf(`{"n":%d}`, i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, dir)
	last := segs[len(segs)-1]
	data, frs := readFrames(t, last)
	data = data[:frs[len(frs)-1].end()]
	for i := range 400 {
		data = append(data, bytes.Repeat([]byte{format.RecBatchBegin}, 25)...)
		data = format.AppendMarker(data, format.RecFenceCancel, 0, uint64(i+1))
	}
	if err := os.WriteFile(last, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, 128<<20); err != nil {
		t.Skipf("no sparse 128 MiB file here: %v", err)
	}
	var out bytes.Buffer
	rep, err := core.SalvageExport(dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	gaveUp := false
	for _, sk := range rep.Skipped {
		gaveUp = gaveUp || strings.Contains(sk.Reason, "too many of them shaped like frames")
	}
	if !gaveUp || len(rep.Skipped) > 100 || rep.Events != 5 {
		t.Fatalf("salvage: %d events, %d skips, gave up: %v; want the 5 events and the search given up early", rep.Events, len(rep.Skipped), gaveUp)
	}
}

// TestSalvageExportPartialBatch: of a batch whose commit record is read
// but that damage cut — a damaged frame, a segment cut short, a segment
// deleted — the items read after the damage are written, and those read
// before it only when the hash chain confirms them (an item written of
// their entity, read after the damage, chains on them): with five
// entities taking turns, one damaged item costs that item alone; with one
// entity, or more items lost than entities, the items before the damage
// are left out as unconfirmed. The batch's sequences not written are
// counted (a partial batch, items lost) and missing; no readable frame is
// skipped as damage.
func TestSalvageExportPartialBatch(t *testing.T) {
	build := func(t *testing.T, entities int) (dir string, want map[uint64]string) {
		s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
		c := mustCoord(t, "order:1", "shop")
		pad := string(bytes.Repeat([]byte("x"), 900))
		mustAppend(t, s, c, core.MustKind(1, 1), `{"before":true}`)
		items := make([]core.BatchItem, 150) // about 150 KB: three segments
		for i := range items {
			items[i] = core.BatchItem{Coordinate: mustCoord(t, fmt.Sprintf("order:%d", i%entities), "shop"), Kind: core.MustKind(1, 2),
				Payload: fmt.Appendf(nil, `{"i":%d,"pad":%q}`, i, pad)}
		}
		if _, err := s.AppendBatch(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, c, core.MustKind(1, 3), `{"after":true}`)
		var all bytes.Buffer
		if _, err := s.Export(&all, core.All(), nil); err != nil {
			t.Fatal(err)
		}
		dir = s.Dir()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return dir, exportedBySeq(t, all.Bytes())
	}
	// check salvages dir and compares with want: every line written is
	// the intact export's, in order; the sequences not written are exactly
	// the missing ones, all from the batch (sequences 1 to 150); the
	// batch's items written are its first (head) and its last (tail).
	check := func(t *testing.T, dir string, want map[uint64]string) (rep core.SalvageReport, head, tail int) {
		var out bytes.Buffer
		rep, err := core.SalvageExport(dir, &out)
		if err != nil {
			t.Fatal(err)
		}
		got := exportedBySeq(t, out.Bytes())
		for q, l := range got {
			if want[q] != l {
				t.Fatalf("salvaged a line the intact store did not export: %s", l)
			}
		}
		var lost uint64
		for _, g := range rep.Missing {
			lost += g.To - g.From
			for q := g.From; q < g.To; q++ {
				if _, ok := got[q]; ok || q == 0 || q == uint64(len(want)-1) {
					t.Errorf("sequence %d reported missing: written, or not of the batch", q)
				}
			}
		}
		if rep.Events != len(got) || rep.Events+int(lost) != len(want) {
			t.Errorf("%d events written of %d, %d missing: %+v", rep.Events, len(want), lost, rep)
		}
		if rep.PartialBatches != 1 || uint64(rep.BatchItemsLost) != lost || rep.Duplicates != 0 {
			t.Errorf("report %+v: want one partial batch, %d items lost", rep, lost)
		}
		for _, sk := range rep.Skipped {
			if strings.Contains(sk.Reason, "batch") {
				t.Errorf("a readable frame skipped as damage: %+v", sk)
			}
		}
		for head < 150 && got[uint64(head+1)] != "" {
			head++
		}
		for tail < 150-head && got[uint64(150-tail)] != "" {
			tail++
		}
		if head+tail != len(got)-2 {
			t.Errorf("items %d..%d and %d..150 written, and %d more", 1, head, 151-tail, len(got)-2-head-tail)
		}
		return rep, head, tail
	}
	damageItem := func(t *testing.T, dir string) {
		segs := segmentFiles(t, dir)
		data, frs := readFrames(t, segs[1])
		victim := frs[len(frs)/2]
		data[victim.recStart()+victim.Len-3] ^= 0xFF
		if err := os.WriteFile(segs[1], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cutShort := func(t *testing.T, dir string) {
		segs := segmentFiles(t, dir)
		if err := os.Truncate(segs[1], fileSize(t, segs[1])/2); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("damaged item", func(t *testing.T) {
		dir, want := build(t, 5)
		damageItem(t, dir)
		rep, _, _ := check(t, dir, want)
		if rep.BatchItemsLost != 1 || len(rep.Skipped) != 1 || rep.Unconfirmed != 0 {
			t.Errorf("report %+v: want the damaged frame alone lost and skipped", rep)
		}
	})
	t.Run("damaged item, one entity", func(t *testing.T) {
		dir, want := build(t, 1)
		damageItem(t, dir)
		rep, head, tail := check(t, dir, want)
		if head != 0 || tail == 0 || rep.BatchItemsLost != 150-tail || rep.Unconfirmed != rep.BatchItemsLost-1 || len(rep.Skipped) != 1 {
			t.Errorf("report %+v, items 1..%d and %d..150 written: want those after the damaged one alone, the ones before it unconfirmed", rep, head, 151-tail)
		}
	})
	t.Run("segment cut short", func(t *testing.T) {
		dir, want := build(t, 5)
		cutShort(t, dir)
		rep, head, tail := check(t, dir, want)
		if head != 0 || tail == 0 || rep.Unconfirmed == 0 || rep.Unconfirmed >= rep.BatchItemsLost || len(rep.Skipped) != 1 {
			t.Errorf("report %+v, items 1..%d and %d..150 written: want the items after the cut alone, the ones before it unconfirmed, one range skipped", rep, head, 151-tail)
		}
	})
	t.Run("segment cut short, chained across", func(t *testing.T) {
		// Item i and i+100 are of one entity: the items after the cut
		// chain on items 0 to 49 (sequences 1 to 50), before it.
		dir, want := build(t, 100)
		cutShort(t, dir)
		rep, head, tail := check(t, dir, want)
		if head != 50 || tail == 0 || tail > 50 || rep.Unconfirmed == 0 || len(rep.Skipped) != 1 {
			t.Errorf("report %+v, items 1..%d and %d..150 written: want items 1..50, confirmed by the chain, and those after the cut", rep, head, 151-tail)
		}
	})
	t.Run("segment deleted", func(t *testing.T) {
		dir, want := build(t, 5)
		segs := segmentFiles(t, dir)
		if err := os.Remove(segs[1]); err != nil {
			t.Fatal(err)
		}
		rep, head, tail := check(t, dir, want)
		if head != 0 || tail == 0 || rep.Unconfirmed == 0 || len(rep.Skipped) != 0 {
			t.Errorf("report %+v, items 1..%d and %d..150 written: want the items after the deleted segment alone, the ones before it unconfirmed, nothing skipped", rep, head, 151-tail)
		}
	})
}

// TestSalvageExportDamageAcrossTwoBatches: damage that takes one batch's
// commit record and the next one's begin record writes the second batch
// whole (its commit record names its items' sequences). The first batch
// is left out as unconfirmed, unless the second one's items chain on its
// last (one entity): that shows it committed, and it is written too.
func TestSalvageExportDamageAcrossTwoBatches(t *testing.T) {
	for _, tc := range []struct {
		name     string
		entities [2]string
		chained  bool
	}{
		{"two entities", [2]string{"order:1", "order:2"}, false},
		{"one entity", [2]string{"order:1", "order:1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			dir := s.Dir()
			for b := range 2 {
				items := make([]core.BatchItem, 4)
				for i := range items {
					items[i] = core.BatchItem{Coordinate: mustCoord(t, tc.entities[b], "shop"), Kind: core.MustKind(1, 2), Payload: fmt.Appendf(nil, `{"b":%d,"i":%d}`, b, i)}
				}
				if _, err := s.AppendBatch(context.Background(), items); err != nil {
					t.Fatal(err)
				}
			}
			mustAppend(t, s, mustCoord(t, "order:1", "shop"), core.MustKind(1, 3), `{"after":true}`)
			var all bytes.Buffer
			if _, err := s.Export(&all, core.All(), nil); err != nil {
				t.Fatal(err)
			}
			want := exportedBySeq(t, all.Bytes())
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			seg := lastSegment(t, dir)
			data, frs := readFrames(t, seg)
			// Frames: begin, 4 items, commit, begin, 4 items, commit, event.
			if len(frs) != 13 {
				t.Fatalf("%d frames, want 13", len(frs))
			}
			for _, f := range frs[5:7] { // the first commit, the second begin
				data[f.recStart()+4] ^= 0xFF
			}
			writeFile(t, seg, data)
			var out bytes.Buffer
			rep, err := core.SalvageExport(dir, &out)
			if err != nil {
				t.Fatal(err)
			}
			got := exportedBySeq(t, out.Bytes())
			// Unconfirmed, the first batch's sequences are missing: the
			// second took the ones after them, so something committed
			// there.
			wantEvents, wantUnconfirmed, wantMissing := 5, 4, 1
			if tc.chained {
				wantEvents, wantUnconfirmed, wantMissing = 9, 0, 0
			}
			if rep.Events != wantEvents || rep.Unconfirmed != wantUnconfirmed || rep.PartialBatches != 0 || len(rep.Skipped) != 1 || len(got) != wantEvents ||
				len(rep.Missing) != wantMissing || (wantMissing > 0 && (rep.Missing[0].From != 0 || rep.Missing[0].To != 4)) {
				t.Fatalf("report %+v, %d lines: want %d events written, %d unconfirmed, %d ranges missing", rep, len(got), wantEvents, wantUnconfirmed, wantMissing)
			}
			for q, l := range got {
				if want[q] != l || (q < 4 && !tc.chained) {
					t.Errorf("sequence %d written: %s", q, l)
				}
			}
		})
	}
}

// TestSalvageExportUnacknowledgedItem: a crash leaves a batch's begin
// record and first item with no commit record; the store reopened writes
// another batch, which takes the same sequences. Damage that takes the
// second batch's begin record and first item (damaged frames, or the
// segment file holding them deleted) leaves the first batch's item held
// before the damage, with a sequence in the range the commit record
// names: it is not written (it was never acknowledged; nothing chains on
// it), and the sequence of the second batch's lost item is missing.
func TestSalvageExportUnacknowledgedItem(t *testing.T) {
	build := func(t *testing.T) (dir, seg string) {
		s := openStore(t)
		dir = s.Dir()
		c := mustCoord(t, "order:1", "shop")
		mustAppend(t, s, c, core.MustKind(1, 1), `{"first":true}`)
		batch := func(tag string) []core.BatchItem {
			items := make([]core.BatchItem, 3)
			for i := range items {
				items[i] = core.BatchItem{Coordinate: c, Kind: core.MustKind(1, 2), Payload: fmt.Appendf(nil, `{"batch":%q,"i":%d}`, tag, i)}
			}
			return items
		}
		if _, err := s.AppendBatch(context.Background(), batch("crashed")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		seg = lastSegment(t, dir)
		data, frs := readFrames(t, seg)
		if len(frs) != 6 { // event, begin, 3 items, commit
			t.Fatalf("%d frames, want 6", len(frs))
		}
		writeFile(t, seg, data[:frs[2].end()]) // the crash: the begin record and the first item written
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents { // and no checkpoint or index recording the batch
			if !strings.HasSuffix(e.Name(), ".seg") && !strings.HasSuffix(e.Name(), ".lock") {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		s = openWith(t, testConfig(dir))
		rs, err := s.AppendBatch(context.Background(), batch("acked"))
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].GlobalSequence != 1 {
			t.Fatalf("the batch retried took sequence %d, want 1 (the crashed one's)", rs[0].GlobalSequence)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if segs := segmentFiles(t, dir); len(segs) != 1 {
			t.Fatalf("segments %v, want one", segs)
		}
		return dir, seg
	}
	check := func(t *testing.T, dir string) {
		var out bytes.Buffer
		rep, err := core.SalvageExport(dir, &out)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "crashed") {
			t.Errorf("salvage wrote an item of the batch that never committed:\n%s", out.String())
		}
		got := exportedBySeq(t, out.Bytes())
		for q, tag := range map[uint64]string{0: `"first":true`, 2: `"batch":"acked","i":1`, 3: `"batch":"acked","i":2`} {
			if !strings.Contains(got[q], tag) {
				t.Errorf("sequence %d: %q, want %s", q, got[q], tag)
			}
		}
		if len(got) != 3 || rep.Unconfirmed != 1 || rep.PartialBatches != 1 || rep.BatchItemsLost != 1 ||
			len(rep.Missing) != 1 || rep.Missing[0].From != 1 || rep.Missing[0].To != 2 {
			t.Errorf("report %+v, %d lines: want sequences 0, 2, 3 written, 1 missing, the crashed item unconfirmed", rep, len(got))
		}
	}
	// Frames: event, begin, crashed item, begin, 3 items, commit.
	t.Run("damaged frames", func(t *testing.T) {
		dir, seg := build(t)
		data, frs := readFrames(t, seg)
		if len(frs) != 8 {
			t.Fatalf("%d frames, want 8", len(frs))
		}
		for _, f := range frs[3:5] { // the second begin record and its first item
			data[f.recStart()+4] ^= 0xFF
		}
		writeFile(t, seg, data)
		check(t, dir)
	})
	t.Run("segment deleted", func(t *testing.T) {
		// The log split into three segment files, the second begin record
		// and its first item in the middle one, which is deleted.
		dir, seg := build(t)
		data, frs := readFrames(t, seg)
		if len(frs) != 8 {
			t.Fatalf("%d frames, want 8", len(frs))
		}
		id := uint32(len(segmentFiles(t, dir)))
		for i, part := range [][2]int{{frs[0].Off, frs[3].Off}, {frs[5].Off, len(data)}} {
			key := id + 2*uint32(i)
			writeFile(t, filepath.Join(dir, format.SegmentName(key)), append(format.EncodeSegmentHeader(key), data[part[0]:part[1]]...))
		}
		check(t, dir)
	})
}

// TestSalvageExportDuplicateSegment: a segment file copied under the next
// segment's name (its header made to match) is not written twice: the
// events whose sequences were read before are counted as duplicates.
func TestSalvageExportDuplicateSegment(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	dir := s.Dir()
	c := mustCoord(t, "order:1", "shop")
	for i := range 400 {
		mustAppend(t, s, c, core.MustKind(1, 1), fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 200)))
	}
	items := make([]core.BatchItem, 5)
	for i := range items {
		items[i] = core.BatchItem{Coordinate: c, Kind: core.MustKind(1, 2), Payload: fmt.Appendf(nil, `{"b":%d}`, i)}
	}
	if _, err := s.AppendBatch(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segmentFiles(t, dir)
	if len(segs) < 2 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	data, frs := readFrames(t, segs[0])
	next := uint32(len(segs) + 1) // segment ids start at 1
	copy(data, format.EncodeSegmentHeader(next))
	writeFile(t, filepath.Join(dir, format.SegmentName(next)), data)

	var out bytes.Buffer
	rep, err := core.SalvageExport(dir, &out)
	if err != nil {
		t.Fatal(err)
	}
	got := exportedBySeq(t, out.Bytes()) // fails on a sequence written twice (out of order)
	if rep.Events != 405 || len(got) != 405 || rep.Duplicates != len(frs) || len(rep.Skipped) != 0 || len(rep.Missing) != 0 {
		t.Errorf("report %+v, %d lines: want 405 events, the %d of the copied segment counted duplicates", rep, len(got), len(frs))
	}
}

// exportedBySeq reads export lines, which must be in log order, by their
// global sequence.
func exportedBySeq(t *testing.T, b []byte) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	next := uint64(0)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var ev core.ExportedEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GlobalSequence < next {
			t.Fatalf("sequence %d after %d: not in log order", ev.GlobalSequence, next-1)
		}
		next = ev.GlobalSequence + 1
		out[ev.GlobalSequence] = l
	}
	return out
}
