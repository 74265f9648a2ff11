package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

func TestCommandRoundTrip(t *testing.T) {
	id, corr, cause := core.NewEventID(), core.NewEventID(), core.NewEventID()
	items := []core.BatchItem{
		{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 2), Payload: []byte(`{"a": [1, 2]}`),
			Options:   core.AppendOptions{ID: id, Timestamp: 42, ExpectedClock: core.ExpectClock(7), IdempotencyKey: "k", CorrelationID: corr, Flags: 3},
			Causation: core.CausedBy(cause)},
		{Coordinate: core.Coordinate{Entity: "f", Scope: "t"}, Kind: core.MustKind(1, 1), Payload: []byte(`null`),
			Options: core.AppendOptions{ExpectedClock: core.ExpectNoEvents()}, Causation: core.PriorItem(0)},
		{Coordinate: core.Coordinate{Entity: "g", Scope: "t"}, Kind: core.MustKind(1, 1), Payload: []byte(`0`)},
	}
	c := &command{Tenant: "acme", Batch: true}
	for _, it := range items {
		c.Items = append(c.Items, toWire(it))
	}
	data, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tenant != "acme" || !got.Batch || len(got.Items) != 3 {
		t.Fatalf("decoded %+v", got)
	}
	want0 := items[0]
	want0.Options.CausationID, want0.Causation = cause, core.NoCausation() // CausedBy travels as the causation id
	for i, want := range []core.BatchItem{want0, items[1], items[2]} {
		it := got.Items[i].item()
		if string(it.Payload) != string(want.Payload) {
			t.Errorf("item %d payload %s, want the bytes sent %s", i, it.Payload, want.Payload)
		}
		it.Payload, want.Payload = nil, nil
		if it.Coordinate != want.Coordinate || it.Kind != want.Kind || it.Options != want.Options || it.Causation != want.Causation {
			t.Errorf("item %d:\n got %+v\nwant %+v", i, it, want)
		}
	}
}

