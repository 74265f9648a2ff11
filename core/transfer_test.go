package core_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// Export writes the visible events as NDJSON; Import writes them into
// another store keeping everything but clocks and global sequences.

// transferSource builds a store with a rich history, timestamps from an
// injected clock, and one redacted event; it returns the store and the
// redacted event's id.
func transferSource(t *testing.T) (*core.Store, core.EventID) {
	t.Helper()
	clk := newFakeClock(time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC))
	s := openStore(t, smallSegments, func(c *core.Config) {
		c.Now = func() time.Time { clk.add(1234 * time.Microsecond); return clk.now() }
	})
	rs := richHistory(t, s, 3)
	if err := s.Redact(context.Background(), rs[5].ID); err != nil {
		t.Fatal(err)
	}
	return s, rs[5].ID
}

func exportLines(t *testing.T, s *core.Store) ([]byte, []core.ExportedEvent) {
	t.Helper()
	var buf bytes.Buffer
	var prog []int
	n, err := s.Export(&buf, core.All(), func(n int) { prog = append(prog, n) })
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	var xs []core.ExportedEvent
	for i, ln := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		var x core.ExportedEvent
		if err := json.Unmarshal([]byte(ln), &x); err != nil {
			t.Fatalf("export line %d is not JSON: %v", i+1, err)
		}
		xs = append(xs, x)
	}
	if n != len(xs) || len(prog) != n || prog[n-1] != n {
		t.Fatalf("Export wrote %d, %d lines, progress %d calls", n, len(xs), len(prog))
	}
	return buf.Bytes(), xs
}

func mustImport(t *testing.T, s *core.Store, data []byte) core.ImportStats {
	t.Helper()
	st, err := s.Import(context.Background(), bytes.NewReader(data), nil)
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	return st
}

