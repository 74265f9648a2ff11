package cluster

import (
	"encoding/binary"
	"runtime/debug"
	"strings"
	"testing"
)

// TestNestedWriteGroupsAreRefusedWithoutRecursing: a write group entry
// whose first write is a group whose first write is a group … (an entry
// no node writes, a few bytes per level) is refused as undecodable at the
// first nested group, without decoding the nesting: a hostile peer's
// entry of a few MiB cannot drive the decoder's stack past its limit and
// crash the node.
func TestNestedWriteGroupsAreRefusedWithoutRecursing(t *testing.T) {
	const depth = 100_000
	leaf := []byte{commandVersion} // the other write of every group: never read
	suffix := binary.AppendUvarint(nil, uint64(len(leaf)))
	suffix = append(suffix, leaf...)
	// Level k's length, from the innermost (a plain write) out.
	inner, err := encodeCommand(&command{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	lens := make([]int, depth+1)
	lens[0] = len(inner)
	for k := 1; k <= depth; k++ {
		lens[k] = 4 + len(binary.AppendUvarint(nil, uint64(lens[k-1]))) + lens[k-1] + len(suffix)
	}
	data := make([]byte, 0, lens[depth])
	for k := depth; k >= 1; k-- {
		data = append(data, commandVersionOps, opGroup, 0, 2)
		data = binary.AppendUvarint(data, uint64(lens[k-1]))
	}
	data = append(data, inner...)
	for k := 1; k <= depth; k++ {
		data = append(data, suffix...)
	}
	if len(data) != lens[depth] {
		t.Fatalf("built %d bytes, want %d", len(data), lens[depth])
	}
	defer debug.SetMaxStack(debug.SetMaxStack(1 << 20))
	_, err = decodeCommand(data)
	if err == nil || !strings.Contains(err.Error(), "not a write") {
		t.Fatalf("decoding %d nested groups (%d bytes): %v, want the nested group refused", depth, len(data), err)
	}
}

// FuzzDecodeCommand: no entry, however damaged or hostile, panics the
// decoder, and a write group it accepts holds at least two writes and
// nothing but writes.
func FuzzDecodeCommand(f *testing.F) {
	w1, _ := encodeCommand(&command{Tenant: "acme", Items: []wireItem{{Entity: "e", Scope: "s", Payload: []byte(`1`)}}})
	w2, _ := encodeCommand(&command{Op: opWrite, Tenant: "beta", Batch: true, Items: []wireItem{{Entity: "f", Scope: "s", Expect: 2, Clock: 3}}})
	cur, _ := encodeCommand(&command{Op: opCursor, Tenant: "acme", Cursor: "c", Pos: 9})
	f.Add(w1)
	f.Add(w2)
	f.Add(cur)
	f.Add(encodeGroup([][]byte{w1, w2}))
	f.Add(encodeGroup([][]byte{encodeGroup([][]byte{w1, w2}), w1}))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil || c.Op != opGroup {
			return
		}
		if len(c.Group) < 2 {
			t.Fatalf("a group of %d writes accepted", len(c.Group))
		}
		for i, w := range c.Group {
			if w.Op != opWrite || w.Group != nil {
				t.Fatalf("write %d of the group is op %d", i, w.Op)
			}
		}
	})
}
