package cluster_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/internal/testenv"
	"github.com/batpak-go/batpak/server/cluster"
)

// TestRaftLinesFollowTheServersLogFormat: raft's own lines go through the
// node's slog.Logger, so a server logging JSON logs raft's lines as JSON
// objects too (named "raft ID: …", raft's pairs as attributes), and its
// level decides which of them appear.
func TestRaftLinesFollowTheServersLogFormat(t *testing.T) {
	var out testenv.Buffer
	c := newMemCluster(t, 1, func(cfg *cluster.Config) {
		cfg.Logger = slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	c.closeAll()
	var raftLines, withAttrs int
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line that is not one JSON object: %q (%v)", line, err)
		}
		msg, _ := rec["msg"].(string)
		if !strings.HasPrefix(msg, "raft n1: ") && !strings.HasPrefix(msg, "raft-") {
			continue
		}
		raftLines++
		if rec["level"] == "DEBUG" {
			t.Fatalf("a debug line from raft at level info: %q", line)
		}
		if len(rec) > 3 { // time, level, msg and raft's pairs
			withAttrs++
		}
	}
	if raftLines == 0 || withAttrs == 0 {
		t.Fatalf("raft's lines: %d, %d with attributes; want some of each in:\n%s", raftLines, withAttrs, out.String())
	}
}