func TestUnknownCommandFormatHaltsTheNode(t *testing.T) {
	n := openLoneLeader(t)
	defer n.Close()
	ctx := context.Background()
	item := core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`1`)}
	rs, err := n.Append(ctx, "acme", item)
	if err != nil || rs[0].Err != nil {
		t.Fatal(err, rs)
	}
	before := n.AppliedIndex()
	// An entry from a newer node: version 2, whose body this node cannot read.
	newer := append([]byte{commandVersion + 1}, `{"t":"acme","i":[]}`...)
	go n.raft.Apply(newer, time.Second) // its future resolves only when the node closes
	for deadline := time.Now().Add(5 * time.Second); n.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node applied or ignored an entry in an unknown format")
		}
	}
	var uf *UnknownFormatError
	if !errors.As(n.Err(), &uf) || uf.Version != int(commandVersion+1) || !errors.Is(n.Err(), ErrHalted) {
		t.Fatalf("Err() = %v, want an *UnknownFormatError for version %d", n.Err(), commandVersion+1)
	}
	if n.AppliedIndex() != before {
		t.Fatalf("applied index moved from %d to %d past an entry it could not read", before, n.AppliedIndex())
	}
	if _, err := n.Append(ctx, "acme", item); !errors.Is(err, ErrHalted) {
		t.Fatalf("append on a halted node: %v, want ErrHalted", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := n.WaitApplied(wctx, before+1); !errors.Is(err, ErrHalted) {
		t.Fatalf("WaitApplied past the halt: %v, want ErrHalted", err)
	}
	var events int
	if err := n.View("acme", func(s *core.Store) error { evs, err := s.Query(core.All()); events = len(evs); return err }); err != nil || events != 1 {
		t.Fatalf("acme holds %d events (%v), want the one written before the halt", events, err)
	}
}

func TestDamagedCommandIsRefused(t *testing.T) {
	c := &command{Tenant: "acme", Items: []wireItem{
		toWire(core.BatchItem{Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"a":1}`),
			Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: 5, ExpectedClock: core.ExpectClock(300), IdempotencyKey: "key"}}),
	}}
	data, err := encodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n < len(data); n++ {
		if _, err := decodeCommand(data[:n]); err == nil {
			t.Fatalf("a command cut to %d of %d bytes decoded", n, len(data))
		}
	}
	if _, err := decodeCommand(append(data, 0)); err == nil {
		t.Fatal("a command with a trailing byte decoded")
	}
	huge := append([]byte{commandVersion, 0, 0}, 0xff, 0xff, 0xff, 0xff, 0x0f) // 4G items claimed
	if _, err := decodeCommand(huge); err == nil {
		t.Fatal("a command claiming more items than bytes decoded")
	}
}

// TestCommandOps: cursor commits, drops and blobs travel in format 2; writes
// stay in format 1, which nodes not yet upgraded read; a format-2 write
// decodes like a format-1 one; an unknown op or version is refused with
// an *UnknownFormatError naming it.
func TestCommandOps(t *testing.T) {
	for _, c := range []*command{
		{Op: opCursor, Tenant: "acme", Cursor: "billing", Pos: 1 << 40},
		{Op: opDrop, Tenant: "acme"},
		{Op: opBlob, Blob: []byte("\x00asm module bytes")},
	} {
		data, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if data[0] != commandVersionOps {
			t.Fatalf("op %d encoded in format %d", c.Op, data[0])
		}
		got, err := decodeCommand(data)
		if err != nil {
			t.Fatal(err)
		}
		if got.Op != c.Op || got.Tenant != c.Tenant || got.Cursor != c.Cursor || got.Pos != c.Pos || string(got.Blob) != string(c.Blob) {
			t.Fatalf("decoded %+v, want %+v", got, c)
		}
		for n := 1; n < len(data); n++ {
			if _, err := decodeCommand(data[:n]); err == nil {
				t.Fatalf("op %d cut to %d of %d bytes decoded", c.Op, n, len(data))
			}
		}
		if _, err := decodeCommand(append(data, 0)); err == nil {
			t.Fatalf("op %d with a trailing byte decoded", c.Op)
		}
	}
	w := &command{Tenant: "acme", Batch: true, Items: []wireItem{toWire(core.BatchItem{
		Coordinate: core.Coordinate{Entity: "e", Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`1`),
		Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: 9}})}}
	v1, err := encodeCommand(w)
	if err != nil {
		t.Fatal(err)
	}
	if v1[0] != 1 {
		t.Fatalf("a write is encoded in format %d, want 1", v1[0])
	}
	v2 := append([]byte{commandVersionOps, opWrite}, v1[1:]...)
	got, err := decodeCommand(v2)
	if err != nil || got.Op != opWrite || got.Tenant != "acme" || !got.Batch || len(got.Items) != 1 || got.Items[0].item().Options != w.Items[0].item().Options {
		t.Fatalf("format-2 write decoded as %+v (%v)", got, err)
	}
	var uf *UnknownFormatError
	if _, err := decodeCommand([]byte{commandVersionOps, 9, 0}); !errors.As(err, &uf) || uf.Version != 2 || uf.Op != 9 || !errors.Is(err, ErrHalted) {
		t.Fatalf("unknown op: %v", err)
	}
	if _, err := decodeCommand([]byte{3, 0}); !errors.As(err, &uf) || uf.Version != 3 || uf.Op != -1 {
		t.Fatalf("unknown version: %v", err)
	}
}

// TestCommandItemCountBoundedByBytes: an entry's item count is checked
// against the smallest encoding of an item before anything is allocated
// for them: a damaged (or hostile) entry of n bytes claiming n items does
// not make a node allocate a few hundred times n.
func TestCommandItemCountBoundedByBytes(t *testing.T) {
	const n = 1 << 20
	data := binary.AppendUvarint([]byte{commandVersion, 0, 0}, n)
	data = append(data, make([]byte, n)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := decodeCommand(data); err == nil {
		t.Fatal("a command of zeros decoded")
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("decoding a %d-byte command allocated %d MiB", len(data), grew>>20)
	}
}

// TestWriteGroupFormat: a write group entry carries its writes (format 1,
// or format 2 op 0) in order; one cut short, with trailing bytes, with
// fewer than two writes, with anything but writes inside, or claiming more
// writes than it has bytes is refused; a write in an unknown format inside
// it is that format's *UnknownFormatError (the node halts and says to
// upgrade).
func TestWriteGroupFormat(t *testing.T) {
	write := func(tenant, entity string, batch bool) []byte {
		b, err := encodeCommand(&command{Tenant: tenant, Batch: batch, Items: []wireItem{toWire(core.BatchItem{
			Coordinate: core.Coordinate{Entity: entity, Scope: "s"}, Kind: core.MustKind(1, 1), Payload: []byte(`{"x":1}`),
			Options: core.AppendOptions{ID: core.NewEventID(), Timestamp: 9}})}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := write("acme", "e:1", false), write("globex", "e:2", true)
	b2 := append([]byte{commandVersionOps, opWrite}, b[1:]...)
	data := encodeGroup([][]byte{a, b2, a})
	got, err := decodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Op != opGroup || len(got.Group) != 3 || got.Group[0].Tenant != "acme" || got.Group[1].Tenant != "globex" ||
		!got.Group[1].Batch || got.Group[2].Items[0].Entity != "e:1" {
		t.Fatalf("decoded %+v", got)
	}
	for n := 1; n < len(data); n++ {
		if _, err := decodeCommand(data[:n]); err == nil {
			t.Fatalf("a write group cut to %d of %d bytes decoded", n, len(data))
		}
	}
	if _, err := decodeCommand(append(data, 0)); err == nil {
		t.Fatal("a write group with a trailing byte decoded")
	}
	cursor, _ := encodeCommand(&command{Op: opCursor, Tenant: "acme", Cursor: "c", Pos: 1})
	one := binary.AppendUvarint([]byte{commandVersionOps, opGroup, 0}, 1)
	one = append(binary.AppendUvarint(one, uint64(len(a))), a...)
	for name, bad := range map[string][]byte{
		"one write":      one,
		"nested group":   encodeGroup([][]byte{a, encodeGroup([][]byte{a, a})}),
		"a cursor op":    encodeGroup([][]byte{a, cursor}),
		"an empty write": encodeGroup([][]byte{a, {}}),
	} {
		if _, err := decodeCommand(bad); err == nil {
			t.Errorf("a write group holding %s decoded", name)
		}
	}
	claims := binary.AppendUvarint([]byte{commandVersionOps, opGroup, 0}, 1<<40)
	if _, err := decodeCommand(claims); err == nil {
		t.Fatal("a write group claiming 2^40 writes decoded")
	}
	var uf *UnknownFormatError
	if _, err := decodeCommand(encodeGroup([][]byte{a, {commandVersionOps + 1, 0}})); !errors.As(err, &uf) || uf.Version != int(commandVersionOps+1) || !errors.Is(err, ErrHalted) {
		t.Fatalf("a write in an unknown format inside a group: %v, want an *UnknownFormatError", err)
	}
}
