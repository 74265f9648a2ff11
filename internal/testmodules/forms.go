package testmodules

// Modules that wazero 1.12's decoder reads with other byte lengths than a
// reader taking each of their reference types, heap types and value types
// for one byte. Past that point the two readings part: wazero reads a
// vector's or a string's length from bytes such a reader read as
// something else (and never checked against the bytes left), and
// allocates it whole. Each module is well formed to a one-byte reader;
// those named "bomb" have wazero ask for gigabytes.

var header = []byte{0, 'a', 's', 'm', 1, 0, 0, 0}

// withMemory is header and a memory section of one page.
func withMemory() []byte { return WithSection(header, 5, []byte{1, 0, 1}) }

// RefNullElementBomb: one active element segment (flags 0) whose offset is
// "ref.null 0x8b; end". wazero reads a heap type other than funcref,
// externref or exnref as a LEB128 type index, 0x8b 0x0b: then the
// one-byte reader's entry count (0x0b) is wazero's end, and its first
// entry (ff ff ff ff 0f, a function index) wazero's vector length: 2^32 - 1
// entries, 96 GiB.
func RefNullElementBomb() []byte {
	body := []byte{1, 0x00, 0xd0, 0x8b, 0x0b, 0x0b, 0xff, 0xff, 0xff, 0xff, 0x0f}
	body = append(body, make([]byte, 10)...) // ten more entries: function 0
	return WithSection(withMemory(), 9, body)
}

// RefNullDataBomb: the same offset in a data segment: the one-byte
// reader's size (0x0b) is wazero's end, its data wazero's size: 4 GiB.
func RefNullDataBomb() []byte {
	body := []byte{1, 0x00, 0xd0, 0x8b, 0x0b, 0x0b, 0xff, 0xff, 0xff, 0xff, 0x0f}
	body = append(body, make([]byte, 6)...)
	return WithSection(withMemory(), 11, body)
}

// RefNullExnref: a global initialised by "ref.null exnref" (0x69), which
// wazero reads as one byte, like funcref and externref.
func RefNullExnref() []byte {
	return WithSection(withMemory(), 6, []byte{1, 0x6f, 0x00, 0xd0, 0x69, 0x0b})
}

// ElementRefTypeBomb: a passive element segment (flags 5) of reference
// type 0x63 0x70 ((ref null func) to wazero, whose heap type is a LEB128).
// The one-byte reader reads 0x70 as 112 entries; wazero reads the count
// from the first entry, "ref.func 2^28 - 1" (d2 ff ff ff ff 0f): about
// 2^32 entries.
func ElementRefTypeBomb() []byte {
	body := []byte{1, 0x05, 0x63, 0x70}
	body = append(body, 0xd2, 0xff, 0xff, 0xff, 0x0f, 0x0b)
	for i := 1; i < 0x70; i++ {
		body = append(body, 0xd2, 0x00, 0x0b) // ref.func 0
	}
	return WithSection(withMemory(), 9, body)
}

// ElementKind: a passive segment (flags 1) of element kind 0x01 (wazero
// reads one byte and refuses all but 0x00).
func ElementKind() []byte {
	return WithSection(withMemory(), 9, []byte{1, 0x01, 0x01, 0x00})
}

// ImportedGlobalBomb: an imported global of value type 0x63 ("ref null",
// then a heap type wazero reads as a LEB128: 80 86 00), then the
// mutability 0x01 from the one-byte reader's second import, whose next
// bytes are wazero's second import's module name's length: 2^32 - 1
// bytes, 4 GiB.
func ImportedGlobalBomb() []byte {
	body := []byte{2, 1, 'a', 1, 'b', 0x03, 0x63, 0x80}
	body = append(body, 0x86, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f) // a module name of 6 bytes
	body = append(body, 1, 'c', 0x00, 0x00)                             // "c", a function of type 0
	return WithSection(header, 2, body)
}

