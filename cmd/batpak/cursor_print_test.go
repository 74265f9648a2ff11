package main

import (
	"strings"
	"testing"
)

// TestPrintCursorsDamaged: a server's cursor whose saved position is
// damaged is listed as DAMAGED with what to do, not as committed at 0.
func TestPrintCursorsDamaged(t *testing.T) {
	var b strings.Builder
	err := printCursors(&b, []cursorJSON{
		{Name: "ok", Committed: 7, Lag: 3, LogEnd: 10},
		{Name: "lost", Damaged: "its saved position is damaged on this server; delete the cursor and define it again"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"ok 7 3 -", "lost DAMAGED - -", "cursor lost: its saved position is damaged", "2 cursors"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Fatalf("printed:\n%s\nwant a line with %q", out, want)
		}
	}
}
