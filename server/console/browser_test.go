package console_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromium finds a Chromium or Chrome binary ($BATPAK_CHROMIUM first). The
// browser tests skip without one, except under CI=true or
// BATPAK_REQUIRE_TOOLS=1 (.ci/run's default), where they must run.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BATPAK_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" || os.Getenv("BATPAK_REQUIRE_TOOLS") == "1" {
		t.Fatal("no chromium binary found (apt-get install chromium, or set BATPAK_CHROMIUM); CI=true and BATPAK_REQUIRE_TOOLS=1 need the browser tests to run")
	}
	t.Skip("no chromium binary found (apt-get install chromium, or set BATPAK_CHROMIUM): skipping the browser tests")
	return ""
}

// browser is a headless Chromium tab that records console errors,
// uncaught exceptions and error log entries (CSP violations among them).
type browser struct {
	t      *testing.T
	ctx    context.Context
	shots  string
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromium(t)
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1366, 900),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	shots := os.Getenv("BATPAK_ARTIFACTS")
	if shots == "" {
		shots = t.TempDir()
	} else {
		shots = filepath.Join(shots, "console")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, shots: shots}
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() { cancelC(); cancelA() })
	b.ctx = ctx
	// The first run starts the browser: no deadline on it (it would stop
	// the browser with it).
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	t.Logf("screenshots in %s", shots)
	return b
}

func (b *browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(parts, " ")
		}
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			msg = "log (" + string(ev.Entry.Source) + "): " + ev.Entry.Text + " " + ev.Entry.URL
		}
	}
	if msg != "" {
		b.mu.Lock()
		b.errors = append(b.errors, msg)
		b.mu.Unlock()
	}
}

// run runs actions with a deadline, failing the test with what.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed-" + strings.NewReplacer(" ", "-", "/", "-", "#", "", "\"", "").Replace(what))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// click clicks the element sel selects. Pages that refresh (the tenant
// table, the plugin list) may replace it between the browser finding it
// and clicking it ("Could not find node with given id"): the click is
// then tried again on the element that replaced it, within run's deadline.
func (b *browser) click(what, sel string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline))
		err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Could not find node") || time.Now().After(deadline) {
			b.shot("failed-" + strings.NewReplacer(" ", "-", "/", "-", "#", "", "\"", "").Replace(what))
			b.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noErrors fails the test if the page logged an error since the last call.
func (b *browser) noErrors(page string) {
	b.t.Helper()
	b.mu.Lock()
	errs := b.errors
	b.errors = nil
	b.mu.Unlock()
	for _, e := range errs {
		b.t.Errorf("%s: %s", page, e)
	}
}

// forgetErrors drops what the page logged (after requests meant to fail).
func (b *browser) forgetErrors() {
	b.mu.Lock()
	b.errors = nil
	b.mu.Unlock()
}

func (b *browser) shot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), buf, 0o644); err != nil {
		b.t.Error(err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// eval runs a JavaScript expression (awaiting a promise) into out.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

func evalInto[T any](b *browser, js string, out *T) {
	b.t.Helper()
	*out = eval[T](b, js)
}

// waitText waits until sel's text contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
	b.run("wait for "+sel+" to say "+want, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(20*time.Millisecond)))
}

// visible waits until sel is visible.
func visible(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitVisible(chromedp.CSS(sel))
}

func (b *browser) goTo(url string) {
	b.t.Helper()
	b.run("navigate "+url, chromedp.Navigate(url))
}