func TestExportImportRoundTrip(t *testing.T) {
	ctx := context.Background()
	src, redactedID := transferSource(t)
	data, xs := exportLines(t, src)
	all := mustQuery(t, src, core.All())
	srcEvs := withoutSystem(all) // the store's own records (the redaction's audit record) stay behind
	if len(xs) != len(srcEvs) || len(all) != len(srcEvs)+1 {
		t.Fatalf("exported %d of %d visible events (%d in all)", len(xs), len(srcEvs), len(all))
	}
	noLeak(t, "export", srcEvs)
	for i, x := range xs {
		if x.ID != srcEvs[i].Header.ID || x.GlobalSequence != srcEvs[i].GlobalSequence || x.Clock != srcEvs[i].Header.Clock {
			t.Fatalf("export line %d is %s, want %s", i+1, x.ID, srcEvs[i].Header.ID)
		}
		// Redacted events export as such, with a null payload.
		if x.ID == redactedID {
			if !x.Redacted || string(x.Payload) != "null" {
				t.Fatalf("redacted event exports as redacted=%v payload %s", x.Redacted, x.Payload)
			}
		} else if x.Redacted || !bytes.Equal(x.Payload, srcEvs[i].Payload) {
			t.Fatalf("line %d: payload %s, want %s", i+1, x.Payload, srcEvs[i].Payload)
		}
	}

	dst := openStore(t)
	var prog []int
	st, err := dst.Import(ctx, bytes.NewReader(data), func(lines int) { prog = append(prog, lines) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Imported != len(xs) || st.Skipped != 0 || len(prog) == 0 || prog[len(prog)-1] != len(xs) || !slices.IsSorted(prog) {
		t.Fatalf("Import: %+v, progress %v", st, prog)
	}
	dstEvs := mustQuery(t, dst, core.All())
	checkImported(t, srcEvs, dstEvs, redactedID)
	for _, e := range []string{"acct:0", "acct:1", "acct:ghost", "order:1", "order:2"} {
		a, _ := src.Stream(e)
		b, _ := dst.Stream(e)
		if !slices.Equal(ids(a), ids(b)) {
			t.Fatalf("Stream(%s) differs after the round trip", e)
		}
		for i, ev := range b {
			if ev.Header.Clock != uint64(i) {
				t.Fatalf("%s: imported clocks run %d at %d (the importer assigns clocks)", e, ev.Header.Clock, i)
			}
		}
	}
	mustVerify(t, dst)
	// Imported idempotency keys dedupe in the new store.
	for _, ev := range srcEvs {
		if ev.IdempotencyKey == "" || ev.Redacted {
			continue
		}
		r := mustAppendOpts(t, dst, ev.Coordinate, ev.Header.Kind, string(ev.Payload), core.AppendOptions{IdempotencyKey: ev.IdempotencyKey})
		if !r.Deduplicated || r.ID != ev.Header.ID || r.Timestamp != ev.Header.Timestamp {
			t.Fatalf("imported key %q: %+v", ev.IdempotencyKey, r)
		}
	}

	// Importing again skips everything and writes nothing.
	before := captureState(t, dst)
	if st := mustImport(t, dst, data); st.Imported != 0 || st.Skipped != len(xs) {
		t.Fatalf("re-import: %+v", st)
	}
	sameState(t, "after a re-import", captureState(t, dst), before)

	// An import cut short, run again, writes the rest once.
	half := bytes.SplitAfterN(data, []byte("\n"), len(xs)/2+1)
	part := bytes.Join(half[:len(xs)/2], nil)
	dst2 := openStore(t)
	if st := mustImport(t, dst2, part); st.Imported != len(xs)/2 {
		t.Fatalf("first half: %+v", st)
	}
	if st := mustImport(t, dst2, data); st.Imported != len(xs)-len(xs)/2 || st.Skipped != len(xs)/2 {
		t.Fatalf("whole after half: %+v", st)
	}
	checkImported(t, srcEvs, mustQuery(t, dst2, core.All()), redactedID)

	// The source redacts an event after it was imported: its redacted
	// export is the same event, skipped.
	if err := src.Redact(ctx, srcEvs[7].Header.ID); err != nil {
		t.Fatal(err)
	}
	data2, _ := exportLines(t, src)
	if st := mustImport(t, dst2, data2); st.Imported != 0 || st.Skipped != len(xs) {
		t.Fatalf("re-import after a redaction in the source: %+v", st)
	}
	if ev, _ := dst2.Get(srcEvs[7].Header.ID); !bytes.Equal(ev.Payload, srcEvs[7].Payload) {
		t.Fatal("the re-import changed an imported event")
	}
}

// checkImported compares an import with its source: everything but clocks
// and sequences; a redacted source event imports with the payload null.
func checkImported(t *testing.T, src, dst []core.StoredEvent, redacted core.EventID) {
	t.Helper()
	if len(dst) != len(src) {
		t.Fatalf("%d events imported, %d exported", len(dst), len(src))
	}
	for i := range src {
		a, b := src[i], dst[i]
		ha, hb := a.Header, b.Header
		if ha.ID != hb.ID || a.Coordinate != b.Coordinate || ha.Kind != hb.Kind || ha.CorrelationID != hb.CorrelationID ||
			ha.CausationID != hb.CausationID || ha.Timestamp != hb.Timestamp || ha.Flags != hb.Flags || a.IdempotencyKey != b.IdempotencyKey {
			t.Fatalf("event %d differs after import:\n %+v\n %+v", i, a, b)
		}
		if ha.ID == redacted {
			// Documented: the erased payload cannot come back; the event
			// imports as an ordinary one whose payload is null.
			if b.Redacted || string(b.Payload) != "null" || hb.PayloadHash != payloadDigest([]byte("null")) {
				t.Fatalf("redacted event imported as redacted=%v payload %s", b.Redacted, b.Payload)
			}
			continue
		}
		if b.Redacted || !bytes.Equal(a.Payload, b.Payload) || ha.PayloadHash != hb.PayloadHash {
			t.Fatalf("event %d: payload %s, want %s", i, b.Payload, a.Payload)
		}
	}
}

func TestImportConflictingID(t *testing.T) {
	src, _ := transferSource(t)
	data, xs := exportLines(t, src)
	dst := openStore(t)
	mustImport(t, dst, data[:bytes.IndexByte(data, '\n')+1]) // the first event only
	before := captureState(t, dst)

	// Line 4 reuses the first event's id for another payload.
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	x := xs[0]
	x.Payload = json.RawMessage(`{"forged":true}`)
	b, _ := json.Marshal(x)
	in := strings.Join([]string{lines[1], lines[2], "", string(b), lines[3]}, "\n") + "\n"
	_, err := dst.Import(context.Background(), strings.NewReader(in), nil)
	if !isErr(err, core.ErrDuplicateID) || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), x.ID.String()) {
		t.Fatalf("Import of a conflicting id: %v, want ErrDuplicateID naming line 4 and the id", err)
	}
	sameState(t, "after a refused import", captureState(t, dst), before)

	// The same id for another coordinate or kind conflicts too.
	for _, mod := range []func(*core.ExportedEvent){
		func(x *core.ExportedEvent) { x.Entity = "someone:else" },
		func(x *core.ExportedEvent) { x.Kind = kindC.String() },
	} {
		x := xs[0]
		mod(&x)
		b, _ := json.Marshal(x)
		if _, err := dst.Import(context.Background(), bytes.NewReader(append(b, '\n')), nil); !isErr(err, core.ErrDuplicateID) || !strings.Contains(err.Error(), "line 1") {
			t.Fatalf("conflicting id: %v", err)
		}
	}
	// Twice in one import: the second copy is refused, nothing written.
	in = lines[1] + "\n" + lines[1] + "\n"
	_, err = dst.Import(context.Background(), strings.NewReader(in), nil)
	if !isErr(err, core.ErrDuplicateID) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("an id twice in one import: %v", err)
	}
	sameState(t, "after refused imports", captureState(t, dst), before)
}

