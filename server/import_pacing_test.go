package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/server"
)

// statEvents is how many events tenant's store holds (GET stats, as key).
func statEvents(t *testing.T, base, tenant, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/tenants/"+tenant+"/stats", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st struct{ Events int }
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&st) != nil {
		t.Fatalf("stats: %d", res.StatusCode)
	}
	return st.Events
}

// An import paced by a slow rate ends as soon as its tenant is suspended
// through the admin API: the answer comes at once, and no batch is
// written after the suspension.
func TestPacedImportStopsAtSuspension(t *testing.T) {
	bs, key := rateTenant(t, server.DefaultConfig(), 10, 256) // a batch of 256 at once, then 25.6s before each next
	nd := importBody(t, "slow", 256*4, orderPayloads(16))
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", bs.base+"/v1/tenants/slow/import", bytes.NewReader(nd))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/x-ndjson")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- -1
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	deadline := time.Now().Add(5 * time.Second)
	for statEvents(t, bs.base, "slow", key) < 256 {
		if time.Now().After(deadline) {
			t.Fatal("the import did not write its first batch")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the import is now waiting for its rate
	ctx := context.Background()
	req, _ := http.NewRequest("POST", bs.base+"/v1/admin/tenants/slow/suspend", nil)
	req.Header.Set("Authorization", "Bearer bpko_"+strings.Repeat("a", 52))
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("suspend: %v %v", res, err)
	}
	select {
	case st := <-done:
		if st == http.StatusOK {
			t.Fatalf("the import of a suspended tenant succeeded")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a paced import went on after its tenant was suspended")
	}
	if _, err := bs.srv.Plane().ResumeTenant(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	if n := statEvents(t, bs.base, "slow", key); n != 256 {
		t.Fatalf("%d events stored, want the 256 the rate paid for before the suspension", n)
	}
}
