package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/batpak-go/batpak/core"
)

// result is one in-process run of the command tree.
type result struct {
	code           int
	stdout, stderr string
}

// isolate gives the test an empty working directory and home, and unsets
// every BATPAK_* variable, so that no config file or environment of the
// machine running the tests leaks in.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", "")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			t.Setenv(k, "")
		}
	}
	return dir
}

// batpak runs the CLI with args and stdin.
func batpakIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func batpak(t *testing.T, args ...string) result {
	t.Helper()
	return batpakIn(t, "", args...)
}

// ok runs the CLI and fails the test unless it exits 0.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := batpak(t, args...)
	if r.code != 0 {
		t.Fatalf("batpak %q: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs the CLI, wants exit 1 and a stderr naming every want.
func fails(t *testing.T, args []string, wants ...string) result {
	t.Helper()
	return failsWith(t, exitError, args, wants...)
}

// failsWith runs the CLI, wants exit code and a stderr naming every want.
func failsWith(t *testing.T, code int, args []string, wants ...string) result {
	t.Helper()
	r := batpak(t, args...)
	if r.code != code {
		t.Fatalf("batpak %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, code, r.stdout, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "batpak: ") {
		t.Errorf("batpak %q: stderr does not start with \"batpak: \": %q", args, r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("batpak %q: stderr lacks %q:\n%s", args, w, r.stderr)
		}
	}
	return r
}

func decode[T any](t *testing.T, line string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, line)
	}
	return v
}

func parseLines(t *testing.T, out string) []map[string]json.RawMessage {
	t.Helper()
	var lines []map[string]json.RawMessage
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		lines = append(lines, decode[map[string]json.RawMessage](t, l))
	}
	return lines
}

func str(t *testing.T, m map[string]json.RawMessage, key string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(m[key], &s); err != nil {
		t.Fatalf("field %s = %s: not a string: %v", key, m[key], err)
	}
	return s
}

func num(t *testing.T, m map[string]json.RawMessage, key string) uint64 {
	t.Helper()
	var n uint64
	if err := json.Unmarshal(m[key], &n); err != nil {
		t.Fatalf("field %s = %s: not a number: %v", key, m[key], err)
	}
	return n
}

func TestAppendGetRoundTrip(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir

	out := ok(t, "append", dd, "--entity", "order:42", "--scope", "shop", "--kind", "1:1",
		"--data", ` {"total_cents": 998, "items": ["AA"]} `, "--json")
	placed := decode[receiptJSON](t, out)
	if placed.ID.IsZero() || placed.GlobalSequence != 0 || placed.Clock != 0 || placed.Deduplicated {
		t.Fatalf("first receipt = %+v", placed)
	}

	// A reaction on another entity, payload from stdin, compare-and-set.
	r := batpakIn(t, `{"amount_cents": 998}`+"\n", "append", dd, "--entity", "payment:42", "--scope", "shop",
		"--kind", "0x2:0x1", "--data", "-", "--correlation", placed.ID.String(), "--causation", placed.ID.String(),
		"--expect-new", "--json")
	if r.code != 0 {
		t.Fatalf("reaction: %d %s", r.code, r.stderr)
	}
	paid := decode[receiptJSON](t, r.stdout)
	if paid.GlobalSequence != 1 || paid.Clock != 0 {
		t.Fatalf("reaction receipt = %+v", paid)
	}

	// Human receipt line.
	out = ok(t, "append", dd, "--entity", "order:42", "--scope", "shop", "--kind", "1:2", "--data", "{}", "--expect-clock", "0")
	if !regexp.MustCompile(`^appended [0-9a-f-]{36} seq=2 clock=1 timestamp=\d{4}-\d\d-\d\dT`).MatchString(out) {
		t.Errorf("human receipt = %q", out)
	}

	got := decode[map[string]json.RawMessage](t, ok(t, "get", dd, paid.ID.String(), "--json"))
	for key, want := range map[string]string{
		"id": paid.ID.String(), "entity": "payment:42", "scope": "shop", "kind": "0x2:0x1",
		"correlation_id": placed.ID.String(), "causation_id": placed.ID.String(), "timestamp": paid.Timestamp,
	} {
		if s := str(t, got, key); s != want {
			t.Errorf("get --json %s = %q, want %q", key, s, want)
		}
	}
	if num(t, got, "global_sequence") != 1 || num(t, got, "clock") != 0 {
		t.Errorf("get --json seq/clock = %s/%s", got["global_sequence"], got["clock"])
	}
	if string(got["payload"]) != `{"amount_cents":998}` {
		t.Errorf("payload = %s", got["payload"])
	}

	human := ok(t, "get", dd, placed.ID.String())
	for _, want := range []string{
		"id           " + placed.ID.String(), "entity       order:42", "scope        shop",
		"kind         0x1:0x1", "clock        0", "seq          0", "causation    none (root cause)",
		"timestamp    " + placed.Timestamp, `"total_cents": 998`,
	} {
		if !strings.Contains(human, want) {
			t.Errorf("get output lacks %q:\n%s", want, human)
		}
	}

	// Idempotency: a retry with the same key returns the first receipt.
	first := decode[receiptJSON](t, ok(t, "append", dd, "--entity", "k", "--scope", "s", "--kind", "1:1", "--data", "1", "--idempotency-key", "key-1", "--json"))
	again := decode[receiptJSON](t, ok(t, "append", dd, "--entity", "k", "--scope", "s", "--kind", "1:1", "--data", "1", "--idempotency-key", "key-1", "--json"))
	if again.ID != first.ID || !again.Deduplicated || first.Deduplicated {
		t.Errorf("idempotent rewrite: first %+v, again %+v", first, again)
	}
	if out := ok(t, "append", dd, "--entity", "k", "--scope", "s", "--kind", "1:1", "--data", "1", "--idempotency-key", "key-1"); !strings.HasPrefix(out, "duplicate "+first.ID.String()) {
		t.Errorf("human duplicate receipt = %q", out)
	}
	// The same key for a different event is refused and names the original.
	failsWith(t, exitConflict, []string{"append", dd, "--entity", "k", "--scope", "s", "--kind", "1:1", "--data", "2", "--idempotency-key", "key-1"},
		"idempotency key", first.ID.String(), "different payload")
}

