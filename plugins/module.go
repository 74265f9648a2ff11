package plugins

import (
	"errors"
	"fmt"
)

// What Load measures in a module's binary before instantiating it. wazero
// allocates a module's tables, globals and element segments on the Go heap
// outside the linear-memory limit, and its compiled-module API does not
// report table sizes or global counts, so Load reads the sections itself
// (https://webassembly.github.io/spec/core/binary/modules.html) and refuses
// or bounds what they declare:
//
//	section    measured                           limit
//	import     tables and globals imported         counted with the defined ones
//	table      count; min and max of each          Limits.Tables; Σ min ≤ Limits.TableElements,
//	                                              and each table's max is lowered so that
//	                                              Σ max ≤ Limits.TableElements
//	memory     defined?; initial pages              Limits.MemoryPages
//	global     count                              Limits.Globals
//	element    entries of all segments            Limits.TableElements
//	data       bytes of all segments              Limits.MemoryPages × 64 KiB
//
// Lowering a table's maximum is the one change Load makes to a module (the
// table section is re-encoded; the digest is still the original bytes'):
// wazero honours a table's maximum in table.grow, which then fails (-1) as
// the spec allows, so a module cannot grow its tables past the limit at
// run time. Anything the reader cannot measure is refused.

// Wasm section ids.
const (
	secImport  = 2
	secTable   = 4
	secMemory  = 5
	secGlobal  = 6
	secElement = 9
	secData    = 11
)

// tableDecl is one declared table.
type tableDecl struct {
	ref      byte
	min, max uint64
	hasMax   bool
	imported bool
}

// moduleShape is what readModule measured.
type moduleShape struct {
	memDefined  bool
	memPages    uint64 // the largest initial size of a defined memory
	tables      []tableDecl
	globals     uint64
	elemEntries uint64
	dataBytes   uint64
	// tableSec is the table section's bytes: [start, end) of the whole
	// section (id, size, body); zero if there is none.
	tableStart, tableEnd int
}

var errMalformed = errors.New("malformed module")

// wasmReader reads a section's body; every read is bounded by its length,
// and a read past the end sets err.
type wasmReader struct {
	b   []byte
	err error
}

func (r *wasmReader) fail() { r.err = errMalformed; r.b = nil }

func (r *wasmReader) u8() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// uleb reads an unsigned LEB128 of at most 10 bytes.
func (r *wasmReader) uleb() uint64 {
	var v uint64
	for i := 0; i < 10; i++ {
		c := r.u8()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail()
	return 0
}

// sleb skips a signed LEB128 of at most 10 bytes.
func (r *wasmReader) sleb() { r.uleb() }

func (r *wasmReader) skip(n uint64) {
	if n > uint64(len(r.b)) {
		r.fail()
		return
	}
	r.b = r.b[n:]
}

// limits reads a table's or memory's limits.
func (r *wasmReader) limits() (min, max uint64, hasMax bool) {
	flags := r.u8()
	if flags > 3 { // 64-bit memories and tables are not supported
		r.fail()
		return
	}
	min = r.uleb()
	if flags&1 != 0 {
		max, hasMax = r.uleb(), true
	}
	return
}

// constExpr skips a constant expression, up to and including its end.
func (r *wasmReader) constExpr() {
	for r.err == nil {
		switch op := r.u8(); op {
		case 0x0b: // end
			return
		case 0x41, 0x42: // i32.const, i64.const
			r.sleb()
		case 0x43:
			r.skip(4)
		case 0x44:
			r.skip(8)
		case 0x23, 0xd2: // global.get, ref.func
			r.uleb()
		case 0xd0: // ref.null
			r.u8()
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		default:
			r.fail()
		}
	}
}

// readModule measures a module that wazero has compiled (so it is well
// formed; a malformed or unknown construct is still an error, never a
// guess).
func readModule(wasm []byte) (moduleShape, error) {
	var s moduleShape
	if len(wasm) < 8 {
		return s, errMalformed
	}
	off := 8 // magic and version
	for off < len(wasm) {
		start := off
		r := wasmReader{b: wasm[off+1:]}
		id := wasm[off]
		size := r.uleb()
		if r.err != nil || size > uint64(len(r.b)) {
			return s, errMalformed
		}
		body := r.b[:size]
		off = len(wasm) - len(r.b) + int(size)
		sec := wasmReader{b: body}
		switch id {
		case secImport:
			for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
				sec.skip(sec.uleb()) // module
				sec.skip(sec.uleb()) // name
				switch sec.u8() {
				case 0x00: // function
					sec.uleb()
				case 0x01: // table
					ref := sec.u8()
					min, max, hasMax := sec.limits()
					s.tables = append(s.tables, tableDecl{ref: ref, min: min, max: max, hasMax: hasMax, imported: true})
				case 0x02: // memory
					sec.limits()
				case 0x03: // global
					sec.u8()
					sec.u8()
					s.globals++
				default:
					sec.fail()
				}
			}
		case secTable:
			s.tableStart, s.tableEnd = start, off
			for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
				ref := sec.u8()
				if ref != 0x70 && ref != 0x6f { // funcref, externref
					sec.fail()
				}
				min, max, hasMax := sec.limits()
				s.tables = append(s.tables, tableDecl{ref: ref, min: min, max: max, hasMax: hasMax})
			}
		case secMemory:
			for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
				min, _, _ := sec.limits()
				s.memDefined = true
				s.memPages = max(s.memPages, min)
			}
		case secGlobal:
			s.globals += sec.uleb()
			sec.b = nil // the count is all Load needs
		case secElement:
			for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
				flags := sec.uleb()
				if flags > 7 {
					sec.fail()
					break
				}
				if flags&3 == 2 { // an explicit table index
					sec.uleb()
				}
				if flags&1 == 0 { // active: an offset
					sec.constExpr()
				}
				if flags&3 != 0 { // an element kind or reference type
					sec.u8()
				}
				count := sec.uleb()
				s.elemEntries += count
				for i := uint64(0); i < count && sec.err == nil; i++ {
					if flags&4 != 0 {
						sec.constExpr()
					} else {
						sec.uleb()
					}
				}
			}
		case secData:
			for n := sec.uleb(); n > 0 && sec.err == nil; n-- {
				switch sec.uleb() {
				case 0:
					sec.constExpr()
				case 1:
				case 2:
					sec.uleb()
					sec.constExpr()
				default:
					sec.fail()
				}
				size := sec.uleb()
				s.dataBytes += size
				sec.skip(size)
			}
		default:
			sec.b = nil
		}
		if sec.err != nil || len(sec.b) != 0 {
			return s, fmt.Errorf("%w: section %d", errMalformed, id)
		}
	}
	return s, nil
}