// TestImportRedactedLineCarriesNoPayload: a line marked redacted carries
// the null payload export writes for a redacted event (or none); one with
// any other payload is refused naming its line, rather than stored as
// given or taken for an event already held with another payload.
func TestImportRedactedLineCarriesNoPayload(t *testing.T) {
	ctx := context.Background()
	src, redactedID := transferSource(t)
	data, xs := exportLines(t, src)
	dst := openStore(t)
	mustImport(t, dst, data)
	before := captureState(t, dst)

	// An exported event, its payload changed and marked redacted, into
	// the store holding it: refused, not skipped.
	x := xs[0]
	if x.Redacted {
		t.Fatal("the first exported event is redacted")
	}
	x.Payload, x.Redacted = json.RawMessage(`{"forged":true}`), true
	b, _ := json.Marshal(x)
	st, err := dst.Import(ctx, bytes.NewReader(append(append([]byte(nil), data...), append(b, '\n')...)), nil)
	if !isErr(err, core.ErrInvalidOptions) || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", len(xs)+1)) || !strings.Contains(err.Error(), "redacted") {
		t.Fatalf("a forged redacted line over a held event: %+v, %v; want ErrInvalidOptions naming line %d", st, err, len(xs)+1)
	}
	sameState(t, "after a refused redacted line", captureState(t, dst), before)

	// A new id marked redacted with a payload: refused, nothing stored.
	fresh := openStore(t)
	y := xs[0]
	y.ID, y.IdempotencyKey, y.Payload, y.Redacted = core.NewEventID(), "", json.RawMessage(`{"secret":1}`), true
	b, _ = json.Marshal(y)
	if _, err := fresh.Import(ctx, bytes.NewReader(append(b, '\n')), nil); !isErr(err, core.ErrInvalidOptions) || !strings.Contains(err.Error(), "line 1:") {
		t.Fatalf("a new redacted line with a payload: %v; want ErrInvalidOptions naming line 1", err)
	}
	if _, err := fresh.Get(y.ID); !isErr(err, core.ErrNotFound) {
		t.Fatalf("the refused line was stored: %v", err)
	}

	// A redacted line with a null payload, or none, imports with the
	// payload null (export's form: the round trip keeps working).
	for _, raw := range []json.RawMessage{json.RawMessage("null"), nil} {
		z := y
		z.ID, z.Payload = core.NewEventID(), raw
		b, _ = json.Marshal(z)
		line := string(b)
		if raw == nil {
			line = strings.Replace(line, `,"payload":null`, "", 1)
		}
		if st := mustImport(t, fresh, []byte(line+"\n")); st.Imported != 1 {
			t.Fatalf("redacted line %s: %+v", line, st)
		}
		if ev, err := fresh.Get(z.ID); err != nil || string(ev.Payload) != "null" {
			t.Fatalf("redacted line %s stored payload %s (%v), want null", line, ev.Payload, err)
		}
	}
	// The source's own redacted event, exported, is skipped where held.
	for i, x := range xs {
		if x.ID == redactedID {
			lines := bytes.SplitAfter(data, []byte("\n"))
			if st := mustImport(t, dst, lines[i]); st.Skipped != 1 {
				t.Fatalf("the exported redacted event again: %+v", st)
			}
		}
	}
}