func TestQueryJSON(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "3")
	ok(t, "append", dd, "--entity", "customer:1", "--scope", "crm", "--kind", "3:1", "--data", `{"name":"Ada"}`)

	lines := parseLines(t, ok(t, "query", dd, "--entity-prefix", "order:", "--json"))
	if len(lines) != 6 { // 3 orders × placed, shipped
		t.Fatalf("query --entity-prefix order: gave %d lines, want 6", len(lines))
	}
	wantKeys := []string{"causation_id", "clock", "correlation_id", "entity", "global_sequence", "id", "kind", "payload", "scope", "timestamp"}
	byID := map[string]map[string]json.RawMessage{}
	var lastSeq uint64
	for i, l := range lines {
		keys := make([]string, 0, len(l))
		for k := range l {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("line %d keys = %v, want %v", i, keys, wantKeys)
		}
		if e := str(t, l, "entity"); !strings.HasPrefix(e, "order:") || str(t, l, "scope") != "shop" {
			t.Errorf("line %d coordinate %s@%s", i, e, str(t, l, "scope"))
		}
		if seq := num(t, l, "global_sequence"); i > 0 && seq <= lastSeq {
			t.Errorf("line %d: sequence %d after %d, want global order", i, seq, lastSeq)
		} else {
			lastSeq = seq
		}
		var payload map[string]any
		if err := json.Unmarshal(l["payload"], &payload); err != nil {
			t.Errorf("line %d payload is not a JSON object: %s", i, l["payload"])
		} else if payload["order"] != str(t, l, "entity") {
			t.Errorf("line %d payload names order %v, entity %s", i, payload["order"], str(t, l, "entity"))
		}
		byID[str(t, l, "id")] = l
	}
	// placed: clock 0, root cause, its own correlation; shipped: clock 1,
	// caused by the payment (not in this result), same correlation.
	for _, l := range lines {
		switch str(t, l, "kind") {
		case kindOrderPlaced.String():
			if num(t, l, "clock") != 0 || string(l["causation_id"]) != "null" || str(t, l, "correlation_id") != str(t, l, "id") {
				t.Errorf("OrderPlaced line: %v", l)
			}
		case kindOrderShipped.String():
			if num(t, l, "clock") != 1 || string(l["causation_id"]) == "null" {
				t.Errorf("OrderShipped line: %v", l)
			}
			if _, ok := byID[str(t, l, "correlation_id")]; !ok {
				t.Errorf("OrderShipped correlation %s is no OrderPlaced in the result", str(t, l, "correlation_id"))
			}
		default:
			t.Errorf("unexpected kind %s", l["kind"])
		}
	}

	count := func(args ...string) int {
		t.Helper()
		return len(parseLines(t, ok(t, append([]string{"query", dd, "--json"}, args...)...)))
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 10},
		{[]string{"--scope", "shop"}, 9},
		{[]string{"--scope", "crm"}, 1},
		{[]string{"--kind", "1:1"}, 3},
		{[]string{"--category", "2"}, 3},
		{[]string{"--category", "0x1"}, 6},
		{[]string{"--entity-prefix", "order:", "--clock-min", "1"}, 3},
		{[]string{"--clock-max", "0"}, 7},
		{[]string{"--clock-min", "0", "--clock-max", "0", "--kind", "1:2"}, 0},
		{[]string{"--limit", "4"}, 4},
		{[]string{"--entity-prefix", "nobody"}, 0},
	} {
		if got := count(c.args...); got != c.want {
			t.Errorf("query %v: %d events, want %d", c.args, got, c.want)
		}
	}

	table := ok(t, "query", dd, "--category", "3")
	if !strings.Contains(table, "customer:1") || !strings.Contains(table, `{"name":"Ada"}`) || !strings.Contains(table, "1 event; region: category=0x3") {
		t.Errorf("query table:\n%s", table)
	}
	// The summary names the filters a region cannot express, so a
	// filtered table never reads as the whole store.
	table = ok(t, "query", dd, "--after", "3", "--since", "1h")
	if !strings.Contains(table, "6 events; region: all; since ") || !strings.Contains(table, "; after 3") {
		t.Errorf("query --after --since table:\n%s", table)
	}
}

