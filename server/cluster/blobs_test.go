package cluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// TestBlobsReplicate: a blob put on the leader is on every node under its
// SHA-256; a follower refuses to propose one; too large is refused before
// proposing; putting it again proposes it again; a follower cut off while
// blobs were put and the log truncated gets them from the snapshot; a
// node restarted keeps them, and one restarted with a wiped disk gets them
// back from the snapshot.
func TestBlobsReplicate(t *testing.T) {
	c := newMemCluster(t, 3, func(cfg *cluster.Config) {
		smallSnapshots(cfg)
		cfg.MaxBytes = 1 << 20
	})
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	data := []byte("\x00asm\x01\x00\x00\x00 a module")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])

	f := follower(c, l)
	if _, err := f.PutBlob(ctx, data); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("PutBlob on a follower: %v, want a *NotLeaderError", err)
	}
	if _, err := l.PutBlob(ctx, make([]byte, 1<<20+1)); !errors.Is(err, cluster.ErrTooLarge) {
		t.Fatalf("PutBlob over Config.MaxBytes: %v, want ErrTooLarge", err)
	}
	digest, err := l.PutBlob(ctx, data)
	if err != nil || digest != want {
		t.Fatalf("PutBlob: %q, %v; want %q", digest, err, want)
	}
	idx := l.AppliedIndex()
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if got, err := n.Blob(digest); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: Blob: %q, %v", n.ID(), got, err)
		}
	}
	if d, err := l.PutBlob(ctx, data); err != nil || d != digest || l.AppliedIndex() <= idx {
		t.Fatalf("PutBlob again: %q, %v; applied index %d → %d (want it proposed again)", d, err, idx, l.AppliedIndex())
	}
	if _, err := l.Blob("not-a-digest"); err == nil {
		t.Fatal("Blob of a malformed digest answered")
	}
	other := sha256.Sum256([]byte("never put"))
	if _, err := l.Blob(hex.EncodeToString(other[:])); !errors.Is(err, cluster.ErrNoBlob) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Blob never put: %v, want ErrNoBlob", err)
	}

	// A follower cut off while a blob is put and the log truncated.
	f = follower(c, l)
	c.partition(f.ID())
	late := bytes.Repeat([]byte("policy bundle "), 1000)
	lateDigest, err := l.PutBlob(ctx, late)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < 40; i++ {
		last = mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))[0].Index
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIdx := statIndex(l, "last_snapshot_index")
	c.heal(f.ID())
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.WaitApplied(wctx, last); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the follower installs the snapshot", func() bool { return statIndex(f, "last_snapshot_index") >= snapIdx })
	for _, d := range []string{digest, lateDigest} {
		if _, err := f.Blob(d); err != nil {
			t.Fatalf("the follower restored from a snapshot lacks blob %s: %v", d, err)
		}
	}

	// Restarted (the log before the snapshot is gone): the blobs stay.
	id := f.ID()
	c.stop(id)
	f = c.start(id)
	if err := f.WaitApplied(wctx, last); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Blob(lateDigest); err != nil || !bytes.Equal(got, late) {
		t.Fatalf("after a restart: %d bytes, %v", len(got), err)
	}

	// Wiped: the snapshot brings them back.
	c.stop(id)
	if err := os.RemoveAll(filepath.Join(c.root, id)); err != nil {
		t.Fatal(err)
	}
	f = c.start(id) // same id and address, empty disk: a snapshot, then the log
	if err := f.WaitApplied(wctx, last); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{digest, lateDigest} {
		if _, err := f.Blob(d); err != nil {
			t.Fatalf("the node restarted with a wiped disk lacks blob %s: %v", d, err)
		}
	}
}
