package opa

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// MaxBuiltinResultBytes bounds what one call of an amplifying built-in
// may produce. OPA checks an evaluation's timeout between expressions and
// inside a few built-ins, but most built-in calls run to their end, and
// some can produce far more than their inputs hold:
//
//	concat                     the separator once per element
//	sprintf                    up to a million characters of padding per
//	                           verb, and %[1]v prints an argument again
//	json.marshal_with_options  the indent once per level on every line
//	json.marshal, yaml.marshal, a value that shares its parts (built by
//	urlquery.encode_object     doubling) written out in full
//
// One such call can ask for terabytes, and a Go process that cannot
// allocate does not fail the call: it dies, with every tenant's writes.
// So this package replaces those, in the whole process, with versions
// that first bound what the call would produce (from the sizes of its
// operands, before anything is allocated) and fail it past this limit
// with a built-in error (the gate denies with POLICY_ERROR); under it
// they answer exactly as OPA's own. So are bits.lsh (MaxBuiltinIntBits),
// the built-ins returning many small values (MaxBuiltinResultElements),
// those reading numbers (MaxNumberDigits) and net.cidr_contains_matches
// (MaxBuiltinPairs). What is left is bounded by the evaluation's timeout,
// with overruns that no check in this process can bound: OPA's type
// checker, comparisons and unification walk a value built by doubling in
// full, and the conversion of a result copies it (a 615-byte rule nesting
// [x, x] 24 deep ran 14 s past a 1 s timeout and took 2 GB; 30 deep asks
// more than a machine has). A server evaluates a bundle it does not trust
// in a child process it can kill (server/tenantpolicy, Options.Isolate).
const MaxBuiltinResultBytes = 64 << 20

// MaxBuiltinIntBits bounds the integer bits.lsh may produce: printing
// an integer in decimal takes time that grows faster than its length (8
// MB of bits: 20 s), and the calls that follow print it again.
const MaxBuiltinIntBits = 1 << 16

// MaxBuiltinResultElements bounds the elements split, indexof_n,
// regex.split and regex.find_n may return from one call (each costs about
// 100 bytes: a 32 MiB string split into characters took 2 GB).
const MaxBuiltinResultElements = 1 << 20

// MaxNumberDigits bounds the digits of a number json.unmarshal,
// yaml.unmarshal, to_number and units.parse* read, of a
// number in the policy input (Options.MaxInputValues's conversion) and,
// for a sandboxed bundle, of a number written in its Rego: Go parses a
// decimal in time that grows with the square of its digits, at every
// comparison or arithmetic. An exponent counts as the digits it stands
// for: 1e1001 is over it (NumberDigits).
const MaxNumberDigits = 1000

// MaxBuiltinPairs bounds the pairs net.cidr_contains_matches compares in
// one call (it compares every one of its first operand's CIDRs with every
// one of its second's, and cannot be interrupted).
const MaxBuiltinPairs = 1 << 18

