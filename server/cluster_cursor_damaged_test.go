package server_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFollowerDamagedCursorPosition: a cursor whose position file is
// damaged on a follower only, while the leader's committed position is 0,
// is answered as damaged there, and the advice — delete the cursor and
// define it again, through any node — repairs every replica's copy.
func TestFollowerDamagedCursorPosition(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	root := t.TempDir()
	nodes := startCluster3(t, root)
	leader := leaderOf(t, nodes, 10*time.Second)
	var f *clusterServer
	for _, n := range nodes {
		if n != leader {
			f = n
			break
		}
	}
	w, _ := clusterTenantKey(t, leader.base, "acme", `["admin","writer","reader"]`)
	for range 3 {
		if code, b := call(t, "POST", leader.base+"/v1/tenants/acme/events", w, `{"entity":"order:1","scope":"shop","kind":"1:1","payload":{}}`); code != 201 {
			t.Fatal(code, b)
		}
	}
	def := `{"region":{"scope":"shop"}}`
	mustCode := func(want int, method, url, body string) map[string]any {
		t.Helper()
		code, b := call(t, method, url, w, body)
		if code != want {
			t.Fatalf("%s %s: %d %v, want %d", method, url, code, b, want)
		}
		return b
	}
	mustCode(201, "PUT", leader.base+"/v1/tenants/acme/cursors/c1", def)
	mustCode(200, "POST", leader.base+"/v1/tenants/acme/cursors/c1/commit", `{"position":2}`)
	mustCode(204, "DELETE", leader.base+"/v1/tenants/acme/cursors/c1", "")
	mustCode(201, "PUT", leader.base+"/v1/tenants/acme/cursors/c1", def)
	var pos string
	waitFor(t, 10*time.Second, "c1.pos on the follower", func() bool {
		filepath.WalkDir(filepath.Join(root, f.id), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "c1.pos" {
				pos = p
			}
			return nil
		})
		return pos != ""
	})
	if err := os.WriteFile(pos, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	var code int
	var b map[string]any
	waitFor(t, 10*time.Second, "the follower reports c1 damaged", func() bool {
		code, b = callOnce(t, "GET", f.base+"/v1/tenants/acme/cursors/c1/events", w, "")
		return code == 500
	})
	if d, _ := b["detail"].(string); !strings.Contains(d, "delete the cursor") {
		t.Fatalf("poll of the damaged copy on %s: %d %v, want the advice", f.id, code, b)
	}
	// Follow the advice.
	mustCode(204, "DELETE", leader.base+"/v1/tenants/acme/cursors/c1", "")
	mustCode(201, "PUT", leader.base+"/v1/tenants/acme/cursors/c1", def)
	waitFor(t, 10*time.Second, "the follower's copy repaired", func() bool {
		code, b = callOnce(t, "GET", f.base+"/v1/tenants/acme/cursors/c1/events", w, "")
		return code == 200
	})
	if evs, _ := b["events"].([]any); len(evs) != 3 {
		t.Fatalf("the cursor defined again read %d events on %s, want all 3", len(evs), f.id)
	}
}
