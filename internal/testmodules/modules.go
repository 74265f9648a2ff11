package testmodules

// SlowToCompile returns a valid module whose one function nests depth
// loops and reads locals i32 locals in the innermost one: wazero's
// optimizing compiler takes time and memory that grow faster than the
// square of its size (on a 2-core machine: depth 250 with 1,000 locals,
// 5 KB, about 0.4 s and 45 MB; 500 with 2,000, 2 s and 160 MB; 1,000 with
// 4,000, 19 KB, about 13 s). The interpreter compiles each in
// milliseconds.
func SlowToCompile(depth, locals int) []byte {
	var code []byte
	for range depth {
		code = append(code, 0x03, 0x40) // loop
	}
	for l := range locals {
		code = append(code, 0x20) // local.get l
		code = uleb(code, uint64(l))
		code = append(code, 0x1a) // drop
	}
	for range depth {
		code = append(code, 0x0b) // end
	}
	return module(uint64(locals), code)
}

// SlowToValidate returns a valid module whose one function, of type
// () -> (results × i32), pushes its results and ends with a br_table of
// targets targets, all to the function's end: wazero's validator compares
// the results at every target (results 30,000 with targets 300,000, 390
// KB: about 40 s in its interpreter, which validates a module as written).
func SlowToValidate(results, targets int) []byte {
	var code []byte
	for range results {
		code = append(code, 0x41, 0x00) // i32.const 0
	}
	code = append(code, 0x41, 0x00, 0x0e) // i32.const 0 (the index); br_table
	code = uleb(code, uint64(targets))
	for range targets + 1 { // the targets and the default: the function's end
		code = append(code, 0x00)
	}
	typ := append([]byte{0x60, 0}, uleb(nil, uint64(results))...)
	for range results {
		typ = append(typ, 0x7f)
	}
	return moduleOfType(typ, 0, code)
}

// ManyLocals returns a module of functions functions of type () -> (),
// each declaring locals i32 locals and doing nothing: wazero allocates
// every local when it decodes the module (2^32 - 1 in each of four
// functions: 32 GiB).
func ManyLocals(functions int, locals uint64) []byte {
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	m = append(m, 1, 4, 1, 0x60, 0, 0) // type section: () -> ()
	fsec := uleb(nil, uint64(functions))
	for range functions {
		fsec = append(fsec, 0)
	}
	m = append(uleb(append(m, 3), uint64(len(fsec))), fsec...)
	m = append(m, 5, 3, 1, 0, 1) // memory section: min 1 page
	body := append(uleb([]byte{1}, locals), 0x7f, 0x0b)
	sec := uleb(nil, uint64(functions))
	for range functions {
		sec = append(uleb(sec, uint64(len(body))), body...)
	}
	return append(uleb(append(m, 10), uint64(len(sec))), sec...)
}

// ManyTypes returns a valid module of one empty function and n function
// types () -> () (wazero keeps each type and compiles an entry trampoline
// for it).
func ManyTypes(n int) []byte {
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	tsec := uleb(nil, uint64(n))
	for range n {
		tsec = append(tsec, 0x60, 0, 0)
	}
	m = append(uleb(append(m, 1), uint64(len(tsec))), tsec...)
	m = append(m, 3, 2, 1, 0)    // function section: type 0
	m = append(m, 5, 3, 1, 0, 1) // memory section: min 1 page
	return append(m, 10, 4, 1, 2, 0, 0x0b)
}

// TypedRefLocals returns a module of one function declaring one local of
// type (ref null func) — a typed function reference, 0x63 0x70 — and
// then locals i32 locals: a reader taking every value type for one byte
// miscounts the locals.
func TypedRefLocals(locals uint64) []byte {
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	m = append(m, 1, 4, 1, 0x60, 0, 0) // type section: () -> ()
	m = append(m, 3, 2, 1, 0)          // function section: type 0
	m = append(m, 5, 3, 1, 0, 1)       // memory section: min 1 page
	body := append(uleb([]byte{2, 1, 0x63, 0x70}, locals), 0x7f, 0x0b)
	sec := append(uleb(uleb(nil, 1), uint64(len(body))), body...)
	return append(uleb(append(m, 10), uint64(len(sec))), sec...)
}

// LargeCode returns a valid module whose one function is n nops: a
// code section of about n bytes, which compiles to little (wazero drops
// the nops) but which a plugin host's estimate of compiled code
// (plugins.CodeEstimate) counts byte for byte.
func LargeCode(n int) []byte {
	code := make([]byte, n)
	for i := range code {
		code[i] = 0x01 // nop
	}
	return module(0, code)
}