// init wraps OPA's implementations; it runs once, before any evaluation
// (the registry is not safe to change while one runs).
func init() {
	bound := func(name string, check func(ops []*ast.Term) error) {
		orig := topdown.GetBuiltin(name)
		if orig == nil {
			panic("opa: no built-in " + name + " to bound")
		}
		topdown.RegisterBuiltinFunc(name, func(bctx topdown.BuiltinContext, ops []*ast.Term, iter func(*ast.Term) error) error {
			if err := check(ops); err != nil {
				return err
			}
			return orig(bctx, ops, iter)
		})
	}
	bySize := func(size func(ops []*ast.Term) (int, bool)) func(ops []*ast.Term) error {
		return func(ops []*ast.Term) error {
			if n, ok := size(ops); ok && n > MaxBuiltinResultBytes {
				return fmt.Errorf("its result would be over %d bytes (about %d or more): one built-in call's result is bounded here", MaxBuiltinResultBytes, n)
			}
			return nil
		}
	}
	bound(ast.Concat.Name, bySize(concatSize))
	bound(ast.Sprintf.Name, bySize(sprintfSize))
	bound(ast.JSONMarshalWithOptions.Name, bySize(marshalSize))
	// A value as text: JSON escapes a byte in up to 6, and so does a
	// query string; YAML also indents every line by its depth.
	for _, b := range []*ast.Builtin{ast.JSONMarshal, ast.URLQueryEncodeObject} {
		bound(b.Name, bySize(func(ops []*ast.Term) (int, bool) { return satMul(valueSize(ops[0].Value), 6), true }))
	}
	bound(ast.YAMLMarshal.Name, bySize(func(ops []*ast.Term) (int, bool) { return yamlSize(ops[0].Value, 0), true }))
	bound(ast.BitsShiftLeft.Name, func(ops []*ast.Term) error {
		if n, ok := shiftBits(ops); ok && n > MaxBuiltinIntBits {
			return fmt.Errorf("its result would have over %d bits (about %d or more): one built-in call's result is bounded here", MaxBuiltinIntBits, n)
		}
		return nil
	})
	// Many small results: each element of a result costs about 100 bytes.
	elementsOf := func(name string, count func(ops []*ast.Term) (int, bool)) {
		bound(name, func(ops []*ast.Term) error {
			if n, ok := count(ops); ok && n > MaxBuiltinResultElements {
				return fmt.Errorf("its result would have over %d elements (%d or more): one built-in call's result is bounded here", MaxBuiltinResultElements, n)
			}
			return nil
		})
	}
	elementsOf(ast.Split.Name, func(ops []*ast.Term) (int, bool) {
		s, ok1 := ops[0].Value.(ast.String)
		sep, ok2 := ops[1].Value.(ast.String)
		if !ok1 || !ok2 {
			return 0, false
		}
		return strings.Count(string(s), string(sep)) + 1, true
	})
	elementsOf(ast.IndexOfN.Name, func(ops []*ast.Term) (int, bool) {
		s, ok1 := ops[0].Value.(ast.String)
		sub, ok2 := ops[1].Value.(ast.String)
		if !ok1 || !ok2 {
			return 0, false
		}
		return strings.Count(string(s), string(sub)), true
	})
	// A regular expression can match at every position: bounded by the
	// subject's length (at most n matches asked of find_n).
	elementsOf(ast.RegexSplit.Name, func(ops []*ast.Term) (int, bool) {
		s, ok := ops[1].Value.(ast.String)
		return len(s) + 1, ok
	})
	elementsOf(ast.RegexFind.Name, func(ops []*ast.Term) (int, bool) {
		s, ok1 := ops[1].Value.(ast.String)
		n, ok2 := ops[2].Value.(ast.Number)
		if !ok1 || !ok2 {
			return 0, false
		}
		m := len(s) + 1
		if k, ok := n.Int(); ok && k >= 0 {
			m = min(m, k)
		}
		return m, true
	})
	// Numbers: Go parses a decimal of n digits in time n² (a million digits
	// compared in a rule: 5 s), at every comparison.
	digits := func(name string, mode numberText) {
		bound(name, func(ops []*ast.Term) error {
			if s, ok := ops[0].Value.(ast.String); ok {
				if n := numberSize(string(s), mode); n > MaxNumberDigits {
					return fmt.Errorf("it holds a number of %d digits, over the %d a number may have here", n, MaxNumberDigits)
				}
			}
			return nil
		})
	}
	digits(ast.JSONUnmarshal.Name, textJSON)
	digits(ast.YAMLUnmarshal.Name, textWords)
	// These read their argument as one number (units.parse's unit after
	// it: "1e999999K" is a million digits to it).
	digits(ast.ToNumber.Name, textNumber)
	digits(ast.UnitsParse.Name, textNumber)
	digits(ast.UnitsParseBytes.Name, textNumber)
	bound(ast.NetCIDRContainsMatches.Name, func(ops []*ast.Term) error {
		if n := satMul(elements(ops[0].Value), elements(ops[1].Value)); n > MaxBuiltinPairs {
			return fmt.Errorf("it would compare %d pairs or more, over the %d one call may compare here", n, MaxBuiltinPairs)
		}
		return nil
	})
}

// elements is how many elements a collection operand has (1 for a
// string).
func elements(v ast.Value) int {
	switch x := v.(type) {
	case *ast.Array:
		return x.Len()
	case ast.Set:
		return x.Len()
	case ast.Object:
		return x.Len()
	}
	return 1
}

// limit is where the size estimates stop counting: past it the answer is
// the same.
const limit = MaxBuiltinResultBytes + 1

// sat adds without passing limit.
func sat(a, b int) int { return min(a+b, limit) }

// satMul multiplies without passing limit (a, b ≥ 0).
func satMul(a, b int) int {
	if a == 0 || b == 0 {
		return 0
	}
	if a > limit/b {
		return limit
	}
	return min(a*b, limit)
}

// concatSize is concat(sep, xs)'s length. ok is false for operands OPA
// refuses itself.
func concatSize(ops []*ast.Term) (int, bool) {
	sep, err := builtins.StringOperand(ops[0].Value, 1)
	if err != nil {
		return 0, false
	}
	n, count := 0, 0
	add := func(t *ast.Term) {
		if s, ok := t.Value.(ast.String); ok {
			n = sat(n, len(s))
		}
		count++
	}
	switch xs := ops[1].Value.(type) {
	case *ast.Array:
		xs.Foreach(add)
	case ast.Set:
		xs.Foreach(add)
	default:
		return 0, false
	}
	if count > 1 {
		n = sat(n, satMul(len(sep), count-1))
	}
	return n, true
}

