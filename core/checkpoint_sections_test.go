package core_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// A checkpoint whose sections pass its checksum but break the index's
// rules (causal links that are not a forest, a conversation naming an
// event of another conversation or one never shown, counts above what
// the file holds, an idempotency key naming no event) is not used: Open
// scans, and every read answers as after a scan.

// ckptEntryBytes is the size of one index entry in the checkpoint layout.
const ckptEntryBytes = 51

// ckptLayout finds the entry table and the correlation groups of a
// checkpoint (layout: core/internal/format, CheckpointMagic).
type ckptLayout struct {
	n       int
	entries int // offset of entry 0
	groups  int // offset of the correlation group count
}

func parseCkpt(t *testing.T, b []byte) ckptLayout {
	t.Helper()
	le := binary.LittleEndian
	off := 8 + 4 + 8
	var l ckptLayout
	l.n = int(le.Uint32(b[off:]))
	off += 4
	nseg := int(le.Uint32(b[off:]))
	off += 4 + 12*nseg
	nent := int(le.Uint32(b[off:]))
	off += 4
	for range nent {
		off += 2 + int(le.Uint16(b[off:])) + 1 + 8 + 8 + 32
	}
	nsc := int(le.Uint32(b[off:]))
	off += 4
	for range nsc {
		off += 2 + int(le.Uint16(b[off:]))
	}
	l.entries = off
	off += l.n * ckptEntryBytes
	nid := int(le.Uint32(b[off:]))
	off += 4
	for range nid {
		off += 2 + int(le.Uint16(b[off:])) + 4
	}
	l.groups = off
	return l
}

func (l ckptLayout) child(seq int) int   { return l.entries + seq*ckptEntryBytes + 43 }
func (l ckptLayout) sibling(seq int) int { return l.entries + seq*ckptEntryBytes + 47 }

// resealCkpt recomputes the checkpoint's checksum.
func resealCkpt(b []byte) {
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32.MakeTable(crc32.Castagnoli)))
}

