package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClusterConsoleOnFollower: the console of a follower shows what the
// node holds, and a change made through it is answered 503 NOT_LEADER
// naming the leader's console — never a redirect the browser would follow
// to the leader without the session's credential. On the leader the same
// change is made.
func TestClusterConsoleOnFollower(t *testing.T) {
	root := t.TempDir()
	n1 := startClusterLeader(t, root)
	n2 := startClusterServer(t, root, "n2", false, n1.base)
	waitFor(t, 20*time.Second, "n2 follows n1", func() bool {
		code, st := call(t, "GET", n2.base+"/v1/cluster", clusterOperator, "")
		return code == 200 && st["state"] == "follower"
	})
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, url, origin, cookie, csrf, body string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", origin)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
			req.Header.Set("X-CSRF-Token", csrf)
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, b
	}
	signIn := func(base string) (cookie, csrf string) {
		t.Helper()
		res, b := do("POST", base+"/console/session", base, "", "", `{"credential":"`+clusterOperator+`"}`)
		if res.StatusCode/100 != 2 {
			t.Fatalf("sign-in on %s: %d %s", base, res.StatusCode, b)
		}
		var v struct {
			CSRF string `json:"csrf_token"`
		}
		if err := json.Unmarshal(b, &v); err != nil || v.CSRF == "" {
			t.Fatalf("sign-in on %s: %s", base, b)
		}
		for _, c := range res.Cookies() {
			cookie = c.Name + "=" + c.Value
		}
		return cookie, v.CSRF
	}

	cookie, csrf := signIn(n2.base)
	var res *http.Response
	var b []byte
	var p struct{ Code, Detail, Title string }
	// Until the follower has applied the leader's URL record, it answers
	// 503 NOT_LEADER without an address.
	waitFor(t, 10*time.Second, "the follower knows the leader's URL", func() bool {
		res, b = do("POST", n2.base+"/console/api/v1/admin/tenants", n2.base, cookie, csrf, `{"id":"acme"}`)
		_ = json.Unmarshal(b, &p)
		return !strings.Contains(p.Detail, "knows no leader's address yet")
	})
	if res.StatusCode != http.StatusServiceUnavailable || p.Code != "NOT_LEADER" || p.Title == "" ||
		!strings.Contains(p.Detail, n1.base+"/console/") || res.Header.Get("Location") != "" {
		t.Fatalf("a change through a follower's console: %d %s (Location %q), want 503 NOT_LEADER naming %s/console/",
			res.StatusCode, b, res.Header.Get("Location"), n1.base)
	}
	if res, b := do("GET", n2.base+"/console/api/v1/admin/tenants", n2.base, cookie, csrf, ""); res.StatusCode != 200 {
		t.Fatalf("a read through a follower's console: %d %s", res.StatusCode, b)
	}

	cookie, csrf = signIn(n1.base)
	if res, b := do("POST", n1.base+"/console/api/v1/admin/tenants", n1.base, cookie, csrf, `{"id":"acme"}`); res.StatusCode != http.StatusCreated {
		t.Fatalf("the same change through the leader's console: %d %s", res.StatusCode, b)
	}
}