// sprintfSize bounds sprintf(format, args): the format, the padding its
// widths and precisions ask for (Go caps each at 10^6; a * takes it from
// an argument), and each verb printing the largest argument as printed.
func sprintfSize(ops []*ast.Term) (int, bool) {
	format, err := builtins.StringOperand(ops[0].Value, 1)
	if err != nil {
		return 0, false
	}
	args, err := builtins.ArrayOperand(ops[1].Value, 2)
	if err != nil {
		return 0, false
	}
	const maxPad = 1_000_000
	f := string(format)
	n := len(f)
	verbs := strings.Count(f, "%")
	n = sat(n, satMul(strings.Count(f, "*"), maxPad))
	for i := 0; i < len(f); {
		if f[i] < '0' || f[i] > '9' {
			i++
			continue
		}
		v := 0
		for ; i < len(f) && f[i] >= '0' && f[i] <= '9'; i++ {
			v = min(v*10+int(f[i]-'0'), maxPad)
		}
		n = sat(n, v)
	}
	// The widest argument as printed: a composite one is printed as Rego
	// (strings quoted, up to 6 bytes a byte); %q and %x widen strings too.
	// A verb's own text: an error annotation such as %!d(MISSING) is
	// longer than the verb.
	const perVerb = 32
	widest := 0
	args.Foreach(func(t *ast.Term) {
		w := valueSize(t.Value)
		switch t.Value.(type) {
		case ast.String:
			if strings.ContainsAny(f, "qxXU") {
				w = satMul(w, 6)
			}
		case ast.Number:
			// %b of a decimal is 4 bits a digit; %f of a float up to 1e308
			// prints over 300 digits.
			w = max(satMul(w, 4), 330)
		default:
			w = satMul(w, 6)
		}
		widest = max(widest, w)
	})
	return sat(n, satMul(verbs, sat(widest, perVerb))), true
}

// shiftBits is how many bits bits.lsh(x, s) has, as OPA reads its
// operands (an exponent form is an integer too: 1e12 shifts by 10^12).
func shiftBits(ops []*ast.Term) (int, bool) {
	x, ok1 := ops[0].Value.(ast.Number)
	s, ok2 := ops[1].Value.(ast.Number)
	if !ok1 || !ok2 {
		return 0, false
	}
	xb, ok1 := intOperand(x)
	sh, ok2 := intOperand(s)
	if !ok1 || !ok2 {
		return 0, false // OPA refuses it itself
	}
	if xb == nil || sh == nil || sh.BitLen() > 31 {
		return limit, true
	}
	return xb.BitLen() + int(sh.Int64()), true
}

// intOperand is n as an integer, as OPA converts it: ok false when it is
// not one; nil when converting it would itself be too costly (more than
// MaxNumberDigits digits, or an exponent past what MaxBuiltinIntBits
// allows).
func intOperand(n ast.Number) (*big.Int, bool) {
	str := string(n)
	if len(str) > MaxNumberDigits {
		return nil, true
	}
	if i := strings.IndexAny(str, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(str[i+1:], "+"))
		if err != nil {
			return nil, false
		}
		if exp > MaxBuiltinIntBits/3 { // a decimal digit is over 3 bits
			return nil, true
		}
	}
	b, err := builtins.NumberToInt(n)
	if err != nil {
		return nil, false
	}
	return b, true
}

// NumberDigits is the size of the largest number in s (for JSON, outside
// its strings): the longest run of its digits, mantissa and exponent
// counted together, or the magnitude of its decimal exponent when that is
// larger — 1e1000000 is a number of a million digits to OPA, which turns
// it into an integer that size for floor(), round() or a comparison with
// an integer (3 s of CPU measured; past 1.1 million, a panic). What
// MaxNumberDigits bounds.
func NumberDigits(s string, json bool) int {
	if json {
		return numberSize(s, textJSON)
	}
	return numberSize(s, textWords)
}

// numberText is how numberSize reads its text.
type numberText int

const (
	textJSON   numberText = iota // JSON: strings are skipped; every exponent counts
	textWords                    // free text: an exponent counts only where a number ends
	textNumber                   // one number, perhaps with a unit after it: every exponent counts
)