func TestImportMalformedLines(t *testing.T) {
	src, _ := transferSource(t)
	_, xs := exportLines(t, src)
	good, _ := json.Marshal(xs[0])
	mod := func(f func(*core.ExportedEvent)) string {
		x := xs[1]
		f(&x)
		b, _ := json.Marshal(x)
		return string(b)
	}
	cases := map[string]string{
		"not JSON":         `{"id":`,
		"not an object":    `[1,2,3]`,
		"bad id":           strings.Replace(mod(func(*core.ExportedEvent) {}), xs[1].ID.String(), "not-a-uuid", 1),
		"no id":            mod(func(x *core.ExportedEvent) { x.ID = core.EventID{} }),
		"bad kind":         mod(func(x *core.ExportedEvent) { x.Kind = "0x9:0xZZZ" }),
		"system kind":      mod(func(x *core.ExportedEvent) { x.Kind = "0x0:0x001" }),
		"empty entity":     mod(func(x *core.ExportedEvent) { x.Entity = "" }),
		"payload not JSON": strings.Replace(mod(func(x *core.ExportedEvent) { x.Payload = json.RawMessage(`"PAYLOAD"`) }), `"PAYLOAD"`, `{bad`, 1),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			dst := openStore(t)
			in := string(good) + "\n\n" + bad + "\n"
			_, err := dst.Import(context.Background(), strings.NewReader(in), nil)
			if err == nil || !strings.HasPrefix(err.Error(), "batpak: import line 3: ") {
				t.Fatalf("Import with a bad line 3 (%s): %v", bad, err)
			}
			// One prefix: the cause's own "batpak: " is not repeated.
			if strings.Count(err.Error(), "batpak: ") != 1 {
				t.Errorf("Import with a bad line 3 (%s): %v: more than one \"batpak: \"", bad, err)
			}
			if st := dst.Stats(); st.Events != 0 {
				t.Fatalf("a malformed chunk wrote %d events", st.Events)
			}
		})
	}
}

// denyKind is a write gate refusing one kind; it records the actions it
// was asked about.
type denyKind struct {
	kind    core.Kind
	mu      sync.Mutex
	actions map[core.Action]int
}

var errDenied = errors.New("denied by the test gate")

func (d *denyKind) Admit(_ context.Context, p *core.Proposal) error {
	d.mu.Lock()
	d.actions[p.Action]++
	d.mu.Unlock()
	if p.Kind == d.kind {
		return fmt.Errorf("%w: kind %s", errDenied, p.Kind)
	}
	return nil
}

