package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
)

// PolicyTimeout takes 1ms..1m: both ends accepted, one step past either
// refused with an error naming the setting and the range.
func TestPolicyTimeoutRange(t *testing.T) {
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{{time.Millisecond, true}, {time.Minute, true}, {time.Millisecond - 1, false}, {time.Minute + 1, false}} {
		cfg := server.DefaultConfig()
		cfg.Root = t.TempDir()
		cfg.Stderr = io.Discard
		cfg.PolicyTimeout = tc.d
		srv, err := server.New(context.Background(), cfg)
		if tc.ok {
			if err != nil {
				t.Fatalf("PolicyTimeout %v: %v", tc.d, err)
			}
			if err := srv.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "policy timeout") || !strings.Contains(err.Error(), "1ms..1m") {
			t.Fatalf("PolicyTimeout %v: got %v, want a refusal naming the range", tc.d, err)
		}
	}
}

// A root that is a store's own directory (the CLI's --data-dir) is
// refused, naming the file that shows it, and left as it was.
func TestRootThatIsAStoreRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := core.Open(core.DefaultConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	cfg := server.DefaultConfig()
	cfg.Root, cfg.Stderr = dir, io.Discard
	if _, err := server.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "holds a batpak store") ||
		!strings.Contains(err.Error(), "not a server root") {
		t.Fatalf("a store's directory as the root: %v", err)
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Fatalf("the refused root changed: %d entries, %d before", len(after), len(before))
	}
}

// The platform policy (the example shop policy) gates writes over HTTP:
// its orders are admitted, a write outside the tenant's entities is
// refused with POLICY_DENIED and its reason, and many writers at once all
// get their decision (none turned into a timeout denial).
func TestPlatformPolicyOverHTTP(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.PolicyDir = filepath.Join("..", "examples", "policies")
	// writer: server access; clerk: the example policy's role for orders.
	bs := startBenchServerRoles(t, cfg, "acme", control.Settings{}, control.RoleWriter, "clerk")
	url := bs.base + "/v1/tenants/acme/events"
	hc := keepAliveClient(64)
	orders := orderPayloads(256)

	var wg sync.WaitGroup
	errs := make(chan error, len(orders))
	for i, p := range orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Appendf(nil, `{"entity":"acme:order:%d","scope":"shop","kind":"1:1","payload":%s}`, i, p)
			errs <- post(hc, url, bs.key, body, http.StatusCreated)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	body := fmt.Appendf(nil, `{"entity":"globex:order:1","scope":"shop","kind":"1:1","payload":%s}`, orders[0])
	req, _ := http.NewRequest("POST", url, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+bs.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var prob struct {
		Code    string `json:"code"`
		Reasons []struct {
			Code string `json:"code"`
		} `json:"reasons"`
	}
	err = json.NewDecoder(res.Body).Decode(&prob)
	res.Body.Close()
	if err != nil || res.StatusCode != 403 || prob.Code != "POLICY_DENIED" || len(prob.Reasons) == 0 || prob.Reasons[0].Code != "TENANT_MISMATCH" {
		t.Fatalf("write outside the tenant's entities: %d %+v %v", res.StatusCode, prob, err)
	}

	req, _ = http.NewRequest("GET", bs.base+"/v1/tenants/acme/stats", nil)
	req.Header.Set("Authorization", "Bearer "+bs.key)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Events int `json:"events"`
	}
	err = json.NewDecoder(res.Body).Decode(&st)
	res.Body.Close()
	if err != nil || st.Events != len(orders) {
		t.Fatalf("stats: %d events (%v), want %d: the denied write must not be stored", st.Events, err, len(orders))
	}
}
