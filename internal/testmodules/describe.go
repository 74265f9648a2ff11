package testmodules

import "strconv"

// ManyImportsAndLocalNames is a module importing imports functions and
// with entries local-name entries (each for function 0, naming nothing)
// in its "name" section: wazero looks each function up in each entry
// when it describes the module's functions.
func ManyImportsAndLocalNames(imports, entries int) []byte {
	m := WithSection(header, 1, []byte{1, 0x60, 1, 0x7f, 0})
	imp := ULEB(nil, uint64(imports))
	for range imports {
		imp = append(imp, 1, 'a', 0, 0, 0) // "a" "" func type 0
	}
	m = WithSection(m, 2, imp)
	m = WithSection(m, 5, []byte{1, 0, 1})
	m = WithSection(m, 7, []byte{1, 1, 'x', 0, 0})
	sub := ULEB(nil, uint64(entries))
	for range entries {
		sub = append(sub, 0, 0)
	}
	return WithSection(m, 0, Custom("name", NameSubsection(2, sub)))
}

// ManyImportsAndExports is a module importing n functions and exporting
// each under a name of its own: wazero looks each function up in each
// export when it describes the module's functions.
func ManyImportsAndExports(n int) []byte {
	m := WithSection(header, 1, []byte{1, 0x60, 0, 0})
	imp := ULEB(nil, uint64(n))
	for range n {
		imp = append(imp, 1, 'a', 0, 0, 0)
	}
	m = WithSection(m, 2, imp)
	m = WithSection(m, 5, []byte{1, 0, 1})
	exp := ULEB(nil, uint64(n))
	for i := range n {
		name := []byte(strconv.Itoa(i))
		exp = append(append(ULEB(exp, uint64(len(name))), name...), 0) // a function
		exp = ULEB(exp, uint64(i))
	}
	return WithSection(m, 7, exp)
}

// DWARF is a module with DWARF custom sections of units abbreviation
// tables and units units, unit i naming table i: debug/dwarf parses
// each table from its offset to the end, so what it holds grows with the
// square of units.
func DWARF(units int) []byte {
	var abbrev []byte
	offs := make([]uint32, 0, units)
	for j := range units {
		offs = append(offs, uint32(len(abbrev)))
		abbrev = ULEB(abbrev, uint64(j+1))
		abbrev = append(abbrev, 0x11, 0, 0x03, 0x08, 0, 0)
	}
	abbrev = append(abbrev, 0)
	var info []byte
	for i := range units {
		o := offs[i]
		info = append(info, 7, 0, 0, 0, 4, 0, byte(o), byte(o>>8), byte(o>>16), byte(o>>24), 4)
	}
	m := WithSection(header, 5, []byte{1, 0, 1})
	m = WithSection(m, 0, Custom(".debug_abbrev", abbrev))
	return WithSection(m, 0, Custom(".debug_info", info))
}

// TypesAndFunctions is a module of types function types, all () -> (),
// and functions empty functions of the first: wazero's compiler walks
// every type before compiling each function.
func TypesAndFunctions(types, functions int) []byte {
	ts := ULEB(nil, uint64(types))
	for range types {
		ts = append(ts, 0x60, 0, 0)
	}
	m := WithSection(header, 1, ts)
	fs := ULEB(nil, uint64(functions))
	for range functions {
		fs = append(fs, 0)
	}
	m = WithSection(m, 3, fs)
	m = WithSection(m, 5, []byte{1, 0, 1})
	code := ULEB(nil, uint64(functions))
	for range functions {
		code = append(code, 2, 0, 0x0b) // a body of 2 bytes: no locals, end
	}
	return WithSection(m, 10, code)
}
