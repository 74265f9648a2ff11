package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

func TestSecondOpenInProcessIsLocked(t *testing.T) {
	s := openStore(t)
	mustAppend(t, s, mustCoord(t, "e", "s"), kindA, `{}`)
	s2, err := core.Open(s.Config())
	if err == nil {
		s2.Close()
		t.Fatal("a second Open of the same directory succeeded")
	}
	expectLocked(t, err, os.Getpid())
	var le *core.LockedError
	if !errors.As(err, &le) || le.Dir != s.Dir() {
		t.Errorf("LockedError.Dir = %v, want %s", le, s.Dir())
	}
	// The first store is unaffected by the refused Open.
	mustAppend(t, s, mustCoord(t, "e", "s"), kindA, `{}`)
	// Once closed, the directory can be opened again.
	s3 := reopen(t, s)
	if n := s3.Stats().Events; n != 2 {
		t.Fatalf("%d events, want 2", n)
	}
}

func TestLockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	c := startHelper(t, "hold", dir, "BATPAK_EVENTS=25")
	ln, ok := c.line()
	if !ok || !strings.HasPrefix(ln, "ready ") {
		t.Fatalf("helper said %q; stderr:\n%s", ln, c.stderr)
	}
	pid, _ := strconv.Atoi(strings.TrimPrefix(ln, "ready "))
	if pid != c.cmd.Process.Pid {
		t.Fatalf("helper reports pid %d, started %d", pid, c.cmd.Process.Pid)
	}

	// A writer Open from this process is refused, naming the holder.
	s, err := core.Open(testConfig(dir))
	if err == nil {
		s.Close()
		t.Fatal("Open beside another process's writer succeeded")
	}
	expectLocked(t, err, pid)

	// OpenReadOnly works beside the live writer and sees its events.
	ro, err := core.OpenReadOnly(testConfig(dir))
	if err != nil {
		t.Fatalf("OpenReadOnly beside a live writer: %v", err)
	}
	evs := mustQuery(t, ro, core.All())
	if len(evs) != 25 {
		t.Fatalf("read-only store sees %d events, want 25", len(evs))
	}
	for i, e := range evs {
		if string(e.Payload) != payloadN(i) || e.Header.Clock != uint64(i) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	mustVerify(t, ro)
	if _, err := ro.Append(context.Background(), mustCoord(t, "held", "s"), kindA, []byte(`{}`)); !errors.Is(err, core.ErrReadOnly) {
		t.Errorf("read-only Append: %v", err)
	}
	ro.Close()

	// The holder closes: the lock is free.
	c.stdin.Close()
	waitTimeout(t, c, 20*time.Second)
	s = openWith(t, testConfig(dir))
	if n := s.Stats().Events; n != 25 {
		t.Fatalf("after the holder closed: %d events", n)
	}

	// The other way round: this process holds the lock, a child is refused
	// and names this process.
	c2 := startHelper(t, "tryopen", dir)
	ln, ok = c2.line()
	if !ok {
		t.Fatalf("tryopen helper said nothing; stderr:\n%s", c2.stderr)
	}
	want := fmt.Sprintf("locked by pid %d", os.Getpid())
	if !strings.HasPrefix(ln, "error ") || !strings.Contains(ln, want) {
		t.Fatalf("child Open: %s; want an error saying %q", ln, want)
	}
	waitTimeout(t, c2, 20*time.Second)
}

