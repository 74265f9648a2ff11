package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/servertest"
	"github.com/batpak-go/batpak/sdk/client"
	"github.com/batpak-go/batpak/server"
	"github.com/batpak-go/batpak/server/control"
	"github.com/batpak-go/batpak/server/httpapi"
)

// TestBatchLimitIsTheQuota: a batch request holds up to the tenant's
// max_batch_events (default 4096, the stores' own ceiling): exactly the
// quota is written atomically, one more is QUOTA_EXCEEDED and writes
// nothing, and a quota above the stores' ceiling is refused when set.
func TestBatchLimitIsTheQuota(t *testing.T) {
	bs := startBenchServer(t, server.DefaultConfig(), "t1", control.Settings{})
	ctx := context.Background()
	c, _ := client.New(bs.base, bs.key)
	batch := func(n int) []client.AppendRequest {
		items := make([]client.AppendRequest, n)
		for i := range items {
			items[i] = client.AppendRequest{Entity: fmt.Sprintf("e:%d", i%7), Scope: "s", Kind: "1:1", Payload: json.RawMessage(`{"v":1}`)}
		}
		return items
	}
	rs, err := c.Tenant("t1").AppendBatch(ctx, batch(control.MaxBatchEventsLimit))
	if err != nil || len(rs) != control.MaxBatchEventsLimit {
		t.Fatalf("a batch of %d: %d receipts, %v", control.MaxBatchEventsLimit, len(rs), err)
	}
	if _, err := c.Tenant("t1").AppendBatch(ctx, batch(control.MaxBatchEventsLimit+1)); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("a batch of %d: %v, want QUOTA_EXCEEDED", control.MaxBatchEventsLimit+1, err)
	}
	st, err := c.Tenant("t1").Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev, _ := st["events"].(float64); int(ev) != control.MaxBatchEventsLimit {
		t.Fatalf("stored events %v, want %d", st["events"], control.MaxBatchEventsLimit)
	}
	op, _ := client.New(bs.base, "bpko_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	if _, err := op.Admin().SetQuotas(ctx, "t1", client.Quotas{MaxBatchEvents: control.MaxBatchEventsLimit + 1}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("max_batch_events above the stores' ceiling: %v, want INVALID_REQUEST", err)
	}
}

