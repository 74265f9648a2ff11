package ijson

import "unicode/utf8"

// Index reads many member paths of one JSON document, each object on the
// way read once: the first path through an object lists its members
// (names decoded as Lookup decodes them, the last of repeated names
// kept), and every later path through it is a map read. So n paths into
// a document of b bytes cost O(b + n × depth) rather than Lookup's
// O(n × b), and the memory the indexed objects' members take. Like
// Lookup it trusts doc to be JSON; an Index is not safe for concurrent
// use.
type Index struct {
	doc  []byte
	objs map[int]map[string][]byte // by the object's offset in doc; empty: not an object

	// MaxRead, when positive, bounds the bytes of the objects At lists
	// together. Each object on a path is listed whole, so paths down a
	// chain of nested objects list d objects of nearly the document's
	// size each; past the bound At answers ok false and Exceeded reports
	// it, for a caller to give up rather than spend depth × size.
	MaxRead int64
	read    int64
	over    bool
}

// NewIndex returns an Index of doc.
func NewIndex(doc []byte) *Index { return &Index{doc: doc} }

// Exceeded reports whether an At stopped at MaxRead.
func (x *Index) Exceeded() bool { return x.over }

// At returns the raw bytes of the value at keys — keys[0] a member of
// the document, keys[1] a member of that, and so on (never an array
// element) — as successive Lookups would; ok is false when one is
// missing or not an object. No keys: the whole document.
func (x *Index) At(keys ...string) (raw []byte, ok bool) {
	v := x.doc
	for _, k := range keys {
		if !utf8.ValidString(k) {
			return nil, false
		}
		off := cap(x.doc) - cap(v) // v is a slice of doc
		m, seen := x.objs[off]
		if !seen {
			if x.read += int64(len(v)); x.MaxRead > 0 && x.read > x.MaxRead {
				x.over = true
				return nil, false
			}
			m = map[string][]byte{}
			if !Members(v, func(name, raw []byte) bool { m[string(name)] = raw; return true }) {
				clear(m) // not an object, or malformed: no members
			}
			if x.objs == nil {
				x.objs = map[int]map[string][]byte{}
			}
			x.objs[off] = m
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}
