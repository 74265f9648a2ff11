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
