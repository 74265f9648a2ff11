package core_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/batpak-go/batpak/core/internal/segment"
)

// FuzzOpenDamagedStore opens stores whose files were damaged — bytes of a
// segment, a footer, a packed segment, the index checkpoint or a cursor
// changed — and uses them: whatever the damage, Open either refuses with
// an error or opens a store whose reads, Verify, next append and Close
// return (errors allowed) without a panic or a hang. With fix set the
// damage is disguised: the checksum of the footer, checkpoint or frame it
// falls in is recomputed, so the decoders behind the checksum see the
// damaged values too, as they would a crafted file.
//
// The seed corpus runs with the tests; a longer campaign:
//
//	go test ./core -run '^$' -fuzz FuzzOpenDamagedStore -fuzztime 5m
func FuzzOpenDamagedStore(f *testing.F) {
	tpl := damageTemplates(f)
	f.Add(uint8(0), uint8(0), uint32(100), []byte{0xff}, false)
	f.Add(uint8(0), uint8(1), uint32(60), []byte{0x10}, false)
	f.Add(uint8(0), uint8(1), uint32(60), []byte{0x10, 0x20}, true)
	f.Add(uint8(1), uint8(2), uint32(9), []byte{0x80, 0, 0, 0}, true)
	f.Add(uint8(0), uint8(3), uint32(30), []byte{0xff, 0xff, 0xff, 0x7f}, true)
	f.Add(uint8(1), uint8(4), uint32(700), []byte{1}, false)
	f.Add(uint8(0), uint8(5), uint32(13), []byte{0xff, 0xff}, true)
	f.Add(uint8(0), uint8(6), uint32(2000), []byte{0x7f, 0xff, 0xff, 0xff}, true)
	f.Add(uint8(1), uint8(7), uint32(50), []byte{0x01, 0x02, 0x03}, true)
	f.Add(uint8(2), uint8(1), uint32(40), []byte{0x01, 0x02, 0x03}, true)
	f.Add(uint8(2), uint8(1), uint32(33), []byte{0xff}, true)
	f.Add(uint8(0), uint8(8), uint32(4), []byte{0}, true)
	f.Fuzz(func(t *testing.T, which, file uint8, off uint32, patch []byte, fix bool) {
		if len(patch) == 0 || len(patch) > 64 {
			return
		}
		src := tpl[int(which)%len(tpl)]
		name := src.files[int(file)%len(src.files)]
		dir := t.TempDir()
		copyTree(t, src.dir, dir, func(name string) bool { return name == "LOCK" })
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			return
		}
		at := int(off % uint32(len(data)))
		for i, b := range patch {
			if at+i < len(data) {
				data[at+i] ^= b
			}
		}
		if fix {
			disguise(name, data, at)
		}
		writeFile(t, path, data)
		var want map[core.EventID]core.StoredEvent
		if !fix {
			want = src.events
		}
		useDamagedStore(t, dir, src.cfg, want, fmt.Sprintf("%s at %d (%d bytes, fix %v)", name, at, len(patch), fix))
	})
}

// damageTemplate is a store on disk to damage: its files, and how to open it.
type damageTemplate struct {
	dir    string
	cfg    func(dir string) core.Config
	files  []string
	events map[core.EventID]core.StoredEvent // what the undamaged store holds
}

