package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/batpak-go/batpak/internal/durable"
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
// Putting a blob again proposes it again (one more entry): every node,
// whether it still holds the bytes or collected them meanwhile
// (CollectBlobs), then holds them with a fresh modification time, so the
// put is protected by CollectBlobs' grace period on every node until the
// change that references it is recorded. Blobs are kept across restarts
// (Open does not remove Dir/blobs) and carried in snapshots, so a node
// restored from a snapshot that truncated the log still has every blob
// not collected.
func (n *Node) PutBlob(ctx context.Context, data []byte) (string, error) {
	if len(data) > n.cfg.MaxBytes {
		return "", fmt.Errorf("%w: a blob of %d bytes, the limit is %d (Config.MaxBytes)", ErrTooLarge, len(data), n.cfg.MaxBytes)
	}
	if err := n.canPropose(); err != nil {
		return "", err
	}
	digest := blobDigest(data)
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
// fs.ErrNotExist) when it holds none — not yet applied here, never put,
// or collected (CollectBlobs) —, an error naming the digest when digest is not 64 lowercase hex
// digits or the file's bytes do not hash to it (damaged).
func (n *Node) Blob(digest string) ([]byte, error) {
	if err := validDigest(digest); err != nil {
		return nil, err
	}
	data, err := durable.ReadFile(filepath.Join(n.fsm.blobs, digest), MaxMaxBytes)
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

// HasBlob reports whether this node holds a file for the blob whose
// digest is given (without reading or checking its bytes; Blob does): an
// error naming the digest when it is not 64 lowercase hex digits, or one
// examining the file.
func (n *Node) HasBlob(digest string) (bool, error) {
	if err := validDigest(digest); err != nil {
		return false, err
	}
	_, err := os.Lstat(filepath.Join(n.fsm.blobs, digest))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cluster: examining blob %s: %w", digest, err)
	}
	return true, nil
}

// BlobCollection is what one CollectBlobs removed from this node's
// Dir/blobs and what it kept.
type BlobCollection struct {
	// Removed lists the digests of the blobs removed, sorted.
	Removed []string
	// RemovedBytes is their size, together with the temporary files
	// removed.
	RemovedBytes int64
	// Temporary counts the temporary files removed (a write a crash cut
	// short).
	Temporary int
	// Kept counts the blobs kept: referenced, or put within the grace
	// period.
	Kept int
}

// CollectBlobs removes from this node's Dir/blobs every blob for which
// referenced returns false and whose last put was applied here (or
// arrived in a snapshot) more than grace ago — its file's modification
// time, which every apply of a put of the same bytes refreshes (see
// PutBlob), and, for a put this process applied, the monotonic clock, so
// a wall clock jumping forward or a file system stamping another
// machine's time does not age a fresh put; a file stamped in the future
// has its time set to now and counts from there — and every temporary file older than grace (left by a write a
// crash cut short). Nothing travels through raft: each node collects its
// own copy, and the caller supplies referenced from this node's
// replicated state (the server: its control plane's policy revisions and
// plugin versions).
//
// The grace period covers the window between a put and the later entry
// that records what references it: a referenced set computed before that
// entry was applied here must not lose the blob. It must therefore exceed
// the longest a writer takes between PutBlob and recording the
// reference, and the caller must compute referenced from state that has
// applied every entry this node applied before the call (a stale view
// loses nothing younger than grace, but may remove an older blob a later
// change re-references without putting it again). grace ≤ 0 is refused.
//
// A removal never races an apply: a put applied during the collection
// either refreshes the file before it is examined (kept) or writes it
// anew after it is removed. A snapshot being taken meanwhile leaves a
// removed blob out. Errors: ErrHalted (wrapped) on a node that stopped
// applying the log (nothing removed: its state is stale); an error
// reading Dir/blobs or removing a file (what was removed before it is
// reported in the BlobCollection returned with it).
func (n *Node) CollectBlobs(referenced func(digest string) bool, grace time.Duration) (BlobCollection, error) {
	var c BlobCollection
	if grace <= 0 {
		return c, fmt.Errorf("cluster: collecting blobs: grace period %s, want > 0", grace)
	}
	if err := n.Err(); err != nil {
		return c, fmt.Errorf("cluster: collecting blobs: %w (%w)", ErrHalted, err)
	}
	f := n.fsm
	ents, err := os.ReadDir(f.blobs)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("cluster: collecting blobs: %w", err)
	}
	defer f.forgetPuts(grace)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		name := e.Name()
		blob := validDigest(name) == nil
		if blob && referenced(name) {
			c.Kept++
			continue
		}
		removed, size, err := f.removeBlobFile(name, grace)
		if err != nil {
			return c, err
		}
		switch {
		case !removed:
			if blob {
				c.Kept++
			}
		case blob:
			c.Removed = append(c.Removed, name)
			c.RemovedBytes += size
		default:
			c.Temporary++
			c.RemovedBytes += size
		}
	}
	return c, nil
}

// forgetPuts drops the puts older than grace from fsm.recentPuts (they
// protect nothing a collection with this grace period would remove).
func (f *fsm) forgetPuts(grace time.Duration) {
	f.blobMu.Lock()
	defer f.blobMu.Unlock()
	for d, at := range f.recentPuts {
		if time.Since(at) > grace {
			delete(f.recentPuts, d)
		}
	}
}

// removeBlobFile removes blobs/<name> if its modification time is more
// than grace ago, under blobMu so no apply writes or refreshes it
// meanwhile. A file already gone is not an error.
func (f *fsm) removeBlobFile(name string, grace time.Duration) (bool, int64, error) {
	path := filepath.Join(f.blobs, name)
	f.blobMu.Lock()
	defer f.blobMu.Unlock()
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("cluster: collecting blobs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return false, 0, nil
	}
	if now := time.Now(); fi.ModTime().After(now) {
		// Stamped in the future (the wall clock went back since): its
		// age is unknown, so it counts from now, and it goes a grace
		// period later instead of once the clock catches up.
		if err := os.Chtimes(path, now, now); err != nil {
			return false, 0, fmt.Errorf("cluster: collecting blobs: %w", err)
		}
		return false, 0, nil
	}
	if time.Since(fi.ModTime()) <= grace {
		return false, 0, nil
	}
	if at, ok := f.recentPuts[name]; ok && time.Since(at) <= grace {
		return false, 0, nil // put lately, whatever the file's time says
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, 0, fmt.Errorf("cluster: collecting blobs: %w", err)
	}
	return true, fi.Size(), nil
}
