package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// PutBlob stores data on every node under its content address, the hex
// SHA-256 of its bytes, which it returns: the leader proposes the bytes as
// one raft entry (format 2, op put blob), and every node's state machine
// writes them durably (synced, renamed into place) to Dir/blobs/<digest>.
// It returns once the entry is committed on a majority of nodes and
// applied on this one, with the errors of AppendBatch (a *NotLeaderError
// on a follower: nothing proposed; ErrOutcomeUnknown; ctx's error). Data
// over Config.MaxBytes is refused with ErrTooLarge before proposing.
//
// Idempotent: putting a blob this node (the leader) already holds proposes
// nothing — it holds it only because the entry that carried it was
// committed (or a snapshot holding it was installed). Blobs are never
// removed: they are kept across restarts (Open does not remove Dir/blobs)
// and carried in snapshots, so a node restored from a snapshot that
// truncated the log still has every blob.
func (n *Node) PutBlob(ctx context.Context, data []byte) (string, error) {
	if len(data) > n.cfg.MaxBytes {
		return "", fmt.Errorf("%w: a blob of %d bytes, the limit is %d (Config.MaxBytes)", ErrTooLarge, len(data), n.cfg.MaxBytes)
	}
	if err := n.canPropose(); err != nil {
		return "", err
	}
	digest := blobDigest(data)
	if _, err := os.Stat(filepath.Join(n.fsm.blobs, digest)); err == nil {
		return digest, nil
	}
	cmd, err := encodeCommand(&command{Op: opBlob, Blob: data})
	if err != nil {
		return "", err
	}
	if err := n.applyOne(ctx, cmd); err != nil {
		return "", err
	}
	return digest, nil
}

// Blob returns the bytes of the blob whose digest (the hex SHA-256 that
// PutBlob returned) is given, as this node holds it: ErrNoBlob (matching
// fs.ErrNotExist) when it holds none — not yet applied here, or never
// put —, an error naming the digest when digest is not 64 lowercase hex
// digits or the file's bytes do not hash to it (damaged).
func (n *Node) Blob(digest string) ([]byte, error) {
	if err := validDigest(digest); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(n.fsm.blobs, digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoBlob, digest)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: reading blob %s: %w", digest, err)
	}
	if got := blobDigest(data); got != digest {
		return nil, fmt.Errorf("cluster: blob %s is damaged: its bytes' SHA-256 is %s", digest, got)
	}
	return data, nil
}
