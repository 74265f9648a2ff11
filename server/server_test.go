package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
