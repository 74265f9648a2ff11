package console_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// nested is items zeros in an array nested depth levels deep, as JSON.
func nested(depth, items int) []byte {
	var b strings.Builder
	b.WriteString(strings.Repeat("[", depth))
	for i := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('0')
	}
	b.WriteString(strings.Repeat("]", depth))
	return []byte(b.String())
}

// A payload whose indented text would be huge (each level indents every
// line below it) is shown compact, cut to a bound, with its whole text a
// click away: one small event cannot take a viewer's tab to gigabytes.
func TestEventPageShowsAnyPayloadWithinBounds(t *testing.T) {
	b := newBrowser(t)
	e := start(t)
	key := e.tenant("acme")
	base := e.base + "/console/"
	const bound = 256 << 10
	add := func(entity string, payload []byte) string {
		return e.appendEvent("acme", key, map[string]any{"entity": entity, "scope": "s", "kind": "1:1", "payload": json.RawMessage(payload)})
	}
	// Small and deep: 12 KB of JSON, 2.4 MB indented; shown compact, whole.
	deep := nested(200, 6000)
	deepID := add("deep:1", deep)
	// The review's: 521 KB, 500 levels, 260,000 items; 261 million
	// characters indented.
	huge := nested(500, 260_000)
	hugeID := add("huge:1", huge)
	small := add("small:1", []byte(`{"a":[1,{"b":"c"}],"d":{}}`))

	b.goTo(base)
	b.run("sign in", visible("#credential"), chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("main h1", "Tenant acme")

	b.goTo(base + "#/event?id=" + small)
	b.waitText("#payload", `"b": "c"`)
	want := "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"c\"\n    }\n  ],\n  \"d\": {}\n}"
	if got := b.text("#payload"); got != want {
		t.Fatalf("a small payload is shown as %q, want it indented: %q", got, want)
	}
	if n := eval[int](b, `document.querySelectorAll("#payload-note").length`); n != 0 {
		t.Fatal("a small payload is shown with a note")
	}

	b.goTo(base + "#/event?id=" + deepID)
	b.waitText("#payload-note", "Shown compact")
	if got := eval[string](b, `document.querySelector("#payload").textContent`); got != string(deep) {
		t.Fatalf("the deep payload is shown as %d characters, want its %d of compact JSON", len(got), len(deep))
	}
	if n := eval[int](b, `document.querySelectorAll("#payload-all").length`); n != 0 {
		t.Fatal("a payload shown whole offers to show it all")
	}
	b.noErrors("deep payload")

	t0 := time.Now()
	b.goTo(base + "#/event?id=" + hugeID)
	b.waitText("#payload-note", "cut at")
	took := time.Since(t0)
	shown := eval[int](b, `document.querySelector("#payload").textContent.length`)
	heap := eval[float64](b, `performance.memory ? performance.memory.usedJSHeapSize : 0`)
	t.Logf("a %d-byte payload nested 500 deep: shown in %v as %d characters; JS heap %.0f MB", len(huge), took, shown, heap/1e6)
	if shown > bound+1 {
		t.Fatalf("the huge payload is shown as %d characters, want at most %d", shown, bound+1)
	}
	if !strings.HasPrefix(string(huge), strings.TrimSuffix(b.text("#payload"), "…")) {
		t.Fatal("the cut payload is not the start of its compact JSON")
	}
	if heap > 200e6 {
		t.Fatalf("the page holds %.0f MB of JS heap showing one 521 KB payload", heap/1e6)
	}
	b.shot("payload-cut")

	// Show all: the whole compact text.
	b.click("show all", "#payload-all")
	b.run("shown all", chromedp.Poll[chromedp.Void](`!document.querySelector("#payload-all")`, chromedp.WithPollingInterval(20*time.Millisecond)))
	if got := eval[int](b, `document.querySelector("#payload").textContent.length`); got != len(huge) {
		t.Fatalf("shown all: %d characters, want %d", got, len(huge))
	}

	// Download: the whole compact text, in a file.
	downloadsPayload(t, b, string(huge))
	b.noErrors("huge payload")

	// The live tail shows the start of it.
	b.goTo(base + "#/tail")
	b.waitText("#tail-state", "following")
	id := add("huge:2", huge)
	b.run("tail row", visible(`#tail-body tr[data-id="`+id+`"]`))
	if got := b.text(`#tail-body tr[data-id="` + id + `"] td:last-child`); len([]rune(got)) != 120 || !strings.HasSuffix(got, "…") {
		t.Fatalf("the tail shows the payload as %q", got)
	}
	b.noErrors("live tail")
}

// The event page shows and saves a payload as stored: numbers a double
// does not hold (past 2^53, past its range, -0, 1.0), string escapes and
// key order are the stored text's, not JSON.parse's; the live tail's
// line is that text too.
func TestEventPageShowsPayloadExactly(t *testing.T) {
	b := newBrowser(t)
	e := start(t)
	key := e.tenant("acme")
	base := e.base + "/console/"
	const payload = `{"big":12345678901234567890123,"id":9007199254740993,"huge":1e400,"neg0":-0,"f":1.0,"e":-1.50E+3,` +
		`"s":"\u00e9\"<&","k":{"2":"b","1":"a"},"a":[0.1e-0,[],{}],"t":true,"n":null}`
	body := []byte(`{"entity":"exact:1","scope":"s","kind":"1:1","payload":` + payload + `}`)
	add := func() string {
		r := e.must(e.do(nil, "POST", "/v1/tenants/acme/events", body, "Authorization", "Bearer "+key), 201)
		return r.json(t)["id"].(string)
	}
	id := add()

	b.goTo(base)
	b.run("sign in", visible("#credential"), chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("main h1", "Tenant acme")

	b.goTo(base + "#/event?id=" + id)
	b.waitText("#payload", `"big"`)
	want := `{
  "big": 12345678901234567890123,
  "id": 9007199254740993,
  "huge": 1e400,
  "neg0": -0,
  "f": 1.0,
  "e": -1.50E+3,
  "s": "\u00e9\"<&",
  "k": {
    "2": "b",
    "1": "a"
  },
  "a": [
    0.1e-0,
    [],
    {}
  ],
  "t": true,
  "n": null
}`
	if got := b.text("#payload"); got != want {
		t.Fatalf("the payload is shown as\n%s\nwant\n%s", got, want)
	}
	if n := eval[int](b, `document.querySelectorAll("#payload-note, #payload-approx").length`); n != 0 {
		t.Fatal("an exactly shown payload carries a note")
	}

	downloadsPayload(t, b, payload)
	b.noErrors("exact payload")

	b.goTo(base + "#/tail")
	b.waitText("#tail-state", "following")
	tid := add()
	b.run("tail row", visible(`#tail-body tr[data-id="`+tid+`"]`))
	if got := b.text(`#tail-body tr[data-id="` + tid + `"] td:last-child`); got != payload[:119]+"…" {
		t.Fatalf("the tail shows the payload as %q", got)
	}
	b.noErrors("live tail")
}

// downloadsPayload clicks the event page's Download JSON and waits for
// the one file it saves to hold want, byte for byte.
func downloadsPayload(t *testing.T, b *browser, want string) {
	t.Helper()
	dir := t.TempDir()
	b.run("allow downloads", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		events := true
		_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
			Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: &events})
		return err
	}))
	b.click("download", "#payload-download")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		files, _ := os.ReadDir(dir)
		var got []byte
		if len(files) == 1 {
			if got, _ = os.ReadFile(filepath.Join(dir, files[0].Name())); string(got) == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no download of the payload as stored within 20s (%d files; %.200q)", len(files), got)
		}
	}
}