// TestImportWriteGate: imports pass the write gate (action "import"); a
// refused event fails the import naming its line, and nothing of its chunk
// is written.
func TestImportWriteGate(t *testing.T) {
	src, _ := transferSource(t)
	data, xs := exportLines(t, src)
	gate := &denyKind{kind: kindB, actions: map[core.Action]int{}}
	dst := openStore(t, func(c *core.Config) { c.Admission = gate })
	firstB := slices.IndexFunc(xs, func(x core.ExportedEvent) bool { return x.Kind == kindB.String() })
	_, err := dst.Import(context.Background(), bytes.NewReader(data), nil)
	if !errors.Is(err, errDenied) || !strings.Contains(err.Error(), fmt.Sprintf("line %d:", firstB+1)) {
		t.Fatalf("Import through a gate refusing %s: %v (first such line %d)", kindB, err, firstB+1)
	}
	var bie *core.BatchItemError
	if !errors.As(err, &bie) {
		t.Fatalf("%T does not name the batch item", err)
	}
	if st := dst.Stats(); st.Events != 0 || st.GlobalSequence != 0 {
		t.Fatalf("a refused chunk wrote %+v", st)
	}
	if gate.actions[core.ActionImport] == 0 || len(gate.actions) != 1 {
		t.Fatalf("gate saw actions %v, want only %q", gate.actions, core.ActionImport)
	}

	// More than one chunk: the chunks before the refused one are written,
	// nothing of it.
	var in strings.Builder
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&in, `{"id":%q,"entity":"big:%d","scope":"s","kind":%q,"correlation_id":%q,"timestamp_us":%d,"payload":{"i":%d}}`+"\n",
			core.NewEventID(), i%3, kindA.String(), core.NewEventID(), 1000+i, i)
	}
	fmt.Fprintf(&in, `{"id":%q,"entity":"big:0","scope":"s","kind":%q,"correlation_id":%q,"timestamp_us":1,"payload":{}}`+"\n",
		core.NewEventID(), kindB.String(), core.NewEventID())
	st, err := dst.Import(context.Background(), strings.NewReader(in.String()), nil)
	if !errors.Is(err, errDenied) || !strings.Contains(err.Error(), "line 301:") {
		t.Fatalf("second chunk refused: %+v, %v", st, err)
	}
	if s := dst.Stats(); st.Imported != 256 || s.Events != 256 {
		t.Fatalf("%+v, %d events stored; want the first chunk of 256 only", st, s.Events)
	}
	mustVerify(t, dst)
}

// TestImportCheck: ImportOptions.Check is asked about every event before
// its batch is written; its refusal fails the import at that line,
// wrapping the refusal, and writes nothing of the refused chunk.
func TestImportCheck(t *testing.T) {
	errBig := errors.New("payload over the host's limit")
	var in strings.Builder
	for i := 0; i < 300; i++ {
		pad := ""
		if i == 299 {
			pad = strings.Repeat("x", 100)
		}
		fmt.Fprintf(&in, `{"id":%q,"entity":"big:%d","scope":"s","kind":%q,"correlation_id":%q,"timestamp_us":%d,"payload":{"p":%q}}`+"\n",
			core.NewEventID(), i%3, kindA.String(), core.NewEventID(), 1000+i, pad)
	}
	dst := openStore(t)
	seen := 0
	st, err := dst.ImportWithOptions(context.Background(), strings.NewReader(in.String()), core.ImportOptions{
		Check: func(it core.BatchItem) error {
			seen++
			if len(it.Payload) > 64 {
				return errBig
			}
			return nil
		}})
	if !errors.Is(err, errBig) || !strings.Contains(err.Error(), "line 300:") {
		t.Fatalf("Import with a check refusing line 300: %+v, %v", st, err)
	}
	if s := dst.Stats(); seen != 300 || st.Imported != 256 || s.Events != 256 {
		t.Fatalf("checked %d, %+v, %d events stored; want 300 checked and the first chunk of 256 stored", seen, st, s.Events)
	}
	mustVerify(t, dst)
}

