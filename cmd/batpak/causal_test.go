package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// causalData appends, through the CLI in mode (flags naming a local store
// or a server), root → pay → ship, root → mail, and an unrelated event,
// all but the unrelated one in root's conversation. It returns the ids.
func causalData(t *testing.T, mode []string) map[string]string {
	t.Helper()
	ids := map[string]string{}
	add := func(name, entity, cause string) {
		t.Helper()
		args := append(slices.Clone(mode), "append", "--entity", entity, "--scope", "shop", "--kind", "1:1", "--data", `{"step":"`+name+`"}`, "--json")
		if cause != "" {
			args = append(args, "--causation", ids[cause], "--correlation", ids["root"])
		}
		ids[name] = decode[receiptJSON](t, ok(t, args...)).ID.String()
	}
	add("root", "order:1", "")
	add("other", "order:2", "")
	add("pay", `pay "1"`, "root")
	add("mail", "mail:1", "root")
	add("ship", "ship:1", "pay")
	return ids
}

// TestCausalCommands: descendants and correlation print the same trees,
// DOT and JSON from a local store and from a server (ids and times aside).
func TestCausalCommands(t *testing.T) {
	dir := isolate(t)
	url, op := startServer(t)
	admin := []string{"--server", url, "--token", op}
	ok(t, append(admin, "tenant", "create", "acme")...)
	key := keyIn(t, ok(t, append(admin, "--tenant", "acme", "key", "issue", "app", "--role", "admin")...))
	modes := map[string][]string{
		"local":  {"--data-dir", filepath.Join(dir, "local")},
		"remote": {"--server", url, "--token", key, "--tenant", "acme"},
	}
	outs := map[string]map[string]string{}
	for name, mode := range modes {
		ids := causalData(t, mode)
		run := func(args ...string) string { return ok(t, append(slices.Clone(mode), args...)...) }
		got := map[string]string{}
		outs[name] = got

		tree := run("descendants", ids["root"])
		got["tree"] = tree
		lines := strings.Split(strings.TrimRight(tree, "\n"), "\n")
		want := []string{`^#0 \S+ order:1 0x1:0x1 clock 0 \{"step":"root"\}$`,
			`^├─ #2 \S+ pay "1" 0x1:0x1 clock 0 \{"step":"pay"\}$`,
			`^│  └─ #4 \S+ ship:1 `,
			`^└─ #3 \S+ mail:1 `,
			`^4 events caused by the event, itself included$`}
		if len(lines) != len(want) {
			t.Fatalf("%s descendants:\n%s", name, tree)
		}
		for i, re := range want {
			if !regexp.MustCompile(re).MatchString(lines[i]) {
				t.Errorf("%s descendants line %d = %q; want %s", name, i, lines[i], re)
			}
		}
		got["depth1"] = run("descendants", ids["root"], "--depth", "1")
		if !strings.Contains(got["depth1"], "3 events caused by the event, itself included (more left out") || strings.Contains(got["depth1"], "ship:1") {
			t.Errorf("%s descendants --depth 1:\n%s", name, got["depth1"])
		}
		got["limit2"] = run("descendants", ids["root"], "--limit", "2")
		if !strings.Contains(got["limit2"], "2 events") || !strings.Contains(got["limit2"], "more left out") {
			t.Errorf("%s descendants --limit 2:\n%s", name, got["limit2"])
		}
		got["corr"] = run("correlation", ids["ship"])
		if !strings.HasSuffix(got["corr"], "4 events in the conversation "+ids["root"]+"\n") || strings.Contains(got["corr"], "order:2") {
			t.Errorf("%s correlation:\n%s", name, got["corr"])
		}
		got["corr-other"] = run("correlation", ids["other"])
		if !strings.HasPrefix(got["corr-other"], "#1 ") || !strings.HasSuffix(got["corr-other"], "1 event in the conversation "+ids["other"]+"\n") {
			t.Errorf("%s correlation of a lone event:\n%s", name, got["corr-other"])
		}

		dot := run("descendants", ids["root"], "-o", "dot")
		got["dot"] = dot
		for _, want := range []string{"digraph descendants {", `"` + ids["root"] + `" -> "` + ids["pay"] + `";`,
			`"` + ids["pay"] + `" -> "` + ids["ship"] + `";`, `"` + ids["root"] + `" -> "` + ids["mail"] + `";`,
			`[label="#2 pay \"1\"\n0x1:0x1 clock 0"];`} {
			if !strings.Contains(dot, want) {
				t.Errorf("%s -o dot lacks %q:\n%s", name, want, dot)
			}
		}
		if strings.Count(dot, "->") != 3 || !strings.HasSuffix(dot, "}\n") {
			t.Errorf("%s -o dot:\n%s", name, dot)
		}
		if d := run("correlation", ids["root"], "-o", "dot"); !strings.HasPrefix(d, "digraph correlation {") || strings.Count(d, "->") != 3 {
			t.Errorf("%s correlation -o dot:\n%s", name, d)
		}

		js := run("correlation", ids["pay"], "--json")
		got["json"] = js
		var doc struct {
			Events []struct {
				ID          string  `json:"id"`
				CausationID *string `json:"causation_id"`
			} `json:"events"`
			Truncated bool `json:"truncated"`
		}
		if err := json.Unmarshal([]byte(js), &doc); err != nil {
			t.Fatalf("%s --json: %v\n%s", name, err, js)
		}
		var order []string
		for _, ev := range doc.Events {
			order = append(order, ev.ID)
		}
		if !slices.Equal(order, []string{ids["root"], ids["pay"], ids["mail"], ids["ship"]}) || doc.Truncated {
			t.Errorf("%s correlation --json: %s", name, js)
		}
		if js2 := run("descendants", ids["root"], "-o", "json", "--limit", "1"); !strings.Contains(js2, `"truncated":true`) {
			t.Errorf("%s -o json --limit 1: %s", name, js2)
		}

		// Bad input: one line naming the flag.
		fails(t, append(slices.Clone(mode), "descendants", ids["root"], "--limit", "0"), "--limit", "1 to 1000")
		fails(t, append(slices.Clone(mode), "descendants", ids["root"], "--limit", "1001"), "--limit")
		fails(t, append(slices.Clone(mode), "descendants", ids["root"], "--depth", "0"), "--depth")
		failsWith(t, exitUsage, append(slices.Clone(mode), "correlation", ids["root"], "-o", "svg"), `"svg" is not an output format`, "tree", "dot")
		if y := run("correlation", ids["root"], "-o", "yaml"); !strings.Contains(y, "truncated: false") || !strings.Contains(y, "correlation_id: ") {
			t.Errorf("%s correlation -o yaml: %s", name, y)
		}
		fails(t, append(slices.Clone(mode), "correlation", "nope"), "ID")
		failsWith(t, exitNotFound, append(slices.Clone(mode), "descendants", "0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e"), "0194d7a2-5c1e-7f3a-9b2d-4e6f8a0c1d2e")
	}
	// The SDK gives every remote append an idempotency key.
	idem := regexp.MustCompile(`"idempotency_key":"[^"]*",`)
	for k, l := range outs["local"] {
		if r := idem.ReplaceAllString(outs["remote"][k], ""); shape(l) != shape(r) {
			t.Errorf("%s differs:\nlocal:\n%s\nremote:\n%s", k, l, r)
		}
	}
}
