package ijson

import (
	"bytes"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Unquote decodes the JSON string literal s (quotes included) exactly as
// encoding/json does: escapes decoded, a \u escape of an unpaired
// surrogate and each byte that is not UTF-8 replaced by U+FFFD. ok is
// false when s is not a string literal.
func Unquote(s []byte) (string, bool) {
	t, ok := unquote(s)
	return string(t), ok
}

// unquote is Unquote returning bytes: a slice of s when nothing needs
// decoding.
func unquote(s []byte) (t []byte, ok bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, false
	}
	s = s[1 : len(s)-1]
	r := 0
	for r < len(s) {
		c := s[r]
		if c == '\\' || c == '"' || c < ' ' {
			break
		}
		if c < utf8.RuneSelf {
			r++
			continue
		}
		rr, size := utf8.DecodeRune(s[r:])
		if rr == utf8.RuneError && size == 1 {
			break
		}
		r += size
	}
	if r == len(s) {
		return s, true
	}
	b := make([]byte, r, len(s)+2*utf8.UTFMax)
	copy(b, s[:r])
	for r < len(s) {
		switch c := s[r]; {
		case c == '\\':
			r++
			if r >= len(s) {
				return nil, false
			}
			switch s[r] {
			default:
				return nil, false
			case '"', '\\', '/', '\'':
				b = append(b, s[r])
				r++
			case 'b':
				b = append(b, '\b')
				r++
			case 'f':
				b = append(b, '\f')
				r++
			case 'n':
				b = append(b, '\n')
				r++
			case 'r':
				b = append(b, '\r')
				r++
			case 't':
				b = append(b, '\t')
				r++
			case 'u':
				r--
				rr := getu4(s[r:])
				if rr < 0 {
					return nil, false
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := getu4(s[r:])
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						b = utf8.AppendRune(b, dec)
						break
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
			}
		case c == '"', c < ' ':
			return nil, false
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			b = utf8.AppendRune(b, rr)
		}
	}
	return b, true
}

// getu4 decodes the \uXXXX escape at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// Lookup returns the raw bytes of the value of the top-level member of
// the JSON object doc named key, as the policy reads it: names compared
// after decoding escapes (Unquote), and the last of repeated names (the
// store refuses repeated names, so a stored payload has at most one). ok
// is false if doc is not an object or has no such member. Lookup trusts
// doc to be JSON (payloads are validated when written); on malformed input
// it reports the member missing.
func Lookup(doc []byte, key string) (raw []byte, ok bool) {
	if !utf8.ValidString(key) {
		return nil, false // decoded names are UTF-8
	}
	if !Members(doc, func(name, v []byte) bool {
		if string(name) == key {
			raw, ok = v, true
		}
		return true
	}) {
		return nil, false
	}
	return raw, ok
}

// Members calls f with each top-level member of the JSON object doc, in
// order, until f returns false: its name with escapes decoded (as
// Unquote; a slice of doc when nothing needed decoding) and the raw bytes
// of its value. It reports false if doc is not an object or is malformed
// (f may have seen some members then). Reading several members this way
// is one pass over doc where a Lookup each is one pass per member. Like
// Lookup it trusts doc to be JSON.
func Members(doc []byte, f func(name, raw []byte) bool) bool {
	i := skipWS(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return false
	}
	i++
	for {
		i = skipWS(doc, i)
		if i >= len(doc) || doc[i] != '"' {
			return i < len(doc) && doc[i] == '}' // no more members, or malformed
		}
		end := SkipString(doc, i)
		if end < 0 {
			return false
		}
		name, ok := unquote(doc[i:end])
		if !ok {
			return false
		}
		i = skipWS(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return false
		}
		i = skipWS(doc, i+1)
		vend := skipValue(doc, i)
		if vend < 0 {
			return false
		}
		if !f(name, doc[i:vend]) {
			return true
		}
		i = skipWS(doc, vend)
		if i >= len(doc) {
			return false
		}
		if doc[i] == '}' {
			return true
		}
		if doc[i] != ',' {
			return false
		}
		i++
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// SkipString returns the index just after the JSON string that starts at
// b[i] (which must be '"'), or -1 if it is not terminated. It does not
// validate the string (the document is trusted to be JSON).
func SkipString(b []byte, i int) int {
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
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j := SkipString(b, i)
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
