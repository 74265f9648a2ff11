package main

import (
	"io"
	"unicode/utf8"
)

// termSafeWriter is what every verb writes its stdout through: text from
// the store (entity names, scopes) or from a server (tenant names, error
// details, plugin log lines, policy reasons) must not be able to move the
// cursor, clear the screen, retitle the terminal, overwrite a line it did
// not write, or reorder what is shown around it. It writes every C0
// control character except tab and line feed, and DEL, as a Go escape
// (\r, \a, \x1b, \x7f); with escapeC1 also the C1 controls
// U+0080–U+009F (8-bit CSI, OSC, ...) as \u009b, and the bidirectional
// formatting characters (U+061C, U+200E, U+200F, U+202A–U+202E,
// U+2066–U+2069: right-to-left overrides and isolates) as \u202e. Other
// bytes, invalid UTF-8 included, pass unchanged, so JSON (where those
// escapes mean the same characters) reads the same.
type termSafeWriter struct {
	w        io.Writer
	escapeC1 bool
	// pend holds the start of a sequence that may need escaping, cut off
	// at the end of the last Write: decided with the next one (or written
	// as it is by Flush).
	pend []byte
	buf  []byte
}

// newTermSafeWriter wraps w; see termSafeWriter.
func newTermSafeWriter(w io.Writer) *termSafeWriter {
	return &termSafeWriter{w: w, escapeC1: true}
}

// escapedRune reports whether r is written as an escape by a writer with
// escapeC1: a C1 control or a bidirectional formatting character.
func escapedRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// Write escapes p and writes it; it returns len(p) when the escaped text
// was written in full.
func (t *termSafeWriter) Write(p []byte) (int, error) {
	if err := t.write(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes the bytes held back at the end of the last Write, escaped
// as they stand: no more bytes will complete them.
func (t *termSafeWriter) Flush() error { return t.write(nil, true) }

// write escapes the held bytes and p and writes them; unless final, a
// sequence cut off at the end is held back for the next call.
func (t *termSafeWriter) write(p []byte, final bool) error {
	const hex = "0123456789abcdef"
	data := p
	if len(t.pend) > 0 {
		data = append(t.pend, p...)
		t.pend = nil
	}
	if len(data) == 0 {
		return nil
	}
	b := t.buf[:0]
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case c == '\n' || c == '\t':
			b = append(b, c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\')
			switch c {
			case '\a':
				b = append(b, 'a')
			case '\b':
				b = append(b, 'b')
			case '\f':
				b = append(b, 'f')
			case '\r':
				b = append(b, 'r')
			case '\v':
				b = append(b, 'v')
			default:
				b = append(b, 'x', hex[c>>4], hex[c&0xf])
			}
		case c >= 0xc2 && t.escapeC1 && (c == 0xc2 || c == 0xd8 || c == 0xe2):
			// The lead byte of a C1 control (C2), of U+061C (D8) or of a
			// bidirectional control (E2): decide on the whole rune.
			size := 2
			if c == 0xe2 {
				size = 3
			}
			if i+size > len(data) && !final {
				t.pend = append([]byte(nil), data[i:]...) // cut off: decide with the next Write
				i = len(data)
				continue
			}
			r, n := utf8.DecodeRune(data[i:min(i+size, len(data))])
			if n == size && escapedRune(r) {
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
				i += size - 1
				continue
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	t.buf = b
	_, err := t.w.Write(b)
	return err
}

// dataWriter returns the writer for a verb whose stdout is data another
// program reads back byte for byte (export's NDJSON): C0 controls and DEL
// are still escaped (valid NDJSON has none but its line feeds), C1
// characters pass, so payload bytes round-trip through import unchanged.
func dataWriter(w io.Writer) io.Writer {
	if t, ok := w.(*termSafeWriter); ok {
		return &termSafeWriter{w: t.w}
	}
	return w
}
