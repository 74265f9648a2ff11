package console_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// A plugin's recent faults read "kind: message (time)"; a fault with an
// empty message or none at all shows its JSON in the message's place, and
// the page around it still renders.
func TestPluginFaultsInABrowser(t *testing.T) {
	b := newBrowser(t)
	e := start(t)
	key := e.tenant("acme")
	e.demo("acme", key, 1) // order:1, which trap faults on
	e.policyAndPlugins("acme", key)
	base := e.base + "/console/"

	b.goTo(base)
	b.run("sign in", visible("#credential"), chromedp.SendKeys(chromedp.CSS("#credential"), key), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.waitText("main h1", "Tenant acme")

	st := e.must(e.do(nil, "GET", "/v1/tenants/acme/plugins/trap?nodes=all", nil, "Authorization", "Bearer "+key), 200).json(t)
	nodes, _ := st["nodes"].([]any)
	if len(nodes) != 1 {
		t.Fatalf("trap's status: %v", st)
	}
	faults, _ := nodes[0].(map[string]any)["faults"].([]any)
	if len(faults) == 0 {
		t.Fatalf("trap has no recent faults: %v", st)
	}
	last := faults[len(faults)-1].(map[string]any)
	msg, _ := last["message"].(string)
	if last["kind"] != "trap" || msg == "" {
		t.Fatalf("trap's last fault: %v", last)
	}
	if len([]rune(msg)) > 140 {
		msg = string([]rune(msg)[:139]) + "…"
	}
	want := fmt.Sprintf("trap: %s (%s)", msg, last["time"])

	faultLines := func() []string {
		return eval[[]string](b, `[...document.querySelectorAll("#faults-trap li")].map((li) => li.textContent)`)
	}
	b.goTo(base + "#/plugins")
	b.waitText("#plugin-trap", "recent fault(s)")
	lines := faultLines()
	if len(lines) != len(faults) || lines[len(lines)-1] != want {
		t.Fatalf("trap's fault lines are %q, want %d ending with %q", lines, len(faults), want)
	}
	b.noErrors("plugins")

	// Faults with an empty message and with none, as another server
	// version might send them: the page's fetch answers trap's status with
	// them added.
	eval[bool](b, `(() => {
		const real = window.fetch;
		window.fetch = async (url, init) => {
			const r = await real(url, init);
			if (!String(url).includes("/plugins/trap?")) return r;
			const st = await r.json();
			st.nodes[0].faults.push({ time: "2099-01-02T03:04:05Z", kind: "timeout", message: "" },
				{ time: "2099-01-02T03:04:06Z", version: "1.0.0" });
			return new Response(JSON.stringify(st), { status: r.status, headers: r.headers });
		};
		return true;
	})()`)
	b.goTo(base + "#/dashboard")
	b.waitText("main h1", "Tenant acme")
	b.run("to the plugins", chromedp.Evaluate[chromedp.Void](`location.hash = "#/plugins"`))
	b.waitText("#plugin-trap", fmt.Sprintf("%d recent fault(s)", len(faults)+2))
	lines = faultLines()
	if len(lines) < 3 {
		t.Fatalf("fault lines %q", lines)
	}
	got := lines[len(lines)-3:]
	wantTail := []string{want,
		`timeout: {"time":"2099-01-02T03:04:05Z","kind":"timeout","message":""} (2099-01-02T03:04:05Z)`,
		`fault: {"time":"2099-01-02T03:04:06Z","version":"1.0.0"} (2099-01-02T03:04:06Z)`}
	for i := range got {
		if got[i] != wantTail[i] {
			t.Fatalf("fault line %d is %q, want %q", i, got[i], wantTail[i])
		}
	}
	// The rest of the page is there: the other plugins and the workers.
	b.waitText("#plugin-count", "loaded")
	b.waitText("#workers", "echoer")
	if strings.Contains(b.text("#plugins"), "Cannot read") {
		t.Fatal("the plugin list shows a script error")
	}
	b.noErrors("plugins with faults lacking messages")
}
