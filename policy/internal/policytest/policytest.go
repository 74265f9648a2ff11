package policytest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/policy"
)

// Kinds the tests write.
var (
	KindA = core.MustKind(1, 1) // "0x1:0x1"
	KindB = core.MustKind(2, 0x2a)
)

// Clerk is the principal of ordinary test writes; ClerkCtx carries it.
var (
	Clerk    = policy.Principal{ID: "u1", Tenant: "acme", Roles: []string{"clerk"}}
	ClerkCtx = policy.WithPrincipal(context.Background(), Clerk)
)

// QuietLogger discards everything.
func QuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// MustCoord is core.NewCoordinate, failing the test on error.
func MustCoord(t testing.TB, entity, scope string) core.Coordinate {
	t.Helper()
	c, err := core.NewCoordinate(entity, scope)
	if err != nil {
		t.Fatalf("NewCoordinate(%q, %q): %v", entity, scope, err)
	}
	return c
}

// OpenGated opens a store in a fresh directory whose Admission is an
// Admitter over gates, and closes it when the test ends.
func OpenGated(t testing.TB, gates ...policy.Gate) *core.Store {
	t.Helper()
	cfg := core.DefaultConfig(t.TempDir())
	cfg.Logger = QuietLogger()
	cfg.Admission = policy.NewAdmitter(gates...)
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// AdmitterOf returns the Admitter OpenGated gave s.
func AdmitterOf(t testing.TB, s *core.Store) *policy.Admitter {
	t.Helper()
	a, ok := s.Config().Admission.(*policy.Admitter)
	if !ok {
		t.Fatalf("the store's Admission is %T", s.Config().Admission)
	}
	return a
}

// AsDenial finds the *policy.Denial in err, failing the test if there is
// none.
func AsDenial(t testing.TB, err error) *policy.Denial {
	t.Helper()
	if err == nil {
		t.Fatal("the write was admitted, want a denial")
	}
	var d *policy.Denial
	if !errors.As(err, &d) {
		t.Fatalf("error %v (%T) holds no *policy.Denial", err, err)
	}
	return d
}

// ReasonCodes lists the codes of d's reasons.
func ReasonCodes(d *policy.Denial) []string {
	out := make([]string, len(d.Reasons))
	for i, r := range d.Reasons {
		out[i] = r.Code
	}
	return out
}

// Watch observes a store across a write that must be refused: the
// segment files byte for byte, Stats, a lossy subscription and a cursor.
type Watch struct {
	s      *core.Store
	files  map[string][]byte
	stats  core.Stats
	sub    *core.Subscription
	cursor *core.Cursor
}

// WatchStore starts watching s.
func WatchStore(t testing.TB, s *core.Store) *Watch {
	t.Helper()
	w := &Watch{s: s, sub: s.SubscribeLossy(core.All())}
	t.Cleanup(w.sub.Close)
	w.cursor = s.Cursor(core.All())
	for { // skip what is already there
		evs, err := w.cursor.Poll(1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
	}
	w.files, w.stats = DiskState(t, s)
	return w
}

// DiskState syncs (so that no periodic sync runs in between) and reads
// every segment file and the stats.
func DiskState(t testing.TB, s *core.Store) (map[string][]byte, core.Stats) {
	t.Helper()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	names, err := filepath.Glob(filepath.Join(s.Dir(), "*.seg"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no segment files in %s (%v)", s.Dir(), err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(n)] = b
	}
	return files, s.Stats()
}

// Unchanged checks that nothing was written or announced since the watch
// began (SameDisk, then Silent).
func (w *Watch) Unchanged(t testing.TB) {
	t.Helper()
	w.SameDisk(t)
	w.Silent(t)
}

// SameDisk checks that the segment files and stats are as they were.
func (w *Watch) SameDisk(t testing.TB) {
	t.Helper()
	files, stats := DiskState(t, w.s)
	if len(files) != len(w.files) {
		t.Fatalf("segment files: %d, were %d", len(files), len(w.files))
	}
	for name, b := range w.files {
		if !bytes.Equal(files[name], b) {
			t.Fatalf("segment %s changed: %d bytes, were %d", name, len(files[name]), len(b))
		}
	}
	if stats != w.stats {
		t.Fatalf("stats changed:\n got %+v\nwant %+v", stats, w.stats)
	}
}

// Silent checks that nothing was announced or became readable since the
// watch began: then an admitted probe write (queued behind anything a
// faulty path might have queued) is the first and only thing the
// subscription and the cursor see. The probe is written as Clerk to
// acme:probe, so the store's gates must admit it.
func (w *Watch) Silent(t testing.TB) {
	t.Helper()
	if n, ok, err := w.sub.TryRecv(); err != nil || ok {
		t.Fatalf("the subscription was notified: %+v (%v)", n, err)
	}
	if evs, err := w.cursor.Poll(10); err != nil || len(evs) != 0 {
		t.Fatalf("the cursor polled %d events (%v)", len(evs), err)
	}
	probe, err := w.s.Append(ClerkCtx, MustCoord(t, "acme:probe", "probe"), KindA, []byte(`{"amount":1}`))
	if err != nil {
		t.Fatalf("probe write: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := w.sub.Recv(ctx)
	if err != nil || n.ID != probe.ID {
		t.Fatalf("first notification after the refused write: %+v (%v), want the probe %s", n, err, probe.ID)
	}
	evs, err := w.cursor.Poll(10)
	if err != nil || len(evs) != 1 || evs[0].Header.ID != probe.ID {
		t.Fatalf("cursor after the refused write polled %d events (%v), want only the probe", len(evs), err)
	}
	if got := w.s.Stats().Events; got != w.stats.Events+1 {
		t.Fatalf("events after the probe: %d, want %d", got, w.stats.Events+1)
	}
}