// TestImportBeforeBatch: BeforeBatch is called before each batch with its
// events; its refusal ends the import with nothing of that batch
// written. MaxLineBytes refuses a longer line naming it.
func TestImportBeforeBatch(t *testing.T) {
	errStop := errors.New("host says stop")
	var in strings.Builder
	for i := 0; i < 600; i++ {
		fmt.Fprintf(&in, `{"id":%q,"entity":"big:%d","scope":"s","kind":%q,"correlation_id":%q,"timestamp_us":%d,"payload":{"i":%d}}`+"\n",
			core.NewEventID(), i%3, kindA.String(), core.NewEventID(), 1000+i, i)
	}
	dst := openStore(t)
	var sizes []int
	st, err := dst.ImportWithOptions(context.Background(), strings.NewReader(in.String()), core.ImportOptions{
		BeforeBatch: func(items []core.BatchItem, lines int) error {
			if s := dst.Stats(); int(s.Events) != 256*len(sizes) {
				t.Errorf("before batch %d: %d events stored, want %d", len(sizes), s.Events, 256*len(sizes))
			}
			sizes = append(sizes, len(items))
			if len(sizes) == 2 {
				return errStop
			}
			return nil
		}})
	if !errors.Is(err, errStop) || st.Imported != 256 || !slices.Equal(sizes, []int{256, 256}) {
		t.Fatalf("Import refused before its second batch: %+v, %v, batches %v", st, err, sizes)
	}
	if s := dst.Stats(); s.Events != 256 {
		t.Fatalf("%d events stored, want the first batch of 256", s.Events)
	}
	long := fmt.Sprintf(`{"id":%q,"entity":"x","scope":"s","kind":%q,"correlation_id":%q,"timestamp_us":1,"payload":{"p":%q}}`+"\n",
		core.NewEventID(), kindA.String(), core.NewEventID(), strings.Repeat("x", 4096))
	_, err = dst.ImportWithOptions(context.Background(), strings.NewReader(long), core.ImportOptions{MaxLineBytes: 1024})
	if !errors.Is(err, bufio.ErrTooLong) || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a 4 KiB line under MaxLineBytes 1024: %v", err)
	}
	if _, err := dst.ImportWithOptions(context.Background(), strings.NewReader(long), core.ImportOptions{MaxLineBytes: 8192}); err != nil {
		t.Fatalf("a 4 KiB line under MaxLineBytes 8192: %v", err)
	}
}

// TestImportEffectKinds: an effect kind written as a reaction is exported
// and imported like any event; Import refuses an effect kind only where a
// write refuses it (no cause, or a 0xD kind without a name).
func TestImportEffectKinds(t *testing.T) {
	ctx := context.Background()
	src := openStore(t)
	cause := mustAppend(t, src, mustCoord(t, "order:1", "s"), kindA, `{"n":1}`)
	eff, err := src.AppendReaction(ctx, mustCoord(t, "order:1", "s"), core.KindEffectAck, []byte(`{"ack":true}`), cause.CorrelationID, cause.ID)
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	if n, err := src.Export(&buf, core.All(), nil); err != nil || n != 2 {
		t.Fatalf("Export = %d, %v", n, err)
	}
	dst := openStore(t)
	if st, err := dst.Import(ctx, strings.NewReader(buf.String()), nil); err != nil || st.Imported != 2 {
		t.Fatalf("Import of a store with an effect event = %+v, %v", st, err)
	}
	ev, err := dst.Get(eff.ID)
	if err != nil || ev.Header.Kind != core.KindEffectAck || ev.Header.CausationID != cause.ID {
		t.Fatalf("imported effect event %+v, %v", ev.Header, err)
	}
	res := mustDescendants(t, dst, cause.ID, core.CausalLimits{})
	if len(res.Events) != 2 || res.Events[1].Header.ID != eff.ID {
		t.Fatalf("imported effect is not a descendant of its cause: %d events", len(res.Events))
	}

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var x core.ExportedEvent
	if err := json.Unmarshal([]byte(lines[1]), &x); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(x *core.ExportedEvent){
		"effect kind without a cause": func(x *core.ExportedEvent) { x.CausationID = nil },
		"unnamed 0xD kind":            func(x *core.ExportedEvent) { x.Kind = "0xD:0x0FF" },
	} {
		t.Run(name, func(t *testing.T) {
			y := x
			f(&y)
			b, _ := json.Marshal(y)
			dst := openStore(t)
			_, err := dst.Import(ctx, strings.NewReader(lines[0]+"\n"+string(b)+"\n"), nil)
			if !errors.Is(err, core.ErrInvalidKind) || !strings.Contains(err.Error(), "line 2") {
				t.Fatalf("Import = %v; want ErrInvalidKind naming line 2", err)
			}
			if st := dst.Stats(); st.Events != 0 {
				t.Fatalf("a refused chunk wrote %d events", st.Events)
			}
		})
	}
}

