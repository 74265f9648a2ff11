package abi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/plugins/abi"
)

// The ABI's byte layouts: what the host encodes the guest decodes field
// for field (and back), and every malformed input is an ErrMalformed
// error naming what is wrong — never a panic, never a partial answer.

func sampleEvents() []abi.EventRecord {
	id := func(b byte) (out [16]byte) {
		for i := range out {
			out[i] = b + byte(i)
		}
		return out
	}
	return []abi.EventRecord{
		{Seq: 1, Clock: 1, Timestamp: 1_700_000_000_000_000, Kind: 1<<12 | 1, Flags: 0, ID: id(0x10), Correlation: id(0x10),
			Entity: []byte("acme:order:1"), Scope: []byte("shop"), Payload: []byte(`{"amount":5}`)},
		// Empty entity, scope and payload; extreme numbers.
		{Seq: math.MaxUint64, Clock: math.MaxUint64, Timestamp: math.MinInt64, Kind: 0xffff, Flags: 0xffff, ID: id(0x80), Correlation: id(0x90), Causation: id(0xa0)},
		{Seq: 3, Clock: 2, Timestamp: -1, Kind: 0x2abc, ID: id(1), Entity: bytes.Repeat([]byte("e"), 0xffff), Scope: []byte("s"), Payload: bytes.Repeat([]byte("p"), 70000)},
	}
}

func encodeBatch(evs []abi.EventRecord) []byte {
	b := abi.AppendBatchHeader(nil, len(evs))
	for i := range evs {
		b = abi.AppendEvent(b, &evs[i])
	}
	return b
}

// decoded renders an event view as the record it was encoded from.
func decoded(e abi.Event) abi.EventRecord {
	r := abi.EventRecord{Seq: e.Seq(), Clock: e.Clock(), Timestamp: e.Timestamp(), Kind: e.Kind(), Flags: e.Flags(),
		Entity: e.Entity(), Scope: e.Scope(), Payload: e.Payload()}
	copy(r.ID[:], e.ID())
	copy(r.Correlation[:], e.Correlation())
	copy(r.Causation[:], e.Causation())
	return r
}

func sameRecord(a, b abi.EventRecord) bool {
	return a.Seq == b.Seq && a.Clock == b.Clock && a.Timestamp == b.Timestamp && a.Kind == b.Kind && a.Flags == b.Flags &&
		a.ID == b.ID && a.Correlation == b.Correlation && a.Causation == b.Causation &&
		bytes.Equal(a.Entity, b.Entity) && bytes.Equal(a.Scope, b.Scope) && bytes.Equal(a.Payload, b.Payload)
}

func TestBatchRoundTrip(t *testing.T) {
	evs := sampleEvents()
	b := abi.Batch(encodeBatch(evs))
	if b.Len() != len(evs) {
		t.Fatalf("Len %d, want %d", b.Len(), len(evs))
	}
	var got []abi.EventRecord
	if err := b.Events(func(i int, e abi.Event) bool {
		if i != len(got) {
			t.Fatalf("event index %d, want %d", i, len(got))
		}
		if len(e) != abi.EventFixed+len(evs[i].Entity)+len(evs[i].Scope)+len(evs[i].Payload) {
			t.Fatalf("event %d: %d bytes", i, len(e))
		}
		got = append(got, decoded(e))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("%d events decoded, want %d", len(got), len(evs))
	}
	for i := range evs {
		if !sameRecord(got[i], evs[i]) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], evs[i])
		}
	}
	if e := got[0]; e.Kind>>12 != 1 || e.Kind&0xfff != 1 {
		t.Errorf("kind %#x", e.Kind)
	}
	var first abi.Event
	_ = b.Events(func(_ int, e abi.Event) bool { first = e; return false })
	if first.Category() != 1 || first.Type() != 1 {
		t.Errorf("category/type of %#x: %d/%d", first.Kind(), first.Category(), first.Type())
	}

	// Stopping early visits only the events asked for.
	visited := 0
	if err := b.Events(func(int, abi.Event) bool { visited++; return visited < 2 }); err != nil || visited != 2 {
		t.Fatalf("early stop: visited %d (%v), want 2", visited, err)
	}
	// An empty batch is four bytes and visits nothing.
	empty := abi.Batch(abi.AppendBatchHeader(nil, 0))
	if len(empty) != 4 || empty.Len() != 0 || empty.Events(func(int, abi.Event) bool { t.Fatal("visited"); return true }) != nil {
		t.Fatalf("empty batch %x", empty)
	}
}

