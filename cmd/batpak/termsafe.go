package main

import (
	"io"
)

// termSafeWriter is what every verb writes its stdout through: text from
// the store (entity names, scopes) or from a server (tenant names, error
// details, plugin log lines, policy reasons) must not be able to move the
// cursor, clear the screen, retitle the terminal or overwrite a line it
// did not write. It writes every C0 control character except tab and line
// feed, and DEL, as a Go escape (\r, \a, \x1b, \x7f); with escapeC1 also
// the C1 controls U+0080–U+009F (8-bit CSI, OSC, ...) as \u009b. Other
// bytes, invalid UTF-8 included, pass unchanged, so JSON and YAML (which
// never hold a raw control character) read the same.
type termSafeWriter struct {
	w        io.Writer
	escapeC1 bool
	pending  bool // the last Write ended with 0xC2, the lead byte of a C1 control
	buf      []byte
}

// newTermSafeWriter wraps w; see termSafeWriter.
func newTermSafeWriter(w io.Writer) *termSafeWriter {
	return &termSafeWriter{w: w, escapeC1: true}
}

// Write escapes p and writes it; it returns len(p) when the escaped text
// was written in full.
func (t *termSafeWriter) Write(p []byte) (int, error) {
	const hex = "0123456789abcdef"
	b := t.buf[:0]
	i := 0
	if t.pending && len(p) > 0 {
		t.pending = false
		if p[0] >= 0x80 && p[0] <= 0x9f {
			b = append(b, `\u00`...)
			b = append(b, hex[p[0]>>4], hex[p[0]&0xf])
			i = 1
		} else {
			b = append(b, 0xc2)
		}
	}
	for ; i < len(p); i++ {
		c := p[i]
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
		case c == 0xc2 && t.escapeC1:
			if i+1 == len(p) {
				t.pending = true // decide with the next byte
				continue
			}
			if n := p[i+1]; n >= 0x80 && n <= 0x9f {
				b = append(b, `\u00`...)
				b = append(b, hex[n>>4], hex[n&0xf])
				i++
				continue
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	t.buf = b
	if _, err := t.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes a lead byte held back at the end of the last Write.
func (t *termSafeWriter) Flush() error {
	if !t.pending {
		return nil
	}
	t.pending = false
	_, err := t.w.Write([]byte{0xc2})
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