// ImportedTableBomb: an imported table of reference type 0x63 0x00 ((ref
// null 0) to wazero; to a one-byte reader 0x63, then limits 0x00 0x01).
// wazero's limits are then 01 07 7f (min 7, max 127) from the one-byte
// reader's second import, and its second import's module name's length
// is that import's name's bytes ff ff ff ff 0f: 4 GiB.
func ImportedTableBomb() []byte {
	body := []byte{2, 1, 'a', 1, 'b', 0x01, 0x63, 0x00, 0x01}
	body = append(body, 7, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00) // a module name of 7 bytes
	body = append(body, 1, 'c', 0x00, 0x00)                          // "c", a function of type 0
	return WithSection(header, 2, body)
}

// ImportedTableWithInit: an imported table written with an initializer
// (0x40 0x00, a reference type, limits, a constant expression), which
// wazero reads and a one-byte reader takes for reference type 0x40.
func ImportedTableWithInit() []byte {
	return WithSection(header, 2, []byte{1, 1, 'a', 1, 'b', 0x01, 0x40, 0x00, 0x70, 0x00, 0x01, 0xd0, 0x70, 0x0b})
}

// TypedRefParam: a function type whose parameter is (ref null func), 0x63
// 0x70.
func TypedRefParam() []byte {
	return WithSection(header, 1, []byte{1, 0x60, 1, 0x63, 0x70, 0})
}

// ReadDifferently is every module above by name.
func ReadDifferently() map[string][]byte {
	return map[string][]byte{
		"ref.null in an element offset": RefNullElementBomb(),
		"ref.null in a data offset":     RefNullDataBomb(),
		"ref.null exnref":               RefNullExnref(),
		"an element reference type":     ElementRefTypeBomb(),
		"an element kind":               ElementKind(),
		"an imported global's type":     ImportedGlobalBomb(),
		"an imported table's type":      ImportedTableBomb(),
		"an imported table with init":   ImportedTableWithInit(),
		"a typed reference parameter":   TypedRefParam(),
	}
}

// Tables returns a module of n funcref tables of min elements each and a
// function, exported as batpak_abi_version, answering 1: each table is
// allocated on the host's heap when the module is instantiated (8 bytes
// an element; 64 tables of 2^27 take 64 GiB).
func Tables(n int, min uint64) []byte {
	var tables []byte
	tables = uleb(tables, uint64(n))
	for range n {
		tables = uleb(append(tables, 0x70, 0x00), min)
	}
	return abiVersionModule(tables, []byte{0x41, 1})
}

// TableGrowth returns a module of one funcref table, empty and without a
// maximum, and a function, exported as batpak_abi_version, that grows it
// by by null references times times and then by one more, answering
// what that last table.grow answers: the table's size before it, or -1
// if it failed.
func TableGrowth(times int, by uint32) []byte {
	var code []byte
	for range times {
		code = append(code, 0xd0, 0x70, 0x41)                   // ref.null func; i32.const
		code = append(sleb(code, int64(by)), 0xfc, 15, 0, 0x1a) // table.grow 0; drop
	}
	code = append(code, 0xd0, 0x70, 0x41, 1, 0xfc, 15, 0) // ref.null func; i32.const 1; table.grow 0
	return abiVersionModule([]byte{1, 0x70, 0x00, 0x00}, code)
}

// abiVersionModule is a module of type () -> i32, a table section of
// tables (none if empty) and one function of that type, exported as
// batpak_abi_version, whose body is code (its end added).
func abiVersionModule(tables, code []byte) []byte {
	m := WithSection(header, 1, []byte{1, 0x60, 0, 1, 0x7f})
	m = WithSection(m, 3, []byte{1, 0})
	if len(tables) > 0 {
		m = WithSection(m, 4, tables)
	}
	name := "batpak_abi_version"
	m = WithSection(m, 7, append(append(uleb([]byte{1}, uint64(len(name))), name...), 0x00, 0x00))
	body := append(append([]byte{0}, code...), 0x0b)
	return WithSection(m, 10, append(uleb([]byte{1}, uint64(len(body))), body...))
}

func sleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