// check returns why the module is over l, or "".
func (s *moduleShape) check(l Limits) string {
	var elems uint64
	for _, t := range s.tables {
		elems += t.min
	}
	switch {
	case uint64(len(s.tables)) > uint64(l.Tables):
		return fmt.Sprintf("it declares %d tables, over the limit of %d (limits.tables)", len(s.tables), l.Tables)
	case elems > uint64(l.TableElements):
		return fmt.Sprintf("its tables declare %d table elements, over the limit of %d (limits.table_elements)", elems, l.TableElements)
	case s.elemEntries > uint64(l.TableElements):
		return fmt.Sprintf("its element segments hold %d entries, over the limit of %d (limits.table_elements)", s.elemEntries, l.TableElements)
	case s.globals > uint64(l.Globals):
		return fmt.Sprintf("it declares %d globals, over the limit of %d (limits.globals)", s.globals, l.Globals)
	case s.memDefined && s.memPages > uint64(l.MemoryPages):
		return fmt.Sprintf("its initial memory is %d pages, over the limit of %d", s.memPages, l.MemoryPages)
	case s.dataBytes > uint64(l.MemoryPages)*65536:
		return fmt.Sprintf("its data segments hold %d bytes, over the memory limit of %d pages (%d bytes)", s.dataBytes, l.MemoryPages, uint64(l.MemoryPages)*65536)
	}
	return ""
}

// boundTables returns wasm with each defined table's maximum lowered so
// that all tables together can hold at most limit elements: what the
// minima leave is shared equally among the tables that may grow. It
// returns wasm itself when no maximum needs lowering. check has passed
// (Σ min ≤ limit).
func (s *moduleShape) boundTables(wasm []byte, limit uint64) []byte {
	var mins, growable uint64
	for _, t := range s.tables {
		mins += t.min
		if !t.hasMax || t.max > t.min {
			growable++
		}
	}
	if growable == 0 {
		return wasm
	}
	share := (limit - mins) / growable
	changed := false
	var body []byte
	var defined uint64
	for i := range s.tables {
		t := &s.tables[i]
		if t.imported {
			continue
		}
		defined++
		if bound := t.min + share; !t.hasMax || t.max > bound {
			t.max, t.hasMax, changed = bound, true, true
		}
		body = append(body, t.ref, 1)
		body = appendULEB(body, t.min)
		body = appendULEB(body, t.max)
	}
	if !changed {
		return wasm
	}
	body = append(appendULEB(nil, defined), body...)
	out := make([]byte, 0, len(wasm)+len(body))
	out = append(out, wasm[:s.tableStart]...)
	out = append(out, secTable)
	out = appendULEB(out, uint64(len(body)))
	out = append(out, body...)
	return append(out, wasm[s.tableEnd:]...)
}

func appendULEB(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
