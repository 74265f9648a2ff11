package server_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestPolicyDecisionLogSurvivesDamage: a decision log left damaged on
// disk — a torn last line (a crash or a full disk mid-write), a segment
// of garbage and invalid UTF-8, stray names — does not stop the server;
// queries skip the damage, and the decisions recorded after the restart
// are all readable (none is glued to the torn line).
func TestPolicyDecisionLogSurvivesDamage(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	acme, key := acmeAdminKey(t, ps)
	deny := func(entity string) string { t.Helper(); return loggedDenial(t, acme, entity) }
	want := []string{deny("blocked:1"), deny("blocked:2")}
	if got := allDecisions(t, acme, client.PolicyDecisionQuery{}); len(got) != 2 {
		t.Fatalf("%d decisions before the damage, want 2", len(got))
	}
	ps.stop()

	dir := filepath.Join(root, "srv", "decisions", "acme")
	segs, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("segments %v %v", segs, err)
	}
	slices.Sort(segs)
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"decision_id":"torn","result":"den`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "0000000000000000.jsonl"), []byte("\xff\xfe garbage {\n\x00\x01\n{\"result\":\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "7.jsonl"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.jsonl"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ps = startPolicyServer(t, root, nil)
	acme = ps.as(t, key).Tenant("acme")
	want = append(want, deny("blocked:3"), deny("blocked:4"))
	got := allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1})
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
	}
	slices.Reverse(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("after the damage the log holds %v, want %v (newest first)", ids, want)
	}
}

// TestPolicyDecisionLogForgedCursors: a cursor the log did not hand out —
// a path, a negative or overflowing number, an offset past any segment —
// is refused naming the cursor or answers an ordinary page; it never
// reads outside the tenant's log.
func TestPolicyDecisionLogForgedCursors(t *testing.T) {
	ps := startPolicyServer(t, t.TempDir(), nil)
	acme := acmeAdmin(t, ps)
	ctx := context.Background()
	for i := range 3 {
		if _, err := acme.Append(ctx, note(fmt.Sprintf("blocked:%d", i))); !errors.Is(err, client.ErrPolicyDenied) {
			t.Fatalf("append: %v, want a denial", err)
		}
	}
	for _, c := range []string{"../../../etc/passwd", "-1.0", "1.-5", "99999999999999999999.0", "1.99999999999999999999",
		"1", ".", "1.2.3", "0x1.0", " 1.0", "1.0\n", "+1.0"} {
		if _, err := acme.QueryPolicyDecisions(ctx, client.PolicyDecisionQuery{Cursor: c}); !errors.Is(err, client.ErrInvalidRequest) || !strings.Contains(err.Error(), "cursor") {
			t.Errorf("cursor %q: %v, want refused naming the cursor", c, err)
		}
	}
	for c, want := range map[string]int{"18446744073709551615.0": 3, "1.9223372036854775807": 3, "0.0": 0, "1.0": 0} {
		p, err := acme.QueryPolicyDecisions(ctx, client.PolicyDecisionQuery{Cursor: c, Limit: 1000})
		if err != nil || len(p.Decisions) != want {
			t.Errorf("cursor %q: %d decisions, %v; want %d", c, len(p.Decisions), err, want)
		}
	}
}
