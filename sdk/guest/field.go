package guest

import (
	"math"
	"strconv"

	"github.com/batpak-go/batpak/ijson"
)

// Field returns the raw JSON bytes of the top-level member name of the
// object payload, read exactly as a write policy reads it: names compared
// with escapes decoded ("total\u005fcents" is total_cents), case kept.
// (Stored payloads never repeat a name: the store refuses them.) ok is
// false when payload is not an object or has no such member. Field scans
// the payload once without decoding the rest and does not allocate; the
// bytes are a slice of payload, valid while it is. They are the value as
// written: a string keeps its quotes and escapes (`"card"`, not card).
// String, Int and Float64 read the value decoded.
func Field(payload []byte, name string) (raw []byte, ok bool) {
	return ijson.Lookup(payload, name)
}

// String returns the top-level member name of the object payload as a
// string value, decoded exactly as a write policy reads it: quotes
// removed, escapes decoded (`"c\u0061rd"` is card), a \u escape of an
// unpaired surrogate and each byte that is not UTF-8 read as U+FFFD
// (ijson.Unquote). Names are matched as Field matches them. ok is false
// when there is no such member or its value is not a string (a number,
// null, an object, …); s is then "". The scan does not allocate; s is a
// new string (one allocation unless it is empty).
func String(payload []byte, name string) (s string, ok bool) {
	raw, ok := Field(payload, name)
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	return ijson.Unquote(raw)
}

// Int returns the top-level member name of the object payload as an
// int64, matched as Field matches names: an integer exactly, a number
// with a fraction or an exponent truncated toward zero (12.9 is 12, 1e3 is
// 1000), one beyond int64 clamped to math.MaxInt64 or math.MinInt64. ok
// is false, and n 0, when there is no such member or its value is not a
// number (a string "5" included). An integer of up to 18 digits is read
// without allocating; others go through strconv.
func Int(payload []byte, name string) (n int64, ok bool) {
	raw, ok := Field(payload, name)
	if !ok || !isNumber(raw) {
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

// Float64 returns the top-level member name of the object payload as a
// float64, matched as Field matches names: the nearest float64 to the
// number, ±Inf for one beyond float64's range. ok is false, and f 0, when
// there is no such member or its value is not a number (a string "5"
// included).
func Float64(payload []byte, name string) (f float64, ok bool) {
	raw, ok := Field(payload, name)
	if !ok || !isNumber(raw) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// isNumber reports whether raw, a value Field returned, is a number
// (payloads are JSON, so its first byte says).
func isNumber(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}
