package plugins

import (
	"errors"
	"fmt"
	"sort"
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
//	type       parameters and results of each      MaxTypeArity
//	code       functions; locals of each and of    MaxFunctions; MaxFunctionLocals,
//	           all together                       MaxModuleLocals
//
// Lowering a table's maximum is the one change Load makes to a module (the
// table section is re-encoded; the digest is still the original bytes'):
// wazero honours a table's maximum in table.grow, which then fails (-1) as
// the spec allows, so a module cannot grow its tables past the limit at
// run time. Anything the reader cannot measure is refused.

// Bounds on what wazero allocates to decode and validate a module, which
// it does before any compile (a cached one too): locals are allocated
// one by one (a 77-byte module declaring 2^32 locals in each of four
// functions asks for 32 GiB), and a type's results are compared at every
// branch to its label. They are far above what compilers emit (a Go
// guest: about 2,000 functions, at most a few hundred locals each).
// MaxFunctions also bounds a loaded module's compiled code, which lives
// in the host's memory outside any linear-memory limit: about 0.7–1.4 KB
// per small function, so 200,000 tiny functions in a 2 MB module held
// 130–280 MB of a server; at 50,000, a module holds at most about 70 MB
// besides what its code bytes compile to. MaxTypes bounds the type
// section the same way: wazero keeps about 110 bytes and an entry
// trampoline per type (a 3 MB module of a million types held 140 MB).
const (
	MaxFunctions      = 50_000
	MaxTypes          = 50_000
	MaxFunctionLocals = 50_000
	MaxModuleLocals   = 2_000_000
	MaxTypeArity      = 1_000
)

// MaxFunctionLookups bounds two products of a module's counts, each work
// wazero does once per function over a whole section, in the host's
// process at every load: its functions (imported and defined, at most
// MaxFunctions together) times its exports and local-name entries, which
// wazero scans to describe each function (a 720 KB module of 80,000
// imported functions and 160,000 local-name entries took 11 s of a
// core), and its defined functions times its types, imports and
// globals, which the compiler walks before compiling each function
// (50,000 empty functions of 50,000 types, 350 KB, took 21.6 s). The
// cost grows with the square of the module's size; at the bound it is
// about a second. A module with debug names for many functions (10,000
// or more) is refused by it: strip its local names (wasm-strip, or build
// without debug information). A Go guest is far below it (4,246
// functions: 25,476 and about 233,000).
const MaxFunctionLookups = 100_000_000

// What a host charges for a loaded module (HostOptions.Charge,
// MemoryCode). Before compiling, CodeEstimate: the module's own part on
// the Go heap (its decoded sections — wazero keeps custom sections and
// data segments whole — and what it keeps of each function and type:
// CodeBytesPerModule, the module's bytes, 3 more bytes per byte of code,
// 1 KiB per function, 128 bytes per type, 64 per element-segment entry,
// 160 per global) plus CodeBytesPerByte per byte of code for the machine
// code expected. Once compiled, the heap part plus the machine code wazero
// actually mapped: the size of a module does not bound what it compiles
// to (a 68 KB module whose br_tables' targets carry 200 values each
// compiled to 125 MB; ordinary code compiles to 6–45 bytes per byte — a
// 2.7 MB Go guest to 8 MB, 300 KB of i64.div_s to 12.5 MB).
const (
	CodeBytesPerModule   = 256 << 10
	CodeBytesPerByte     = 48
	CodeBytesPerFunction = 1 << 10
	CodeBytesPerElement  = 64
	CodeBytesPerGlobal   = 160
	CodeBytesPerType     = 128
)

// CodeEstimate is what a host charges for wasm's compiled code before it
// compiles it (HostOptions.Charge, MemoryCode; see CodeBytesPerModule).
// An error when the module's sections cannot be read (such a module is
// refused at load).
func CodeEstimate(wasm []byte) (int64, error) {
	s, err := readModule(wasm)
	if err != nil {
		return 0, err
	}
	return s.codeEstimate(), nil
}

// codeEstimate is CodeEstimate of the measured module.
func (s *moduleShape) codeEstimate() int64 {
	return s.heapEstimate() + int64(min(s.codeBytes, 1<<32))*CodeBytesPerByte
}

// heapEstimate is the module's own part of a loaded version beside its
// machine code (see CodeBytesPerModule). Counts past what Load accepts
// are cut to it (such modules are refused before anything is charged).
func (s *moduleShape) heapEstimate() int64 {
	f := min(s.functions, MaxFunctions)
	return CodeBytesPerModule + int64(min(s.size, 1<<32)) + 3*int64(min(s.codeBytes, 1<<32)) + int64(f)*CodeBytesPerFunction +
		int64(min(s.types, MaxTypes))*CodeBytesPerType +
		int64(min(s.elemEntries, 1<<32))*CodeBytesPerElement + int64(min(s.globals, 1<<32))*CodeBytesPerGlobal
}

// instanceEstimate is what an idle instance of the module holds beside its
// linear memory, with tables at most tableElements elements in all:
// IdleInstanceOverhead, 8 bytes a table element, 48 bytes an element
// entry (each instance's copy of the segments), 160 bytes a global and 8
// a type.
func (s *moduleShape) instanceEstimate(tableElements uint64) int64 {
	return IdleInstanceOverhead + 8*int64(min(tableElements, 1<<32)) + 48*int64(min(s.elemEntries, 1<<32)) +
		160*int64(min(s.globals, 1<<32)) + 8*int64(min(s.types, MaxTypes))
}

// Wasm section ids.
const (
	secCustom  = 0
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
	functions            uint64 // bodies in the code section
	importedFuncs        uint64 // functions the import section names
	imports              uint64 // entries of the import section
	exports              uint64 // entries of the export section
	localNames           uint64 // entries of the "name" section's local names
	codeBytes            uint64 // the code section's size
	types                uint64 // entries of the type section
	size                 uint64 // the module's bytes
	maxLocals, locals    uint64 // the most of one function; all together
	maxArity             uint64 // the most parameters or results of a type
}

var errMalformed = errors.New("malformed module")

// errOverclaim: a module declares a vector longer, or a name or string
// of more bytes, than the bytes after it can hold. wazero allocates a
// vector or a string whole from its declared length before reading it
// (a 270-byte module whose "name" section claims 2^31 function names
// asks it for 48 GiB, and the process dies; a module name claiming
// 2^32 - 16 bytes takes 4 GiB at every compile), so the host refuses
// such a module before wazero sees it. Every length wazero reads this
// way is checked against the bytes left in its section (or subsection),
// each entry counted at the fewest bytes it can be encoded in: what
// wazero then allocates grows with the module's size, never with a
// number written in it.
var errOverclaim = errors.New("the module declares more than its bytes hold")

// errUnreadForm: a construct written in a form wazero reads with more
// bytes than the host reads it with: a reference type or a heap type
// other than funcref (0x70) and externref (0x6f) where wazero also reads
// a typed reference's heap type or a type index (a LEB128), a table
// written with an initializer (0x40 0x00), an element kind other than
// 0x00. Past such a point the two readings part, and wazero would read a
// vector's length from bytes the host read as something else (a 31-byte
// module whose ref.null names heap type 0x8b had wazero allocate 96 GiB
// of element entries). So the host refuses the module instead of reading
// on.
var errUnreadForm = errors.New("a form the host does not read")

// errTypedRefs: a value type is a typed function reference (0x63 or 0x64,
// then a heap type), which the host does not support; wazero reads its
// heap type as a LEB128 of its own bounds, so the host reads no further
// (see errUnreadForm).
var errTypedRefs = errors.New("it uses typed function references (value types 0x63, 0x64), which the host does not support")

// wasmReader reads a section's body; every read is bounded by its length,
// and a read past the end sets err (errMalformed, or the first more
// precise error).
type wasmReader struct {
	b   []byte
	err error
}

func (r *wasmReader) fail() {
	if r.err == nil {
		r.err = errMalformed
	}
	r.b = nil
}

// overclaim fails the read with errOverclaim and what was declared.
func (r *wasmReader) overclaim(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{errOverclaim}, args...)...)
	}
	r.b = nil
}