// The kernel drops the lock of a killed process: no stale lock.
func TestLockReleasedWhenHolderIsKilled(t *testing.T) {
	dir := t.TempDir()
	c := startHelper(t, "hold", dir, "BATPAK_EVENTS=3")
	if ln, ok := c.line(); !ok || !strings.HasPrefix(ln, "ready ") {
		t.Fatalf("helper said %q; stderr:\n%s", ln, c.stderr)
	}
	if _, err := core.Open(testConfig(dir)); !errors.Is(err, core.ErrLocked) {
		t.Fatalf("Open while held: %v", err)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
	s := openWith(t, testConfig(dir))
	if n := s.Stats().Events; n != 3 {
		t.Fatalf("%d events after the holder was killed, want 3", n)
	}
	mustAppend(t, s, mustCoord(t, "held", "s"), kindA, `{}`)
	// The lock file now names this process.
	b, err := os.ReadFile(filepath.Join(dir, "LOCK"))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("LOCK holds %q (%v), want this pid", b, err)
	}
}

func TestOpenReadOnlyBesideWriter(t *testing.T) {
	s := openStore(t, func(c *core.Config) { c.SegmentMaxBytes = 64 << 10 })
	ctx := context.Background()
	c := mustCoord(t, "ro", "s")
	pad := strings.Repeat("r", 700)
	for i := 0; i < 200; i++ { // several segments, the last one active
		mustAppend(t, s, c, kindA, fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
	}
	before := mustQuery(t, s, core.All())

	ro, err := core.OpenReadOnly(s.Config())
	if err != nil {
		t.Fatalf("OpenReadOnly beside a live writer: %v", err)
	}
	defer ro.Close()
	sameEvents(t, "read-only vs writer", before, mustQuery(t, ro, core.All()))
	if st := ro.Stats(); st.Events != 200 || st.Segments != s.Stats().Segments {
		t.Errorf("read-only Stats %+v", st)
	}
	if rep := mustVerify(t, ro); rep.Events != 200 {
		t.Errorf("read-only Verify %+v", rep)
	}

	// Events written after it opened are not shown; its view stays intact.
	mustAppend(t, s, c, kindA, `{"late":true}`)
	if evs := mustQuery(t, ro, core.All()); len(evs) != 200 {
		t.Errorf("read-only store shows %d events, want the 200 present when it opened", len(evs))
	}
	if evs, _ := ro.Stream("ro"); len(evs) != 200 {
		t.Errorf("read-only Stream shows %d events", len(evs))
	}

	writes := map[string]func() error{
		"Append": func() error { _, err := ro.Append(ctx, c, kindA, []byte(`{}`)); return err },
		"AppendWithOptions": func() error {
			_, err := ro.AppendWithOptions(ctx, c, kindA, []byte(`{}`), core.AppendOptions{ExpectedClock: core.ExpectClock(199)})
			return err
		},
		"AppendReaction": func() error {
			_, err := ro.AppendReaction(ctx, c, kindA, []byte(`{}`), before[0].Header.ID, before[0].Header.ID)
			return err
		},
		"Submit":    func() error { _, err := ro.Submit(ctx, c, kindA, []byte(`{}`)); return err },
		"TrySubmit": func() error { _, err := ro.TrySubmit(ctx, c, kindA, []byte(`{}`)); return err },
		"Sync":      func() error { return ro.Sync(ctx) },
	}
	// The writer's own background work (sealing a segment) done first, so
	// that only the reader could change a file below.
	if err := s.SealSegments(ctx); err != nil {
		t.Fatal(err)
	}
	sizes := dirSizes(t, s.Dir())
	for name, w := range writes {
		if err := w(); !errors.Is(err, core.ErrReadOnly) {
			t.Errorf("read-only %s: got %v, want ErrReadOnly", name, err)
		}
	}
	if got := dirSizes(t, s.Dir()); fmt.Sprint(got) != fmt.Sprint(sizes) {
		t.Errorf("read-only writes changed files: %v -> %v", sizes, got)
	}
	// Closing the reader leaves the writer working.
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, c, kindA, `{}`)
	mustVerify(t, s)
}

func TestOpenReadOnlyMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	if s, err := core.OpenReadOnly(testConfig(dir)); err == nil {
		s.Close()
		t.Fatal("OpenReadOnly of a missing directory succeeded")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("OpenReadOnly created the directory: %v", err)
	}
}
