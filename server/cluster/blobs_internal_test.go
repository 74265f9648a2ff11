package cluster

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestSnapshotBlobEntries: a snapshot's blobs/ entries are checked: the
// name must be a digest and the bytes must hash to it; a good one is
// unpacked.
func TestSnapshotBlobEntries(t *testing.T) {
	good := []byte("module bytes")
	digest := blobDigest(good)
	for _, tc := range []struct {
		name, entry string
		data        []byte
		want        string // "" accepted, else part of the error
	}{
		{"good", "blobs/" + digest, good, ""},
		{"damaged", "blobs/" + digest, []byte("other bytes"), "damaged"},
		{"not a digest", "blobs/module.wasm", good, "64 lowercase hex"},
		{"upper case", "blobs/" + strings.ToUpper(digest), good, "64 lowercase hex"},
		{"nested", "blobs/x/" + digest, good, "64 lowercase hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(&tar.Header{Name: tc.entry, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(tc.data))}); err != nil {
				t.Fatal(err)
			}
			tw.Write(tc.data)
			tw.Close()
			_, err := readTar(&buf, t.TempDir())
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestBlobOpApplies: the put-blob op writes the blob under its digest,
// and applying it again (a restart replaying the log) changes nothing.
func TestBlobOpApplies(t *testing.T) {
	f := testFSM(t)
	data := []byte("a policy bundle")
	cmd, err := encodeCommand(&command{Op: opBlob, Blob: data})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 2; i++ {
		mustApply(t, f, &raft.Log{Type: raft.LogCommand, Index: i, Data: cmd})
	}
	got, err := os.ReadFile(filepath.Join(f.blobs, blobDigest(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob file: %q, %v", got, err)
	}
}

// TestCopyBlobVanished: a blob collected between the snapshot's listing
// and its copy is left out, not an error.
func TestCopyBlobVanished(t *testing.T) {
	dir := t.TempDir()
	if err := copyBlob(filepath.Join(dir, "gone"), filepath.Join(dir, "copy")); err != nil {
		t.Fatalf("copying a vanished blob: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "copy")); !os.IsNotExist(err) {
		t.Fatalf("a copy of a vanished blob exists: %v", err)
	}
}
