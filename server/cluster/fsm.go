package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/internal/durable"
	"github.com/batpak-go/batpak/server/tenancy"
)

// fsm is the raft state machine: one core store per tenant under root,
// open while in use (stores.go). raft calls Apply, ApplyBatch, Snapshot
// and Restore from one goroutine; every use of a store holds it (acquire,
// release), and Restore and drops hold mu exclusively.
type fsm struct {
	// sinceSnap counts the entries applied since the last snapshot was
	// cut, and their bytes: what raft's log holds beyond the snapshot
	// (see logBudget).
	sinceSnapEntries, sinceSnapBytes atomic.Int64

	root        string // tenant stores: root/<tenant>
	blobs       string // blobs: blobs/<sha256 hex>, beside root
	staging     string // snapshot copies being persisted
	storeConfig func(tenant, dir string) core.Config

	// mu guards stores (see stores.go for how holds, opens and closes
	// use it); Restore and drops hold it exclusively.
	mu     sync.RWMutex
	stores map[string]*storeEntry // open, opening or closing
	closed bool                   // Node.Close closed the stores: open no more
	// held maps each open *core.Store to its entry, for Node.ReleaseStore.
	held sync.Map
	// maxOpen bounds len(stores) (Config.MaxOpenStores), but for opens
	// made while every open store is in use (overBound).
	maxOpen                                 int
	opens, idleCloses, evictions, overBound atomic.Uint64

	// blobMu orders a blob's write or refresh (putBlob, keepBlobs) against
	// its removal (Node.CollectBlobs): a collection never removes a blob
	// between an apply's check and its write.
	blobMu sync.Mutex
	// recentPuts is, under blobMu, when (on the monotonic clock) each blob
	// was last put or restored by this process: a collection keeps a blob
	// put within the grace period even when its file's modification time
	// says otherwise (the wall clock jumped forward, or the file system
	// stamps files with another machine's clock). Entries older than a
	// collection's grace period are dropped by it; a restart starts empty
	// (modification times alone then count).
	recentPuts map[string]time.Time

	// born is the log index of the first entry applied to each store since
	// it was (re)created — the same on every replica — so a restore tells
	// a store dropped and created again from the one it holds. 0: unknown
	// (created locally and never written, or restored from a snapshot
	// without the record). Only raft's FSM goroutine (Apply, Snapshot,
	// Restore) touches it.
	born map[string]uint64
	// marks mirrors born, with each store's last write, for readers off
	// the FSM goroutine (Node.Mark).
	marks storeMarks

	waitMu  sync.Mutex
	applied uint64        // the last log index applied to the stores
	changed chan struct{} // closed and replaced whenever applied moves
	halt    error         // why the node stopped applying, or nil
	halted  chan struct{} // closed when halt is set

	stop chan struct{} // closed by Node.Close: releases a halted apply
}