// numberSize is NumberDigits, reading s as mode says. In free text
// (textWords) an exponent counts only when it ends a number: the mantissa
// starts where no word does (not after a letter, digit or underscore) and
// the exponent's digits are followed by the end of s or by what ends a
// value (not a letter, digit, '.', '-', '+' or '_'), so that text such as
// a UUID (123e4567-e89b-…) or a hex digest is not read as a number of
// thousands of digits.
func numberSize(s string, mode numberText) int {
	json := mode == textJSON
	longest, run, inString, escaped := 0, 0, false, false
	numStart := false      // the current run of digits began a number
	exp, inExp := 0, false // the exponent's magnitude so far, capped
	endExp := func(next byte, atEnd bool) {
		if inExp && (mode != textWords || numStart && (atEnd || !wordByte(next) && next != '.' && next != '-' && next != '+')) {
			longest = max(longest, exp)
		}
		inExp = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if inExp && (c < '0' || c > '9') && !(exp == 0 && (c == '+' || c == '-') && (s[i-1] == 'e' || s[i-1] == 'E')) {
			endExp(c, false)
		}
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case json && c == '"':
			inString = true
			run = 0
		case c >= '0' && c <= '9':
			if run == 0 {
				numStart = i == 0 || !wordByte(s[i-1]) || json
			}
			run++
			longest = max(longest, run)
			if inExp {
				exp = min(exp*10+int(c-'0'), 1<<30)
			}
		case (c == 'e' || c == 'E') && run > 0 && !inExp:
			// within a number: its mantissa and exponent count together
			inExp, exp = true, 0
		case c == '.' || c == '+' || c == '-':
			// within a number
		default:
			run = 0
		}
	}
	endExp(0, true)
	return longest
}

// wordByte reports whether c is a letter, a digit or an underscore.
func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// marshalSize bounds json.marshal_with_options(x, opts): x's JSON (strings
// escaped up to 6 bytes a byte) and, when pretty, on each line the prefix
// and the indent once per level.
func marshalSize(ops []*ast.Term) (int, bool) {
	opts, ok := ops[1].Value.(ast.Object)
	if !ok {
		return 0, false
	}
	indent, prefix := 1, 0 // OPA's default indent is a tab
	pretty := false
	for _, k := range opts.Keys() {
		v := opts.Get(k)
		switch k.Value.String() {
		case `"indent"`:
			if s, ok := v.Value.(ast.String); ok {
				indent, pretty = len(s), true
			}
		case `"prefix"`:
			if s, ok := v.Value.(ast.String); ok {
				prefix, pretty = len(s), true
			}
		case `"pretty"`:
			if b, ok := v.Value.(ast.Boolean); ok {
				pretty = bool(b)
			}
		}
	}
	n := satMul(valueSize(ops[0].Value), 6)
	if pretty {
		n = sat(n, lineCost(ops[0].Value, 0, indent, prefix))
	}
	return n, true
}

// yamlSize bounds v written as YAML at depth: each element or member on
// a line of its own, indented 4 a level with a 2-byte marker; strings
// escaped up to 6 bytes a byte, a multi-line one indented on every line.
func yamlSize(v ast.Value, depth int) int {
	line := sat(satMul(4, depth+1), 3)
	n := 0
	each := func(k, t *ast.Term) {
		if n >= limit {
			return
		}
		n = sat(n, line)
		if k != nil {
			n = sat(n, yamlSize(k.Value, depth+1))
		}
		n = sat(n, yamlSize(t.Value, depth+1))
	}
	switch x := v.(type) {
	case collection:
		x.Foreach(func(t *ast.Term) { each(nil, t) })
	case ast.Object:
		x.Foreach(each)
	case ast.String:
		n = sat(satMul(len(x), 6), satMul(strings.Count(string(x), "\n"), line))
	default:
		n = valueSize(v)
	}
	return sat(n, line)
}

// lineCost is what pretty-printing v at depth adds: a line per element,
// member and closing bracket, each with the prefix and the indent depth
// times.
func lineCost(v ast.Value, depth, indent, prefix int) int {
	line := func(d int) int { return sat(sat(prefix, satMul(indent, d)), 1) }
	n := 0
	each := func(t *ast.Term) {
		if n < limit {
			n = sat(n, sat(line(depth+1), lineCost(t.Value, depth+1, indent, prefix)))
		}
	}
	switch x := v.(type) {
	case collection:
		x.Foreach(each)
	case ast.Object:
		x.Foreach(func(_, t *ast.Term) { each(t) })
	default:
		return 0
	}
	return sat(n, line(depth))
}

// collection is an array or a set.
type collection interface{ Foreach(func(*ast.Term)) }

// valueSize is about v's length as compact JSON (strings unescaped),
// counted up to limit.
func valueSize(v ast.Value) int {
	switch x := v.(type) {
	case ast.String:
		return min(len(x)+2, limit)
	case ast.Number:
		return min(len(x), limit)
	case ast.Boolean, ast.Null:
		return 5
	case collection:
		n := 2
		x.Foreach(func(t *ast.Term) {
			if n < limit {
				n = sat(n, valueSize(t.Value)+1)
			}
		})
		return n
	case ast.Object:
		n := 2
		x.Foreach(func(k, t *ast.Term) {
			if n < limit {
				n = sat(n, valueSize(k.Value)+valueSize(t.Value)+2)
			}
		})
		return n
	}
	return min(len(v.String()), limit)
}