// count reads a vector's length: n entries of at least least bytes
// each must fit in the bytes left, or the read fails with errOverclaim
// naming what (see errOverclaim).
func (r *wasmReader) count(least uint64, what string) uint64 {
	n := r.uleb()
	if r.err == nil && n > uint64(len(r.b))/least {
		r.overclaim("%d %s in %d bytes", n, what, len(r.b))
		return 0
	}
	return n
}

// bytes reads a length and that many bytes (a name, a string); a length
// over the bytes left fails with errOverclaim naming what.
func (r *wasmReader) bytes(what string) []byte {
	n := r.uleb()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.overclaim("%s of %d bytes in %d", what, n, len(r.b))
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// unread fails the read with errUnreadForm and what was read.
func (r *wasmReader) unread(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{errUnreadForm}, args...)...)
	}
	r.b = nil
}

// refType reads a reference type of one byte, funcref or externref (see
// errUnreadForm).
func (r *wasmReader) refType(what string) byte {
	c := r.u8()
	if r.err == nil && c != 0x70 && c != 0x6f {
		r.unread("%s %#x (the host reads funcref 0x70 and externref 0x6f)", what, c)
	}
	return c
}

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
			r.refType("ref.null of heap type")
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		case 0xfd: // v128.const: wazero reads one byte, 0x0c, and 16 bytes
			if sub := r.u8(); r.err == nil && sub != 0x0c {
				r.unread("a vector instruction %#x in a constant expression", sub)
			}
			r.skip(16)
		default:
			r.fail()
		}
	}
}