func newFSM(root, staging string, storeConfig func(tenant, dir string) core.Config) *fsm {
	return &fsm{root: root, blobs: filepath.Join(filepath.Dir(root), blobsDir), staging: staging, storeConfig: storeConfig,
		stores: map[string]*storeEntry{}, maxOpen: DefaultMaxOpenStores, born: map[string]uint64{}, recentPuts: map[string]time.Time{}, changed: make(chan struct{}), halted: make(chan struct{}), stop: make(chan struct{})}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply applies one entry (raft uses ApplyBatch; this is its one-entry form).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// entryWrites is one entry's writes queued to its tenant's store, which
// it holds (held, nil when nothing was queued) until they are written.
type entryWrites struct {
	c       *command
	held    *storeEntry
	tickets []*core.Ticket
	batch   *core.BatchTicket
	res     []Result
}

// ApplyBatch applies entries in log order. Every write of every entry is
// queued to its store from this goroutine before any is waited for, so the
// stores cover them with group commits and still apply them in log order
// (core: a store's writes queued from one goroutine are applied in that
// order). A cursor commit or a drop waits for the writes queued before it,
// then is applied. The response for each command entry is its []Result; a
// write group's is a [][]Result, one per write in the group. A store with
// writes queued is held (never closed for idleness or room) until they are
// written.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if err := f.err(); err != nil {
		// Halted on an earlier entry, and released by Close: the entries
		// after it are never applied (nor acknowledged) here.
		for i := range out {
			out[i] = err
		}
		return out
	}
	type pending struct {
		i  int
		ew *entryWrites
		// group, for a write of a write group entry: the entry's
		// results, of which this write's are group[sub].
		group [][]Result
		sub   int
	}
	var pend []pending
	var haltErr error
	// flush waits for everything queued, in order.
	flush := func() {
		ctx := context.Background()
		for _, p := range pend {
			ew := p.ew
			if ew.batch != nil {
				rs, err := ew.batch.Wait(ctx)
				for j := range ew.res {
					if err != nil {
						ew.res[j].Err = err
					} else {
						ew.res[j].Receipt = rs[j]
					}
				}
			}
			for j, t := range ew.tickets {
				if t != nil {
					ew.res[j].Receipt, ew.res[j].Err = t.Wait(ctx)
				}
			}
			if ew.held != nil {
				ew.held.release()
				// Only now that its events are readable: a reader that
				// sees the mark sees them.
				f.marks.wrote(ew.c.Tenant, f.born[ew.c.Tenant], logs[p.i].Index)
			}
			for j := range ew.res {
				if err := ew.res[j].Err; err != nil && !deterministic(err) && haltErr == nil {
					haltErr = fmt.Errorf("cluster: applying entry %d to tenant %q: %w", logs[p.i].Index, ew.c.Tenant, err)
				}
			}
			if p.group != nil {
				p.group[p.sub] = ew.res
			} else {
				out[p.i] = ew.res
			}
		}
		pend = pend[:0]
	}
	for _, l := range logs {
		f.sinceSnapEntries.Add(1)
		f.sinceSnapBytes.Add(int64(len(l.Data)))
	}
entries:
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := decodeCommand(l.Data)
		if err != nil {
			haltErr = err
			break
		}
		if c.Op == opWrite {
			ew, err := f.queue(c, l.Index)
			if err != nil {
				haltErr = err
				break
			}
			pend = append(pend, pending{i: i, ew: ew})
			continue
		}
		if c.Op == opGroup {
			// Its writes queue like writes of entries of their own; the
			// entry's response is their results, in order.
			res := make([][]Result, len(c.Group))
			out[i] = res
			for j, w := range c.Group {
				ew, err := f.queue(w, l.Index)
				if err != nil {
					haltErr = err
					break entries
				}
				pend = append(pend, pending{i: i, ew: ew, group: res, sub: j})
			}
			continue
		}
		flush()
		if haltErr != nil {
			break
		}
		var res []Result
		switch c.Op {
		case opCursor:
			res, err = f.commitCursor(c, l.Index)
		case opDrop:
			res, err = f.drop(c.Tenant, l.Index)
		case opBlob:
			res, err = f.putBlob(c.Blob, l.Index)
		}
		if err != nil {
			haltErr = err
			break entries
		}
		out[i] = res
	}
	flush()
	if haltErr != nil {
		// The stores may no longer match the log: stop here, never
		// acknowledging anything of this batch, and never move the
		// applied index. A restart rebuilds the stores from the last
		// snapshot and the log.
		if !errors.Is(haltErr, ErrHalted) {
			haltErr = fmt.Errorf("%w: %w", ErrHalted, haltErr)
		}
		f.waitMu.Lock()
		f.halt = haltErr
		close(f.halted)
		close(f.changed)
		f.changed = make(chan struct{})
		f.waitMu.Unlock()
		<-f.stop
		for i := range out {
			out[i] = haltErr
		}
		return out
	}
	f.setApplied(logs[len(logs)-1].Index)
	return out
}

