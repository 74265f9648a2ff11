package jsonfield

import (
	"math"
	"strconv"

	"github.com/batpak-go/batpak/ijson"
)

// Lookup returns the raw bytes of the value of the top-level field named
// key of the JSON object doc, read as the policy reads it (ijson.Lookup):
// keys compared with escapes decoded ("total\u005fcents" is total_cents),
// the last of repeated keys (the store refuses repeated keys, so a stored
// payload has at most one). ok is false if doc is not an object or has no
// such field.
func Lookup(doc []byte, key string) (raw []byte, ok bool) { return ijson.Lookup(doc, key) }

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