// Every way a batch can lie about its sizes is refused with ErrMalformed,
// before the event that lies is handed out.
func TestBatchMalformed(t *testing.T) {
	valid := encodeBatch(sampleEvents()[:1])
	patch := func(off int, v uint32) []byte { return patched32(valid, off, v) }
	patch16 := func(off int, v uint16) []byte { return patched16(valid, off, v) }
	const ev = 8 // the first event's fields start after count and size
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"nil", nil, "batch shorter than its count"},
		{"three bytes", []byte{1, 0, 0}, "batch shorter than its count"},
		{"count over the events", patch(0, 2), "event 1: truncated"},
		{"count of 4G", patch(0, math.MaxUint32), "event 1: truncated"},
		{"size under the fixed part", patch(4, abi.EventFixed-1), "event 0: size 83 out of bounds"},
		{"size past the end", patch(4, uint32(len(valid))), "out of bounds"},
		{"size of 4G", patch(4, math.MaxUint32), "out of bounds"},
		{"entity length too long", patch16(ev+76, 200), "event 0: field lengths do not add up"},
		{"scope length too short", patch16(ev+78, 0), "field lengths do not add up"},
		{"payload length of 4G", patch(ev+80, math.MaxUint32), "field lengths do not add up"},
	}
	for _, tc := range cases {
		visited := 0
		err := abi.Batch(tc.b).Events(func(int, abi.Event) bool { visited++; return true })
		if !errors.Is(err, abi.ErrMalformed) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: error %v, want ErrMalformed with %q", tc.name, err, tc.want)
		}
		if tc.name != "count over the events" && tc.name != "count of 4G" && visited != 0 {
			t.Errorf("%s: %d events handed out before the error", tc.name, visited)
		}
	}
	// Every strict prefix of a valid batch is malformed (the count promises
	// more than is there).
	full := encodeBatch(sampleEvents())
	for n := 0; n < len(full); n++ {
		if err := abi.Batch(full[:n]).Events(func(int, abi.Event) bool { return true }); !errors.Is(err, abi.ErrMalformed) {
			t.Fatalf("prefix of %d of %d bytes: %v, want ErrMalformed", n, len(full), err)
		}
	}
}

func sampleReactions() []abi.Reaction {
	return []abi.Reaction{
		{Source: 0, Kind: 1<<12 | 2, Entity: []byte("acme:shipment:1"), Scope: []byte("shop"), Payload: []byte(`{"carrier":"DHL"}`)},
		{Source: math.MaxUint32, Kind: 0xffff},
		{Source: 7, Kind: 3, Entity: bytes.Repeat([]byte("e"), abi.MaxCoordinateBytes), Scope: bytes.Repeat([]byte("s"), abi.MaxCoordinateBytes), Payload: bytes.Repeat([]byte("p"), 70000)},
	}
}

func sameReactions(a, b []abi.Reaction) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Source != b[i].Source || a[i].Kind != b[i].Kind || !bytes.Equal(a[i].Entity, b[i].Entity) ||
			!bytes.Equal(a[i].Scope, b[i].Scope) || !bytes.Equal(a[i].Payload, b[i].Payload) {
			return false
		}
	}
	return true
}

func TestHandlerOutputRoundTrip(t *testing.T) {
	for _, action := range []uint32{abi.ActionContinue, abi.ActionStop} {
		for _, rs := range [][]abi.Reaction{nil, sampleReactions()[:1], sampleReactions()} {
			b := output(nil, action, rs)
			got, gotRs, err := abi.ParseHandlerOutput(b)
			if err != nil || got != action || !sameReactions(gotRs, rs) {
				t.Fatalf("action %d, %d reactions: got %d, %d reactions, %v", action, len(rs), got, len(gotRs), err)
			}
			// The reactions alias the output: no copy of large payloads.
			if len(gotRs) > 0 && len(gotRs[0].Payload) > 0 && &gotRs[0].Payload[0] != &b[8+abi.ReactionFixed+len(rs[0].Entity)+len(rs[0].Scope)] {
				t.Fatal("the payload is a copy, not a view of the output")
			}
		}
	}
	// Appending keeps what dst held.
	b := output([]byte("head"), abi.ActionStop, nil)
	if string(b[:4]) != "head" || len(b) != 12 {
		t.Fatalf("append to dst: %q", b)
	}
}

