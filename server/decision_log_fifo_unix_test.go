//go:build unix

package server_test

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/sdk/client"
)

// TestPolicyDecisionLogSkipsWhatIsNotAFile: a named pipe and a directory
// under segment names in a tenant's decision log are skipped, not opened
// (an open of a pipe waits for a writer, and held up the one writer of
// every tenant's decisions, the tenant's queries and the shutdown): new
// decisions are logged and read back, and the server stops.
func TestPolicyDecisionLogSkipsWhatIsNotAFile(t *testing.T) {
	root := t.TempDir()
	ps := startPolicyServer(t, root, nil)
	acme, key := acmeAdminKey(t, ps)
	want := []string{loggedDenial(t, acme, "blocked:1")}
	ps.stop()

	dir := filepath.Join(root, "srv", "decisions", "acme")
	if err := syscall.Mkfifo(filepath.Join(dir, "0000000000000090.jsonl"), 0o600); err != nil {
		t.Skipf("no named pipe here: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "0000000000000080.jsonl"), 0o700); err != nil {
		t.Fatal(err)
	}
	ps = startPolicyServer(t, root, nil)
	acme = ps.as(t, key).Tenant("acme")
	want = append(want, loggedDenial(t, acme, "blocked:2"), loggedDenial(t, acme, "blocked:3"))
	var ids []string
	for _, d := range allDecisions(t, acme, client.PolicyDecisionQuery{Limit: 1}) {
		ids = append(ids, d.ID)
	}
	slices.Reverse(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("the log holds %v, want %v (newest first)", ids, want)
	}
	stopped := make(chan struct{})
	go func() { ps.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop within 30s")
	}
}
