package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// TestEffectKindsShown: a store holding an effect event (category 0xD,
// written as a reaction) is browsed by the CLI locally and against a
// server alike: query --kind names the effect kind, and descendants,
// correlation and query show the event instead of failing on its kind.
func TestEffectKindsShown(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	cause, eff := core.NewEventID(), core.NewEventID()
	file := filepath.Join(dir, "effects.ndjson")
	lines := fmt.Sprintf(`{"id":%q,"entity":"order:1","scope":"s","kind":"0x1:0x1","correlation_id":%q,"causation_id":null,"timestamp_us":1,"payload":{}}
{"id":%q,"entity":"order:1","scope":"s","kind":"0xd:0x4","correlation_id":%q,"causation_id":%q,"timestamp_us":2,"payload":{"ack":true}}
`, cause, cause, eff, cause, cause)
	if err := os.WriteFile(file, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, where := range map[string][]string{
		"local":  {"--data-dir", filepath.Join(dir, "local")},
		"remote": {"--server", url, "--token", key, "--tenant", "acme"},
	} {
		t.Run(name, func(t *testing.T) {
			with := func(args ...string) []string { return append(append([]string{}, where...), args...) }
			ok(t, with("import", file)...)
			if out := ok(t, with("query", "--kind", "0xD:0x4", "--json")...); !strings.Contains(out, eff.String()) || strings.Contains(out, cause.String()+`"`+`,"entity"`) {
				t.Errorf("query --kind 0xD:0x4: %s", out)
			}
			for _, verb := range []string{"descendants", "correlation"} {
				if out := ok(t, with(verb, cause.String())...); !strings.Contains(out, eff.String()) || !strings.Contains(out, "0xd:0x4") {
					t.Errorf("%s: %s", verb, out)
				}
			}
			if out := ok(t, with("query")...); !strings.Contains(out, eff.String()) {
				t.Errorf("query: %s", out)
			}
		})
	}
}