// commitCursor applies a named cursor's committed position to the
// tenant's store. Refusals every replica makes alike (a bad name, a
// position past the log's end) are the result; other errors halt.
func (f *fsm) commitCursor(c *command, index uint64) ([]Result, error) {
	res := []Result{{Index: index}}
	if err := validStore(c.Tenant); err != nil {
		res[0].Err = err
		return res, nil
	}
	e, err := f.acquire(c.Tenant, true)
	if err != nil {
		return nil, err
	}
	defer e.release()
	f.noteBorn(c.Tenant, index)
	err = e.s.CommitReplicatedCursor(c.Cursor, c.Pos)
	switch {
	case err == nil:
	case errors.Is(err, core.ErrInvalidCursorName), errors.Is(err, core.ErrCursorAhead):
		res[0].Err = err
	default:
		return nil, fmt.Errorf("cluster: applying entry %d (cursor %q of tenant %q): %w", index, c.Cursor, c.Tenant, err)
	}
	return res, nil
}

// noteBorn records index as the tenant's birth when it has none.
func (f *fsm) noteBorn(tenant string, index uint64) {
	if f.born[tenant] == 0 {
		f.born[tenant] = index
	}
}

// drop closes the tenant's store and removes its directory (renamed into
// the trash directory first, so a crash never leaves half a store under
// tenants/). A later write creates it empty.
func (f *fsm) drop(tenant string, index uint64) ([]Result, error) {
	res := []Result{{Index: index}}
	if err := validStore(tenant); err != nil {
		res[0].Err = err
		return res, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settleLocked(tenant)
	if err := f.dropLocked(tenant, index); err != nil {
		return nil, fmt.Errorf("cluster: applying entry %d (drop of tenant %q): %w", index, tenant, err)
	}
	return res, nil
}

// dropLocked is drop's work; the caller holds f.mu exclusively and the
// tenant's entry, if any, is not busy (settleLocked).
func (f *fsm) dropLocked(tenant string, index uint64) error {
	delete(f.born, tenant)
	f.marks.forget(tenant)
	if e := f.stores[tenant]; e != nil {
		if err := f.closeNowLocked(e); err != nil {
			return err
		}
	}
	dir := filepath.Join(f.root, tenant)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	trash := filepath.Join(filepath.Dir(f.root), trashDir)
	if err := os.MkdirAll(trash, 0o755); err != nil {
		return err
	}
	dead := filepath.Join(trash, fmt.Sprintf("%s.%d", tenant, index))
	if err := os.RemoveAll(dead); err != nil {
		return err
	}
	if err := os.Rename(dir, dead); err != nil {
		return err
	}
	// What fails to go now goes at the next Open, which empties the trash.
	os.RemoveAll(dead)
	return nil
}

// trashDir, beside tenants/, holds dropped stores while they are removed.
const trashDir = "trash"

// blobsDir, beside tenants/, holds the blobs (Node.PutBlob): kept across
// restarts, removed only by Node.CollectBlobs.
const blobsDir = "blobs"

// putBlob writes a blob to blobs/<sha256 hex>, durably; one already there
// intact (put again, or an entry applied again after a restart) keeps its
// bytes and has its modification time set to now (one damaged is
// written anew: putting the same bytes again repairs it), so that Node.CollectBlobs
// counts its grace period from this apply. An error writing it halts the
// node.
func (f *fsm) putBlob(data []byte, index uint64) ([]Result, error) {
	digest := blobDigest(data)
	path := filepath.Join(f.blobs, digest)
	f.blobMu.Lock()
	defer f.blobMu.Unlock()
	f.recentPuts[digest] = time.Now()
	if blobIntact(path, digest) {
		now := time.Now()
		if err := os.Chtimes(path, now, now); err != nil {
			return nil, fmt.Errorf("cluster: applying entry %d (a blob of %d bytes, already held): %w", index, len(data), err)
		}
		return []Result{{Index: index}}, nil
	}
	if err := durable.WriteFile(path, data); err != nil {
		return nil, fmt.Errorf("cluster: applying entry %d (a blob of %d bytes): %w", index, len(data), err)
	}
	return []Result{{Index: index}}, nil
}

// blobIntact reports whether the file at path holds bytes whose SHA-256
// is digest: a regular file of at most MaxMaxBytes (one replaced by a
// pipe or made huge is not, and is not waited on or read whole).
func blobIntact(path, digest string) bool {
	data, err := durable.ReadFile(path, MaxMaxBytes)
	return err == nil && blobDigest(data) == digest
}

// blobDigest is a blob's name: the hex SHA-256 of its bytes.
func blobDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// validDigest checks a blob name: 64 lowercase hex digits.
func validDigest(d string) error {
	if len(d) != 64 {
		return fmt.Errorf("cluster: blob digest %q: want 64 lowercase hex digits (a SHA-256)", d)
	}
	for _, c := range d {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("cluster: blob digest %q: want 64 lowercase hex digits (a SHA-256)", d)
		}
	}
	return nil
}

