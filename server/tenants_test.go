package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/auth"
	"github.com/batpak-go/batpak/server/control"
)

// TestFirstRequestToClosedTenant: tenants written to, the server
// restarted (every tenant store closed), then one first request per
// tenant over HTTP (a page of its events): each must answer with the
// tenant's events; the latency (which opens the store) is reported.
func TestFirstRequestToClosedTenant(t *testing.T) {
	const tenants, events = 50, 10
	root := t.TempDir()
	start := func() (*server.Server, string, func()) {
		cfg := servertest.Config(t)
		cfg.Root = root
		cfg.OperatorToken = "bpko_" + string(bytes.Repeat([]byte("a"), 52))
		ts := servertest.Start(t, cfg)
		return ts.Server, ts.URL, func() {
			if err := ts.Stop(); err != nil {
				t.Error(err)
			}
		}
	}
	srv, base, stop := start()
	keys := make([]string, tenants)
	hc := keepAliveClient(4)
	for i := range keys {
		id := fmt.Sprintf("t%03d", i)
		if _, err := srv.Plane().CreateTenant(context.Background(), id, control.Quotas{}, control.Settings{}); err != nil {
			t.Fatal(err)
		}
		token, kid, hash, _ := auth.NewKey()
		if _, err := srv.Plane().IssueKey(context.Background(), control.Key{ID: kid, Tenant: id, Roles: []control.Role{control.RoleWriter}, Hash: hash}); err != nil {
			t.Fatal(err)
		}
		keys[i] = token
		for e := 0; e < events; e++ {
			if err := post(hc, base+"/v1/tenants/"+id+"/events", token, fmt.Appendf(nil, `{"entity":"e:%d","scope":"s","kind":"1:1","payload":{"n":%d}}`, e, e), http.StatusCreated); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop()
	hc.CloseIdleConnections()

	_, base, stop = start()
	defer stop()
	lat := make([]time.Duration, tenants)
	for i, key := range keys {
		req, _ := http.NewRequest("GET", base+fmt.Sprintf("/v1/tenants/t%03d/events?limit=%d", i, events), nil)
		req.Header.Set("Authorization", "Bearer "+key)
		t0 := time.Now()
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		lat[i] = time.Since(t0)
		if res.StatusCode != 200 || bytes.Count(body, []byte(`"global_sequence"`)) != events {
			t.Fatalf("tenant %d: %d %s", i, res.StatusCode, body)
		}
	}
	slices.Sort(lat)
	t.Logf("first request (a page of %d events) to a closed %d-event tenant over HTTP, %d tenants: p50 %v, p99 %v, max %v",
		events, events, tenants, lat[tenants/2].Round(time.Microsecond), lat[tenants*99/100].Round(time.Microsecond), lat[tenants-1].Round(time.Microsecond))
}
