package control

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

var followDefaults = Quotas{StorageBytes: 1 << 30, EventsPerSecond: 1000, EventsBurst: 2000, MaxCursors: 10}

// openReplica opens a store standing for one node's replicated system
// store; the test closes it after the planes over it.
func openReplica(t *testing.T) *core.Store {
	t.Helper()
	s, err := core.Open(core.DefaultConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openFollower(t *testing.T, s *core.Store, onChange func(Change)) *Plane {
	t.Helper()
	p, err := Open(Options{Store: s, Defaults: followDefaults, OnChange: onChange})
	if err != nil {
		t.Fatalf("Open following: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func openWriter(t *testing.T) *Plane {
	t.Helper()
	p, err := Open(Options{Dir: t.TempDir(), Defaults: followDefaults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// replicator copies a writer's events into a replica's store with their
// ids and timestamps, as raft's apply would.
type replicator struct {
	src *core.Cursor
	dst *core.Store
}

func newReplicator(src *Plane, dst *core.Store) *replicator {
	return &replicator{src: src.store.Cursor(core.All()), dst: dst}
}

// copy copies what the writer has that the replica lacks and returns the
// replica's log end.
func (r *replicator) copy(t testing.TB) uint64 {
	for {
		evs, err := r.src.Poll(64)
		if err != nil {
			t.Errorf("replicate: %v", err)
			return 0
		}
		if len(evs) == 0 {
			return r.dst.Stats().GlobalSequence
		}
		for _, ev := range evs {
			if ev.Header.Kind.Category() == core.CategorySystem {
				continue
			}
			if _, err := r.dst.AppendWithOptions(context.Background(), ev.Coordinate, ev.Header.Kind, ev.Payload,
				core.AppendOptions{ID: ev.Header.ID, Timestamp: ev.Header.Timestamp}); err != nil {
				t.Errorf("replicate event %d: %v", ev.GlobalSequence, err)
				return 0
			}
		}
	}
}

func waitApplied(t testing.TB, p *Plane, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitApplied(ctx, seq); err != nil {
		t.Fatalf("WaitApplied(%d): %v (Err %v)", seq, err, p.Err())
	}
}

// sameState compares the two planes' folded states and their public reads.
func sameState(t *testing.T, step string, w, f *Plane) {
	t.Helper()
	w.mu.RLock()
	f.mu.RLock()
	eq := reflect.DeepEqual(w.st, f.st)
	diff := ""
	if !eq {
		diff = fmt.Sprintf("\nwriter   %+v\nfollower %+v", w.st, f.st)
	}
	w.mu.RUnlock()
	f.mu.RUnlock()
	if !eq {
		t.Fatalf("after %s: the follower's state differs from the writer's:%s", step, diff)
	}
	if !reflect.DeepEqual(w.Tenants(), f.Tenants()) {
		t.Fatalf("after %s: Tenants differ: %+v vs %+v", step, w.Tenants(), f.Tenants())
	}
	for _, tn := range w.Tenants() {
		id := tn.ID
		for name, pair := range map[string][2]any{
			"Keys":      {w.Keys(id), f.Keys(id)},
			"Effective": {w.Effective(id), f.Effective(id)},
			"Cursors":   {w.Cursors(id), f.Cursors(id)},
			"Plugins":   {w.Plugins(id), f.Plugins(id)},
			"Policy":    {w.Policy(id), f.Policy(id)},
			"Workers":   {w.Workers(id), f.Workers(id)},
		} {
			if !reflect.DeepEqual(pair[0], pair[1]) {
				t.Fatalf("after %s: %s(%s) differ:\nwriter   %+v\nfollower %+v", step, name, id, pair[0], pair[1])
			}
		}
	}
	wo, wok := w.OperatorHash()
	fo, fok := f.OperatorHash()
	if wo != fo || wok != fok {
		t.Fatalf("after %s: operator hashes differ", step)
	}
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// A follower fed the writer's events, copied with their ids and
// timestamps, holds the writer's state after every change, and its hook
// sees each change once, in order, with its tenant.
func TestFollowerMatchesWriterAfterEveryChange(t *testing.T) {
	ctx := context.Background()
	w := openWriter(t)
	replica := openReplica(t)
	var mu sync.Mutex
	var seen []Change
	f := openFollower(t, replica, func(c Change) {
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
	})
	if !f.Following() || w.Following() {
		t.Fatal("Following: want the follower only")
	}
	rep := newReplicator(w, replica)
	lastSeen := func() Change {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			return Change{}
		}
		return seen[len(seen)-1]
	}
	manifest := []byte(`{"name":"p1"}`)
	steps := []struct {
		name string
		do   func() error
		kind string // the follower's hook sees this last ("" to skip)
		ten  string
	}{
		{"create a", func() error { _, err := w.CreateTenant(ctx, "a", Quotas{MaxCursors: 3}, Settings{}); return err }, "tenant.created", "a"},
		{"create b", func() error { _, err := w.CreateTenant(ctx, "b", Quotas{}, Settings{Sync: "buffered"}); return err }, "tenant.created", "b"},
		{"issue k1", func() error {
			_, err := w.IssueKey(ctx, Key{ID: "k1", Tenant: "a", Roles: []Role{RoleAdmin}, Name: "ops", Hash: sha256.Sum256([]byte("k1"))})
			return err
		}, "key.issued", "a"},
		{"issue k2", func() error {
			_, err := w.IssueKey(ctx, Key{ID: "k2", Tenant: "b", Roles: []Role{RoleReader}, Hash: sha256.Sum256([]byte("k2"))})
			return err
		}, "key.issued", "b"},
		{"set quotas", func() error { _, err := w.SetQuotas(ctx, "a", Quotas{EventsPerSecond: 5, MaxCursors: 4}); return err }, "tenant.quotas_set", "a"},
		{"set settings", func() error { _, err := w.SetSettings(ctx, "a", Settings{Sync: "buffered"}); return err }, "tenant.settings_set", "a"},
		{"suspend", func() error { _, err := w.SuspendTenant(ctx, "a", "unpaid"); return err }, "tenant.suspended", "a"},
		{"resume", func() error { _, err := w.ResumeTenant(ctx, "a"); return err }, "tenant.resumed", "a"},
		{"define cursor", func() error {
			return w.DefineCursor(ctx, CursorDef{Name: "c1", Tenant: "a", Region: Region{Scope: "orders"}})
		}, "cursor.defined", "a"},
		{"define cursor 2", func() error {
			return w.DefineCursor(ctx, CursorDef{Name: "c2", Tenant: "a", Region: Region{Entity: "order:"}})
		}, "cursor.defined", "a"},
		{"activate policy", func() error { _, err := w.ActivatePolicy(ctx, "a", digest("r1"), 100, 0); return err }, "policy.activated", "a"},
		{"activate policy 2", func() error { _, err := w.ActivatePolicy(ctx, "a", digest("r2"), 200, 0); return err }, "policy.activated", "a"},
		{"roll back policy", func() error { _, err := w.RollbackPolicy(ctx, "a", digest("r1")); return err }, "policy.rolled_back", "a"},
		{"add plugin", func() error {
			_, err := w.AddPluginVersion(ctx, "a", PluginVersion{Version: "1.0.0", Digest: digest("m1"), Kind: "handler", Bytes: 10, Manifest: manifest}, "p1", true, 0, 0)
			return err
		}, "plugin.added", "a"},
		{"keep plugin version", func() error {
			_, err := w.AddPluginVersion(ctx, "a", PluginVersion{Version: "1.1.0", Digest: digest("m2"), Kind: "handler", Bytes: 11, Manifest: manifest}, "p1", false, 0, 0)
			return err
		}, "plugin.kept", "a"},
		{"swap plugin", func() error { _, err := w.SwapPlugin(ctx, "a", "p1", "1.1.0"); return err }, "plugin.swapped", "a"},
		{"delete plugin version", func() error { return w.DeletePlugin(ctx, "a", "p1", "1.0.0") }, "plugin.deleted", "a"},
		{"start worker", func() error {
			_, err := w.StartWorker(ctx, WorkerDef{Tenant: "a", Name: "w1", Plugin: "p1"}, -1)
			return err
		}, "worker.started", "a"},
		{"stop worker", func() error { _, err := w.StopWorker(ctx, "a", "w1"); return err }, "worker.stopped", "a"},
		{"start worker 2", func() error {
			_, err := w.StartWorker(ctx, WorkerDef{Tenant: "a", Name: "w2", Plugin: "p1"}, -1)
			return err
		}, "worker.started", "a"},
		{"delete worker", func() error { _, err := w.DeleteWorker(ctx, "a", "w2"); return err }, "worker.deleted", "a"},
		{"operator", func() error { return w.SetOperatorHash(ctx, sha256.Sum256([]byte("op"))) }, "operator.credential_set", ""},
		{"revoke k1", func() error { return w.RevokeKey(ctx, "a", "k1") }, "key.revoked", "a"},
		{"delete cursor", func() error { return w.DeleteCursor(ctx, "a", "c2") }, "cursor.deleted", "a"},
		{"delete b", func() error { return w.DeleteTenant(ctx, "b") }, "tenant.deleted", "b"},
		{"create b again", func() error { _, err := w.CreateTenant(ctx, "b", Quotas{MaxCursors: 1}, Settings{}); return err }, "tenant.created", "b"},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		waitApplied(t, f, rep.copy(t))
		sameState(t, st.name, w, f)
		if c := lastSeen(); c.Kind != st.kind || c.TenantID() != st.ten {
			t.Fatalf("after %s: the hook saw last %s of tenant %q, want %s of %q", st.name, c.Kind, c.TenantID(), st.kind, st.ten)
		}
	}
	// The hook saw every change once, in the log's order.
	evs, err := replica.Query(core.All())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := append([]Change(nil), seen...)
	mu.Unlock()
	if len(got) != len(evs) || len(evs) != len(steps) {
		t.Fatalf("hook saw %d changes, the replica holds %d events, %d steps", len(got), len(evs), len(steps))
	}
	for i, ev := range evs {
		if got[i].Sequence != ev.GlobalSequence || !bytes.Equal(got[i].Payload, ev.Payload) {
			t.Fatalf("change %d: hook saw sequence %d, log has %d", i, got[i].Sequence, ev.GlobalSequence)
		}
	}
	// A follower opened afterwards replays the same state, and passes its
	// hook only what comes after.
	var later []Change
	f2 := openFollower(t, replica, func(c Change) { later = append(later, c) })
	sameState(t, "reopen", w, f2)
	if _, err := w.SuspendTenant(ctx, "b", "late"); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, f2, rep.copy(t))
	sameState(t, "suspend after reopen", w, f2)
	f2.Close() // the tail has ended: later is the test's alone
	if len(later) != 1 || later[0].Kind != "tenant.suspended" {
		t.Fatalf("the reopened follower's hook saw %+v, want the one change after Open", later)
	}
}

// Changes made through a following plane, concurrently with changes
// arriving from elsewhere, are each applied once, none lost, in the
// order of the log; each caller reads its own change on return.
func TestFollowerConcurrentChangesAppliedOnceInLogOrder(t *testing.T) {
	ctx := context.Background()
	w := openWriter(t)
	replica := openReplica(t)
	var mu sync.Mutex
	var seen []uint64
	f := openFollower(t, replica, func(c Change) {
		mu.Lock()
		seen = append(seen, c.Sequence)
		mu.Unlock()
	})
	rep := newReplicator(w, replica)

	const external, locals, perLocal = 40, 3, 15
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // another node's changes, replicated as they commit
		defer wg.Done()
		for i := range external {
			id := fmt.Sprintf("ext-%d", i)
			if _, err := w.CreateTenant(ctx, id, Quotas{}, Settings{}); err != nil {
				t.Error(err)
				return
			}
			if _, err := w.IssueKey(ctx, Key{ID: fmt.Sprintf("ext%d", i), Tenant: id, Roles: []Role{RoleWriter}, Hash: sha256.Sum256([]byte(id))}); err != nil {
				t.Error(err)
				return
			}
			rep.copy(t)
		}
	}()
	for g := range locals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perLocal {
				id := fmt.Sprintf("loc-%d-%d", g, i)
				if _, err := f.CreateTenant(ctx, id, Quotas{}, Settings{}); err != nil {
					t.Errorf("CreateTenant %s: %v", id, err)
					return
				}
				if _, ok := f.Tenant(id); !ok {
					t.Errorf("CreateTenant %s returned, Tenant does not find it", id)
				}
				k := Key{ID: fmt.Sprintf("loc%d%d", g, i), Tenant: id, Roles: []Role{RoleReader}, Hash: sha256.Sum256([]byte(id))}
				if _, err := f.IssueKey(ctx, k); err != nil {
					t.Errorf("IssueKey %s: %v", k.ID, err)
					return
				}
				if _, ok := f.Key(k.ID); !ok {
					t.Errorf("IssueKey %s returned, Key does not find it", k.ID)
				}
				if _, err := f.SuspendTenant(ctx, id, "check"); err != nil {
					t.Errorf("SuspendTenant %s: %v", id, err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitApplied(t, f, rep.copy(t))
	evs, err := replica.Query(core.All())
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*external + 3*locals*perLocal; len(evs) != want {
		t.Fatalf("the replica holds %d events, want %d", len(evs), want)
	}
	mu.Lock()
	got := append([]uint64(nil), seen...)
	mu.Unlock()
	if len(got) != len(evs) {
		t.Fatalf("applied %d changes, the log holds %d", len(got), len(evs))
	}
	for i, ev := range evs {
		if got[i] != ev.GlobalSequence {
			t.Fatalf("change %d applied was sequence %d, the log's is %d", i, got[i], ev.GlobalSequence)
		}
	}
	if n := len(f.Tenants()); n != external+locals*perLocal {
		t.Fatalf("%d tenants, want %d", n, external+locals*perLocal)
	}
	// A replay of the log builds exactly the state the follower holds.
	f2 := openFollower(t, replica, nil)
	sameState(t, "replay", f, f2)
	for i := range external {
		id := fmt.Sprintf("ext-%d", i)
		wt, _ := w.Tenant(id)
		ft, _ := f.Tenant(id)
		if wt != ft {
			t.Fatalf("tenant %s: writer %+v, follower %+v", id, wt, ft)
		}
	}
	if rep, err := f.Verify(); err != nil || rep.Events != len(evs) {
		t.Fatalf("Verify: %+v, %v", rep, err)
	}
}

// An event of a kind this version does not know stops the follower with
// a clear error: nothing after it is applied, reads answer the last good
// state, changes fail with the error and write nothing.
func TestFollowerStopsAtUnknownKind(t *testing.T) {
	ctx := context.Background()
	w := openWriter(t)
	replica := openReplica(t)
	f := openFollower(t, replica, nil)
	rep := newReplicator(w, replica)
	if _, err := w.CreateTenant(ctx, "a", Quotas{}, Settings{}); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, f, rep.copy(t))

	coord, _ := core.NewCoordinate("tenant:a", Scope)
	future := core.MustKind(1, 99)
	r, err := replica.Append(ctx, coord, future, []byte(`{"tenant":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.CreateTenant(ctx, "b", Quotas{}, Settings{}); err != nil {
		t.Fatal(err)
	}
	end := rep.copy(t)

	werr := f.WaitApplied(ctx, end)
	if werr == nil || f.Err() == nil || !errors.Is(werr, f.Err()) {
		t.Fatalf("WaitApplied past the unknown event: %v (Err %v), want the follower's error", werr, f.Err())
	}
	msg := f.Err().Error()
	for _, want := range []string{"unknown control kind", future.String(), fmt.Sprintf("event %d", r.GlobalSequence), "tenant:a"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("Err %q does not name %q", msg, want)
		}
	}
	if got := f.Applied(); got != r.GlobalSequence {
		t.Fatalf("Applied %d, want %d (stopped at the unknown event)", got, r.GlobalSequence)
	}
	if _, ok := f.Tenant("a"); !ok {
		t.Fatal("reads lost the last good state")
	}
	if _, ok := f.Tenant("b"); ok {
		t.Fatal("a change after the unknown event was applied")
	}
	before := replica.Stats().GlobalSequence
	if _, err := f.CreateTenant(ctx, "c", Quotas{}, Settings{}); !errors.Is(err, f.Err()) {
		t.Fatalf("CreateTenant on a stopped follower: %v, want %v", err, f.Err())
	}
	if err := f.RevokeKey(ctx, "a", "nope"); err == nil {
		t.Fatal("RevokeKey on a stopped follower succeeded")
	}
	if after := replica.Stats().GlobalSequence; after != before {
		t.Fatalf("a stopped follower wrote %d events", after-before)
	}
	// Opening over that store fails the same way.
	if p, err := Open(Options{Store: replica}); err == nil || !strings.Contains(err.Error(), "unknown control kind") {
		if p != nil {
			p.Close()
		}
		t.Fatalf("Open over a log with an unknown kind: %v", err)
	}
}

func tailRunning() bool {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	return strings.Contains(b.String(), "control.(*Plane).tail")
}

// Close while changes are arriving stops the tail (no goroutine left),
// leaves the store open, and fails later changes with ErrClosed.
func TestFollowerCloseWhileTailingLeavesNoGoroutine(t *testing.T) {
	ctx := context.Background()
	baseline := runtime.NumGoroutine()
	for round := range 3 {
		w := openWriter(t)
		replica := openReplica(t)
		f, err := Open(Options{Store: replica, Defaults: followDefaults})
		if err != nil {
			t.Fatal(err)
		}
		rep := newReplicator(w, replica)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := w.CreateTenant(ctx, fmt.Sprintf("t-%d", i), Quotas{}, Settings{}); err != nil {
					t.Error(err)
					return
				}
				rep.copy(t)
			}
		}()
		time.Sleep(time.Duration(20+round*30) * time.Millisecond)
		if err := f.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if tailRunning() {
			t.Fatal("the tail goroutine outlived Close")
		}
		close(stop)
		<-done
		if err := f.Close(); err != nil {
			t.Fatalf("Close again: %v", err)
		}
		if !errors.Is(f.Err(), ErrClosed) {
			t.Fatalf("Err after Close: %v", f.Err())
		}
		if _, err := f.CreateTenant(ctx, "late", Quotas{}, Settings{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("CreateTenant after Close: %v, want ErrClosed", err)
		}
		// The store is its owner's: still open.
		coord, _ := core.NewCoordinate("probe", "test")
		if _, err := replica.Append(ctx, coord, core.MustKind(7, 1), []byte(`{}`)); err != nil {
			t.Fatalf("the plane closed its store: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := replica.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline {
		t.Fatalf("%d goroutines after closing everything, %d before", n, baseline)
	}
}

// The store closed under a following plane stops it with the store's
// error; reads keep answering.
func TestFollowerStoreClosedUnderIt(t *testing.T) {
	ctx := context.Background()
	replica := openReplica(t)
	f := openFollower(t, replica, nil)
	if _, err := f.CreateTenant(ctx, "a", Quotas{}, Settings{}); err != nil {
		t.Fatal(err)
	}
	replica.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(f.Err(), core.ErrClosed) {
		t.Fatalf("Err after the store closed: %v, want core.ErrClosed", f.Err())
	}
	if _, ok := f.Tenant("a"); !ok {
		t.Fatal("reads lost the state")
	}
	if _, err := f.CreateTenant(ctx, "b", Quotas{}, Settings{}); !errors.Is(err, core.ErrClosed) {
		t.Fatalf("CreateTenant: %v", err)
	}
}

func TestOpenRefusesBothDirAndStore(t *testing.T) {
	replica := openReplica(t)
	if _, err := Open(Options{Dir: t.TempDir(), Store: replica}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open with Dir and Store: %v, want ErrInvalid", err)
	}
}

// A plane that does not follow calls OnChange with each change it
// records, and not with those Open replays.
func TestOnChangeSingleNode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var got []string
	hook := func(c Change) { got = append(got, c.Kind+" "+c.TenantID()) }
	p, err := Open(Options{Dir: dir, OnChange: hook})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CreateTenant(ctx, "a", Quotas{}, Settings{}); err != nil {
		t.Fatal(err)
	}
	if err := p.DeleteTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	want := []string{"tenant.created a", "tenant.deleted a"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hook saw %q, want %q", got, want)
	}
	got = nil
	p, err = Open(Options{Dir: dir, OnChange: hook})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if len(got) != 0 {
		t.Fatalf("replay: hook saw %q, want nothing", got)
	}
}

// A plane far slower than its store's writers loses nothing: its
// notifications overflow (they only wake it), and it reads every event
// from the log, in order.
func TestFollowerSlowerThanTheLogLosesNothing(t *testing.T) {
	ctx := context.Background()
	cfg := core.DefaultConfig(t.TempDir())
	cfg.BroadcastCapacity = 4
	replica, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	w := openWriter(t)
	var mu sync.Mutex
	var seen []uint64
	f, err := Open(Options{Store: replica, OnChange: func(c Change) {
		time.Sleep(200 * time.Microsecond)
		mu.Lock()
		seen = append(seen, c.Sequence)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep := newReplicator(w, replica)
	const n = 300
	for i := range n {
		if _, err := w.CreateTenant(ctx, fmt.Sprintf("t-%d", i), Quotas{}, Settings{}); err != nil {
			t.Fatal(err)
		}
	}
	waitApplied(t, f, rep.copy(t))
	if d := f.follow.sub.Dropped(); d == 0 {
		t.Log("no notification was dropped: the overflow path was not exercised this run")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("applied %d changes, want %d", len(seen), n)
	}
	for i, s := range seen {
		if s != uint64(i) {
			t.Fatalf("change %d applied was sequence %d", i, s)
		}
	}
	if len(f.Tenants()) != n {
		t.Fatalf("%d tenants, want %d", len(f.Tenants()), n)
	}
}
