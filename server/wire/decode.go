package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/batpak-go/batpak/ijson"
)

// Decode reads exactly one JSON value from body into v: body must be UTF-8,
// nest arrays and objects at most maxDepth deep (1 is a flat object), name
// only fields v has, each once, and give each the right type. Every refusal is an
// *Error: INVALID_JSON for bytes that are not such JSON (with the byte
// offset, or the limit), INVALID_REQUEST for an unknown field or a value of
// the wrong type (naming the field).
func Decode(body []byte, v any, maxDepth int) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(CodeInvalidJSON, "", "the body is empty: want a JSON object")
	}
	if !utf8.Valid(body) {
		off := invalidUTF8At(body)
		return errorf(CodeInvalidJSON, "", "the body is not UTF-8 (first invalid byte at offset %d)", off)
	}
	if d, off := Depth(body, maxDepth); d > maxDepth {
		return errorf(CodeInvalidJSON, "", "JSON nested deeper than %d levels (at offset %d)", maxDepth, off)
	}
	// encoding/json keeps the last of a repeated name, where a proxy or a
	// firewall in front may read the first: a body is I-JSON too.
	var ie *ijson.Error
	err := ijson.Validate(body, maxDepth)
	if errors.As(err, &ie) && ie.Rule == ijson.RuleDuplicateKey {
		return errorf(CodeInvalidJSON, "", "member name %q repeated in one object (at offset %d): a body names each member once", ie.Key, ie.Offset)
	}
	if err == nil && bytes.IndexByte(body, '{') >= 0 {
		// encoding/json also takes "Entity" for "entity" (and keeps the
		// last of the two).
		if name, again, ok := foldRepeat(body); ok {
			return errorf(CodeInvalidJSON, "", "member name %q repeats %q but for case: a body names each member once", again, name)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, v)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(CodeInvalidJSON, "", "more than one JSON value in the body (at offset %d)", dec.InputOffset())
	}
	return nil
}

func decodeError(err error, v any) *Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return errorf(CodeInvalidJSON, "", "%s (at offset %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return errorf(CodeInvalidRequest, "", "want a JSON %s, got %s", goTypeName(te.Type.Kind().String()), te.Value)
		}
		if want := wholeNumberRange(te.Type.Kind()); want != "" && strings.HasPrefix(te.Value, "number") {
			return errorf(CodeInvalidRequest, field, "got %s, want %s", clip(te.Value), want)
		}
		return errorf(CodeInvalidRequest, field, "wrong type: got %s, want %s", clip(te.Value), goTypeName(te.Type.Kind().String()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(CodeInvalidJSON, "", "the body ends inside a JSON value")
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		if near := nearestField(name, v); near != "" {
			return errorf(CodeInvalidRequest, name, "unknown field %q (did you mean %q?)", clip(name), near)
		}
		return errorf(CodeInvalidRequest, name, "unknown field %q", clip(name))
	}
	return errorf(CodeInvalidJSON, "", "%s", strings.TrimPrefix(msg, "json: "))
}

// fieldAliases are names clients of other stores send for a field this
// API names otherwise.
var fieldAliases = map[string]string{"data": "payload", "body": "payload", "type": "kind", "stream": "entity"}

// nearestField is the field of v's type (its JSON names, nested objects'
// and list items' included) a client most likely meant by name: a known
// alias, one differing by case, a prefix of the other, or one edit away;
// "" if none.
func nearestField(name string, v any) string {
	if len(name) > 64 {
		return "" // longer than any field: a guess would be noise
	}
	names := map[string]bool{}
	fieldNames(reflect.TypeOf(v), names, 0)
	lower := strings.ToLower(name)
	if a, ok := fieldAliases[lower]; ok && names[a] {
		return a
	}
	best := ""
	for _, f := range slices.Sorted(maps.Keys(names)) {
		switch {
		case strings.EqualFold(f, name), len(name) >= 3 && (strings.HasPrefix(f, name) || strings.HasPrefix(name, f)):
			return f
		case best == "" && len(name) >= 3 && oneEditApart(lower, f):
			best = f
		}
	}
	return best
}

