package printable_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/batpak-go/batpak/internal/printable"
)

func TestString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain text, ünïcödé, 日本語 and a \\ backslash", "plain text, ünïcödé, 日本語 and a \\ backslash"},
		{"two\nlines\r\n", `two\nlines\r\n`},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`},
		{"nul\x00del\x7f tab\t", `nul\x00del\x7f tab\t`},
		{"bad \xff\xfe utf-8", `bad \xff\xfe utf-8`},
		{"c1 \u0085 \u009b sep \u2028\u2029 bidi \u202e nbsp \u00a0", `c1 \u0085 \u009b sep \u2028\u2029 bidi \u202e nbsp \u00a0`},
	}
	for _, c := range cases {
		got := printable.String(c.in)
		if got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
		if printable.String(got) != got {
			t.Errorf("String is not idempotent on %q", got)
		}
		if !utf8.ValidString(got) || strings.ContainsAny(got, "\n\r\x00\x1b\u0085\u2028") {
			t.Errorf("String(%q) = %q still holds control characters", c.in, got)
		}
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer text", 8, "a longer…"},
		{"naïve café", 3, "na…"}, // "ï" is two bytes: the cut goes back to its start
		{"line\nbreak", 64, `line\nbreak`},
	} {
		if got := printable.Clip(c.in, c.max); got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}