// TestConsoleInABrowser drives the console in headless Chromium against a
// real server on loopback: sign-in, every page without console errors,
// the causal graph of the demo workload, the live tail's latency, tenant
// isolation, CSRF, sign-out and the operator's suspend/resume.
func TestConsoleInABrowser(t *testing.T) {
	b := newBrowser(t)
	e := start(t)
	key := e.tenant("acme")
	globexKey := e.tenant("globex")
	gid := e.appendEvent("globex", globexKey, map[string]any{"entity": "secret:1", "scope": "s", "kind": "1:1", "payload": map[string]any{"globex": "classified"}})
	orders := e.demo("acme", key, 3)
	base := e.base + "/console/"
	rev := e.policyAndPlugins("acme", key)

	// Sign-in.
	b.goTo(base)
	b.run("sign-in form", visible("#credential"))
	b.shot("01-signin")
	b.noErrors("sign-in page")
	b.run("sign in", chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("main h1", "Tenant acme")
	st := e.must(e.do(nil, "GET", "/v1/tenants/acme/stats", nil, "Authorization", "Bearer "+key), 200).json(t)
	b.waitText("#facts", fmt.Sprintf("%v in %v entities", st["events"], st["entities"]))
	for i := 0; i < 12; i++ { // a few seconds of writes for the charts
		e.appendEvent("acme", key, map[string]any{"entity": "load:" + itoa(i%3), "scope": "bench", "kind": "3:1", "payload": map[string]any{"i": i}})
		time.Sleep(250 * time.Millisecond)
	}
	b.shot("02-dashboard")
	b.noErrors("dashboard")

	// The key is not reachable from the page: the cookie is HttpOnly and
	// SameSite=Strict, nothing is stored, the DOM does not hold it.
	var cookies []*network.Cookie
	b.run("cookies", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
		cookies = res.Cookies
		return err
	}))
	if len(cookies) != 1 || !cookies[0].HTTPOnly || cookies[0].SameSite != network.CookieSameSiteStrict || cookies[0].Path != "/console" {
		t.Fatalf("cookies %+v: want one HttpOnly, SameSite=Strict cookie on /console", cookies)
	}
	var leak bool
	evalInto(b, fmt.Sprintf(`document.cookie !== "" || localStorage.length > 0 || sessionStorage.length > 0 || document.documentElement.outerHTML.includes(%q)`, key), &leak)
	if leak {
		t.Fatal("the key or the session cookie is reachable from the page's script")
	}

	// Stream browser.
	b.goTo(base + "#/streams?prefix=order:")
	b.waitText("#entities", "order:3")
	b.shot("03-streams-search")
	b.goTo(base + "#/streams?entity=order:2")
	b.waitText("#stream-events", "1:2")
	var rows int
	evalInto(b, `document.querySelectorAll("#stream-events tbody tr").length`, &rows)
	if rows != 2 {
		t.Errorf("stream order:2 shows %d events, want 2", rows)
	}
	b.shot("04-stream")
	// Paging: 60 events, 50 a page.
	var page []any
	for i := 0; i < 60; i++ {
		page = append(page, map[string]any{"entity": "page:1", "scope": "shop", "kind": "5:1", "payload": i})
	}
	if r := e.do(nil, "POST", "/v1/tenants/acme/batches", map[string]any{"events": page}, "Authorization", "Bearer "+key); r.status/100 != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	b.goTo(base + "#/streams?entity=page:1")
	b.waitText("main", "Clocks 0–49")
	b.run("next page", chromedp.Click(chromedp.CSS("#next-page")))
	b.waitText("main", "Clocks 50–59")
	if n := eval[int](b, `document.querySelectorAll("#stream-events tbody tr").length`); n != 10 {
		t.Errorf("second page: %d events, want 10", n)
	}
	b.noErrors("stream browser")

	// Event detail, with the chain verified.
	shipped := orders[1][2]
	b.goTo(base + "#/event?id=" + shipped)
	b.waitText("#payload", `"carrier": "post"`)
	b.waitText("#event-fields", orders[1][1]) // its causation
	b.run("verify", chromedp.Click(chromedp.CSS("#verify-chain")))
	b.waitText("#chain", "verified")
	b.shot("05-event")
	b.noErrors("event detail")

	// Causal graph of the payment of order 2: its cause, itself and its
	// effect, two causation edges, nothing of the other orders.
	placed, paid := orders[1][0], orders[1][1]
	b.goTo(base + "#/graph?id=" + paid)
	b.run("graph", visible("svg#graph g.node"))
	checkGraph := func(focus string) {
		t.Helper()
		var g struct {
			Nodes []string `json:"nodes"`
			Edges []string `json:"edges"`
			Focus string   `json:"focus"`
			Label []string `json:"labels"`
		}
		evalInto(b, `({nodes: [...document.querySelectorAll("svg#graph g.node")].map(n => n.dataset.id).sort(),
			edges: [...document.querySelectorAll("svg#graph path.edge")].map(p => p.dataset.from + ">" + p.dataset.to).sort(),
			focus: (document.querySelector("svg#graph g.node.focus") || {dataset: {}}).dataset.id || "",
			labels: [...document.querySelectorAll("svg#graph g.node")].map(n => n.dataset.kind + " " + n.dataset.entity).sort()})`, &g)
		want := []string{placed, paid, shipped}
		slices.Sort(want)
		wantEdges := []string{placed + ">" + paid, paid + ">" + shipped}
		slices.Sort(wantEdges)
		if !slices.Equal(g.Nodes, want) || !slices.Equal(g.Edges, wantEdges) || g.Focus != focus {
			t.Fatalf("graph of %s: nodes %v edges %v focus %s; want nodes %v edges %v", focus, g.Nodes, g.Edges, g.Focus, want, wantEdges)
		}
		if !slices.Equal(g.Label, []string{"1:1 order:2", "1:2 order:2", "2:1 payment:2"}) {
			t.Fatalf("graph labels %v", g.Label)
		}
	}
	checkGraph(paid)
	b.shot("06-graph")
	b.noErrors("causal graph")
	// Click a node to move to it; the keyboard works too.
	b.run("click the cause", chromedp.Click(chromedp.CSS(`svg#graph g.node[data-id="`+placed+`"]`)))
	b.run("moved", visible(`svg#graph g.node.focus[data-id="`+placed+`"]`))
	checkGraph(placed)
	b.run("focus the effect", chromedp.Focus(chromedp.CSS(`svg#graph g.node[data-id="`+shipped+`"]`)), chromedp.KeyEvent("\r"))
	b.run("moved by keyboard", visible(`svg#graph g.node.focus[data-id="`+shipped+`"]`))
	checkGraph(shipped)
	b.noErrors("causal graph navigation")

	// A large graph is bounded and says so.
	root := e.appendEvent("acme", key, map[string]any{"entity": "fanout:root", "scope": "shop", "kind": "3:1", "payload": 0})
	var items []any
	for i := 0; i < 150; i++ {
		items = append(items, map[string]any{"entity": "fanout:" + itoa(i), "scope": "shop", "kind": "3:2", "payload": i, "causation_id": root})
	}
	if r := e.do(nil, "POST", "/v1/tenants/acme/batches", map[string]any{"events": items}, "Authorization", "Bearer "+key); r.status/100 != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	b.goTo(base + "#/graph?id=" + root)
	b.waitText("#truncated", "Truncated")
	b.shot("06b-graph-truncated")
	if n := eval[int](b, `document.querySelectorAll("svg#graph g.node").length`); n < 100 || n > 300 {
		t.Fatalf("a truncated graph shows %d nodes, want 100..300", n)
	}
	b.noErrors("truncated graph")

	// Live tail: an event appears within 1 s of its append; paused, it
	// waits; resumed, it arrives.
	b.goTo(base + "#/tail")
	b.waitText("#tail-state", "following")
	t0 := time.Now()
	id := e.appendEvent("acme", key, map[string]any{"entity": "order:99", "scope": "shop", "kind": "1:1", "payload": map[string]any{"live": true}})
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	err := chromedp.Do(ctx, visible(`#tail-body tr[data-id="`+id+`"]`))
	cancel()
	if err != nil {
		t.Fatalf("live tail: the event did not appear within 1s of its append (%v)", err)
	}
	t.Logf("live tail: append to display %v", time.Since(t0))
	b.shot("07-tail")
	b.run("pause", chromedp.Click(chromedp.CSS("#tail-pause")))
	b.waitText("#tail-state", "paused")
	held := e.appendEvent("acme", key, map[string]any{"entity": "order:100", "scope": "shop", "kind": "1:1", "payload": map[string]any{"held": true}})
	time.Sleep(500 * time.Millisecond)
	var shown bool
	evalInto(b, `!!document.querySelector('#tail-body tr[data-id="`+held+`"]')`, &shown)
	if shown {
		t.Fatal("a paused tail showed a new event")
	}
	b.run("resume", chromedp.Click(chromedp.CSS("#tail-pause")),
		visible(`#tail-body tr[data-id="`+held+`"]`))
	b.noErrors("live tail")

	// Policies: the active revision, its denial, and evaluations.
	b.goTo(base + "#/policies")
	b.waitText("#policy-active", rev)
	b.waitText("#policy-denials", "NO_SECRETS")
	b.run("evaluate a denied write", chromedp.Clear(chromedp.CSS("#eval-entity")), chromedp.SendKeys(chromedp.CSS("#eval-entity"), "secret:9"), chromedp.Click(chromedp.CSS("#eval-submit")))
	b.waitText("#eval-result", "denied by revision "+rev[:12])
	b.waitText("#eval-result", "NO_SECRETS")
	b.waitText("#eval-result", "Judged with the entity having no events yet.")
	if v := eval[string](b, `document.querySelector("#eval-entity").value`); v != "secret:9" {
		t.Fatalf("entity field %q", v)
	}
	b.shot("08-policies")
	b.noErrors("policies")

	// Plugins: the quarantined one is reset from the page.
	b.goTo(base + "#/plugins")
	b.waitText("#plugins", "quarantined")
	b.waitText("#plugins", "2 faults")
	b.waitText("#workers", "echoer")
	b.waitText("#workers", "running")
	b.shot("09-plugins")
	b.click("reset the quarantine", `button[data-plugin="trap"]`)
	b.waitText("#plugin-trap", "loaded")
	if st := e.must(e.do(nil, "GET", "/v1/tenants/acme/plugins/trap", nil, "Authorization", "Bearer "+key), 200).json(t); st["quarantined"] != false {
		t.Fatalf("trap after Reset: %v", st)
	}
	// The open page reads again by itself: faulted twice more from
	// elsewhere, the plugin shows as quarantined without a reload.
	for range 2 {
		e.do(nil, "GET", "/v1/tenants/acme/projections/trap/order:1", nil, "Authorization", "Bearer "+key)
	}
	b.waitText("#plugin-trap", "quarantined")
	b.noErrors("plugins")

	// Isolation from the browser: another tenant's data is refused, and
	// its event is not found in this tenant.
	var statuses []int
	evalInto(b, `Promise.all(["/console/api/v1/tenants/globex/stats", "/console/api/v1/tenants/globex/events/`+gid+`",
		"/console/samples/tenants/globex", "/console/overview", "/console/api/v1/admin/tenants"].map(u => fetch(u).then(r => r.status)))`, &statuses)
	for i, s := range statuses {
		if s != 403 {
			t.Errorf("cross-tenant request %d: %d, want 403", i, s)
		}
	}
	b.goTo(base + "#/graph?id=" + gid)
	b.run("refused graph", visible("main p.error"))
	if s := b.text("main"); strings.Contains(s, "classified") || strings.Contains(s, "secret:1") {
		t.Fatalf("another tenant's event shown: %s", s)
	}
	b.goTo(e.base + "/console/api/v1/tenants/globex/events")
	if s := b.text("body"); !strings.Contains(s, "FORBIDDEN") || strings.Contains(s, "classified") {
		t.Fatalf("another tenant's events page: %s", s)
	}
	// CSRF: a state change without the token is refused.
	var csrfStatus int
	b.goTo(base + "#/dashboard")
	b.waitText("main h1", "Tenant acme")
	evalInto(b, `fetch("/console/api/v1/tenants/acme/events", {method: "POST", headers: {"Content-Type": "application/json"},
		body: JSON.stringify({entity: "x:1", scope: "s", kind: "1:1", payload: 1})}).then(r => r.status)`, &csrfStatus)
	if csrfStatus != 403 {
		t.Fatalf("a POST without the CSRF token: %d, want 403", csrfStatus)
	}
	b.forgetErrors()

	// The browser enforces the CSP (an inline style and an inline script
	// are refused), and the listener that checks each page hears it.
	if ran := eval[bool](b, `(() => {
		document.body.setAttribute("style", "background: red");
		const s = document.createElement("script");
		s.textContent = "window.inlineRan = true";
		document.body.appendChild(s);
		return !!window.inlineRan;
	})()`); ran {
		t.Fatal("an inline script ran despite the CSP")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		b.mu.Lock()
		got := strings.Join(b.errors, "\n")
		b.mu.Unlock()
		if strings.Contains(got, "Content Security Policy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CSP violation reported (errors: %q)", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.forgetErrors()

	// Sign-out ends the session on the server.
	b.run("sign out", chromedp.Click(chromedp.CSS("#signout")), visible("#credential"))
	var after struct {
		SignedIn bool `json:"signed_in"`
	}
	evalInto(b, `fetch("/console/session").then(r => r.json())`, &after)
	if after.SignedIn {
		t.Fatal("still signed in after sign-out")
	}
	b.goTo(base + "#/dashboard")
	b.run("back to sign-in", visible("#credential"))
	b.noErrors("sign-out")

	// The operator: every tenant, suspend and resume from the page.
	b.run("operator sign-in", chromedp.SendKeys(chromedp.CSS("#credential"), opToken), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("#tenant-table", "globex")
	time.Sleep(1500 * time.Millisecond)
	b.shot("10-overview")
	b.noErrors("overview")
	if n := eval[int](b, `document.querySelectorAll("#cluster-panel").length`); n != 0 {
		t.Fatal("a single server's overview shows a cluster panel")
	}
	b.click("suspend globex", `button[data-tenant="globex"]`)
	b.waitText(`tr[data-tenant="globex"]`, "suspended")
	if st := e.must(e.do(nil, "GET", "/v1/admin/tenants/globex", nil, "Authorization", "Bearer "+opToken), 200).json(t)["state"]; st != "suspended" {
		t.Fatalf("globex is %v after Suspend", st)
	}
	b.shot("11-overview-suspended")
	// One tenant's figures.
	b.click("acme's figures", `a[aria-label="figures of tenant acme"]`)
	b.waitText("#tenant-figures", "Tenant acme")
	b.waitText("#tenant-figures", "Events / s")
	b.click("resume globex", `button[data-tenant="globex"]`)
	b.waitText(`tr[data-tenant="globex"]`, "active")
	b.noErrors("suspend and resume")
	time.Sleep(1500 * time.Millisecond)
	b.shot("12-overview-tenant")
}