// fieldNames adds the JSON names of t's fields (through pointers, slices,
// maps and nested structs, at most 4 levels) to names.
func fieldNames(t reflect.Type, names map[string]bool, depth int) {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map) {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || depth > 4 {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			fieldNames(f.Type, names, depth+1)
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		names[tag] = true
		fieldNames(f.Type, names, depth+1)
	}
}

// oneEditApart reports whether a and b differ by one insertion, deletion,
// substitution or swap of adjacent characters.
func oneEditApart(a, b string) bool {
	if a == b {
		return false
	}
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(b)-len(a) > 1 {
		return false
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	if len(a) == len(b) {
		if a[i+1:] == b[i+1:] {
			return true // substitution
		}
		return i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:] // swap
	}
	return a[i:] == b[i+1:] // insertion
}

// wholeNumberRange says what an integer field of kind k takes ("" for
// other kinds): a number too large for it, or with a fraction, is a
// number of the right JSON type but not one it holds.
func wholeNumberRange(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64:
		return fmt.Sprintf("a whole number from %d to %d", math.MinInt64, math.MaxInt64)
	case reflect.Int32:
		return fmt.Sprintf("a whole number from %d to %d", math.MinInt32, math.MaxInt32)
	case reflect.Uint, reflect.Uint64:
		return fmt.Sprintf("a whole number from 0 to %d", uint64(math.MaxUint64))
	case reflect.Uint32:
		return fmt.Sprintf("a whole number from 0 to %d", math.MaxUint32)
	case reflect.Uint16:
		return fmt.Sprintf("a whole number from 0 to %d", math.MaxUint16)
	}
	return ""
}

func goTypeName(k string) string {
	switch k {
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	case "bool":
		return "boolean"
	}
	return k
}

// Depth returns how deeply b's arrays and objects nest (0 for a scalar,
// 1 for [] or {}), stopping early once it passes limit; off is the byte
// where the deepest level (or the one past limit) opened. Brackets inside
// strings do not count. b need not be valid JSON.
func Depth(b []byte, limit int) (depth, off int) {
	d, inStr, esc := 0, false, false
	for i, c := range b {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '[', '{':
			d++
			if d > depth {
				depth, off = d, i
				if depth > limit {
					return depth, off
				}
			}
		case ']', '}':
			d--
		}
	}
	return depth, off
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// foldRepeat finds a member name of the request object body, or of an
// object nested in it, that repeats an earlier one of the same object but
// for case (as encoding/json matches names): the first name and its
// repeat. The values of freeForm members (an event's payload, a plugin's
// state) are the writer's own and not looked into. body is valid JSON.
func foldRepeat(body []byte) (first, again string, found bool) {
	var value func(raw []byte)
	object := func(obj []byte) {
		seen := map[string]string{}
		ijson.Members(obj, func(name, raw []byte) bool {
			k := strings.ToLower(strings.ToUpper(string(name)))
			if f, ok := seen[k]; ok {
				first, again, found = f, string(name), true
				return false
			}
			seen[k] = string(name)
			if !freeForm[k] {
				value(raw)
			}
			return !found
		})
	}
	value = func(raw []byte) {
		switch {
		case len(raw) == 0:
		case raw[0] == '{':
			object(raw)
		case raw[0] == '[':
			var items []json.RawMessage
			if json.Unmarshal(raw, &items) == nil {
				for _, it := range items {
					if value(it); found {
						return
					}
				}
			}
		}
	}
	value(body)
	return first, again, found
}

// freeForm names the request members whose values are any JSON of the
// writer's, not the request's own fields (lower case).
var freeForm = map[string]bool{"payload": true, "state": true}