// WideBranches returns a valid module whose one function, of type
// (i32) -> (), has sites blocks each leaving values i64 values, entered
// by a br_if and by a br_table of targets targets, all to the block's
// end: wazero's compiler copies the values on every edge, so the machine
// code grows as targets × values while the module grows as targets +
// values (one site of 100 values and 1,000 targets: about 3 KB of
// module, megabytes of code).
func WideBranches(sites, values, targets int) []byte {
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	// types: 0 (i32) -> (), 1 () -> (i64 × values)
	tsec := []byte{2, 0x60, 1, 0x7f, 0, 0x60, 0}
	tsec = uleb(tsec, uint64(values))
	for range values {
		tsec = append(tsec, 0x7e)
	}
	m = append(uleb(append(m, 1), uint64(len(tsec))), tsec...)
	m = append(m, 3, 2, 1, 0)    // function section: type 0
	m = append(m, 5, 3, 1, 0, 1) // memory section: min 1 page
	exports := []byte{2, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0, 3, 'r', 'u', 'n', 0, 0}
	m = append(m, 7, byte(len(exports)))
	m = append(m, exports...)
	body := []byte{0} // no locals
	loads := func(offset byte) {
		for range values {
			body = append(body, 0x20, 0, 0x29, 3, offset) // local.get 0; i64.load align=3 offset
		}
	}
	for range sites {
		body = append(body, 0x02, 0x01) // block (type 1)
		loads(0)
		body = append(body, 0x20, 0, 0x0d, 0) // local.get 0; br_if 0
		for range values {
			body = append(body, 0x1a) // drop
		}
		loads(8)
		body = append(body, 0x20, 0, 0x0e) // local.get 0; br_table
		body = uleb(body, uint64(targets))
		for range targets + 1 {
			body = append(body, 0)
		}
		body = append(body, 0x0b) // end of the block
		for range values {
			body = append(body, 0x1a)
		}
	}
	body = append(body, 0x0b)
	sec := uleb(uleb(nil, 1), uint64(len(body)))
	sec = append(sec, body...)
	return append(uleb(append(m, 10), uint64(len(sec))), sec...)
}

// PassiveElements returns a valid module with one function and a passive
// element segment of n entries naming it: wazero decodes each entry into
// the host's memory at every compile, a cached one too.
func PassiveElements(n int) []byte {
	m := module(0, nil)
	// The element section (9) goes after the export section and before
	// the code section (10): split m at the code section.
	code := len(m)
	for i := 8; i < len(m); {
		id := m[i]
		size, k := readULEB(m[i+1:])
		if id == 10 {
			code = i
			break
		}
		i += 1 + k + int(size)
	}
	seg := uleb(nil, 1)     // one segment
	seg = append(seg, 1, 0) // passive, elemkind funcref
	seg = uleb(seg, uint64(n))
	for range n {
		seg = append(seg, 0) // function 0
	}
	out := append([]byte(nil), m[:code]...)
	out = append(uleb(append(out, 9), uint64(len(seg))), seg...)
	return append(out, m[code:]...)
}

// readULEB reads an unsigned LEB128 number and how many bytes it took.
func readULEB(b []byte) (v uint64, n int) {
	for shift := 0; n < len(b); shift += 7 {
		c := b[n]
		n++
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
	}
	return v, n
}

// Small returns a valid module with one empty function: it compiles in
// microseconds.
func Small() []byte { return module(0, nil) }

// module is a module with one memory (1 page, exported as "memory") and
// one function of type () -> () with locals i32 locals and body code (its
// final end added), exported as "run".
func module(locals uint64, code []byte) []byte {
	return moduleOfType([]byte{0x60, 0, 0}, locals, code)
}

// moduleOfType is module with the function's type encoded as typ.
func moduleOfType(typ []byte, locals uint64, code []byte) []byte {
	m := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	tsec := append([]byte{1}, typ...)
	m = append(uleb(append(m, 1), uint64(len(tsec))), tsec...) // type section
	m = append(m, 3, 2, 1, 0)                                  // function section: type 0
	m = append(m, 5, 3, 1, 0, 1)                               // memory section: min 1 page
	exports := []byte{2, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0, 3, 'r', 'u', 'n', 0, 0}
	m = append(m, 7, byte(len(exports))) // export section
	m = append(m, exports...)
	var body []byte
	if locals > 0 {
		body = append(uleb(append(body, 1), locals), 0x7f) // one run of i32
	} else {
		body = append(body, 0)
	}
	body = append(append(body, code...), 0x0b)
	sec := uleb(uleb(nil, 1), uint64(len(body)))
	sec = append(sec, body...)
	return append(uleb(append(m, 10), uint64(len(sec))), sec...)
}

func uleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// WithSection returns wasm with a section of id and body appended (a
// custom section, id 0, may follow any other).
func WithSection(wasm []byte, id byte, body []byte) []byte {
	out := append(append([]byte(nil), wasm...), id)
	return append(uleb(out, uint64(len(body))), body...)
}

// Custom is the body of a custom section: its name, then payload.
func Custom(name string, payload []byte) []byte {
	return append(append(uleb(nil, uint64(len(name))), name...), payload...)
}

// NameSubsection is one subsection of the custom section "name": its id,
// its size and body.
func NameSubsection(id byte, body []byte) []byte {
	return append(uleb([]byte{id}, uint64(len(body))), body...)
}

// ULEB appends v to b as an unsigned LEB128.
func ULEB(b []byte, v uint64) []byte { return uleb(b, v) }
