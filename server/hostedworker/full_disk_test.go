//go:build linux

package hostedworker_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/sdk/client"
)

// A worker whose reactions a full disk refuses is not the plugin's
// fault: it is shown ("store"), retried as often as the server reopens
// stores, and never counted towards quarantine; once there is room it
// reacts to every event exactly once.
func TestWorkerOnAFullDiskIsNotQuarantined(t *testing.T) {
	root := t.TempDir()
	testenv.MountTmpfs(t, root, "size=48m")
	ts := startServer(t, root, newSource(t, standardFixtures()), nil)
	acme := ts.tenant(t, "acme")
	ctx := context.Background()
	srcs := appendOrders(t, acme, "order:1", 4000)

	// The disk fills up: the store's room reserved ahead takes some of
	// the reactions, then its writer stops.
	ballast := filepath.Join(root, "ballast")
	f, err := os.Create(ballast)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 64<<10); ; {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()

	spec := client.WorkerSpec{Plugin: "echo", Region: inputs,
		Restart: client.WorkerRestart{MaxRestarts: intp(2), BackoffMinMs: 1, BackoffMaxMs: 20}}
	if _, err := acme.StartWorker(ctx, "echoer", spec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a store fault", func() bool {
		st := worker(t, acme, "echoer")
		return st.LastFault != nil && st.LastFault.Kind == "store"
	})
	time.Sleep(3500 * time.Millisecond) // a few retries' worth
	st := worker(t, acme, "echoer")
	if st.State == "quarantined" || st.RecentFaults > 1 || st.LastFault == nil || st.LastFault.Kind != "store" ||
		st.LastFault.Message != "the tenant's store stopped taking writes (its disk is full); restarting" {
		t.Fatalf("status on a full disk: %+v (last fault %+v); want not quarantined, the store's fault shown, at most the plugin's own one trap counted", st, st.LastFault)
	}
	if st.Restarts < 2 {
		t.Fatalf("%d restarts in 3.5 s of a full disk, want it retried about once a second", st.Restarts)
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every order echoed once there is room", func() bool { return len(echoes(t, acme)) >= len(srcs) })
	checkOnce(t, srcs, echoes(t, acme))
	if st := worker(t, acme, "echoer"); st.State != "running" {
		t.Fatalf("once there is room: %+v, want running", st)
	}
}
