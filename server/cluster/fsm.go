package cluster

import (
	"archive/tar"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/tenancy"
)

// fsm is the raft state machine: one core store per tenant under root.
// raft calls Apply, ApplyBatch, Snapshot and Restore from one goroutine;
// readers (Node.View) hold mu shared, Restore holds it exclusively.
type fsm struct {
	root        string // tenant stores: root/<tenant>
	staging     string // snapshot copies being persisted
	storeConfig func(tenant, dir string) core.Config

	mu     sync.RWMutex
	stores map[string]*core.Store
	closed bool // Node.Close closed the stores: open no more

	waitMu  sync.Mutex
	applied uint64        // the last log index applied to the stores
	changed chan struct{} // closed and replaced whenever applied moves
	halt    error         // why the node stopped applying, or nil

	stop chan struct{} // closed by Node.Close: releases a halted apply
}

func newFSM(root, staging string, storeConfig func(tenant, dir string) core.Config) *fsm {
	return &fsm{root: root, staging: staging, storeConfig: storeConfig,
		stores: map[string]*core.Store{}, changed: make(chan struct{}), stop: make(chan struct{})}
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply applies one entry (raft uses ApplyBatch; this is its one-entry form).
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// entryWrites is one entry's writes queued to its tenant's store.
type entryWrites struct {
	c       *command
	tickets []*core.Ticket
	batch   *core.BatchTicket
	res     []Result
}

// ApplyBatch applies entries in log order. Every write of every entry is
// queued to its store from this goroutine before any is waited for, so the
// stores cover them with group commits and still apply them in log order
// (core: a store's writes queued from one goroutine are applied in that
// order). The response for each command entry is its []Result.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	pend := make([]*entryWrites, len(logs))
	var haltErr error
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := decodeCommand(l.Data)
		if err != nil {
			haltErr = err
			break
		}
		ew, err := f.queue(c, l.Index)
		if err != nil {
			haltErr = err
			break
		}
		pend[i] = ew
	}
	// Wait for everything queued, in order.
	ctx := context.Background()
	for i, ew := range pend {
		if ew == nil {
			continue
		}
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
		for j := range ew.res {
			if err := ew.res[j].Err; err != nil && !deterministic(err) && haltErr == nil {
				haltErr = fmt.Errorf("cluster: applying entry %d to tenant %q: %w", logs[i].Index, ew.c.Tenant, err)
			}
		}
		out[i] = ew.res
	}
	if haltErr != nil {
		// The stores may no longer match the log: stop here, never
		// acknowledging anything of this batch, and never move the
		// applied index. A restart rebuilds the stores from the last
		// snapshot and the log.
		f.waitMu.Lock()
		f.halt = haltErr
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
	s, err := f.store(c.Tenant, true)
	if err != nil {
		return nil, err
	}
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

// store returns the tenant's open store, opening it (creating it when
// create is set) as needed.
func (f *fsm) store(tenant string, create bool) (*core.Store, error) {
	f.mu.RLock()
	s := f.stores[tenant]
	f.mu.RUnlock()
	if s != nil {
		return s, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.storeLocked(tenant, create)
}

func (f *fsm) storeLocked(tenant string, create bool) (*core.Store, error) {
	if s := f.stores[tenant]; s != nil {
		return s, nil
	}
	if f.closed {
		return nil, ErrClosed
	}
	dir := filepath.Join(f.root, tenant)
	if !create {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %q", ErrNoTenant, tenant)
		}
	}
	s, err := core.Open(f.storeConfig(tenant, dir))
	if err != nil {
		return nil, fmt.Errorf("cluster: opening tenant %q: %w", tenant, err)
	}
	f.stores[tenant] = s
	return s, nil
}

// closeStores closes every open store.
func (f *fsm) closeStores() error {
	var errs []error
	for name, s := range f.stores {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: closing tenant %q: %w", name, err))
		}
		delete(f.stores, name)
	}
	return errors.Join(errs...)
}

// Snapshot copies every tenant store (core.Store.Snapshot) into a staging
// directory. raft calls it between applies, so the copies hold exactly the
// entries applied so far; applies wait while the copies are made (reads
// do not), then Persist streams them to raft while applies go on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
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
	// No lock is held while copying (readers go on): only Restore closes
	// stores, and raft never runs it beside Snapshot.
	for _, name := range names {
		s, err := f.store(name, false)
		if err == nil {
			_, err = s.Snapshot(context.Background(), filepath.Join(dir, "tenants", name))
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("cluster: snapshot of tenant %q: %w", name, err)
		}
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], f.appliedIndex())
	if err := os.WriteFile(filepath.Join(dir, "applied"), idx[:], 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &fsmSnapshot{dir: dir}, nil
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
// sink as a tar stream: "applied" (the log index, 8 bytes big-endian) and
// tenants/<tenant>/… (each store's snapshot directory).
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

// Restore replaces every tenant store with the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.closeStores(); err != nil {
		return err
	}
	base := filepath.Dir(f.root)
	incoming := filepath.Join(base, "restoring")
	if err := os.RemoveAll(incoming); err != nil {
		return err
	}
	applied, err := readTar(rc, incoming)
	if err != nil {
		os.RemoveAll(incoming)
		return fmt.Errorf("cluster: restoring snapshot: %w", err)
	}
	if err := os.RemoveAll(f.root); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(incoming, "tenants"), 0o755); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(incoming, "tenants"), f.root); err != nil {
		return err
	}
	os.RemoveAll(incoming)
	f.setApplied(applied)
	return nil
}

// readTar unpacks a snapshot stream into dir and returns its applied index.
func readTar(r io.Reader, dir string) (uint64, error) {
	var applied uint64
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return applied, nil
		}
		if err != nil {
			return 0, err
		}
		name := filepath.FromSlash(hdr.Name)
		if !filepath.IsLocal(name) {
			return 0, fmt.Errorf("snapshot entry %q leaves the snapshot directory", hdr.Name)
		}
		path := filepath.Join(dir, name)
		switch {
		case hdr.Name == "applied":
			var b [8]byte
			if _, err := io.ReadFull(tr, b[:]); err != nil {
				return 0, fmt.Errorf("snapshot entry %q: %w", hdr.Name, err)
			}
			applied = binary.BigEndian.Uint64(b[:])
		case hdr.Typeflag == tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return 0, err
			}
		case hdr.Typeflag == tar.TypeReg && strings.HasPrefix(hdr.Name, "tenants/"):
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return 0, err
			}
			if err := writeFile(path, tr); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("snapshot entry %q is not part of the format", hdr.Name)
		}
	}
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