// TestImportIdempotencyKeys: an imported event keeps its idempotency key,
// so an event whose key the store holds for another event fails the
// import at its line — it is never reported imported while the store
// holds only the other one — and so do two lines with one key; nothing of
// their batch is written.
func TestImportIdempotencyKeys(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "order:1", "shop")
	a := mustAppendOpts(t, s, c, kindA, `{"a":1}`, core.AppendOptions{IdempotencyKey: "K"})
	before := captureState(t, s)
	line := func(id core.EventID, key, payload string) string {
		return fmt.Sprintf(`{"id":%q,"entity":"order:1","scope":"shop","kind":%q,"idempotency_key":%q,"payload":%s}`+"\n", id, kindA.String(), key, payload)
	}
	b := core.NewEventID()
	// The same content as A's: an append would be answered with A's receipt.
	in := line(core.NewEventID(), "other", `{"n":1}`) + line(b, "K", `{"a":1}`)
	st, err := s.Import(context.Background(), strings.NewReader(in), nil)
	var ie *core.IdempotencyError
	if !errors.As(err, &ie) || ie.Original != a.ID || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), b.String()) || st.Imported != 0 || st.Skipped != 0 {
		t.Fatalf("import of another event under A's key: %+v, %v; want an IdempotencyError naming line 2, A and B", st, err)
	}
	if _, err := s.Get(b); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("Get(B) after the refused import: %v", err)
	}
	sameState(t, "after an import refused for a held key", captureState(t, s), before)
	if st, err := s.Import(context.Background(), strings.NewReader(line(b, "K", `{"a":1}`)), nil); !errors.As(err, &ie) || st.Imported != 0 {
		t.Fatalf("import of B alone under A's key: %+v, %v", st, err)
	}
	sameState(t, "after an import of B alone refused", captureState(t, s), before)

	// Two lines of one import with one key.
	in = line(core.NewEventID(), "twice", `{"n":1}`) + line(core.NewEventID(), "twice", `{"n":2}`)
	if st, err := s.Import(context.Background(), strings.NewReader(in), nil); !errors.Is(err, core.ErrInvalidOptions) || !strings.Contains(err.Error(), `line 2`) || !strings.Contains(err.Error(), `also line 1's`) || st.Imported != 0 {
		t.Fatalf("two lines with one key: %+v, %v", st, err)
	}
	sameState(t, "after an import refused for a repeated key", captureState(t, s), before)

	// An export imported twice: the second run skips every event.
	src := openStore(t)
	mustAppendOpts(t, src, c, kindA, `{"a":1}`, core.AppendOptions{IdempotencyKey: "K2"})
	data, _ := exportLines(t, src)
	dst := openStore(t)
	for i, want := range []core.ImportStats{{Imported: 1}, {Skipped: 1}} {
		if st, err := dst.Import(context.Background(), bytes.NewReader(data), nil); err != nil || st != want {
			t.Fatalf("import %d of an export with a key: %+v, %v", i+1, st, err)
		}
	}
}

