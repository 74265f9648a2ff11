package ijson

import (
	"fmt"
	"strings"
	"testing"
)

// Index answers every path as successive Lookups do — escapes decoded,
// the last of repeated names, arrays and scalars having no members — and
// reads each object once.
func TestIndexAgreesWithLookup(t *testing.T) {
	doc := []byte(`{"a":{"b":{"c":1},"b":{"c":2,"d":[1]}},"\u0061x":"y","s":"str","n":null,"arr":[{"a":1}],"e":{}}`)
	x := NewIndex(doc)
	lookup := func(keys ...string) ([]byte, bool) {
		v := doc
		for _, k := range keys {
			var ok bool
			if v, ok = Lookup(v, k); !ok {
				return nil, false
			}
		}
		return v, true
	}
	for _, keys := range [][]string{
		{"a"}, {"a", "b"}, {"a", "b", "c"}, {"a", "b", "d"}, {"a", "b", "d", "0"}, {"ax"}, {"s"}, {"s", "x"},
		{"n"}, {"n", "x"}, {"arr"}, {"arr", "a"}, {"arr", "0"}, {"e"}, {"e", "x"}, {"missing"}, {"a", "missing", "c"}, {"\xff"}, {},
	} {
		got, gotOK := x.At(keys...)
		want, wantOK := lookup(keys...)
		if gotOK != wantOK || string(got) != string(want) {
			t.Errorf("At%q = %s %v, Lookup gives %s %v", keys, got, gotOK, want, wantOK)
		}
	}
	// A second round reads nothing again.
	n := len(x.objs)
	for _, keys := range [][]string{{"a", "b", "c"}, {"s", "x"}, {"arr", "a"}, {"e", "x"}} {
		x.At(keys...)
	}
	if len(x.objs) != n {
		t.Errorf("%d values indexed after a second round, %d after the first: each is read once", len(x.objs), n)
	}
}

// MaxRead stops a walk down nested objects that would list more bytes
// than it allows, and says so.
func TestIndexMaxRead(t *testing.T) {
	doc := []byte(strings.Repeat(`{"x":`, 100) + `"` + strings.Repeat("a", 10000) + `"` + strings.Repeat("}", 100))
	x := NewIndex(doc)
	x.MaxRead = int64(4 * len(doc))
	keys := []string{}
	var ok bool
	for range 100 {
		keys = append(keys, "x")
		if _, ok = x.At(keys...); !ok {
			break
		}
	}
	if ok || !x.Exceeded() || len(keys) > 6 {
		t.Fatalf("walked %d levels of 100 (ok %v, exceeded %v) within %d bytes", len(keys), ok, x.Exceeded(), x.MaxRead)
	}
	y := NewIndex(doc) // no bound: every level
	if v, ok := y.At(keys...); !ok || y.Exceeded() || v[0] != '{' {
		t.Fatalf("unbounded: %v %v", ok, y.Exceeded())
	}
}

// Many paths into one large object cost a pass over it, not a pass each.
func BenchmarkIndexManyPaths(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"ok":1`)
	for i := range 6000 {
		fmt.Fprintf(&sb, `,"m%d":1`, i)
	}
	sb.WriteString("}")
	doc := []byte(sb.String())
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	for b.Loop() {
		x := NewIndex(doc)
		for _, k := range keys {
			x.At(k)
		}
	}
}