func TestBadInput(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	appendArgs := func(extra ...string) []string {
		base := map[string]string{"--entity": "order:1", "--scope": "shop", "--kind": "1:1", "--data": "{}"}
		var args []string
		for i := 0; i+1 < len(extra); i += 2 {
			base[extra[i]] = extra[i+1]
		}
		for _, k := range []string{"--entity", "--scope", "--kind", "--data"} {
			args = append(args, k, base[k])
		}
		return append([]string{"append", dd}, args...)
	}
	for _, c := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"reserved kind", appendArgs("--kind", "0:1"), []string{"--kind", "category 0x0 is reserved"}},
		{"effect kind", appendArgs("--kind", "0xD:1"), []string{"--kind", "reserved for effect kinds"}},
		{"kind not a pair", appendArgs("--kind", "orders"), []string{"--kind", `"orders"`, "CATEGORY:TYPE"}},
		{"kind type too big", appendArgs("--kind", "1:0x1000"), []string{"--kind", "at most 0xFFF"}},
		{"bad JSON", appendArgs("--data", `{"total": 99.5`), []string{"--data", "not valid JSON"}},
		{"two JSON values", appendArgs("--data", `{} {}`), []string{"--data", "not valid JSON"}},
		{"empty payload", appendArgs("--data", "  "), []string{"--data", "empty"}},
		{"empty entity", appendArgs("--entity", ""), []string{"--entity", "must not be empty"}},
		{"NUL in scope", appendArgs("--scope", "sh\x00op"), []string{"--scope", "NUL"}},
		{"bad causation", append(appendArgs(), "--causation", "not-an-id"), []string{"--causation", `"not-an-id" is not an event id`}},
		{"bad correlation", append(appendArgs(), "--correlation", "123"), []string{"--correlation", "not an event id"}},
		{"bad get id", []string{"get", dd, "xyz"}, []string{"ID", `"xyz" is not an event id`}},
		{"bad query kind", []string{"query", dd, "--kind", "1"}, []string{"--kind", "CATEGORY:TYPE"}},
		{"bad category", []string{"query", dd, "--category", "16"}, []string{"--category", "0..15"}},
		{"bad clock range", []string{"query", dd, "--clock-min", "3", "--clock-max", "1"}, []string{"--clock-min", "above --clock-max"}},
		{"bad orders", []string{"demo", dd, "--orders", "0"}, []string{"--orders", "at least 1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := fails(t, c.args, c.wants...)
			if strings.Contains(r.stderr, "Usage:") {
				t.Errorf("usage printed for a bad value:\n%s", r.stderr)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("want a one-line message, got:\n%s", r.stderr)
			}
		})
	}
	// Nothing above created the store: input is checked before opening it.
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("bad input created the store directory (stat: %v)", err)
	}

	// Misuse of the command itself: one line, then one pointing to --help.
	for _, c := range []struct {
		name  string
		args  []string
		wants []string
	}{
		{"missing flags", []string{"append", dd, "--entity", "e"}, []string{"missing required flags --scope, --kind, --data"}},
		{"exclusive flags", append(appendArgs(), "--expect-new", "--expect-clock", "2"), []string{"--expect-clock and --expect-new exclude each other"}},
		{"unknown flag", []string{"query", dd, "--frobnicate"}, []string{"unknown flag: --frobnicate"}},
		{"flag value type", []string{"query", dd, "--limit", "many"}, []string{`invalid argument "many"`, "--limit"}},
		{"get without id", []string{"get", dd}, []string{"batpak get needs ID"}},
		{"stray argument", []string{"verify", dd, "now"}, []string{"takes no arguments"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := failsWith(t, exitUsage, c.args, c.wants...)
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			want := fmt.Sprintf("Run 'batpak %s --help' for usage.", c.args[0])
			if len(lines) != 2 || lines[1] != want || strings.Contains(r.stderr, "Usage:") {
				t.Errorf("want the message and %q, got:\n%s", want, r.stderr)
			}
		})
	}

	// Read verbs on a store that does not exist say so.
	for _, verb := range [][]string{{"verify"}, {"stats"}, {"query"}, {"get", "01a217cd-3b81-7849-af31-4360cec5ac35"}} {
		failsWith(t, exitNotFound, append(verb, dd), "no store at "+dir, "batpak demo")
	}
	// A batpak serve root names where its tenants' stores are; a
	// directory of other files is not offered a demo store.
	root := t.TempDir()
	for _, d := range []string{"tenants", "system"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	failsWith(t, exitNotFound, []string{"query", "--data-dir", root}, "is a batpak serve root", filepath.Join(root, "tenants", "ID"), "--server URL")
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := failsWith(t, exitNotFound, []string{"query", "--data-dir", other}, "it holds other files"); strings.Contains(r.stderr, "demo") {
		t.Fatalf("a demo store offered in a directory of other files: %s", r.stderr)
	}

	// Runtime conflicts name the flag.
	ok(t, appendArgs()...)
	failsWith(t, exitConflict, append(appendArgs(), "--expect-new"), "--expect-new", "expected no events, actual last clock 0")
	failsWith(t, exitConflict, append(appendArgs(), "--expect-clock", "5"), "--expect-clock", "expected last clock 5, actual last clock 0")
	failsWith(t, exitNotFound, []string{"get", dd, "01a217cd-3b81-7849-af31-4360cec5ac35"}, "no event 01a217cd-3b81-7849-af31-4360cec5ac35 in "+dir)
	fails(t, append(appendArgs("--data", `"`+strings.Repeat("x", 100)+`"`), "--single-append-max-bytes", "64"), "--data", "single_append_max_bytes (64 bytes)")
}