// readModule measures a module before wazero decodes it, and refuses
// (errOverclaim) one that declares a vector or a string longer than its
// bytes (see errOverclaim): every section wazero decodes is read here,
// the custom section "name" too, each construct with the bytes wazero
// reads it with. A construct wazero would read with other bytes than the
// host is refused (errUnreadForm, errTypedRefs), as is a malformed or
// unknown one: an error, never a guess.
func readModule(wasm []byte) (moduleShape, error) {
	s := moduleShape{size: uint64(len(wasm))}
	if len(wasm) < 8 {
		return s, errMalformed
	}
	off := 8 // magic and version
	for off < len(wasm) {
		start := off
		r := wasmReader{b: wasm[off+1:]}
		id := wasm[off]
		size := r.uleb()
		if r.err != nil {
			return s, errMalformed
		}
		if size > uint64(len(r.b)) {
			if id == secCustom { // wazero may copy a custom section whole
				return s, fmt.Errorf("%w: a custom section of %d bytes in %d", errOverclaim, size, len(r.b))
			}
			return s, errMalformed
		}
		body := r.b[:size]
		off = len(wasm) - len(r.b) + int(size)
		sec := wasmReader{b: body}
		switch id {
		case secCustom:
			if string(sec.bytes("a custom section's name")) == "name" {
				s.localNames += sec.nameSection()
			} else {
				sec.b = nil // wazero copies it whole, at most the module's size
			}
		case secImport:
			n := sec.count(4, "imports")
			s.imports += n
			for ; n > 0 && sec.err == nil; n-- {
				sec.bytes("an import's module name")
				sec.bytes("an import's name")
				switch sec.u8() {
				case 0x00: // function
					sec.uleb()
					s.importedFuncs++
				case 0x01: // table
					ref := sec.refType("an imported table of reference type")
					min, max, hasMax := sec.limits()
					s.tables = append(s.tables, tableDecl{ref: ref, min: min, max: max, hasMax: hasMax, imported: true})
				case 0x02: // memory
					sec.limits()
				case 0x03: // global: a value type, a mutability
					sec.valType()
					sec.u8()
					s.globals++
				default:
					sec.fail()
				}
			}
		case secFunction:
			for n := sec.count(1, "functions"); n > 0 && sec.err == nil; n-- {
				sec.uleb()
			}
		case secTable:
			s.tableStart, s.tableEnd = start, off
			for n := sec.count(3, "tables"); n > 0 && sec.err == nil; n-- {
				ref := sec.refType("a table of reference type")
				min, max, hasMax := sec.limits()
				s.tables = append(s.tables, tableDecl{ref: ref, min: min, max: max, hasMax: hasMax})
			}
		case secMemory:
			for n := sec.count(2, "memories"); n > 0 && sec.err == nil; n-- {
				min, _, _ := sec.limits()
				s.memDefined = true
				s.memPages = max(s.memPages, min)
			}
		case secGlobal:
			// Each global takes at least a type, a mutability, an
			// instruction and an end.
			n := sec.count(4, "globals")
			s.globals += n
			for ; n > 0 && sec.err == nil; n-- {
				sec.valType()
				sec.u8()
				sec.constExpr()
			}
		case secExport:
			n := sec.count(3, "exports")
			s.exports += n
			for ; n > 0 && sec.err == nil; n-- {
				sec.bytes("an export's name")
				sec.u8()
				sec.uleb()
			}
		case secElement:
			for n := sec.count(2, "element segments"); n > 0 && sec.err == nil; n-- {
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
				switch {
				case flags&3 == 0: // neither
				case flags&4 == 0: // an element kind: funcref
					if k := sec.u8(); sec.err == nil && k != 0 {
						sec.unread("an element kind %#x", k)
					}
				default:
					sec.refType("an element segment of reference type")
				}
				count := sec.count(1, "element entries")
				s.elemEntries += count
				for i := uint64(0); i < count && sec.err == nil; i++ {
					if flags&4 != 0 {
						sec.constExpr()
					} else {
						sec.uleb()
					}
				}
			}
		case secType:
			// Read whole even past MaxTypes (check refuses it): Inspect
			// gives the module to wazero, which allocates each type's
			// parameters and results from their declared counts.
			s.types = sec.count(3, "function types")
			for n := s.types; n > 0 && sec.err == nil; n-- {
				if sec.u8() != 0x60 {
					sec.fail()
					break
				}
				for _, what := range []string{"parameters", "results"} {
					k := sec.count(1, what)
					s.maxArity = max(s.maxArity, k)
					for ; k > 0 && sec.err == nil; k-- {
						sec.valType()
					}
				}
			}
		case secCode:
			s.codeBytes = size
			n := sec.count(2, "function bodies")
			s.functions = n
			for ; n > 0 && sec.err == nil; n-- {
				body := wasmReader{b: sec.bytes("a function body")}
				var locals uint64
				for d := body.count(2, "runs of locals"); d > 0 && body.err == nil; d-- {
					locals = addLocals(locals, body.uleb())
					body.valType()
				}
				if body.err != nil && sec.err == nil {
					sec.err = body.err
				}
				s.maxLocals = max(s.maxLocals, locals)
				s.locals = addLocals(s.locals, locals)
			}
		case secData:
			for n := sec.count(2, "data segments"); n > 0 && sec.err == nil; n-- {
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
				if size > uint64(len(sec.b)) {
					sec.overclaim("a data segment of %d bytes in %d", size, len(sec.b))
				}
				sec.skip(size)
			}
		case secTag:
			sec.count(2, "tags")
			sec.b = nil
		default:
			sec.b = nil
		}
		if sec.err != nil {
			return s, fmt.Errorf("section %d: %w", id, sec.err)
		}
		if len(sec.b) != 0 {
			return s, fmt.Errorf("%w: section %d", errMalformed, id)
		}
	}
	return s, nil
}