func TestCausalCheckpointLinksDamagedFallsBackToScan(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	s := openWith(t, testConfig(base))
	// seq 0 root; 1 other; 2 a (root); 3 hidden (a cancelled fence);
	// 4 b (root); 5 other1 (other).
	r := map[string]core.Receipt{}
	r["root"] = mustAppend(t, s, mustCoord(t, "order:1", "s"), kindA, `{"n":"root"}`)
	r["other"] = mustAppend(t, s, mustCoord(t, "order:2", "s"), kindA, `{"n":"other"}`)
	r["a"] = react(t, s, "pay:1", r["root"], `{"n":"a"}`)
	f := mustBeginFence(t, s)
	if _, err := f.Submit(ctx, mustCoord(t, "order:1", "s"), kindA, []byte(`{"n":"never shown"}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	r["b"] = react(t, s, "ship:1", r["root"], `{"n":"b"}`)
	r["other1"] = react(t, s, "order:2", r["other"], `{"n":"other1"}`)
	if r["b"].GlobalSequence != 4 || r["other1"].GlobalSequence != 5 {
		t.Fatalf("sequences %d %d, want 4 5", r["b"].GlobalSequence, r["other1"].GlobalSequence)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(filepath.Join(base, checkpointFile))
	if err != nil {
		t.Fatal(err)
	}
	l := parseCkpt(t, orig)
	if l.n != 6 {
		t.Fatalf("checkpoint has %d entries, want 6", l.n)
	}
	le := binary.LittleEndian
	if c := le.Uint32(orig[l.child(0):]); c != 5 { // root's newest child: b
		t.Fatalf("root's child link %d, want 5", c)
	}

	for _, tc := range []struct {
		name   string
		damage func(b []byte)
	}{
		// a → (sibling) root: root is its own child.
		{"a sibling link back to the cause", func(b []byte) { le.PutUint32(b[l.sibling(2):], 1) }},
		// other's children: a, which root's chain holds too.
		{"an event claimed by two causes", func(b []byte) { le.PutUint32(b[l.child(1):], 3) }},
		// root → b → (sibling) root: root its own child.
		{"a sibling link to the cause", func(b []byte) { le.PutUint32(b[l.sibling(4):], 1) }},
		// root's conversation [a, b] becomes [a, hidden event].
		{"a conversation naming a hidden event", func(b []byte) { groupMember(t, b, l, r["root"].ID, 4, 3) }},
		// root's conversation [a, b] becomes [other, b].
		{"a conversation naming an event that started another", func(b []byte) { groupMember(t, b, l, r["root"].ID, 2, 1) }},
		// other's conversation [other1] becomes [b]: b in two conversations.
		{"an event in two conversations", func(b []byte) { groupMember(t, b, l, r["other"].ID, 5, 4) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			copyTree(t, base, dir, func(n string) bool { return strings.HasSuffix(n, ".idx") })
			b := append([]byte(nil), orig...)
			tc.damage(b)
			resealCkpt(b)
			writeFile(t, filepath.Join(dir, checkpointFile), b)
			s, rep := openPath(t, testConfig(dir))
			if rep.Path != "scan" {
				t.Errorf("open path %q, want scan", rep.Path)
			}
			for id, want := range map[string]string{"root": "root a b", "other": "other other1", "a": "a", "b": "b"} {
				res := mustDescendants(t, s, r[id].ID, core.CausalLimits{})
				if got := names(r, res.Events); got != want || res.Truncated {
					t.Errorf("Descendants(%s) = %q truncated %v; want %q", id, got, res.Truncated, want)
				}
			}
			for id, want := range map[string]string{"b": "root a b", "other1": "other other1"} {
				res := mustCorrelation(t, s, r[id].ID, core.CausalLimits{})
				if got := names(r, res.Events); got != want || res.Truncated {
					t.Errorf("Correlation(%s) = %q truncated %v; want %q", id, got, res.Truncated, want)
				}
				for _, ev := range res.Events {
					if strings.Contains(string(ev.Payload), "never shown") {
						t.Errorf("Correlation(%s) shows an event of a cancelled fence", id)
					}
				}
			}
		})
	}
}

// groupMember replaces member old of the correlation group corr with seq
// new (the group is found by walking the groups section).
func groupMember(t *testing.T, b []byte, l ckptLayout, corr core.EventID, old, new uint32) {
	t.Helper()
	le := binary.LittleEndian
	off := l.groups
	ng := int(le.Uint32(b[off:]))
	off += 4
	for range ng {
		key := b[off : off+16]
		m := int(le.Uint32(b[off+16:]))
		off += 20
		if string(key) == string(corr[:]) {
			for j := range m {
				if le.Uint32(b[off+4*j:]) == old {
					le.PutUint32(b[off+4*j:], new)
					return
				}
			}
		}
		off += 4 * m
	}
	t.Fatalf("no member %d in the group of %s", old, corr)
}

// A checkpoint claiming 0xF0000000 entries but holding a few (checksum
// recomputed) is not used,
// and Open allocates for the entries the file holds, not for those it
// claims.
func TestCheckpointHugeEntryCountFallsBackToScan(t *testing.T) {
	s := openStore(t)
	r := causalTree(t, s)
	dir := s.Config().Dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		t.Fatal(err)
	}
	// The file ends after the real entries (and a checksum).
	l := parseCkpt(t, b)
	b = append(b[:l.entries+l.n*ckptEntryBytes], 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[8+4+8:], 0xF0000000)
	resealCkpt(b)
	writeFile(t, filepath.Join(dir, checkpointFile), b)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	s, rep := openPath(t, testConfig(dir))
	runtime.ReadMemStats(&m1)
	if rep.Path == "checkpoint" {
		t.Fatalf("open path %q", rep.Path)
	}
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 64<<20 {
		t.Fatalf("Open of a checkpoint claiming 0xF0000000 entries allocated %d MiB", n>>20)
	}
	checkTree(t, s, r, "after the fallback")
}

// A checkpoint whose idempotency key names an entry it does not hold
// (checksum recomputed) is not used: a retry with that key still finds
// the original event, instead of the writer indexing past the entries.
func TestCheckpointIdempotencyKeyOutOfRangeFallsBackToScan(t *testing.T) {
	s := openStore(t)
	c := mustCoord(t, "order:1", "s")
	mustAppend(t, s, c, kindA, `{"n":0}`)
	orig := mustAppendOpts(t, s, c, kindA, `{"n":1}`, core.AppendOptions{IdempotencyKey: "k1"})
	dir := s.Config().Dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		t.Fatal(err)
	}
	l := parseCkpt(t, b)
	off := l.entries + l.n*ckptEntryBytes
	if binary.LittleEndian.Uint32(b[off:]) != 1 || string(b[off+6:off+8]) != "k1" {
		t.Fatalf("checkpoint idempotency section: % x", b[off:off+12])
	}
	binary.LittleEndian.PutUint32(b[off+8:], 1_000_000)
	resealCkpt(b)
	writeFile(t, filepath.Join(dir, checkpointFile), b)
	s, rep := openPath(t, testConfig(dir))
	if rep.Path == "checkpoint" {
		t.Fatalf("open path %q", rep.Path)
	}
	if r := mustAppendOpts(t, s, c, kindA, `{"n":1}`, core.AppendOptions{IdempotencyKey: "k1"}); !r.Deduplicated || r.ID != orig.ID {
		t.Fatalf("retry = %+v; want the original %s", r, orig.ID)
	}
}
