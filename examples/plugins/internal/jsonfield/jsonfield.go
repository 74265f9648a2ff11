// Package jsonfield reads one top-level field of a JSON object without
// decoding the rest: a single forward scan, no allocation. The example
// plugins use it because, inside a wasip1 Go guest run by this host,
// decoding a payload with encoding/json costs ~75 µs per event, gjson
// ~10 µs and this scan ~5.5 µs (see sdk/guest/README.md).
// The native twins in nativeprojections use it too, so a parity test
// compares the plugin machinery, not two JSON readers.
//
// It trusts its input to be JSON (event payloads are validated when
// written): on malformed input it reports the field missing rather than
// an error.
package jsonfield

import (
	"bytes"
	"math"
	"strconv"
)

// Lookup returns the raw bytes of the value of the first top-level field
// named key of the JSON object doc (keys are compared as written: a key
// spelled with escapes does not match). ok is false if doc is not an
// object or has no such field.
func Lookup(doc []byte, key string) (raw []byte, ok bool) {
	i := skipWS(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipWS(doc, i)
		if i >= len(doc) || doc[i] != '"' {
			return nil, false // '}' (no more fields) or malformed
		}
		end := skipString(doc, i)
		if end < 0 {
			return nil, false
		}
		k := doc[i+1 : end-1]
		i = skipWS(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return nil, false
		}
		i = skipWS(doc, i+1)
		vend := skipValue(doc, i)
		if vend < 0 {
			return nil, false
		}
		if string(k) == key {
			return doc[i:vend], true
		}
		i = skipWS(doc, vend)
		if i >= len(doc) || doc[i] != ',' {
			return nil, false
		}
		i++
	}
}

// Int returns the top-level field key as an int64: an integer exactly, a
// fraction or exponent truncated toward zero, out-of-range values clamped.
// A missing field or one that is not a number (a string, a boolean, null)
// gives 0 and ok false.
func Int(doc []byte, key string) (n int64, ok bool) {
	raw, ok := Lookup(doc, key)
	if !ok || len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	// Fast path: a plain integer of up to 18 digits.
	if len(raw) <= 19 {
		neg, d := raw[0] == '-', raw
		if neg {
			d = d[1:]
		}
		if len(d) > 0 && len(d) <= 18 {
			var v int64
			for _, c := range d {
				if c < '0' || c > '9' {
					goto slow
				}
				v = v*10 + int64(c-'0')
			}
			if neg {
				v = -v
			}
			return v, true
		}
	}
slow:
	s := string(raw)
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		return v, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && f == 0 {
		return 0, false
	}
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64, true
	case f <= math.MinInt64:
		return math.MinInt64, true
	}
	return int64(f), true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"',
// or -1. It jumps from quote to quote with bytes.IndexByte (assembly on
// wasm too), which matters in a guest where every loop iteration costs.
func skipString(b []byte, i int) int {
	for {
		j := bytes.IndexByte(b[i+1:], '"')
		if j < 0 {
			return -1
		}
		i += 1 + j
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return i + 1
		}
	}
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := skipString(b, i)
				if j < 0 {
					return -1
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	return i
}
