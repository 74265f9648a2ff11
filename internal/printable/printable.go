package printable

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// String returns s with every rune that is not printable (strconv.IsPrint:
// C0 and C1 control characters, DEL, line and paragraph separators, format
// characters such as bidirectional overrides, spaces other than ASCII
// space) and every byte that is not valid UTF-8 written as a Go escape:
// \n, \t, \x00, \x1b, \xff, \u0085, \u2028. Other text, backslashes
// included, is kept as it is, so String is idempotent and printable
// UTF-8 reads unchanged.
func String(s string) string {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !strconv.IsPrint(r) {
			break
		}
		i += n
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	const hex = "0123456789abcdef"
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[s[i]>>4])
			b.WriteByte(hex[s[i]&0xf])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		case r < utf8.RuneSelf:
			switch r {
			case '\a':
				b.WriteString(`\a`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			case '\v':
				b.WriteString(`\v`)
			default:
				b.WriteString(`\x`)
				b.WriteByte(hex[r>>4])
				b.WriteByte(hex[r&0xf])
			}
		default:
			q := strconv.QuoteRuneToASCII(r) // '\u0085'
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// Clip is String(s) cut to at most max bytes (on a rune boundary, "…"
// added when cut): for text from elsewhere that a status or a log keeps.
func Clip(s string, max int) string {
	s = String(s)
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
