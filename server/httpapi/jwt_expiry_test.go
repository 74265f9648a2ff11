package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/jwttest"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
)

// TestStreamEndsWhenJWTExpires: an event stream opened with a JWT is cut
// off once the token expires (its "exp" plus the configured skew), like
// one whose API key is revoked; it delivers nothing written after that.
func TestStreamEndsWhenJWTExpires(t *testing.T) {
	iss := jwttest.New(t)
	const skew = time.Second
	e := start(t, func(c *server.Config) { c.JWT = &auth.JWTConfig{JWKSFile: iss.File, Skew: skew} })
	k := e.tenant("acme")
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:1")), 201)
	// Valid for about 2s more (exp 1s away, 1s of skew).
	tok := iss.Token(t, "acme", time.Now().Add(time.Second), "reader")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, res := e.openStream(ctx, "/v1/tenants/acme/subscribe", tok, "")
	defer res.Body.Close()
	first, ok := next()
	if !ok || first.event != "event" {
		t.Fatalf("first frame %+v %v", first, ok)
	}
	time.Sleep(3 * time.Second) // past exp + skew
	e.must(e.req("POST", "/v1/tenants/acme/events", k["writer"], appendBody("order:2")), 201)
	events, last, ended := streamEnd(next, 5*time.Second)
	if !ended {
		t.Fatal("the stream is still open 5s after its JWT expired")
	}
	if events != 0 {
		t.Fatalf("the stream delivered %d events after its JWT expired", events)
	}
	if last.event != "cutoff" || !strings.Contains(last.data, "expired") || !strings.Contains(last.data, `"resume_after":`+first.id) {
		t.Fatalf("stream ended with %+v, want a cutoff for the expiry resuming after %s", last, first.id)
	}
	// The expired token opens nothing new.
	r, _ := http.NewRequest("GET", e.base+"/v1/tenants/acme/subscribe", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	res2, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res2.Body)
	res2.Body.Close()
	if res2.StatusCode != 401 {
		t.Fatalf("an expired JWT subscribes: %d", res2.StatusCode)
	}
}