func TestDemoTwiceThenVerify(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir

	out := ok(t, "demo", dd)
	for _, want := range []string{
		"writing 5 orders to " + dir + " (order:1..order:5)",
		"wrote 15 events",
		"OrderShipped ← PaymentCaptured ← OrderPlaced",
		"order:5", "payment:5", "(root cause)",
		"store: 15 events, 10 entities, 1 segment",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The hint names the command as it can be run: this test binary is
	// in go's build cache, as a go run binary is.
	if !strings.HasSuffix(out, "try: go run ./cmd/batpak query --entity-prefix order: -o json --data-dir "+dir+"\n") {
		t.Errorf("demo does not end with the query hint:\n%s", out)
	}

	out = ok(t, "demo", dd, "--orders", "2")
	if !strings.Contains(out, "(order:6..order:7, continuing after order:5)") || !strings.Contains(out, "store: 21 events, 14 entities") {
		t.Errorf("second demo:\n%s", out)
	}
	if got := ok(t, "verify", dd); got != "ok: 21 events in 14 entities across 1 segment\n" {
		t.Errorf("verify = %q", got)
	}

	// The chain of the last order: shipped ← payment ← placed, one conversation.
	evs := parseLines(t, ok(t, "query", dd, "--json", "--entity-prefix", "order:7"))
	pay := parseLines(t, ok(t, "query", dd, "--json", "--entity-prefix", "payment:7"))
	if len(evs) != 2 || len(pay) != 1 {
		t.Fatalf("order:7 has %d events, payment:7 %d", len(evs), len(pay))
	}
	placed, shipped, payment := evs[0], evs[1], pay[0]
	if str(t, payment, "causation_id") != str(t, placed, "id") || str(t, shipped, "causation_id") != str(t, payment, "id") {
		t.Errorf("causation chain broken: placed %s, payment caused by %s, shipped caused by %s (payment %s)",
			str(t, placed, "id"), payment["causation_id"], shipped["causation_id"], str(t, payment, "id"))
	}
	for _, e := range []map[string]json.RawMessage{payment, shipped} {
		if str(t, e, "correlation_id") != str(t, placed, "id") {
			t.Errorf("correlation %s, want the OrderPlaced id %s", e["correlation_id"], str(t, placed, "id"))
		}
	}
	// ancestors walks it back: shipped ← payment ← placed.
	chain := parseLines(t, ok(t, "ancestors", dd, str(t, shipped, "id"), "--json"))
	var ids []string
	for _, e := range chain {
		ids = append(ids, str(t, e, "id"))
	}
	if want := []string{str(t, shipped, "id"), str(t, payment, "id"), str(t, placed, "id")}; !slices.Equal(ids, want) {
		t.Errorf("ancestors --json ids = %v, want %v", ids, want)
	}
	if out := ok(t, "ancestors", dd, str(t, shipped, "id"), "--limit", "2"); !strings.Contains(out, "2 events, ending at the limit") {
		t.Errorf("ancestors --limit 2:\n%s", out)
	}
	if out := ok(t, "ancestors", dd, str(t, shipped, "id")); !strings.Contains(out, "3 events, ending at a root cause") {
		t.Errorf("ancestors:\n%s", out)
	}

	st := decode[statsJSON](t, ok(t, "stats", dd, "--json"))
	if st.Events != 21 || st.GlobalSequence != 21 || st.Entities != 14 || st.Segments != 1 || st.Bytes <= 0 || st.Dir != dir {
		t.Errorf("stats --json = %+v", st)
	}
	if out := ok(t, "stats", dd); !strings.Contains(out, "events         21") {
		t.Errorf("stats:\n%s", out)
	}
}

func TestConfigPrecedence(t *testing.T) {
	repoConfig, err := os.ReadFile(filepath.Join("..", "..", "config.yaml")) // before isolate changes directory
	if err != nil {
		t.Fatal(err)
	}
	home := isolate(t)
	fileDir, envDir, flagDir := filepath.Join(home, "from-file"), filepath.Join(home, "from-env"), filepath.Join(home, "from-flag")
	cfgFile := filepath.Join(home, "settings.yaml") // not a name the search finds
	writeFile(t, cfgFile, fmt.Sprintf("data_dir: %s\nfd_budget: 9\nsync:\n  every_n_events: 7\n  mode: all\n", fileDir))

	// effective returns key → (value, source) from "batpak config".
	effective := func(args ...string) map[string][2]string {
		t.Helper()
		out := ok(t, append([]string{"config"}, args...)...)
		m := map[string][2]string{}
		for _, line := range strings.Split(out, "\n")[2:] {
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			value := f[1]
			src := strings.Join(f[2:len(f)-1], " ")
			if strings.HasSuffix(f[2], ")") { // "268435456 (256MiB)"
				value, src = f[1]+" "+f[2], strings.Join(f[3:len(f)-1], " ")
			}
			m[f[0]] = [2]string{value, src}
		}
		return m
	}
	wantSetting := func(m map[string][2]string, key, value, source string) {
		t.Helper()
		if got := m[key]; got != [2]string{value, source} {
			t.Errorf("%s = %q from %q, want %q from %q", key, got[0], got[1], value, source)
		}
	}
	appendTo := func(args ...string) {
		t.Helper()
		ok(t, append([]string{"append", "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}"}, args...)...)
	}
	events := func(dir string) string {
		t.Helper()
		r := batpak(t, "verify", "--data-dir", dir)
		return strings.TrimSpace(r.stdout + r.stderr)
	}

	// Defaults only.
	m := effective()
	wantSetting(m, "data_dir", defaultDataDir, "default")
	wantSetting(m, "sync.every_n_events", "1000", "default")

	// File.
	m = effective("--config", cfgFile)
	wantSetting(m, "data_dir", fileDir, "config "+cfgFile)
	wantSetting(m, "fd_budget", "9", "config "+cfgFile)
	wantSetting(m, "sync.every_n_events", "7", "config "+cfgFile)
	wantSetting(m, "sync.mode", "all", "config "+cfgFile)
	wantSetting(m, "segment_max_bytes", "268435456 (256MiB)", "default")
	appendTo("--config", cfgFile)

	// Env beats file, for a top-level and a nested key.
	t.Setenv("BATPAK_DATA_DIR", envDir)
	t.Setenv("BATPAK_SYNC_EVERY_N_EVENTS", "3")
	m = effective("--config", cfgFile)
	wantSetting(m, "data_dir", envDir, "env BATPAK_DATA_DIR")
	wantSetting(m, "sync.every_n_events", "3", "env BATPAK_SYNC_EVERY_N_EVENTS")
	wantSetting(m, "fd_budget", "9", "config "+cfgFile)
	appendTo("--config", cfgFile)
	appendTo("--config", cfgFile)

	// Flags beat env.
	m = effective("--config", cfgFile, "--data-dir", flagDir, "--sync-every-n-events", "1")
	wantSetting(m, "data_dir", flagDir, "flag --data-dir")
	wantSetting(m, "sync.every_n_events", "1", "flag --sync-every-n-events")
	appendTo("--config", cfgFile, "--data-dir", flagDir)
	appendTo("--config", cfgFile, "--data-dir", flagDir)
	appendTo("--config", cfgFile, "--data-dir", flagDir)

	// Each layer's store got exactly the appends made while it won.
	if got := events(fileDir); got != "ok: 1 event in 1 entity across 1 segment" {
		t.Errorf("file store: %s", got)
	}
	if got := events(envDir); got != "ok: 2 events in 1 entity across 1 segment" {
		t.Errorf("env store: %s", got)
	}
	if got := events(flagDir); got != "ok: 3 events in 1 entity across 1 segment" {
		t.Errorf("flag store: %s", got)
	}

	// $BATPAK_CONFIG names the file too.
	t.Setenv("BATPAK_DATA_DIR", "")
	t.Setenv("BATPAK_CONFIG", cfgFile)
	wantSetting(effective(), "data_dir", fileDir, "config "+cfgFile)
	t.Setenv("BATPAK_CONFIG", "")

	// Another tool's ./config.yaml is never read (batpak config says why);
	// one whose first line is batpak's marker is, as the repository's is.
	writeFile(t, "config.yaml", "data_dir: ./not-ours\nlisten: :8080\n")
	if r := batpak(t, "config"); r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "config file: none (config.yaml not read") {
		t.Errorf("foreign config.yaml: exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
	wantSetting(effective(), "data_dir", defaultDataDir, "default")
	writeFile(t, "config.yaml", configMarker+": mine\ndata_dir: ./here\n")
	wantSetting(effective(), "data_dir", "./here", "config config.yaml")
	// ./batpak.yaml comes first.
	writeFile(t, "batpak.yaml", "data_dir: ./there\n")
	wantSetting(effective(), "data_dir", "./there", "config batpak.yaml")
	os.Remove("batpak.yaml")
	// The repository's own config.yaml is read where it lies.
	writeFile(t, "config.yaml", string(repoConfig))
	wantSetting(effective(), "data_dir", "./batpak-data", "config config.yaml")
	// A typo in a discovered file is a warning; in a named file, an error.
	writeFile(t, "config.yaml", configMarker+"\ndata_dir: ./here\nfd_budjet: 3\n")
	if r := batpak(t, "config"); r.code != 0 || !strings.Contains(r.stderr, `warning: config file config.yaml: unknown key "fd_budjet"`) {
		t.Errorf("discovered config with a typo: exit %d, stderr %q", r.code, r.stderr)
	}
	fails(t, []string{"config", "--config", "config.yaml"}, `unknown key "fd_budjet"`)
	os.Remove("config.yaml")

	// ~/.config/batpak/config.yaml when there is no ./batpak.yaml or
	// ./config.yaml of batpak's.
	writeFile(t, filepath.Join(home, ".config", "batpak", "config.yaml"), "channel_capacity: 17\n")
	wantSetting(effective(), "channel_capacity", "17", "config "+filepath.Join(home, ".config", "batpak", "config.yaml"))
}

func TestInvalidConfig(t *testing.T) {
	dir := isolate(t)
	failsWith(t, exitNotFound, []string{"verify", "--config", filepath.Join(dir, "missing.yaml")}, "config file", "missing.yaml does not exist")
	writeFile(t, "bad.yaml", "data_dir: [\n")
	fails(t, []string{"verify", "--config", "bad.yaml"}, "config file bad.yaml")

	t.Setenv("BATPAK_FD_BUDGET", "1")
	fails(t, []string{"verify"}, "fd_budget = 1", "env BATPAK_FD_BUDGET", "want 2..65536")
	t.Setenv("BATPAK_FD_BUDGET", "")
	fails(t, []string{"stats", "--segment-max-bytes", "1KiB"}, "segment_max_bytes", "flag --segment-max-bytes", "want 64 KiB..4 GiB-1")
	fails(t, []string{"stats", "--segment-max-bytes", "lots"}, "segment_max_bytes", `"lots" is not a size`)
	fails(t, []string{"stats", "--sync-mode", "sometimes"}, "sync.mode", "want data (fdatasync) or all (fsync)")
	writeFile(t, "c.yaml", "sync:\n  interval: 5\n")
	fails(t, []string{"stats", "--config", "c.yaml"}, "sync.interval (from config c.yaml)", "not a duration")
	fails(t, []string{"stats", "--data-dir", ""}, "data_dir", "empty")

	// Sizes with units are accepted.
	writeFile(t, "ok.yaml", "segment_max_bytes: 64KiB\nsingle_append_max_bytes: 1024\nsync:\n  interval: 250ms\n")
	out := ok(t, "config", "--config", "ok.yaml")
	for _, want := range []string{"65536 (64KiB)", "1024 (1KiB)", "250ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("config lacks %q:\n%s", want, out)
		}
	}
}

func TestLockedStoreAndReadBesideWriter(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "append", dd, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", `{"n":1}`)

	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	failsWith(t, exitLocked, []string{"append", dd, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}"}, "store "+dir+" is locked by pid ")
	failsWith(t, exitLocked, []string{"demo", dd}, "is locked by pid ")

	// Reads work beside the live writer.
	if got := ok(t, "verify", dd); got != "ok: 1 event in 1 entity across 1 segment\n" {
		t.Errorf("verify beside a writer = %q", got)
	}
	if lines := parseLines(t, ok(t, "query", dd, "--json")); len(lines) != 1 || string(lines[0]["payload"]) != `{"n":1}` {
		t.Errorf("query beside a writer = %v", lines)
	}
}

func TestHelpWorksWithBrokenConfig(t *testing.T) {
	isolate(t)
	writeFile(t, "config.yaml", "data_dir: [\n")
	for _, args := range [][]string{{"--help"}, {"help", "query"}, {"append", "--help"}, {}} {
		if r := batpak(t, args...); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("batpak %q: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestInterrupted(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"demo", "--data-dir", dir}, strings.NewReader(""), &out, &errb)
	if code != exitInterrupted || !strings.Contains(errb.String(), "interrupted after 0 of 5 orders") {
		t.Errorf("cancelled demo: exit %d, stderr %q", code, errb.String())
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadWhileWriterCloses runs read verbs while a writer in this process
// closes its store. A reader maps segment files whole, zero-filled tail
// included; the writer must never shrink a file under it (a read of the
// cut pages would kill the process with SIGBUS).
func TestReadWhileWriterCloses(t *testing.T) {
	root := isolate(t)
	ctx := context.Background()
	for i := range 100 {
		dir := filepath.Join(root, fmt.Sprint(i))
		s, err := core.Open(core.DefaultConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		at, _ := core.NewCoordinate("e", "s")
		if _, err := s.Append(ctx, at, core.MustKind(1, 1), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		done := make(chan result)
		go func() {
			var out, errb bytes.Buffer
			code := run(ctx, []string{"verify", "--data-dir", dir}, strings.NewReader(""), &out, &errb)
			done <- result{code, out.String(), errb.String()}
		}()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.code != 0 || r.stdout != "ok: 1 event in 1 entity across 1 segment\n" {
			t.Fatalf("verify beside a closing writer: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
}

// TestVerifyFailure damages a stored payload two ways: a flipped byte
// (the frame checksum fails: the store does not even open) and a flipped
// byte with the frame checksum recomputed (only the payload digest in the
// hash chain catches it).
func TestVerifyFailure(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd := "--data-dir=" + dir
	ok(t, "demo", dd, "--orders", "2")
	seg := filepath.Join(dir, "00000000000000000001.seg")
	orig, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(orig, []byte("cust-linus"))
	if at < 0 {
		t.Fatal("payload not found in the segment")
	}

	damaged := bytes.Clone(orig)
	damaged[at] = 'K'
	writeFile(t, seg, string(damaged))
	failsWith(t, exitCorrupt, []string{"verify", dd}, "verify failed: corrupt segment "+seg+" at offset ")

	// Find the frame holding the byte and fix its CRC32C (over the length
	// bytes and the record), as a careless tool or a targeted edit would.
	off := 32
	for {
		n := int(binary.LittleEndian.Uint32(damaged[off:]))
		if at < off+8+n {
			break
		}
		off += 8 + n
	}
	n := int(binary.LittleEndian.Uint32(damaged[off:]))
	table := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Update(0, table, damaged[off:off+4]), table, damaged[off+8:off+8+n])
	binary.LittleEndian.PutUint32(damaged[off+4:], crc)
	writeFile(t, seg, string(damaged))
	failsWith(t, exitCorrupt, []string{"verify", dd}, "verify failed: hash chain broken at 00000000000000000001.seg offset "+fmt.Sprint(off), `entity "order:2"`, "payload does not match its digest")

	writeFile(t, seg, string(orig))
	if got := ok(t, "verify", dd); got != "ok: 6 events in 4 entities across 1 segment\n" {
		t.Errorf("verify after repair = %q", got)
	}
}

// configEntry returns key's value and source as "batpak config" prints
// them.
func configEntry(t *testing.T, key string, args ...string) (value, source string) {
	t.Helper()
	out := ok(t, append([]string{"config"}, args...)...)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == key {
			return f[1], strings.Join(f[2:len(f)-1], " ")
		}
	}
	t.Fatalf("batpak config lists no %s:\n%s", key, out)
	return "", ""
}

func TestCompressionConfig(t *testing.T) {
	home := isolate(t)
	want := func(value, source string, args ...string) {
		t.Helper()
		if v, s := configEntry(t, "compression", args...); v != value || s != source {
			t.Errorf("config %q: compression = %q from %q, want %q from %q", args, v, s, value, source)
		}
	}
	want("none", "default")
	cfgFile := filepath.Join(home, "c.yaml")
	writeFile(t, cfgFile, "compression: s2\n")
	want("s2", "config "+cfgFile, "--config", cfgFile)
	t.Setenv("BATPAK_COMPRESSION", "zstd")
	want("zstd", "env BATPAK_COMPRESSION", "--config", cfgFile)
	want("none", "flag --compression", "--config", cfgFile, "--compression", "none")
	want("s2", "flag --compression", "--compression", " S2 ") // any case, spaces trimmed
	t.Setenv("BATPAK_COMPRESSION", "")

	// Bad values name the key, where the value came from and what is
	// allowed, and are refused before the store is touched.
	dir := filepath.Join(home, "store")
	appendArgs := []string{"append", "--data-dir", dir, "--entity", "e", "--scope", "s", "--kind", "1:1", "--data", "{}"}
	r := fails(t, append(appendArgs, "--compression", "lz4"),
		"invalid config: compression (from flag --compression)", `"lz4" is not a compression`, "want none, zstd or s2")
	if strings.Contains(r.stderr, "Usage:") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("want one line without usage:\n%s", r.stderr)
	}
	t.Setenv("BATPAK_COMPRESSION", "gzip")
	fails(t, []string{"seal", "--data-dir", dir}, "compression (from env BATPAK_COMPRESSION)", `"gzip"`, "want none, zstd or s2")
	fails(t, []string{"stats", "--data-dir", dir}, "compression (from env BATPAK_COMPRESSION)")
	t.Setenv("BATPAK_COMPRESSION", "")
	writeFile(t, cfgFile, "compression: 3\n")
	fails(t, []string{"config", "--config", cfgFile}, "compression (from config "+cfgFile+")", "3 is not a compression", "want none, zstd or s2")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a bad compression value created the store (stat: %v)", err)
	}
}

// orderPayload is a realistic JSON event payload of about 1 KiB, different
// for every i.
func orderPayload(i int) string {
	type item struct {
		SKU        string `json:"sku"`
		Name       string `json:"name"`
		Qty        int    `json:"qty"`
		PriceCents int    `json:"price_cents"`
	}
	names := []string{"Ada Lovelace", "Grace Hopper", "Barbara Liskov", "Ken Thompson", "Margaret Hamilton"}
	cities := []string{"Amsterdam", "Utrecht", "Rotterdam", "Eindhoven"}
	var items []item
	total := 0
	for k := range 2 + i%4 {
		it := item{SKU: fmt.Sprintf("BAT-%03d-%d", (i*7+k)%500, k), Name: demoCatalog[(i+k)%len(demoCatalog)].Name,
			Qty: 1 + (i+k)%3, PriceCents: 299 + (i*31+k*17)%2000}
		total += it.Qty * it.PriceCents
		items = append(items, it)
	}
	b, err := json.Marshal(map[string]any{
		"order":    fmt.Sprintf("order:%d", i),
		"customer": map[string]any{"id": fmt.Sprintf("cust-%04d", i%53), "name": names[i%len(names)], "email": fmt.Sprintf("customer%d@example.com", i%53)},
		"shipping": map[string]any{
			"street": fmt.Sprintf("Keizersgracht %d", 1+i%300), "postcode": fmt.Sprintf("%04d AB", 1000+i%9000),
			"city": cities[i%len(cities)], "country": "NL",
		},
		"items":       items,
		"total_cents": total,
		"currency":    "EUR",
		"placed_at":   fmt.Sprintf("2026-03-%02dT%02d:%02d:%02dZ", 1+i%28, i%24, i%60, (i*13)%60),
		"notes":       "Leave the parcel with the neighbours at number 12 if nobody answers; do not ring after 21:00.",
		"tags":        []string{"web", "first-order", "gift-wrap"}[:1+i%3],
	})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// sameJSON reports whether a and b are the same JSON value, whitespace and
// key order aside.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %s", a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return reflect.DeepEqual(x, y)
}

// TestSealCompressedStore builds a store through the CLI with zstd and
// small segments, seals it and checks that the sealed segments are packed
// and footered, smaller on disk, and that every event still reads back.
func TestSealCompressedStore(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	flags := []string{"--data-dir", dir, "--compression", "zstd", "--segment-max-bytes", "64KiB"}
	run := func(args ...string) string {
		t.Helper()
		return ok(t, append(args, flags...)...)
	}
	failsWith(t, exitNotFound, append([]string{"seal"}, flags...), "no store at "+dir)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("seal on a missing store created it (stat: %v)", err)
	}

	// 250 events written with zstd: each append's open lets the store pack
	// sealed segments in the background, until the command closes it. Then
	// 150 more with compression none: the segments sealed meanwhile stay
	// plain, so seal (with zstd) has packing left to do.
	const n, zstdEvents = 400, 250
	payloads := map[string]string{} // id → payload
	var ids []string
	for i := range n {
		args := []string{"append", "--entity", fmt.Sprintf("order:%d", i%40), "--scope", "shop", "--kind", "1:1", "--data", orderPayload(i), "--json"}
		if i < zstdEvents {
			args = append(args, flags...)
		} else {
			args = append(args, "--data-dir", dir, "--segment-max-bytes", "64KiB")
		}
		rc := decode[receiptJSON](t, ok(t, args...))
		if rc.GlobalSequence != uint64(i) {
			t.Fatalf("append %d: global sequence %d", i, rc.GlobalSequence)
		}
		payloads[rc.ID.String()] = orderPayload(i)
		ids = append(ids, rc.ID.String())
		if i == zstdEvents-1 {
			if st := decode[statsJSON](t, run("stats", "--json")); st.PackedSegments == 0 || st.Segments < 4 {
				t.Fatalf("after %d appends with zstd: %d of %d segments packed, want some packed in the background", zstdEvents, st.PackedSegments, st.Segments)
			}
		}
	}

	before := decode[statsJSON](t, run("stats", "--json"))
	if before.Events != n || before.PackedSegments >= before.Segments-2 {
		t.Fatalf("before seal: %d events, %d of %d segments packed; want %d events and at least 2 sealed segments plain", before.Events, before.PackedSegments, before.Segments, n)
	}
	out := run("seal")
	after := decode[statsJSON](t, run("stats", "--json"))
	sealed := after.Segments - 1 // all but the segment being written
	if after.PackedSegments != sealed || after.PackedSegments == 0 {
		t.Errorf("after seal: %d of %d segments packed, want every sealed one (%d)", after.PackedSegments, after.Segments, sealed)
	}
	if after.PackedRawBytes <= after.PackedBytes || after.PackedRatio < 2 {
		t.Errorf("packed segments take %d bytes for %d raw (ratio %.2f), want at least 2x smaller", after.PackedBytes, after.PackedRawBytes, after.PackedRatio)
	}
	if after.Footers != after.Segments {
		t.Errorf("after seal: %d footers for %d segments", after.Footers, after.Segments)
	}
	if after.BytesOnDisk >= before.BytesOnDisk || after.Events != n || after.GlobalSequence != n || after.Bytes != before.Bytes {
		t.Errorf("stats before %+v\nafter %+v", before, after)
	}
	// The seal report: packed and footer counts before → after, disk bytes.
	for _, re := range []string{
		`^sealed in \S+ \(compression zstd\)\n`,
		fmt.Sprintf(`\npacked +%d → %d segments, [0-9.]+ [KM]iB on disk for [0-9.]+ [KM]iB raw \([0-9.]+x\)\n`, before.PackedSegments, sealed),
		fmt.Sprintf(`\nfooters +%d → %d of %d segments\n`, before.Footers, after.Segments, after.Segments),
		`\non disk +[0-9.]+ [KM]iB → [0-9.]+ [KM]iB \([0-9.]+ [KM]iB reclaimed\)\n$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("seal output does not match %q:\n%s", re, out)
		}
	}
	// A second seal has nothing left to do.
	if out := run("seal"); !strings.Contains(out, fmt.Sprintf("packed   %d → %d segments", sealed, sealed)) ||
		!strings.Contains(out, fmt.Sprintf("footers  %d → %d of", after.Segments, after.Segments)) || strings.Contains(out, "reclaimed") {
		t.Errorf("second seal:\n%s", out)
	}
	text := run("stats")
	if !regexp.MustCompile(fmt.Sprintf(`\npacked +%d segments, [0-9.]+ KiB on disk for [0-9.]+ KiB raw \([0-9.]+x\)\n`, sealed)).MatchString(text) ||
		!strings.Contains(text, fmt.Sprintf("footers        %d of %d segments", after.Segments, after.Segments)) {
		t.Errorf("stats:\n%s", text)
	}

	if got, want := run("verify"), fmt.Sprintf("ok: %d events in 40 entities across %s\n", n, plural(after.Segments, "segment", "segments")); got != want {
		t.Errorf("verify = %q, want %q", got, want)
	}
	lines := parseLines(t, run("query", "--json"))
	if len(lines) != n {
		t.Fatalf("query: %d events, want %d", len(lines), n)
	}
	for i, l := range lines {
		id := str(t, l, "id")
		if id != ids[i] || num(t, l, "global_sequence") != uint64(i) || !sameJSON(t, l["payload"], []byte(payloads[id])) {
			t.Fatalf("query line %d: %s seq %s payload %s\nwant %s seq %d payload %s", i, id, l["global_sequence"], l["payload"], ids[i], i, payloads[ids[i]])
		}
	}
	if got := parseLines(t, run("query", "--json", "--entity-prefix", "order:7", "--limit", "3")); len(got) != 3 || str(t, got[0], "id") != ids[7] {
		t.Errorf("query --entity-prefix order:7: %v", got)
	}
	for _, i := range []int{0, 1, n / 2, n - 1} { // packed segments first, the active one last
		ev := decode[map[string]json.RawMessage](t, run("get", ids[i], "--json"))
		if !sameJSON(t, ev["payload"], []byte(payloads[ids[i]])) || num(t, ev, "global_sequence") != uint64(i) {
			t.Errorf("get %s: %s", ids[i], ev["payload"])
		}
	}

	// The open report: a read-only open after a clean close starts from the
	// checkpoint and replays the packed segments' footers; without the
	// checkpoint, it opens from footers alone and reads no frames.
	if after.OpenPath != "checkpoint" || after.OpenFooters == 0 || after.OpenRestored != n {
		t.Errorf("open report: path %q, %d footers, %d restored", after.OpenPath, after.OpenFooters, after.OpenRestored)
	}
	if err := os.Remove(filepath.Join(dir, "index.ckpt")); err != nil {
		t.Fatal(err)
	}
	st := decode[statsJSON](t, run("stats", "--json"))
	if st.OpenPath != "footers" || st.OpenFooters != st.Segments || st.OpenSegmentsScanned != 0 || st.OpenRestored != 0 || st.OpenEntries != n {
		t.Errorf("open without a checkpoint: %+v", st)
	}
	if text := run("stats"); !strings.Contains(text, "opened via     footers in ") ||
		!strings.Contains(text, fmt.Sprintf("(%d footers used, 0 segments scanned; 0 restored, %d read from the log)", st.Segments, n)) {
		t.Errorf("stats without a checkpoint:\n%s", text)
	}

	// compact writes with the compression in force: with none, the packed
	// segments come back plain and take more room on disk.
	out = ok(t, "compact", "--data-dir", dir, "--segment-max-bytes", "64KiB")
	if !regexp.MustCompile(`, 0 B of data reclaimed, [0-9.]+ [KM]iB more on disk, in `).MatchString(out) {
		t.Errorf("compact with compression none: %q", out)
	}
	if st := decode[statsJSON](t, run("stats", "--json")); st.PackedSegments != 0 || st.PackedRatio != 0 || st.Events != n {
		t.Errorf("after compact with compression none: %+v", st)
	}
	ok(t, "verify", "--data-dir", dir)
}

// With compression none, seal writes footers but packs nothing.
func TestSealWithoutCompression(t *testing.T) {
	dir := filepath.Join(isolate(t), "store")
	dd, seg := "--data-dir="+dir, "--segment-max-bytes=64KiB"
	ok(t, "demo", dd, seg, "--orders", "300")
	before := decode[statsJSON](t, ok(t, "stats", dd, "--json"))
	if before.Segments < 3 || before.PackedSegments != 0 {
		t.Fatalf("before seal: %+v", before)
	}
	out := ok(t, "seal", dd, seg)
	after := decode[statsJSON](t, ok(t, "stats", dd, "--json"))
	if after.PackedSegments != 0 || after.PackedBytes != 0 || after.Footers != after.Segments || after.Events != before.Events {
		t.Errorf("after seal: %+v", after)
	}
	if !strings.Contains(out, "sealed in ") || !strings.Contains(out, "(compression none)") ||
		!strings.Contains(out, "packed   0 → 0 segments; compression none packs nothing") ||
		!strings.Contains(out, fmt.Sprintf("→ %d of %d segments", after.Segments, after.Segments)) {
		t.Errorf("seal:\n%s", out)
	}
	ok(t, "verify", dd)
}

// TestRepoConfigNamesEveryKey: the repository's config.yaml, which the
// README calls the documented default configuration, holds every key
// "batpak config" knows, and every one of them is read from it (source
// "config config.yaml"), so a reader finds each setting there.
func TestRepoConfigNamesEveryKey(t *testing.T) {
	repoConfig, err := os.ReadFile(filepath.Join("..", "..", "config.yaml")) // before isolate changes directory
	if err != nil {
		t.Fatal(err)
	}
	isolate(t)
	writeFile(t, "config.yaml", string(repoConfig))
	var shown struct {
		Settings []struct{ Key, Source string }
	}
	if err := json.Unmarshal([]byte(ok(t, "config", "-o", "json")), &shown); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(repoConfig, &doc); err != nil {
		t.Fatal(err)
	}
	inFile := func(key string) bool {
		var node any = doc
		for _, part := range strings.Split(key, ".") {
			m, isMap := node.(map[string]any)
			if !isMap {
				return false
			}
			var found bool
			if node, found = m[part]; !found {
				return false
			}
		}
		return true
	}
	if len(shown.Settings) == 0 {
		t.Fatal("batpak config -o json listed no settings")
	}
	for _, s := range shown.Settings {
		if !inFile(s.Key) {
			t.Errorf("config.yaml lacks %s", s.Key)
		} else if s.Source != "config config.yaml" {
			t.Errorf("%s: source %q, want it read from config.yaml", s.Key, s.Source)
		}
	}
}