// damageTemplates builds three closed stores in a temporary directory
// that hold every kind of file Open reads: sealed segments with footers
// (plain; zstd-packed in the second, S2-packed in the third), the active
// segment, the index checkpoint and a named cursor; their events have
// batches, idempotency keys, causation links and a cancelled fence.
func damageTemplates(tb testing.TB) []damageTemplate {
	tb.Helper()
	root := tb.TempDir()
	var out []damageTemplate
	for i, comp := range []core.Compression{core.CompressionNone, core.CompressionZstd, core.CompressionS2} {
		dir := filepath.Join(root, fmt.Sprint(i))
		cfg := func(dir string) core.Config {
			c := testConfig(dir)
			c.SegmentMaxBytes = 64 << 10
			c.Compression = comp
			return c
		}
		if err := writeDamageTemplate(cfg(dir)); err != nil {
			tb.Fatal(err)
		}
		tp := damageTemplate{dir: dir, cfg: cfg}
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && d.Name() != "LOCK" {
				rel, _ := filepath.Rel(dir, p)
				tp.files = append(tp.files, rel)
			}
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
		sort.Strings(tp.files)
		if tp.events, err = damageTemplateEvents(cfg, dir, tb.TempDir()); err != nil {
			tb.Fatal(err)
		}
		out = append(out, tp)
	}
	return out
}

// damageTemplateEvents reads the events of the template in dir from a
// copy of it in tmp (opening a store writes to its directory).
func damageTemplateEvents(cfg func(string) core.Config, dir, tmp string) (map[core.EventID]core.StoredEvent, error) {
	if err := os.CopyFS(tmp, os.DirFS(dir)); err != nil {
		return nil, err
	}
	s, err := core.Open(cfg(tmp))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	evs, err := s.Query(core.All())
	if err != nil {
		return nil, err
	}
	out := map[core.EventID]core.StoredEvent{}
	for _, e := range evs {
		out[e.Header.ID] = e
	}
	return out, nil
}

func writeDamageTemplate(cfg core.Config) error {
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var last core.Receipt
	for i := range 400 {
		c, _ := core.NewCoordinate(fmt.Sprintf("order:%d", i%7), "shop")
		opts := core.AppendOptions{}
		if i%5 == 0 {
			opts.IdempotencyKey = fmt.Sprintf("k-%d", i)
		}
		if i > 0 && i%3 == 0 {
			opts.CausationID = last.ID
		}
		if last, err = s.AppendWithOptions(ctx, c, kindA, []byte(fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("x", i%97))), opts); err != nil {
			return err
		}
		if i%50 == 0 {
			items := make([]core.BatchItem, 5)
			for j := range items {
				bc, _ := core.NewCoordinate(fmt.Sprintf("batch:%d", i), "shop")
				items[j] = core.BatchItem{Coordinate: bc, Kind: kindB, Payload: []byte(`{"b":1}`)}
			}
			if _, err := s.AppendBatch(ctx, items); err != nil {
				return err
			}
		}
	}
	fence, err := s.BeginFence(ctx)
	if err != nil {
		return err
	}
	fc, _ := core.NewCoordinate("fenced:1", "shop")
	if _, err := fence.Submit(ctx, fc, kindC, []byte(`{"f":1}`)); err != nil {
		return err
	}
	if err := fence.Cancel(ctx); err != nil {
		return err
	}
	if err := s.SealSegments(ctx); err != nil {
		return err
	}
	cur, err := s.NamedCursor("projector", core.All())
	if err != nil {
		return err
	}
	if evs, err := cur.Poll(50); err != nil || len(evs) == 0 {
		return fmt.Errorf("cursor poll: %d events, %v", len(evs), err)
	}
	if err := cur.Commit(); err != nil {
		return err
	}
	return s.Close()
}

// disguise recomputes the checksum that covers byte at of the file name,
// so that the damage passes it.
func disguise(name string, data []byte, at int) {
	le := binary.LittleEndian
	switch {
	case strings.HasSuffix(name, format.FooterSuffix) || name == format.CheckpointName:
		if len(data) >= 4 {
			le.PutUint32(data[len(data)-4:], format.CRC32C(data[:len(data)-4]))
		}
	case strings.HasSuffix(name, ".pos"):
		if len(data) == 20 {
			le.PutUint32(data[16:], format.CRC32C(data[:16]))
		}
	case strings.HasSuffix(name, ".seg") && segment.IsPackedHeader(data):
		disguisePacked(data, at)
	case strings.HasSuffix(name, ".seg"):
		// The frame holding at, found by walking the lengths (the damage
		// may have broken the checksum of the frame the walk stops at).
		off := format.SegmentHeaderSize
		for off+format.FrameHeaderSize <= len(data) {
			n := int(le.Uint32(data[off:]))
			if n < format.MinRecordSize || off+format.FrameHeaderSize+n > len(data) {
				return
			}
			if at < off+format.FrameHeaderSize+n {
				if at >= off {
					format.SealFrame(data[off : off+format.FrameHeaderSize+n])
				}
				return
			}
			off += format.FrameHeaderSize + n
		}
	}
}

