package plugins

import (
	"reflect"
	"unsafe"

	"github.com/tetratelabs/wazero"
)

// compiledBytes is the machine code wazero mapped for the modules its
// runtime compiled — each plugin version has a runtime of its own, so
// that is mod's code and the runtime's shared trampolines — read from
// wazero's optimizing compiler's structures (internal to wazero, so read
// through reflection, never changed). ok is false when they are not
// what this reads (another engine, another wazero version): the caller
// then keeps its estimate. TestCompiledBytesReadsWazero fails if the
// wazero this module is built with stops matching.
//
// The code a module compiles to cannot be bounded from its size alone:
// a br_table whose targets carry many values compiles to a copy of them
// per target (a 109 KB module mapped 200 MB), so the host charges what
// was compiled, not only what it estimated before compiling.
//
// exec is wazero's object holding mod's code (its executables), whose
// collection after its finalizer means the code is unmapped (codeFreer);
// nil if it was not found.
func compiledBytes(mod wazero.CompiledModule) (n int64, exec unsafe.Pointer, ok bool) {
	defer func() {
		if recover() != nil { // a structure of another shape
			n, exec, ok = 0, nil, false
		}
	}()
	cm := reflect.ValueOf(mod)
	if cm.Kind() != reflect.Pointer || cm.IsNil() {
		return 0, nil, false
	}
	eng := cm.Elem().FieldByName("compiledEngine")
	if !eng.IsValid() || eng.Kind() != reflect.Interface || eng.IsNil() {
		return 0, nil, false
	}
	e := eng.Elem()
	if e.Kind() != reflect.Pointer || e.IsNil() {
		return 0, nil, false
	}
	e = e.Elem()
	mods := e.FieldByName("compiledModules")
	if !mods.IsValid() || mods.Kind() != reflect.Map {
		return 0, nil, false
	}
	execLen := func(x reflect.Value) (int64, bool) {
		// *executables: executable and entryPreambles ([]byte).
		if x.Kind() != reflect.Pointer || x.IsNil() {
			return 0, false
		}
		x = x.Elem()
		a, b := x.FieldByName("executable"), x.FieldByName("entryPreambles")
		if !a.IsValid() || !b.IsValid() || a.Kind() != reflect.Slice || b.Kind() != reflect.Slice {
			return 0, false
		}
		return int64(a.Len() + b.Len()), true
	}
	// mod's own entry (the runtime's host modules have entries too),
	// by its module id.
	id := cm.Elem().FieldByName("module")
	if !id.IsValid() || id.Kind() != reflect.Pointer || id.IsNil() {
		return 0, nil, false
	}
	if id = id.Elem().FieldByName("ID"); !id.IsValid() || id.Kind() != reflect.Array {
		return 0, nil, false
	}
	sameID := func(k reflect.Value) bool {
		if k.Kind() != reflect.Array || k.Len() != id.Len() {
			return false
		}
		for i := range k.Len() {
			if k.Index(i).Uint() != id.Index(i).Uint() {
				return false
			}
		}
		return true
	}
	found := 0
	it := mods.MapRange()
	for it.Next() {
		m := it.Value() // *compiledModuleWithCount
		if m.Kind() != reflect.Pointer || m.IsNil() {
			return 0, nil, false
		}
		c := m.Elem().FieldByName("compiledModule") // *compiledModule
		if !c.IsValid() || c.Kind() != reflect.Pointer || c.IsNil() {
			return 0, nil, false
		}
		x := c.Elem().FieldByName("executables")
		k, ok := execLen(x)
		if !ok {
			return 0, nil, false
		}
		n += k
		found++
		if sameID(it.Key()) {
			exec = x.UnsafePointer()
		}
	}
	if shared := e.FieldByName("sharedFunctions"); shared.IsValid() && shared.Kind() == reflect.Pointer && !shared.IsNil() {
		if x := shared.Elem().FieldByName("executable"); x.IsValid() && x.Kind() == reflect.Slice {
			n += int64(x.Len())
		}
	}
	return n, exec, found > 0
}