// TestImportBounds: a payload over SingleAppendMaxBytes fails at its line
// before its batch is buffered, a timestamp more than a day ahead of the
// store's clock fails (it would stamp the entity's later writes), so
// does a negative one (it would be stamped 0 or the entity's last), and
// batches never hold more than Batch.MaxBytes of payload (one larger
// event alone), so an import of large events holds about a batch.
func TestImportBounds(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SingleAppendMaxBytes = 64 << 10; c.Batch.MaxBytes = 100 << 10 })
	ev := func(size int, ts int64) string {
		return fmt.Sprintf(`{"id":%q,"entity":"doc:1","scope":"s","kind":%q,"timestamp_us":%d,"payload":%q}`+"\n", core.NewEventID(), kindA.String(), ts, strings.Repeat("x", size))
	}
	var in strings.Builder
	for range 10 {
		in.WriteString(ev(30<<10, 0))
	}
	var batches [][2]int // events, payload bytes
	st, err := s.ImportWithOptions(context.Background(), strings.NewReader(in.String()), core.ImportOptions{
		BeforeBatch: func(items []core.BatchItem, _ int) error {
			n := 0
			for _, it := range items {
				n += len(it.Payload)
			}
			batches = append(batches, [2]int{len(items), n})
			return nil
		}})
	if err != nil || st.Imported != 10 {
		t.Fatalf("import of ten 30 KiB events: %+v, %v", st, err)
	}
	for _, b := range batches {
		if b[1] > 100<<10 {
			t.Fatalf("a batch of %d events held %d payload bytes, over Batch.MaxBytes (batches %v)", b[0], b[1], batches)
		}
	}
	if len(batches) < 4 {
		t.Fatalf("ten 30 KiB events in %d batches under a 100 KiB Batch.MaxBytes: %v", len(batches), batches)
	}

	before := captureState(t, s)
	if _, err := s.Import(context.Background(), strings.NewReader(ev(10, 0)+ev(65<<10, 0)), nil); !errors.Is(err, core.ErrPayloadTooLarge) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("a payload over SingleAppendMaxBytes: %v", err)
	}
	future := time.Now().Add(25 * time.Hour).UnixMicro()
	if _, err := s.Import(context.Background(), strings.NewReader(ev(10, future)), nil); err == nil || !strings.Contains(err.Error(), "line 1: timestamp_us") || !strings.Contains(err.Error(), "ahead of this store's clock") {
		t.Fatalf("a timestamp 25 hours ahead: %v", err)
	}
	for _, ts := range []int64{-1, math.MinInt64} {
		if _, err := s.Import(context.Background(), strings.NewReader(ev(10, 0)+ev(10, ts)), nil); !errors.Is(err, core.ErrInvalidOptions) || !strings.Contains(err.Error(), "line 2: ") || !strings.Contains(err.Error(), "timestamp_us") {
			t.Fatalf("a negative timestamp (%d): %v", ts, err)
		}
	}
	sameState(t, "after imports refused for their bounds", captureState(t, s), before)
	if st, err := s.Import(context.Background(), strings.NewReader(ev(10, time.Now().Add(time.Hour).UnixMicro())), nil); err != nil || st.Imported != 1 {
		t.Fatalf("a timestamp an hour ahead (clocks differ): %+v, %v", st, err)
	}
}

// On a replicated store an import of an event under a key another event
// holds fails too: the log's apply answers such a batch with the holder's
// receipt and writes nothing, which Import reports as the refusal it is.
func TestImportHeldKeyOnAReplicatedStore(t *testing.T) {
	_, rs, _ := openReplicas(t, 2)
	s := rs[0]
	c := mustCoord(t, "order:1", "shop")
	a := mustAppendOpts(t, s, c, kindA, `{"a":1}`, core.AppendOptions{IdempotencyKey: "K"})
	b := core.NewEventID()
	in := fmt.Sprintf(`{"id":%q,"entity":"order:1","scope":"shop","kind":%q,"idempotency_key":"K","payload":{"a":1}}`+"\n", b, kindA.String())
	st, err := s.Import(context.Background(), strings.NewReader(in), nil)
	var ie *core.IdempotencyError
	if !errors.As(err, &ie) || ie.Original != a.ID || !strings.Contains(err.Error(), "line 1") || st.Imported != 0 {
		t.Fatalf("import of B under A's key on a replicated store: %+v, %v", st, err)
	}
	for _, r := range rs {
		if _, err := r.Get(b); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("a replica holds B: %v", err)
		}
	}
}