// The subsections of the custom section "name" that wazero decodes
// (https://webassembly.github.io/spec/core/appendix/custom.html#name-section).
const (
	nameModule    = 0
	nameFunctions = 1
	nameLocals    = 2
)

// nameSection reads the custom section "name" (after its name) as wazero
// decodes it, refusing a count or a length over the bytes left in its
// subsection (errOverclaim). wazero reads a known subsection's entries
// without regard to its declared size, so each must end exactly where
// its size says.
func (r *wasmReader) nameSection() (localNames uint64) {
	for len(r.b) > 0 && r.err == nil {
		id := r.u8()
		sub := wasmReader{b: r.bytes("a name subsection")}
		if r.err != nil {
			return
		}
		switch id {
		case nameModule:
			sub.bytes("the module name")
		case nameFunctions:
			sub.nameMap("function names")
		case nameLocals:
			n := sub.count(2, "functions' local names")
			localNames += n
			for ; n > 0 && sub.err == nil; n-- {
				sub.uleb() // function index
				sub.nameMap("local names")
			}
		default:
			sub.b = nil // skipped
		}
		if sub.err == nil && len(sub.b) != 0 {
			sub.fail()
		}
		if sub.err != nil {
			r.err = fmt.Errorf("custom section \"name\", subsection %d: %w", id, sub.err)
			r.b = nil
		}
	}
	return localNames
}

// nameMap reads a name map: a count, then an index and a name each.
func (r *wasmReader) nameMap(what string) {
	for n := r.count(2, what); n > 0 && r.err == nil; n-- {
		r.uleb()
		r.bytes("a name")
	}
}

// valType reads a value type of one byte; a typed function reference
// (0x63 or 0x64, then a heap type) fails the read with errTypedRefs.
func (r *wasmReader) valType() {
	if c := r.u8(); r.err == nil && (c == 0x63 || c == 0x64) {
		r.err = errTypedRefs
		r.b = nil
	}
}