// TestDeletedTenantLeftoverRemovedAtStart: a tenant whose deletion was
// recorded but whose directory survived (a crash between the two) has its
// data removed when the server starts, before anything can reach it.
func TestDeletedTenantLeftoverRemovedAtStart(t *testing.T) {
	cfg := servertest.Config(t)
	ctx := context.Background()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Plane().CreateTenant(ctx, "gone", control.Quotas{}, control.Settings{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The deletion is recorded, the data left as a crash would leave it.
	leftover := filepath.Join(cfg.Root, "tenants", "gone")
	if err := os.MkdirAll(leftover, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(leftover, "00000000000000000001.seg"), []byte("old data"), 0o644)
	p, err := control.Open(control.Options{Dir: filepath.Join(cfg.Root, "system")})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteTenant(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	p.Close()

	srv, err = server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("a deleted tenant's directory survived the start: %v", err)
	}
}

// TestUnrecordedTenantDataMovedAside: a tenant directory the control
// plane has no record of at all (never created there, or its records lost
// to a damaged system store) is moved under <root>/orphaned at start with
// its data, not removed: only a recorded deletion removes data.
func TestUnrecordedTenantDataMovedAside(t *testing.T) {
	cfg := servertest.Config(t)
	ctx := context.Background()
	ghost := filepath.Join(cfg.Root, "tenants", "ghost")
	if err := os.MkdirAll(ghost, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ghost, "00000000000000000001.seg"), []byte("someone's events"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(ctx)
	if _, err := os.Stat(ghost); !os.IsNotExist(err) {
		t.Fatalf("the unrecorded tenant's directory is still under tenants/: %v", err)
	}
	kept, _ := filepath.Glob(filepath.Join(cfg.Root, "orphaned", "ghost.*", "00000000000000000001.seg"))
	if len(kept) != 1 {
		t.Fatalf("the unrecorded tenant's data was not moved aside: %v", kept)
	}
	if b, err := os.ReadFile(kept[0]); err != nil || string(b) != "someone's events" {
		t.Fatalf("moved-aside data: %q, %v", b, err)
	}
}

// TestConnectionLimit: past server.max_connections a new client waits
// until a connection in the middle of a request ends; it is then served.
// (Idle connections yield their slot instead: see
// TestIdleConnectionsYieldToNewClients.)
func TestConnectionLimit(t *testing.T) {
	cfg := server.DefaultConfig()
	cfg.MaxConnections = 2
	bs := startBenchServer(t, cfg, "t1", control.Settings{})
	addr := strings.TrimPrefix(bs.base, "http://")
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
		// A request whose body is still arriving: the connection is busy.
		fmt.Fprintf(c, "POST /v1/admin/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", "bpko_"+strings.Repeat("a", 52))
	}
	time.Sleep(100 * time.Millisecond)
	hc := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := hc.Get(bs.base + "/healthz"); err == nil {
		t.Fatal("a third connection was served beside two held ones with max_connections 2")
	}
	held[0].Close()
	hc.Timeout = 5 * time.Second
	res, err := hc.Get(bs.base + "/healthz")
	if err != nil {
		t.Fatalf("after a held connection ended: %v", err)
	}
	res.Body.Close()
}

// TestCursorPollBoundedInBytes: a named cursor's poll stops at
// httpapi.MaxPageBytes of payload and names the position to continue
// from, so a poll of large events neither takes the server's memory nor
// skips any event.
func TestCursorPollBoundedInBytes(t *testing.T) {
	bs := startBenchServer(t, server.DefaultConfig(), "t1", control.Settings{})
	ctx := context.Background()
	c, _ := client.New(bs.base, bs.key)
	tn := c.Tenant("t1")
	big := json.RawMessage(`"` + strings.Repeat("x", 1<<20-2) + `"`) // 1 MiB, the default max_payload_bytes
	const n = 12
	for i := range n {
		if _, err := tn.Append(ctx, client.AppendRequest{Entity: fmt.Sprintf("e:%d", i), Scope: "s", Kind: "1:1", Payload: big}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.DefineCursor(ctx, "big", client.CursorRegion{Entity: "e:"}); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for round := 0; seen < n; round++ {
		if round > 3 {
			t.Fatalf("%d events after %d polls", seen, round)
		}
		evs, err := tn.PollCursor(ctx, "big", 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 || len(evs)*len(big) > httpapi.MaxPageBytes {
			t.Fatalf("a poll returned %d events of %d bytes (page bound %d)", len(evs), len(big), httpapi.MaxPageBytes)
		}
		if evs[0].GlobalSequence != uint64(seen) {
			t.Fatalf("poll %d starts at %d, want %d: an event was skipped", round, evs[0].GlobalSequence, seen)
		}
		seen += len(evs)
		if err := tn.CommitCursor(ctx, "big", evs[len(evs)-1].GlobalSequence+1); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDamagedControlPlaneSaysHowToRecover: a server whose control plane
// (tenants, keys, quotas) is damaged does not start — serving part of it
// could bring back a revoked key — and its error names the directory and
// the way back.
func TestDamagedControlPlaneSaysHowToRecover(t *testing.T) {
	cfg := servertest.Config(t)
	ctx := context.Background()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"acme", "globex", "initech"} {
		if _, err := srv.Plane().CreateTenant(ctx, name, control.Quotas{}, control.Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	system := filepath.Join(cfg.Root, "system")
	seg := filepath.Join(system, "00000000000000000001.seg")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint would let the store skip its log: damage a frame in
	// the middle and remove the checkpoint so the log is read.
	mid := len(bytes.TrimRight(data, "\x00")) / 2
	for i := mid; i < mid+4; i++ {
		data[i] ^= 0xFF
	}
	if err := os.WriteFile(seg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(system, "index.ckpt"))
	_, err = server.New(ctx, cfg)
	if err == nil {
		t.Fatal("a server started on a damaged control plane")
	}
	for _, want := range []string{"control plane: ", "corrupt", system, "export --salvage --data-dir " + system, "import system.ndjson", "revoke again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}

// TestCompileCharge: an upload's check costs the tenant's upload budget
// 4 MiB a second past the first, so a module refused at the 30 s compile
// timeout costs 116 MiB of the default 256 MiB an hour, and a quick one
// nothing.
func TestCompileCharge(t *testing.T) {
	for _, c := range []struct {
		held time.Duration
		want int
	}{{0, 0}, {time.Second, 0}, {1500 * time.Millisecond, 2 << 20}, {30 * time.Second, 116 << 20}} {
		if got := server.CompileCharge(c.held); got != c.want {
			t.Errorf("CompileCharge(%v) = %d, want %d", c.held, got, c.want)
		}
	}
}