// queue submits one entry's writes to its tenant's store. Refusals that
// depend only on the entry and the store's state (validation, conflicts)
// are results; an error returned is local (the store cannot be opened or
// written) and halts the node.
func (f *fsm) queue(c *command, index uint64) (*entryWrites, error) {
	ew := &entryWrites{c: c, res: make([]Result, len(c.Items))}
	for j := range ew.res {
		ew.res[j].Index = index
	}
	fail := func(err error) *entryWrites {
		for j := range ew.res {
			ew.res[j].Err = err
		}
		return ew
	}
	if err := validStore(c.Tenant); err != nil {
		return fail(err), nil
	}
	if len(c.Items) == 0 {
		return ew, nil
	}
	e, err := f.acquire(c.Tenant, true)
	if err != nil {
		return nil, err
	}
	ew.held = e // released by ApplyBatch's flush, once written
	s := e.s
	f.noteBorn(c.Tenant, index)
	ctx := context.Background()
	if c.Batch {
		items := make([]core.BatchItem, len(c.Items))
		for j := range c.Items {
			items[j] = c.Items[j].item()
		}
		bt, err := s.SubmitReplicatedBatch(ctx, items)
		if err != nil {
			return fail(err), nil
		}
		ew.batch = bt
		return ew, nil
	}
	ew.tickets = make([]*core.Ticket, len(c.Items))
	for j := range c.Items {
		t, err := s.SubmitReplicated(ctx, c.Items[j].item())
		if err != nil {
			ew.res[j].Err = err
			continue
		}
		ew.tickets[j] = t
	}
	return ew, nil
}