// addLocals adds counts of locals, saturating at 2^40 (no sum wraps).
func addLocals(a, b uint64) uint64 { return min(min(a, 1<<40)+min(b, 1<<40), 1<<40) }

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
	case s.decodeBounds() != "":
		return s.decodeBounds()
	case s.dataBytes > uint64(l.MemoryPages)*65536:
		return fmt.Sprintf("its data segments hold %d bytes, over the memory limit of %d pages (%d bytes)", s.dataBytes, l.MemoryPages, uint64(l.MemoryPages)*65536)
	}
	return ""
}

// decodeBounds returns why wazero's decoding or validation of the module
// would be over MaxTypes, MaxFunctions, MaxFunctionLocals,
// MaxModuleLocals or MaxTypeArity, or "".
func (s *moduleShape) decodeBounds() string {
	switch {
	case s.types > MaxTypes:
		return fmt.Sprintf("it declares %d function types, over the limit of %d", s.types, MaxTypes)
	case s.functions > MaxFunctions:
		return fmt.Sprintf("it defines %d functions, over the limit of %d", s.functions, MaxFunctions)
	case s.maxLocals > MaxFunctionLocals:
		return fmt.Sprintf("a function declares %d locals, over the limit of %d", s.maxLocals, MaxFunctionLocals)
	case s.locals > MaxModuleLocals:
		return fmt.Sprintf("its functions declare %d locals together, over the limit of %d", s.locals, MaxModuleLocals)
	case s.maxArity > MaxTypeArity:
		return fmt.Sprintf("a function type has %d parameters or results, over the limit of %d", s.maxArity, MaxTypeArity)
	case s.importedFuncs+s.functions > MaxFunctions:
		return fmt.Sprintf("it imports and defines %d functions, over the limit of %d", s.importedFuncs+s.functions, MaxFunctions)
	case s.functions*(s.types+s.imports+s.globals) > MaxFunctionLookups:
		return fmt.Sprintf("its %d functions and its %d types, %d imports and %d globals (each function is compiled with each in view) make %d lookups, over the limit of %d: fewer functions, or fewer types, imports and globals",
			s.functions, s.types, s.imports, s.globals, s.functions*(s.types+s.imports+s.globals), MaxFunctionLookups)
	case (s.importedFuncs+s.functions)*min(s.exports+s.localNames, 1<<40) > MaxFunctionLookups:
		return fmt.Sprintf("its %d functions and its %d exports and %d local-name entries (each function is looked up in each) make %d lookups, over the limit of %d: strip the module's local names (wasm-strip, or build without debug information) or export fewer functions",
			s.importedFuncs+s.functions, s.exports, s.localNames, (s.importedFuncs+s.functions)*min(s.exports+s.localNames, 1<<40), MaxFunctionLookups)
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

// The call-stack counters. wazero runs a call on a stack it allocates on
// the Go heap and grows by doubling, up to a ceiling of its own (400 MB)
// that no option lowers; the stack stays allocated with the function
// handle the host keeps for the next call. A frame's size is set by
// wazero's compiler: every value the function keeps across a call takes
// a slot of its own (8 or 16 bytes; slots are not shared), so a frame
// grows with the function's code, not only with its locals — measured
// with wazero 1.12 on amd64: 16 bytes for a frame that keeps nothing,
// about 8 KB for one keeping 600 i64 locals, about 9 KB for a function
// that keeps 1,000 successive values of one local across 1,000 calls.
//
// So Load adds three mutable i32 globals to the module, exported under
// the names below, and every defined function, on entry:
//
//   - increments the depth, trapping above Limits.CallDepth;
//   - adds its frame cost (frameCost) to the stack, trapping above
//     Limits.StackBytes;
//   - raises the peak to the stack if it is higher;
//
// and undoes the first two on exit. The body runs in a block of the
// function's result type, every return becomes a branch out of that
// block, and a tail call undoes them first. A trap with the depth or the
// stack above its limit is a FaultStack; the host reads the peak after a
// call (see Plugin.call). The rewrite changes only code, types, globals
// and exports, each by appending, so no index the module uses moves; Load
// validates the module as written first, so its code cannot name the
// counters.

// The exported names of the globals Load adds.
const (
	depthExport = "batpak.call_depth"
	stackExport = "batpak.stack_bytes"
	peakExport  = "batpak.stack_peak"
)

// frameCost is what a call of a function charges against
// Limits.StackBytes: 8 bytes × (4 + parameters + results + locals + the
// size in bytes of its body as written, locals declarations and code).
// Each byte of code defines at most one value, so this bounds the slots
// of a frame as wazero's compiler lays it out, with a margin (2 to 10
// times what the measured frames above use); the 4 are the return
// address, frame pointer and stack check. It saturates at limit+1, so a
// function that alone is over the limit faults when called.
func frameCost(paramsResults, locals, bodySize uint64, limit uint32) uint32 {
	slots := uint64(4)
	for _, n := range []uint64{paramsResults, locals, bodySize} {
		if slots += n; slots < n || slots > uint64(limit)/8+1 {
			return limit + 1
		}
	}
	return uint32(min(8*slots, uint64(limit)+1))
}

// More wasm section ids.
const (
	secType     = 1
	secFunction = 3
	secExport   = 7
	secCode     = 10
	secTag      = 13
)

// sectionOrder is each known section's place in a module.
var sectionOrder = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

// funcType is one function type, as raw value types.
type funcType struct{ params, results []byte }

// addStackCounters returns wasm with the call-stack counters (see above), or
// an error for a construct it cannot rewrite.
func addStackCounters(wasm []byte, l Limits) ([]byte, error) {
	type section struct {
		id   byte
		body []byte
	}
	var secs []section
	for off := 8; off < len(wasm); {
		r := wasmReader{b: wasm[off+1:]}
		size := r.uleb()
		if r.err != nil || size > uint64(len(r.b)) {
			return nil, errMalformed
		}
		secs = append(secs, section{wasm[off], r.b[:size]})
		off = len(wasm) - len(r.b) + int(size)
	}
	origSections := len(secs)
	find := func(id byte) int {
		for i, s := range secs {
			if s.id == id {
				return i
			}
		}
		return -1
	}
	// Types, imported functions and globals, and each defined function's
	// type.
	var types []funcType
	if i := find(secType); i >= 0 {
		r := wasmReader{b: secs[i].body}
		for n := r.uleb(); n > 0 && r.err == nil; n-- {
			if r.u8() != 0x60 {
				return nil, fmt.Errorf("%w: a type that is not a function type", errMalformed)
			}
			var t funcType
			t.params = r.valTypes()
			t.results = r.valTypes()
			types = append(types, t)
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	var importedGlobals uint64
	if i := find(secImport); i >= 0 {
		r := wasmReader{b: secs[i].body}
		for n := r.uleb(); n > 0 && r.err == nil; n-- {
			r.skip(r.uleb())
			r.skip(r.uleb())
			switch r.u8() {
			case 0x00:
				r.uleb()
			case 0x01:
				r.u8()
				r.limits()
			case 0x02:
				r.limits()
			case 0x03:
				r.u8()
				r.u8()
				importedGlobals++
			default:
				r.fail()
			}
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	var funcTypes []uint64
	if i := find(secFunction); i >= 0 {
		r := wasmReader{b: secs[i].body}
		for n := r.uleb(); n > 0 && r.err == nil; n-- {
			funcTypes = append(funcTypes, r.uleb())
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	// The new globals: indexes after every existing one (g: the depth,
	// g+1: the stack, g+2: the peak).
	g := importedGlobals
	gi := find(secGlobal)
	if gi >= 0 {
		r := wasmReader{b: secs[gi].body}
		g += r.uleb()
	}
	// Block types for the wrapper blocks: a result-only type for functions
	// with several results (appended when the module has none).
	blockType := func(results []byte) []byte {
		switch len(results) {
		case 0:
			return []byte{0x40}
		case 1:
			return results
		}
		for i, t := range types {
			if len(t.params) == 0 && string(t.results) == string(results) {
				return appendSLEB(nil, int64(i))
			}
		}
		types = append(types, funcType{results: results})
		return appendSLEB(nil, int64(len(types)-1))
	}
	ci := find(secCode)
	if ci >= 0 {
		r := wasmReader{b: secs[ci].body}
		n := r.uleb()
		if r.err != nil || n != uint64(len(funcTypes)) {
			return nil, errMalformed
		}
		code := appendULEB(nil, n)
		for i := uint64(0); i < n; i++ {
			size := r.uleb()
			if r.err != nil || size > uint64(len(r.b)) {
				return nil, errMalformed
			}
			body := r.b[:size]
			r.b = r.b[size:]
			if funcTypes[i] >= uint64(len(types)) {
				return nil, errMalformed
			}
			ft := types[funcTypes[i]]
			nb, err := countStack(body, g, l, uint64(len(ft.params)+len(ft.results)), blockType(ft.results))
			if err != nil {
				return nil, fmt.Errorf("function %d: %w", i, err)
			}
			code = appendULEB(code, uint64(len(nb)))
			code = append(code, nb...)
		}
		secs[ci].body = code
	}
	// The type section (perhaps with new block types).
	if len(types) > 0 {
		body := appendULEB(nil, uint64(len(types)))
		for _, t := range types {
			body = append(body, 0x60)
			body = append(appendULEB(body, uint64(len(t.params))), t.params...)
			body = append(appendULEB(body, uint64(len(t.results))), t.results...)
		}
		if i := find(secType); i >= 0 {
			secs[i].body = body
		} else {
			secs = append(secs, section{secType, body})
		}
	}
	// The globals: (mut i32) = 0, three times.
	global := []byte{0x7f, 0x01, 0x41, 0x00, 0x0b}
	globals := append(append(append([]byte(nil), global...), global...), global...)
	if gi >= 0 {
		r := wasmReader{b: secs[gi].body}
		count := r.uleb()
		secs[gi].body = append(append(appendULEB(nil, count+3), r.b...), globals...)
	} else {
		secs = append(secs, section{secGlobal, append([]byte{3}, globals...)})
	}
	// The exports.
	var exports []byte
	for i, name := range []string{depthExport, stackExport, peakExport} {
		exports = append(appendULEB(exports, uint64(len(name))), name...)
		exports = appendULEB(append(exports, 0x03), g+uint64(i))
	}
	if i := find(secExport); i >= 0 {
		r := wasmReader{b: secs[i].body}
		count := r.uleb()
		secs[i].body = append(append(appendULEB(nil, count+3), r.b...), exports...)
	} else {
		secs = append(secs, section{secExport, append([]byte{3}, exports...)})
	}
	// Reassemble in wasm's section order; a custom section stays after the
	// known section it followed.
	type keyed struct {
		order, custom, i int
		s                section
	}
	ks := make([]keyed, len(secs))
	prev := 0
	for i, sec := range secs {
		if sec.id == 0 {
			ks[i] = keyed{prev, 1, i, sec}
			continue
		}
		o, ok := sectionOrder[sec.id]
		if !ok {
			return nil, fmt.Errorf("%w: unknown section %d", errMalformed, sec.id)
		}
		if i < origSections {
			prev = o
		}
		ks[i] = keyed{o, 0, i, sec}
	}
	sort.SliceStable(ks, func(a, b int) bool {
		x, y := ks[a], ks[b]
		if x.order != y.order {
			return x.order < y.order
		}
		return x.custom < y.custom
	})
	out := append([]byte(nil), wasm[:8]...)
	for _, k := range ks {
		out = append(out, k.s.id)
		out = appendULEB(out, uint64(len(k.s.body)))
		out = append(out, k.s.body...)
	}
	return out, nil
}

// valTypes reads a vector of value types (numeric, vector or reference).
func (r *wasmReader) valTypes() []byte {
	n := r.uleb()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	for _, t := range out {
		switch t {
		case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
		default:
			r.fail()
			return nil
		}
	}
	r.b = r.b[n:]
	return out
}

func appendSLEB(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// countStack rewrites one function body (locals and code) to count its
// call depth in global g, its frame cost in global g+1 and the peak of
// g+1 in g+2 (see addStackCounters); paramsResults is the function type's
// parameters and results together, bt is the wrapper block's type.
func countStack(body []byte, g uint64, l Limits, paramsResults uint64, bt []byte) ([]byte, error) {
	r := wasmReader{b: body}
	var locals uint64
	for n := r.uleb(); n > 0 && r.err == nil; n-- {
		locals = addLocals(locals, r.uleb())
		r.u8()
	}
	if r.err != nil {
		return nil, r.err
	}
	cost := frameCost(paramsResults, locals, uint64(len(body)), l.StackBytes)
	out := make([]byte, 0, len(body)+64)
	out = append(out, body[:len(body)-len(r.b)]...) // the locals
	gd, gs, gp := appendULEB(nil, g), appendULEB(nil, g+1), appendULEB(nil, g+2)
	get := func(b, g []byte) []byte { return append(append(b, 0x23), g...) }
	set := func(b, g []byte) []byte { return append(append(b, 0x24), g...) }
	i32 := func(b []byte, v uint32) []byte { return appendSLEB(append(b, 0x41), int64(int32(v))) }
	trapAbove := func(b, g []byte, limit uint32) []byte { // if g > limit: unreachable
		return append(i32(get(b, g), limit), 0x4b, 0x04, 0x40, 0x00, 0x0b)
	}
	// depth += 1; trap above the limit; stack += cost; trap above the
	// limit; peak = max(peak, stack); block bt
	enter := set(append(i32(get(nil, gd), 1), 0x6a), gd)
	enter = trapAbove(enter, gd, l.CallDepth)
	enter = set(append(i32(get(enter, gs), cost), 0x6a), gs)
	enter = trapAbove(enter, gs, l.StackBytes)
	enter = append(get(get(enter, gs), gp), 0x4b, 0x04, 0x40)
	enter = append(set(get(enter, gs), gp), 0x0b)
	enter = append(append(enter, 0x02), bt...)
	// depth -= 1; stack -= cost
	leave := set(append(i32(get(nil, gd), 1), 0x6b), gd)
	leave = set(append(i32(get(leave, gs), cost), 0x6b), gs)
	out = append(out, enter...)
	depth := 0 // blocks open inside the wrapper
	for len(r.b) > 0 && r.err == nil {
		start := r.b
		op := r.u8()
		switch op {
		case 0x0f: // return: branch out of the wrapper block
			out = append(out, 0x0c)
			out = appendULEB(out, uint64(depth))
			continue
		case 0x12, 0x13: // return_call, return_call_indirect: leave first
			out = append(out, leave...)
		}
		switch op {
		case 0x02, 0x03, 0x04: // block, loop, if
			depth++
			r.blockType()
		case 0x0b: // end
			depth--
		case 0x0c, 0x0d, 0x10, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xd2:
			r.uleb()
		case 0x0e: // br_table
			for n := r.uleb(); n > 0 && r.err == nil; n-- {
				r.uleb()
			}
			r.uleb()
		case 0x11, 0x13: // call_indirect: type, table
			r.uleb()
			r.uleb()
		case 0x1c: // select t*
			r.valTypes()
		case 0x3f, 0x40: // memory.size, memory.grow
			r.uleb()
		case 0x41, 0x42:
			r.sleb()
		case 0x43:
			r.skip(4)
		case 0x44:
			r.skip(8)
		case 0xd0: // ref.null
			r.u8()
		case 0xfc:
			switch sub := r.uleb(); {
			case sub <= 7:
			case sub == 8, sub == 12, sub == 14: // memory.init, table.init, table.copy
				r.uleb()
				r.uleb()
			case sub == 10: // memory.copy
				r.uleb()
				r.uleb()
			case sub == 9, sub == 11, sub == 13, sub >= 15 && sub <= 17:
				r.uleb()
			default:
				r.fail()
			}
		case 0xfd:
			switch sub := r.uleb(); {
			case sub <= 11, sub == 92, sub == 93:
				r.memarg()
			case sub == 12, sub == 13:
				r.skip(16)
			case sub >= 21 && sub <= 34:
				r.u8()
			case sub >= 84 && sub <= 91:
				r.memarg()
				r.u8()
			}
		case 0xfe:
			if r.uleb() == 0x03 {
				r.u8()
			} else {
				r.memarg()
			}
		default:
			switch {
			case op >= 0x28 && op <= 0x3e: // loads and stores
				r.memarg()
			case op == 0x00, op == 0x01, op == 0x05, op == 0x1a, op == 0x1b, op == 0xd1,
				op >= 0x45 && op <= 0xc4:
			default:
				return nil, fmt.Errorf("%w: opcode %#x", errUnsupported, op)
			}
		}
		if r.err != nil {
			break
		}
		if depth < 0 { // the body's own end, which now closes the wrapper
			out = append(out, start[:len(start)-len(r.b)]...)
			out = append(out, leave...)
			out = append(out, 0x0b)
			if len(r.b) != 0 {
				return nil, errMalformed
			}
			return out, nil
		}
		out = append(out, start[:len(start)-len(r.b)]...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return nil, errMalformed
}

var errUnsupported = errors.New("an instruction the host cannot instrument")

func (r *wasmReader) memarg() {
	if r.uleb()&0x40 != 0 { // a memory index follows
		r.uleb()
	}
	r.uleb()
}

func (r *wasmReader) blockType() {
	if len(r.b) > 0 && (r.b[0] == 0x40 || r.b[0] >= 0x6f && r.b[0] <= 0x7f) {
		r.u8()
		return
	}
	r.sleb() // a type index
}
