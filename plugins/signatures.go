package plugins

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero/api"

	"github.com/batpak-go/batpak/plugins/abi"
)

// signature is the parameter and result types an ABI export must have.
type signature struct{ params, results []api.ValueType }

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// abiSignatures are the exports' types (plugins/abi's package doc). A
// module whose export differs is refused at load: the host would
// otherwise read results that are not there.
var abiSignatures = map[string]signature{
	abi.ExportABIVersion: {nil, []api.ValueType{i32}},
	abi.ExportAlloc:      {[]api.ValueType{i32}, []api.ValueType{i32}},
	abi.ExportFold:       {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i64}},
	abi.ExportHandle:     {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
	"_initialize":        {nil, nil},
}

// skipSignatureCheck lets a test load a module checkSignatures refuses,
// to show the host survives one all the same.
var skipSignatureCheck bool

// checkSignatures refuses an export of exports whose name the ABI
// gives and whose types differ from abiSignatures, naming both.
func checkSignatures(exports map[string]api.FunctionDefinition) error {
	for _, name := range []string{abi.ExportABIVersion, abi.ExportAlloc, abi.ExportFold, abi.ExportHandle, "_initialize"} {
		d, ok := exports[name]
		if !ok {
			continue
		}
		want := abiSignatures[name]
		if !slices.Equal(d.ParamTypes(), want.params) || !slices.Equal(d.ResultTypes(), want.results) {
			return fmt.Errorf("the module's %s is %s, the ABI's is %s", name, sigString(d.ParamTypes(), d.ResultTypes()), sigString(want.params, want.results))
		}
	}
	return nil
}

// sigString writes a function type as the ABI's doc does:
// (i32, i32) -> i64.
func sigString(params, results []api.ValueType) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	out := "(" + names(params) + ") -> "
	switch len(results) {
	case 0:
		return out + "()"
	case 1:
		return out + names(results)
	}
	return out + "(" + names(results) + ")"
}