// deterministic reports whether err is a refusal every replica makes
// alike (it depends only on the write and the store's prior writes),
// rather than a local failure.
func deterministic(err error) bool {
	for _, e := range []error{
		core.ErrInvalidCoordinate, core.ErrInvalidKind, core.ErrInvalidPayload,
		core.ErrPayloadTooLarge, core.ErrInvalidOptions, core.ErrConflict,
		core.ErrIdempotencyMismatch, core.ErrDuplicateID, core.ErrBatchTooLarge,
		core.ErrBatchMixedKeys, core.ErrStoreFull, tenancy.ErrInvalidID,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (f *fsm) setApplied(index uint64) {
	f.waitMu.Lock()
	f.applied = index
	close(f.changed)
	f.changed = make(chan struct{})
	f.waitMu.Unlock()
}

// waitApplied blocks until the stores hold every entry up to index.
func (f *fsm) waitApplied(ctx context.Context, index uint64) error {
	for {
		f.waitMu.Lock()
		applied, ch, halt := f.applied, f.changed, f.halt
		f.waitMu.Unlock()
		if applied >= index {
			return nil
		}
		if halt != nil {
			return halt
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("cluster: waiting for log index %d (applied %d): %w", index, applied, ctx.Err())
		}
	}
}

func (f *fsm) appliedIndex() uint64 {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.applied
}

func (f *fsm) err() error {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.halt
}

// Snapshot copies every tenant store (core.Store.Snapshot of an open one,
// the files of a closed one: snapshotStore) into a staging directory.
// raft calls it between applies, so the copies hold exactly the entries
// applied so far; applies wait while the copies are made (reads do not,
// but of a closed store while its files are copied), then Persist
// streams them to raft while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.err(); err != nil {
		// raft counts the entry the node halted on as applied once Close
		// releases it: a copy of the stores now would be labelled with
		// an entry they lack, and a restart would restore past it.
		return nil, err
	}
	// Everything applied so far is in this snapshot: raft's log past it
	// starts from here (for logBudget).
	f.sinceSnapEntries.Store(0)
	f.sinceSnapBytes.Store(0)
	if err := os.MkdirAll(f.staging, 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(f.staging, "snap-")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tenants"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	f.mu.RLock()
	names, err := tenantDirs(f.root)
	f.mu.RUnlock()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// No lock is held while copying (reads go on): an open store is held
	// while it is copied, so nothing closes it meanwhile, and a closed
	// one is kept closed while its files are copied (snapshotStore); raft
	// never runs Restore or an apply beside Snapshot.
	for _, name := range names {
		if err := f.snapshotStore(context.Background(), name, filepath.Join(dir, "tenants", name)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("cluster: snapshot of tenant %q: %w", name, err)
		}
	}
	if err := copyBlobs(f.blobs, filepath.Join(dir, blobsDir)); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cluster: snapshot of the blobs: %w", err)
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], f.appliedIndex())
	if err := os.WriteFile(filepath.Join(dir, "applied"), idx[:], 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var born []byte
	for _, name := range names {
		if b := f.born[name]; b != 0 {
			born = binary.AppendUvarint(born, b)
			born = appendString(born, name)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "born"), born, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &fsmSnapshot{dir: dir}, nil
}

// copyBlobs puts every blob of from into to (hard links where the file
// system allows: blobs are never changed in place, only written whole and
// renamed). raft runs Snapshot between applies, so no blob is being
// written meanwhile; Node.CollectBlobs may remove one meanwhile (it is
// referenced by nothing), and a blob that vanished is left out.
func copyBlobs(from, to string) error {
	ents, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || validDigest(e.Name()) != nil {
			continue // a temporary file of a write a crash cut short
		}
		if err := copyBlob(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// copyBlob links (or copies) one blob into a snapshot; a blob collected
// since the directory was listed is skipped.
func copyBlob(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	fh, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = writeFile(dst, fh)
	fh.Close()
	return err
}

// tenantDirs lists root's tenant directories, sorted.
func tenantDirs(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() && validStore(e.Name()) == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// fsmSnapshot is a staged copy of the stores, written to raft's snapshot
// sink as a tar stream: "applied" (the log index, 8 bytes big-endian),
// "born" (each store's birth index, see fsm.born: uvarint index, uvarint
// name length, name; repeated; absent from older snapshots),
// tenants/<tenant>/… (each store's snapshot directory) and blobs/<sha256
// hex> (every blob; absent from older snapshots).
type fsmSnapshot struct{ dir string }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeTar(sink, s.dir); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: persisting snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { os.RemoveAll(s.dir) }

func writeTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		fh, err := os.Open(path)
		if err != nil {
			return err
		}
		defer fh.Close()
		_, err = io.Copy(tw, fh)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Restore makes the stores the snapshot's. A store held on this node —
// one the server holds (Node.Store) with subscriptions and cursors on
// it — stays the same object and is caught up in place (catchUp); the
// others (open ones nobody holds are closed first) are replaced by the
// snapshot's directories. A held store the snapshot lacks, or holds in
// another incarnation (dropped and created again since, as the birth
// records tell), is dropped (closed: ErrClosed to its holders); a held
// store still empty that the snapshot lacks is kept.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.settleLocked("")
	base := filepath.Dir(f.root)
	incoming := filepath.Join(base, "restoring")
	if err := os.RemoveAll(incoming); err != nil {
		return err
	}
	defer os.RemoveAll(incoming)
	snap, err := readTar(rc, incoming)
	if err != nil {
		return fmt.Errorf("cluster: restoring snapshot: %w", err)
	}
	// The blobs first: a store caught up below may name one (the control
	// plane's events name bundles and modules), and its readers must find
	// it, as they do when entries are applied in log order.
	f.blobMu.Lock()
	err = keepBlobs(filepath.Join(incoming, blobsDir), f.blobs, f.recentPuts)
	f.blobMu.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: restoring snapshot: blobs: %w", err)
	}
	inTenants := filepath.Join(incoming, "tenants")
	names, err := tenantDirs(inTenants)
	if err != nil {
		return err
	}
	inSnap := map[string]bool{}
	for _, name := range names {
		inSnap[name] = true
	}
	// Open stores nobody holds are closed: the snapshot's directories
	// replace them like those of stores not open.
	for _, name := range sortedKeys(f.stores) {
		if e := f.stores[name]; e.users.Load() == 0 {
			if err := f.closeNowLocked(e); err != nil {
				return fmt.Errorf("cluster: restoring snapshot: %w", err)
			}
		}
	}
	// The held stores: caught up in place, kept, or dropped.
	kept := map[string]bool{}
	for _, name := range sortedKeys(f.stores) {
		s := f.stores[name].s
		local, theirs := f.born[name], snap.born[name]
		switch {
		case inSnap[name] && (local == 0 || theirs == 0 || local == theirs):
			if err := f.catchUp(name, s, filepath.Join(inTenants, name)); err != nil {
				return err
			}
			kept[name] = true
		case !inSnap[name] && local == 0 && s.Usage().GlobalSequence == 0:
			kept[name] = true
		default:
			if err := f.dropLocked(name, snap.applied); err != nil {
				return fmt.Errorf("cluster: restoring snapshot: dropping tenant %q: %w", name, err)
			}
		}
	}
	// The rest: the snapshot's directories replace whatever is here.
	here, err := tenantDirs(f.root)
	if err != nil {
		return err
	}
	for _, name := range here {
		if !kept[name] {
			if err := os.RemoveAll(filepath.Join(f.root, name)); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		return err
	}
	for _, name := range names {
		if !kept[name] {
			if err := os.Rename(filepath.Join(inTenants, name), filepath.Join(f.root, name)); err != nil {
				return err
			}
		}
	}
	born := map[string]uint64{}
	for name, b := range snap.born {
		if inSnap[name] {
			born[name] = b
		}
	}
	f.born = born
	f.marks.reset(born, snap.applied)
	f.setApplied(snap.applied)
	return nil
}

// keepBlobs moves the snapshot's blobs (checked by readTar) into dir,
// beside the blobs this node has; none is removed (a blob is the same
// bytes wherever it is: keeping one the snapshot lacks costs only disk,
// until Node.CollectBlobs; one this node holds damaged is replaced by
// the snapshot's). One this node holds intact already has its
// modification time set to now, as an apply of its put would: the
// snapshot may hold a put whose referencing change comes after it; each
// is noted in recent (fsm.recentPuts) as put now. The caller holds
// fsm.blobMu.
func keepBlobs(from, dir string, recent map[string]time.Time) error {
	ents, err := os.ReadDir(from)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		dst := filepath.Join(dir, e.Name())
		recent[e.Name()] = time.Now()
		if blobIntact(dst, e.Name()) {
			now := time.Now()
			if err := os.Chtimes(dst, now, now); err != nil {
				return err
			}
			continue
		}
		if err := os.Rename(filepath.Join(from, e.Name()), dst); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// syncDir makes the entries renamed into dir durable.
func syncDir(dir string) error {
	fh, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Sync()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// catchUpPage is how many events catchUp reads and applies at a time: a
// quarter of a tenant store's notification ring (tenancy's
// TenantBroadcastCapacity, 1,024), so that a page published as one group
// leaves room for what the store's lossy subscribers have not read yet.
// catchUpPageBytes bounds the payload bytes a page holds.
const (
	catchUpPage      = 256
	catchUpPageBytes = 16 << 20
)

// catchUp brings the open store s of tenant up to the snapshot's copy of
// it in dir: the store's events must be a prefix of the copy's (a
// replica's store always is a prefix of the committed log; anything else
// is an error naming the tenant, and the restore fails). The missing
// events are applied in order with SubmitReplicated, each with the id,
// timestamp, idempotency key, correlation and causation ids and flags it
// has in the copy, so their headers — clocks, sequences, chain hashes —
// come out identical. The events of an atomic batch are applied one by
// one here: a reader of s may see part of such a batch before the rest,
// and a subscriber sees them as ordinary new events, each once, with no
// gap. Then the copy's named cursor positions are committed to s.
func (f *fsm) catchUp(tenant string, s *core.Store, dir string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("cluster: restoring snapshot: tenant %q: "+format, append([]any{tenant}, args...)...)
	}
	cfg := f.storeConfig(tenant, dir)
	cfg.Replicator = nil
	from, err := core.OpenReadOnly(cfg)
	if err != nil {
		return fail("opening the snapshot's store: %w", err)
	}
	defer from.Close()
	have, want := s.Usage().GlobalSequence, from.Usage().GlobalSequence
	if have > want {
		return fail("this node's store holds %d events, the snapshot's only %d: it is not a prefix of the log", have, want)
	}
	if have > 0 {
		mine, err := eventAt(s, have-1)
		if err != nil {
			return fail("reading event %d: %w", have-1, err)
		}
		theirs, err := eventAt(from, have-1)
		if err != nil {
			return fail("reading the snapshot's event %d: %w", have-1, err)
		}
		if mine.Header != theirs.Header || mine.Coordinate != theirs.Coordinate {
			return fail("event %d is %s here and %s in the snapshot: this node's store is not a prefix of the log", have-1, mine.Header.ID, theirs.Header.ID)
		}
	}
	cur := from.Cursor(core.All())
	cur.Seek(have)
	ctx := context.Background()
	for {
		evs, _, err := cur.PollBytes(catchUpPage, catchUpPageBytes)
		if err != nil {
			return fail("reading the snapshot's store: %w", err)
		}
		if len(evs) == 0 {
			break
		}
		tickets := make([]*core.Ticket, len(evs))
		for i := range evs {
			ev := &evs[i]
			if ev.Redacted {
				return fail("event %d of the snapshot is redacted", ev.GlobalSequence)
			}
			h := ev.Header
			it := core.BatchItem{Coordinate: ev.Coordinate, Kind: h.Kind, Payload: ev.Payload, Options: core.AppendOptions{
				ID: h.ID, Timestamp: h.Timestamp, IdempotencyKey: ev.IdempotencyKey,
				CorrelationID: h.CorrelationID, CausationID: h.CausationID, Flags: h.Flags,
			}}
			if tickets[i], err = s.SubmitReplicated(ctx, it); err != nil {
				return fail("applying event %d: %w", ev.GlobalSequence, err)
			}
		}
		for i, t := range tickets {
			r, err := t.Wait(ctx)
			if err == nil && (r.Deduplicated || r.ID != evs[i].Header.ID || r.GlobalSequence != evs[i].GlobalSequence) {
				err = fmt.Errorf("written as %s at %d (deduplicated %v)", r.ID, r.GlobalSequence, r.Deduplicated)
			}
			if err != nil {
				return fail("applying event %d (%s): %w", evs[i].GlobalSequence, evs[i].Header.ID, err)
			}
		}
	}
	theirs, err := from.CursorPositions()
	if err != nil {
		return fail("reading the snapshot's cursors: %w", err)
	}
	mine, err := s.CursorPositions()
	if err != nil {
		return fail("reading cursors: %w", err)
	}
	for _, name := range sortedKeys(theirs) {
		if pos, ok := mine[name]; ok && pos == theirs[name] {
			continue
		}
		if err := s.CommitReplicatedCursor(name, theirs[name]); err != nil {
			return fail("cursor %q: %w", name, err)
		}
	}
	return nil
}

// eventAt reads the event at global sequence seq.
func eventAt(s *core.Store, seq uint64) (core.StoredEvent, error) {
	c := s.Cursor(core.All())
	c.Seek(seq)
	evs, err := c.Poll(1)
	if err != nil {
		return core.StoredEvent{}, err
	}
	if len(evs) != 1 || evs[0].GlobalSequence != seq {
		return core.StoredEvent{}, fmt.Errorf("no event at sequence %d", seq)
	}
	return evs[0], nil
}

// snapshotMeta is what a snapshot stream says besides the stores.
type snapshotMeta struct {
	applied uint64            // the log index the snapshot holds
	born    map[string]uint64 // the stores' birth indexes (fsm.born)
}

// maxBornBytes bounds a snapshot's "born" entry (a few bytes per store).
const maxBornBytes = 64 << 20

// readTar unpacks a snapshot stream into dir and returns what it says.
func readTar(r io.Reader, dir string) (snapshotMeta, error) {
	meta := snapshotMeta{born: map[string]uint64{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return meta, nil
		}
		if err != nil {
			return meta, err
		}
		name := filepath.FromSlash(hdr.Name)
		if !filepath.IsLocal(name) {
			return meta, fmt.Errorf("snapshot entry %q leaves the snapshot directory", hdr.Name)
		}
		path := filepath.Join(dir, name)
		switch {
		case hdr.Name == "applied":
			var b [8]byte
			if _, err := io.ReadFull(tr, b[:]); err != nil {
				return meta, fmt.Errorf("snapshot entry %q: %w", hdr.Name, err)
			}
			meta.applied = binary.BigEndian.Uint64(b[:])
		case hdr.Name == "born":
			if hdr.Size > maxBornBytes {
				return meta, fmt.Errorf("snapshot entry %q: %d bytes, the limit is %d", hdr.Name, hdr.Size, maxBornBytes)
			}
			b, err := io.ReadAll(io.LimitReader(tr, maxBornBytes))
			if err != nil {
				return meta, fmt.Errorf("snapshot entry %q: %w", hdr.Name, err)
			}
			d := decoder{b: b}
			for d.err == nil && len(d.b) > 0 {
				index := d.uvarint()
				meta.born[d.str()] = index
			}
			if d.err != nil {
				return meta, fmt.Errorf("snapshot entry %q: %w", hdr.Name, d.err)
			}
		case hdr.Typeflag == tar.TypeDir && hdr.Name != blobsDir && hdr.Name != blobsDir+"/" && strings.HasPrefix(hdr.Name, blobsDir+"/"):
			return meta, fmt.Errorf("snapshot entry %q: a directory inside %s/", hdr.Name, blobsDir)
		case hdr.Typeflag == tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return meta, err
			}
		case hdr.Typeflag == tar.TypeReg && strings.HasPrefix(hdr.Name, blobsDir+"/"):
			if err := readBlob(tr, hdr, path); err != nil {
				return meta, err
			}
		case hdr.Typeflag == tar.TypeReg && strings.HasPrefix(hdr.Name, "tenants/"):
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return meta, err
			}
			if err := writeFile(path, tr); err != nil {
				return meta, err
			}
		default:
			return meta, fmt.Errorf("snapshot entry %q is not part of the format", hdr.Name)
		}
	}
}

// readBlob unpacks one blobs/<sha256 hex> entry of a snapshot: its name
// must be a digest, its size at most MaxMaxBytes, and its bytes must hash
// to its name.
func readBlob(tr io.Reader, hdr *tar.Header, path string) error {
	name := strings.TrimPrefix(hdr.Name, blobsDir+"/")
	if err := validDigest(name); err != nil {
		return fmt.Errorf("snapshot entry %q: %w", hdr.Name, err)
	}
	if hdr.Size > MaxMaxBytes {
		return fmt.Errorf("snapshot entry %q: %d bytes, the limit is %d", hdr.Name, hdr.Size, MaxMaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(tr, MaxMaxBytes+1))
	if err != nil {
		return fmt.Errorf("snapshot entry %q: %w", hdr.Name, err)
	}
	if blobDigest(data) != name {
		return fmt.Errorf("snapshot entry %q: its bytes' SHA-256 is %s (damaged)", hdr.Name, blobDigest(data))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeFile(path, bytes.NewReader(data))
}

func writeFile(path string, r io.Reader) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, r); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}