// disguisePacked recomputes the checksums of a packed segment over the
// damage at: the block's (in the block table) when it falls in a block's
// stored bytes, then the table's and the header's.
func disguisePacked(data []byte, at int) {
	le := binary.LittleEndian
	le.PutUint32(data[20:], format.CRC32C(data[:20]))
	if len(data) < format.SegmentHeaderSize+segment.PackedTrailerSize {
		return
	}
	tr := data[len(data)-segment.PackedTrailerSize:]
	tableAt, n := le.Uint64(tr[8:]), uint64(le.Uint32(tr[16:]))
	if tableAt < format.SegmentHeaderSize || tableAt+n*segment.PackedTableItemSize != uint64(len(data)-segment.PackedTrailerSize) {
		return
	}
	for i := range n {
		t := data[tableAt+i*segment.PackedTableItemSize:]
		from, stored := le.Uint64(t[4:]), uint64(le.Uint32(t[12:]))
		if from <= uint64(at) && uint64(at) < from+stored && from+stored <= tableAt {
			le.PutUint32(t[20:], format.CRC32C(data[from:from+stored]))
		}
	}
	le.PutUint32(tr[28:], format.CRC32C(data[tableAt:len(data)-4]))
}

// useDamagedStore opens dir and uses the store as an application would;
// a panic fails the fuzz input, and so does taking longer than a minute.
//
// Damage left undisguised (want not nil) must never change an event: each
// one the store reads back is the undamaged store's event of that id,
// header, payload and all (it may read back fewer: a damaged tail is cut).
func useDamagedStore(t *testing.T, dir string, cfg func(string) core.Config, want map[core.EventID]core.StoredEvent, what string) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(time.Minute):
			panic("damaged store: no answer within a minute: " + what)
		}
	}()
	s, err := core.Open(cfg(dir))
	if err != nil {
		if err.Error() == "" {
			t.Fatalf("%s: Open failed with an empty error", what)
		}
		return
	}
	defer func() {
		if err := s.Close(); errors.Is(err, core.ErrClosed) {
			t.Errorf("%s: Close: %v", what, err)
		}
	}()
	evs, _ := s.Query(core.All())
	if want != nil {
		for _, e := range evs {
			w, ok := want[e.Header.ID]
			if !ok || w.Header != e.Header || string(w.Payload) != string(e.Payload) || w.Coordinate != e.Coordinate || w.GlobalSequence != e.GlobalSequence || w.IdempotencyKey != e.IdempotencyKey {
				t.Fatalf("%s: the store reads back an event the undamaged one does not hold:\n got  %+v\n want %+v (held: %v)", what, e, w, ok)
			}
		}
	}
	for _, e := range evs {
		_, _ = s.Get(e.Header.ID)
		_, _ = s.Ancestors(e.Header.ID, 100)
	}
	for i := range 7 {
		_, _ = s.Stream(fmt.Sprintf("order:%d", i))
	}
	_, _ = s.Verify()
	if cur, err := s.NamedCursor("projector", core.All()); err == nil {
		_, _ = cur.Poll(1000)
	}
	c, _ := core.NewCoordinate("order:new", "shop")
	_, _ = s.Append(context.Background(), c, kindA, []byte(`{"after":"damage"}`))
}
