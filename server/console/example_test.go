package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"

	"github.com/batpak-go/batpak/server"
)

// A server answers its console under /console/ on the API's listener. A
// person signs in with a credential (here the operator's); the browser
// gets an HttpOnly session cookie only, and the page a CSRF token for
// the requests that change something.
func Example() {
	root, _ := os.MkdirTemp("", "batpak-console")
	defer os.RemoveAll(root)
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Listen, cfg.AccessLog, cfg.Stderr = root, "127.0.0.1:0", "off", io.Discard
	cfg.OperatorToken = "bpko_" + strings.Repeat("example2", 6) + "exam"
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	defer func() { stop(); <-served }()
	base := "http://" + srv.Addr().String()

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	req, _ := http.NewRequest(http.MethodPost, base+"/console/session",
		strings.NewReader(`{"credential": "`+cfg.OperatorToken+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", base) // a browser's same-origin request
	resp, err := browser.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	fmt.Println("sign-in:", resp.StatusCode, "HttpOnly:", strings.Contains(cookie, "HttpOnly"))

	resp, err = browser.Get(base + "/console/session")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	var session struct {
		SignedIn bool   `json:"signed_in"`
		Operator bool   `json:"operator"`
		CSRF     string `json:"csrf_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&session)
	fmt.Println("signed in:", session.SignedIn, "operator:", session.Operator, "csrf token:", session.CSRF != "")
	// Output:
	// sign-in: 200 HttpOnly: true
	// signed in: true operator: true csrf token: true
}