func TestHandlerOutputMalformed(t *testing.T) {
	valid := output(nil, abi.ActionContinue, sampleReactions()[:1])
	patch := func(off int, v uint32) []byte { return patched32(valid, off, v) }
	patch16 := func(off int, v uint16) []byte { return patched16(valid, off, v) }
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"nil", nil, "handler output shorter than 8 bytes"},
		{"seven bytes", make([]byte, 7), "shorter than 8 bytes"},
		{"unknown action", patch(0, 2), "handler action 2"},
		{"action of 4G", patch(0, math.MaxUint32), "handler action 4294967295"},
		{"count over the reactions", patch(4, 2), "reaction 1: truncated"},
		{"count of 4G", patch(4, math.MaxUint32), "reaction 1: truncated"},
		{"entity past the end", patch16(8+6, 0xffff), "reaction 0: lengths out of bounds"},
		{"payload of 4G", patch(8+12, math.MaxUint32), "reaction 0: lengths out of bounds"},
		{"scope too short", patch16(8+8, 0), "4 bytes after the last reaction"},
		{"trailing bytes", append(bytes.Clone(valid), 0, 0), "2 bytes after the last reaction"},
		{"count zero, bytes after", patch(4, 0), "bytes after the last reaction"},
	}
	for _, tc := range cases {
		action, rs, err := abi.ParseHandlerOutput(tc.b)
		if !errors.Is(err, abi.ErrMalformed) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("%s: error %v, want ErrMalformed with %q", tc.name, err, tc.want)
		}
		if action != 0 || rs != nil {
			t.Errorf("%s: a partial answer came back with the error: action %d, %d reactions", tc.name, action, len(rs))
		}
	}
	full := output(nil, abi.ActionStop, sampleReactions())
	for n := 0; n < len(full); n++ {
		if _, _, err := abi.ParseHandlerOutput(full[:n]); !errors.Is(err, abi.ErrMalformed) {
			t.Fatalf("prefix of %d of %d bytes: %v, want ErrMalformed", n, len(full), err)
		}
	}
}

func TestPackResultRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		ptr, length uint32
		isErr       bool
	}{
		{0, 0, false}, {16, 8, false}, {math.MaxUint32, 0x7fffffff, false}, {math.MaxUint32, 0x7fffffff, true}, {1024, 5, true},
	} {
		r := abi.PackResult(tc.ptr, tc.length, tc.isErr)
		ptr, length, isErr := abi.UnpackResult(r)
		if ptr != tc.ptr || length != tc.length || isErr != tc.isErr {
			t.Errorf("PackResult(%#x, %#x, %v) = %#x, unpacks to %#x, %#x, %v", tc.ptr, tc.length, tc.isErr, r, ptr, length, isErr)
		}
	}
	// The layout the guest and host agree on: ptr low, length high, the
	// error bit on top.
	if r := abi.PackResult(0x10, 8, false); r != 0x0000000800000010 {
		t.Errorf("PackResult(16, 8) = %#x", r)
	}
	if r := abi.PackResult(0, 0, true); r != 1<<63 {
		t.Errorf("error bit %#x", r)
	}
	// A length with the top bit set cannot set the error bit.
	if _, length, isErr := abi.UnpackResult(abi.PackResult(0, 0x80000001, false)); isErr || length != 1 {
		t.Errorf("length 0x80000001 unpacks to %#x, error %v", length, isErr)
	}
}

// FuzzParseHandlerOutput: any bytes either parse — and then encode back to
// exactly those bytes — or are ErrMalformed; never a panic.
func FuzzParseHandlerOutput(f *testing.F) {
	f.Add(output(nil, abi.ActionContinue, nil))
	f.Add(output(nil, abi.ActionStop, sampleReactions()[:2]))
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		action, rs, err := abi.ParseHandlerOutput(b)
		if err != nil {
			if !errors.Is(err, abi.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		// The reserved field is not kept: compare with it cleared.
		want := bytes.Clone(b)
		off := 8
		for _, r := range rs {
			want[off+10], want[off+11] = 0, 0
			off += abi.ReactionFixed + len(r.Entity) + len(r.Scope) + len(r.Payload)
		}
		if again := output(nil, action, rs); !bytes.Equal(again, want) {
			t.Fatalf("%x parses, but encodes back to %x", b, again)
		}
	})
}

