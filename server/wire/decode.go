package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// Decode reads exactly one JSON value from body into v: body must be UTF-8,
// nest arrays and objects at most maxDepth deep (1 is a flat object), name
// only fields v has, and give each the right type. Every refusal is an
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
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(CodeInvalidJSON, "", "more than one JSON value in the body (at offset %d)", dec.InputOffset())
	}
	return nil
}

func decodeError(err error) *Error {
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
		return errorf(CodeInvalidRequest, field, "wrong type: got %s, want %s", te.Value, goTypeName(te.Type.Kind().String()))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(CodeInvalidJSON, "", "the body ends inside a JSON value")
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return errorf(CodeInvalidRequest, name, "unknown field %q", clip(name))
	}
	return errorf(CodeInvalidJSON, "", "%s", strings.TrimPrefix(msg, "json: "))
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
