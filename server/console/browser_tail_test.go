package console_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/server"
	"github.com/chromedp/chromedp"
)

// A live tail cut off for falling behind — here a server whose streams
// may be at most one event behind, and a batch of 20 — says so and opens
// the stream again after the last event it showed: every event of the
// batch is shown once, and the tail is following again, without the
// viewer pressing anything.
func TestConsoleTailResumesAfterACutoff(t *testing.T) {
	b := newBrowser(t)
	e := startWith(t, func(c *server.Config) { c.SSEBufferEvents = 1 })
	key := e.tenant("acme")
	base := e.base + "/console/"
	b.goTo(base)
	b.run("sign in", visible("#credential"), chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("main h1", "Tenant acme")
	b.goTo(base + "#/tail")
	b.waitText("#tail-state", "following")
	var items []any
	for i := range 20 {
		items = append(items, map[string]any{"entity": fmt.Sprintf("burst:%d", i), "scope": "s", "kind": "1:1", "payload": i})
	}
	r := e.do(nil, "POST", "/v1/tenants/acme/batches", map[string]any{"events": items}, "Authorization", "Bearer "+key)
	if r.status/100 != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	b.waitText("#tail-state", "slow consumer")
	b.run("all 20 shown", chromedp.Poll[chromedp.Void](`document.querySelectorAll("#tail-body tr").length >= 20`))
	b.waitText("#tail-state", "following")
	rows := eval[string](b, `[...document.querySelectorAll("#tail-body tr td:nth-child(2)")].map(td => td.textContent).sort().join(",")`)
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("burst:%d", i))
	}
	slices.Sort(want)
	if strings.Join(want, ",") != rows {
		t.Fatalf("the tail shows %q, want each of the batch's entities once", rows)
	}
	b.noErrors("tail resumed")
}