// FuzzBatchEvents: any bytes either decode — each event's fields then
// encode back to the bytes it was read from — or are ErrMalformed.
func FuzzBatchEvents(f *testing.F) {
	f.Add(encodeBatch(sampleEvents()[:2]))
	f.Add(abi.AppendBatchHeader(nil, 0))
	f.Add([]byte{1, 0, 0, 0, 84, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		off := 4
		err := abi.Batch(b).Events(func(i int, e abi.Event) bool {
			r := decoded(e)
			enc := abi.AppendEvent(nil, &r)
			if !bytes.Equal(enc, b[off:off+len(enc)]) {
				t.Fatalf("event %d: read from %x, encodes back to %x", i, b[off:off+len(enc)], enc)
			}
			off += len(enc)
			return true
		})
		if err != nil && !errors.Is(err, abi.ErrMalformed) {
			t.Fatalf("error %v is not ErrMalformed", err)
		}
	})
}

func ExampleParseHandlerOutput() {
	out := output(nil, abi.ActionContinue, []abi.Reaction{
		{Source: 0, Kind: 1<<12 | 2, Entity: []byte("acme:shipment:1"), Scope: []byte("shop"), Payload: []byte(`{}`)},
	})
	action, rs, err := abi.ParseHandlerOutput(out)
	fmt.Println(action, len(rs), string(rs[0].Entity), err)
	_, _, err = abi.ParseHandlerOutput(out[:len(out)-1])
	fmt.Println(err)
	// Output:
	// 0 1 acme:shipment:1 <nil>
	// malformed plugin data: reaction 0: lengths out of bounds
}

// output is abi.AppendHandlerOutput of reactions it accepts.
func output(dst []byte, action uint32, rs []abi.Reaction) []byte {
	b, err := abi.AppendHandlerOutput(dst, action, rs)
	if err != nil {
		panic(err)
	}
	return b
}

// TestHandlerOutputRefusesLongCoordinates: a reaction's entity or scope
// longer than MaxCoordinateBytes (what the host accepts) is refused by
// the encoder, naming the reaction, before anything is encoded (16 bits
// of length would have encoded an entity of 65,539 bytes as 3, and the
// host would have read the rest of it as more reactions); exactly the
// limit is encoded and read back whole.
func TestHandlerOutputRefusesLongCoordinates(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 1<<16+3)
	for name, c := range map[string]struct {
		r    abi.Reaction
		want string
	}{
		"entity of 65539 bytes": {abi.Reaction{Entity: long, Scope: []byte("s")}, "reaction 1: its entity is 65539 bytes, longer than 1024"},
		"entity of 1025 bytes":  {abi.Reaction{Entity: long[:abi.MaxCoordinateBytes+1], Scope: []byte("s")}, "reaction 1: its entity is 1025 bytes, longer than 1024"},
		"scope of 1025 bytes":   {abi.Reaction{Entity: []byte("e"), Scope: long[:abi.MaxCoordinateBytes+1]}, "reaction 1: its scope is 1025 bytes, longer than 1024"},
	} {
		b, err := abi.AppendHandlerOutput([]byte("head"), abi.ActionContinue, []abi.Reaction{sampleReactions()[0], c.r})
		if err == nil || err.Error() != c.want || string(b) != "head" {
			t.Errorf("%s: %q, %v; want dst unchanged and %q", name, b, err, c.want)
		}
	}
	at := abi.Reaction{Entity: long[:abi.MaxCoordinateBytes], Scope: long[:abi.MaxCoordinateBytes], Payload: []byte("{}")}
	b, err := abi.AppendHandlerOutput(nil, abi.ActionContinue, []abi.Reaction{at})
	if err != nil {
		t.Fatal(err)
	}
	if _, rs, err := abi.ParseHandlerOutput(b); err != nil || len(rs) != 1 || len(rs[0].Entity) != abi.MaxCoordinateBytes || len(rs[0].Scope) != abi.MaxCoordinateBytes {
		t.Fatalf("at the limit: %d reactions, %v", len(rs), err)
	}
	if abi.MaxCoordinateBytes != core.MaxCoordinatePartBytes {
		t.Errorf("abi.MaxCoordinateBytes %d, core.MaxCoordinatePartBytes %d", abi.MaxCoordinateBytes, core.MaxCoordinatePartBytes)
	}
}

// patched32 and patched16 return a copy of b with the little-endian value
// at off replaced.
func patched32(b []byte, off int, v uint32) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint32(b[off:], v)
	return b
}

func patched16(b []byte, off int, v uint16) []byte {
	b = bytes.Clone(b)
	binary.LittleEndian.PutUint16(b[off:], v)
	return b
}
