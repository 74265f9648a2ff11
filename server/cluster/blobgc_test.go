package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// blobPath is node id's file of a blob.
func blobPath(c *memCluster, id, name string) string {
	return filepath.Join(c.root, id, "blobs", name)
}

// ageFile sets a file's modification time to d ago.
func ageFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	old := time.Now().Add(-d)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// ageBlob makes node n's blob look put d ago: its file's modification
// time and the node's memory of the put.
func ageBlob(t *testing.T, c *memCluster, n *cluster.Node, digest string, d time.Duration) {
	t.Helper()
	ageFile(t, blobPath(c, n.ID(), digest), d)
	cluster.AgeBlobPut(n, digest, d)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestCollectBlobs: a collection removes, on every node, the blobs the
// caller reports unreferenced once older than the grace period, and
// never a referenced one or one put within it; old temporary files go,
// young ones stay; a blob a follower collected and that is put again
// (bytes the leader still holds) is back on every node, fresh, so the
// next collection keeps it; a snapshot taken after a collection is taken
// and installed.
func TestCollectBlobs(t *testing.T) {
	c := newMemCluster(t, 3, smallSnapshots)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	put := func(data string) string { t.Helper(); return putEverywhere(t, c, l, []byte(data)) }
	kept, dropped := put("a referenced bundle"), put("a deleted module")
	refs := func(d string) bool { return d == kept }
	const grace = time.Hour

	if _, err := l.CollectBlobs(refs, 0); err == nil {
		t.Fatal("CollectBlobs with a grace period of 0 ran")
	}
	// Young: nothing goes, referenced or not.
	for _, n := range c.list() {
		got, err := n.CollectBlobs(refs, grace)
		if err != nil || len(got.Removed) != 0 || got.Kept != 2 {
			t.Fatalf("%s: young blobs: %+v, %v; want both kept", n.ID(), got, err)
		}
	}
	// Aged past the grace period: the unreferenced one goes everywhere;
	// so does an old temporary file, not a young one.
	for _, n := range c.list() {
		ageBlob(t, c, n, kept, 2*grace)
		ageBlob(t, c, n, dropped, 2*grace)
		for _, tmp := range []string{".upload-old", ".upload-young"} {
			if err := os.WriteFile(blobPath(c, n.ID(), tmp), []byte("half a write"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		ageFile(t, blobPath(c, n.ID(), ".upload-old"), 2*grace)
		got, err := n.CollectBlobs(refs, grace)
		if err != nil || !slices.Equal(got.Removed, []string{dropped}) || got.Temporary != 1 || got.Kept != 1 || got.RemovedBytes != int64(len("a deleted module")+len("half a write")) {
			t.Fatalf("%s: aged blobs: %+v, %v; want %s and one temporary file removed, one kept", n.ID(), got, err, dropped)
		}
		if !exists(blobPath(c, n.ID(), kept)) || exists(blobPath(c, n.ID(), dropped)) {
			t.Fatalf("%s: after the collection the referenced blob is there: %v, the unreferenced one: %v", n.ID(), exists(blobPath(c, n.ID(), kept)), exists(blobPath(c, n.ID(), dropped)))
		}
		if exists(blobPath(c, n.ID(), ".upload-old")) || !exists(blobPath(c, n.ID(), ".upload-young")) {
			t.Fatalf("%s: an old temporary file left, or a young one removed", n.ID())
		}
		if _, err := n.Blob(kept); err != nil {
			t.Fatalf("%s: the referenced blob: %v", n.ID(), err)
		}
	}

	// A follower collected an aged blob the leader still holds; it is
	// put again (a re-upload of the same bytes): every node holds it,
	// fresh, and keeps it through the next collection.
	again := put("a module uploaded again")
	f := follower(c, l)
	for _, n := range c.list() {
		ageBlob(t, c, n, again, 2*grace)
	}
	if got, err := f.CollectBlobs(refs, grace); err != nil || !slices.Equal(got.Removed, []string{again}) {
		t.Fatalf("the follower's collection: %+v, %v", got, err)
	}
	if d := put("a module uploaded again"); d != again {
		t.Fatalf("put again: digest %s, want %s", d, again)
	}
	for _, n := range c.list() {
		if got, err := n.CollectBlobs(refs, grace); err != nil || len(got.Removed) != 0 {
			t.Fatalf("%s: a blob put again was collected: %+v, %v", n.ID(), got, err)
		}
		fi, err := os.Stat(blobPath(c, n.ID(), again))
		if err != nil || time.Since(fi.ModTime()) > time.Minute {
			t.Fatalf("%s: the blob put again: %v (modified %v), want it present and fresh", n.ID(), err, fi)
		}
	}

	// A snapshot after the collection, installed by a node with a wiped
	// disk: it holds what is left, not what was collected (the log that
	// put it is truncated past).
	for i := 0; i < 20; i++ {
		mustAppend(t, l, "acme", item("e", `{}`, core.AppendOptions{}))
	}
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	id := f.ID()
	c.stop(id)
	if err := os.RemoveAll(filepath.Join(c.root, id)); err != nil {
		t.Fatal(err)
	}
	f = c.start(id)
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := f.WaitApplied(wctx, l.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{kept: true, again: true, dropped: false} {
		if _, err := f.Blob(d); (err == nil) != want {
			t.Fatalf("the wiped node restored: blob %s: %v, want present %v", d, err, want)
		}
	}
}

// TestCollectBlobsBoundsUploadDeleteLoop: new bytes put and then left
// unreferenced in a loop do not accumulate: each collection past the
// grace period leaves only the referenced blob and those within it.
func TestCollectBlobsBoundsUploadDeleteLoop(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	active, err := l.PutBlob(ctx, []byte("the active module"))
	if err != nil {
		t.Fatal(err)
	}
	refs := func(d string) bool { return d == active }
	const grace = 300 * time.Millisecond
	most := 0
	for round := 0; round < 6; round++ {
		for i := 0; i < 10; i++ {
			if _, err := l.PutBlob(ctx, []byte{byte(round), byte(i), 'x'}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(grace + 50*time.Millisecond)
		for _, n := range c.list() {
			if err := n.WaitApplied(ctx, l.AppliedIndex()); err != nil {
				t.Fatal(err)
			}
			if _, err := n.CollectBlobs(refs, grace); err != nil {
				t.Fatal(err)
			}
			ents, err := os.ReadDir(filepath.Join(c.root, n.ID(), "blobs"))
			if err != nil {
				t.Fatal(err)
			}
			most = max(most, len(ents))
			if _, err := n.Blob(active); err != nil {
				t.Fatalf("%s: the referenced blob: %v", n.ID(), err)
			}
		}
	}
	// At most the referenced blob and one round's puts (those a slow
	// apply left within the grace period); 61 without collection.
	if most > 11 {
		t.Fatalf("after collections the blobs dir held up to %d files, want at most 11 (60 blobs put, one referenced)", most)
	}
}

// TestCollectBlobsKeepsFreshPutWhateverItsFileTime: a blob put moments
// ago whose file's modification time is far in the past — the wall clock
// jumped forward since the put, or the file system stamps files with
// another machine's clock — is kept by a collection on every node (its
// upload may not have recorded it yet), and goes once the grace period
// has passed on the monotonic clock.
func TestCollectBlobsKeepsFreshPutWhateverItsFileTime(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	ctx := context.Background()
	d, err := l.PutBlob(ctx, []byte("a module whose upload is not recorded yet"))
	if err != nil {
		t.Fatal(err)
	}
	none := func(string) bool { return false }
	const grace = time.Hour
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, l.AppliedIndex()); err != nil {
			t.Fatal(err)
		}
		ageFile(t, blobPath(c, n.ID(), d), 2*grace)
		if got, err := n.CollectBlobs(none, grace); err != nil || len(got.Removed) != 0 || !exists(blobPath(c, n.ID(), d)) {
			t.Fatalf("%s: a blob put moments ago with an old file time: %+v, %v; want it kept", n.ID(), got, err)
		}
	}
	for _, n := range c.list() {
		cluster.AgeBlobPut(n, d, 2*grace)
		if got, err := n.CollectBlobs(none, grace); err != nil || !slices.Equal(got.Removed, []string{d}) {
			t.Fatalf("%s: past the grace period: %+v, %v; want %s removed", n.ID(), got, err, d)
		}
	}
}

// TestPutBlobRepairsDamagedCopy: a node whose copy of a blob is damaged
// (bit rot, a hand edit) reports it, and putting the same bytes again —
// what an operator does to repair a bundle or module — writes them anew
// there, rather than only refreshing the damaged file's time.
func TestPutBlobRepairsDamagedCopy(t *testing.T) {
	c := newMemCluster(t, 3, nil)
	l := c.settled(10 * time.Second)
	data := []byte("a policy bundle")
	put := func() string { t.Helper(); return putEverywhere(t, c, l, data) }
	d := put()
	f := follower(c, l)
	if err := os.WriteFile(blobPath(c, f.ID(), d), []byte("a policy bundlE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Blob(d); err == nil {
		t.Fatal("a damaged copy was read without an error")
	}
	put()
	for _, n := range c.list() {
		if got, err := n.Blob(d); err != nil || string(got) != string(data) {
			t.Fatalf("%s: after putting the bytes again: %q, %v", n.ID(), got, err)
		}
	}
}

// TestCollectBlobsFutureFileTime: an unreferenced blob whose file is
// stamped in the future (the wall clock went back since its put) is not
// kept until the clock catches up: its age counts from the collection
// that found it, and a collection past the grace period after that
// removes it.
func TestCollectBlobsFutureFileTime(t *testing.T) {
	c := newMemCluster(t, 1, nil)
	l := c.settled(10 * time.Second)
	d, err := l.PutBlob(context.Background(), []byte("a module deleted long ago"))
	if err != nil {
		t.Fatal(err)
	}
	const grace = time.Hour
	none := func(string) bool { return false }
	cluster.AgeBlobPut(l, d, 2*grace)
	ageFile(t, blobPath(c, l.ID(), d), -365*24*time.Hour)
	if got, err := l.CollectBlobs(none, grace); err != nil || len(got.Removed) != 0 {
		t.Fatalf("first collection: %+v, %v; want the blob kept (its age unknown)", got, err)
	}
	fi, err := os.Stat(blobPath(c, l.ID(), d))
	if err != nil || fi.ModTime().After(time.Now()) {
		t.Fatalf("after the first collection: %v, modified %v; want its time brought back to now", err, fi.ModTime())
	}
	ageFile(t, blobPath(c, l.ID(), d), 2*grace) // a grace period passes
	if got, err := l.CollectBlobs(none, grace); err != nil || !slices.Equal(got.Removed, []string{d}) {
		t.Fatalf("a grace period later: %+v, %v; want %s removed", got, err, d)
	}
}

// putEverywhere puts data through the leader l and waits until every node
// of c has applied it; it returns the blob's digest.
func putEverywhere(t *testing.T, c *memCluster, l *cluster.Node, data []byte) string {
	t.Helper()
	ctx := context.Background()
	d, err := l.PutBlob(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.list() {
		if err := n.WaitApplied(ctx, l.AppliedIndex()); err != nil {
			t.Fatal(err)
		}
	}
	return d
}
