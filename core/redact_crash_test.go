package core_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/vfs"
	"github.com/batpak-go/batpak/core/internal/vfs/errorfs"
)

func init() { helperModes["redactcrash"] = helperRedactCrash }

// redactCrashConfig keeps segments small, so the first events are in a
// sealed segment and the last in the active one.
func redactCrashConfig(dir string) core.Config {
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	return cfg
}

// helperRedactCrash appends 1,000 events of entity acct (and 10 of
// other), prints their ids, then erases: REDACT_TARGET's event (Redact),
// or the whole of acct (REDACT_TARGET=entity). Its REDACT_WRITE'th write
// of a frame header (8 bytes) to a segment file from then on kills the
// process with SIGKILL before it is made, the frame's record rewritten;
// with REDACT_PAUSE it sleeps that long there instead and prints
// "paused".
func helperRedactCrash(dir string) error {
	efs := errorfs.Wrap(vfs.Default())
	s, err := core.OpenWithFS(redactCrashConfig(dir), efs)
	if err != nil {
		return err
	}
	ctx := context.Background()
	acct, _ := core.NewCoordinate("acct", "s")
	other, _ := core.NewCoordinate("other", "s")
	var ids []core.EventID
	for i := range 1010 {
		c := acct
		if i >= 1000 {
			c = other
		}
		r, err := s.Append(ctx, c, kindA, []byte(fmt.Sprintf(`{"secret":"s%04d"}`, i)))
		if err != nil {
			return err
		}
		ids = append(ids, r.ID)
		fmt.Printf("ack %s\n", r.ID)
	}
	if err := s.Sync(ctx); err != nil {
		return err
	}
	nth, _ := strconv.Atoi(os.Getenv("REDACT_WRITE"))
	pause, _ := time.ParseDuration(os.Getenv("REDACT_PAUSE"))
	efs.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Size: 8, Nth: nth, Pass: true, Hook: func() {
		if pause > 0 {
			fmt.Println("paused")
			time.Sleep(pause)
			return
		}
		fmt.Println("dying")
		p, _ := os.FindProcess(os.Getpid())
		_ = p.Signal(os.Kill)
		select {}
	}})
	target := os.Getenv("REDACT_TARGET")
	if target == "entity" {
		_, err = s.EraseEntity(ctx, "acct")
	} else {
		i, _ := strconv.Atoi(target)
		err = s.Redact(ctx, ids[i])
	}
	if err != nil {
		return err
	}
	fmt.Println("done")
	return s.Close()
}

// TestRedactSurvivesKill: a process killed with SIGKILL in the middle of
// an in-place redaction — after the record was rewritten, before the
// frame header with its new checksum — leaves a store that opens, holds
// every acknowledged event, finishes the redaction it was asked for (the
// redaction journal) and passes Verify. A target in a sealed segment and
// in the active one (where a frame failing its checksum with frames after
// it stopped Open), and an erasure of a whole entity killed on its third
// frame.
func TestRedactSurvivesKill(t *testing.T) {
	for _, c := range []struct {
		name, target string
		write        int
	}{
		{"sealed", "3", 1},
		{"active", "999", 1},
		{"entity", "entity", 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ch := startHelper(t, "redactcrash", dir, "REDACT_TARGET="+c.target, "REDACT_WRITE="+strconv.Itoa(c.write))
			lines := ch.killWhen(t, func(l string) bool { return l == "dying" }, 0)
			var acked []core.EventID
			for _, l := range lines {
				if id, ok := strings.CutPrefix(l, "ack "); ok {
					parsed, err := core.ParseEventID(id)
					if err != nil {
						t.Fatal(err)
					}
					acked = append(acked, parsed)
				}
			}
			if len(acked) != 1010 {
				t.Fatalf("the helper acknowledged %d events, want 1010", len(acked))
			}
			// A read-only store before any writer opened it again: what it
			// cannot read says a redaction is pending.
			if ro, err := core.OpenReadOnly(redactCrashConfig(dir)); err != nil {
				if !strings.Contains(err.Error(), "redaction journal") {
					t.Fatalf("OpenReadOnly with the interrupted redaction pending: %v; want it named", err)
				}
			} else {
				ro.Close()
			}
			s, err := core.Open(redactCrashConfig(dir))
			if err != nil {
				t.Fatalf("Open after a kill mid-redaction: %v", err)
			}
			defer s.Close()
			for i, id := range acked {
				ev, err := s.Get(id)
				if err != nil {
					t.Fatalf("acknowledged event %d lost: %v", i, err)
				}
				erased := c.target == strconv.Itoa(i) || (c.target == "entity" && i < 1000)
				if erased != ev.Redacted || (erased && ev.Payload != nil) || (!erased && string(ev.Payload) != fmt.Sprintf(`{"secret":"s%04d"}`, i)) {
					t.Fatalf("event %d: redacted %v, payload %q; want redacted %v", i, ev.Redacted, ev.Payload, erased)
				}
			}
			if _, err := s.Verify(); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if _, err := os.Stat(dir + "/redact.journal"); !os.IsNotExist(err) {
				t.Fatalf("the redaction journal is still there after Open: %v", err)
			}
		})
	}
}

// TestReadOnlyReaderDuringRedact: a read-only store in another process
// (`batpak verify` beside a live writer) that reads a frame while the
// writer redacts it in place — the record rewritten, the checksum not
// yet — reads again instead of reporting the store corrupt.
func TestReadOnlyReaderDuringRedact(t *testing.T) {
	dir := t.TempDir()
	ch := startHelper(t, "redactcrash", dir, "REDACT_TARGET=3", "REDACT_WRITE=1", "REDACT_PAUSE=40ms")
	var target core.EventID
	for n := 0; ; {
		l, ok := ch.line()
		if !ok {
			t.Fatalf("the helper ended; stderr:\n%s", ch.stderr)
		}
		if id, ok := strings.CutPrefix(l, "ack "); ok {
			if n++; n == 4 {
				target, _ = core.ParseEventID(id)
			}
		}
		if l == "paused" {
			break
		}
	}
	ro, err := core.OpenReadOnly(redactCrashConfig(dir))
	if err != nil {
		t.Fatalf("OpenReadOnly while a frame is half redacted: %v", err)
	}
	defer ro.Close()
	verified := make(chan error, 1)
	go func() { _, err := ro.Verify(); verified <- err }()
	if ev, err := ro.Get(target); err != nil || !ev.Redacted {
		t.Fatalf("Get of the frame being redacted: redacted %v, %v; want the redacted event", ev.Redacted, err)
	}
	if err := <-verified; err != nil {
		t.Fatalf("Verify beside the writer redacting a frame: %v", err)
	}
	for {
		if l, ok := ch.line(); !ok || l == "done" {
			break
		}
	}
}

// TestRedactFailingWriteFinishedLive: a disk error between a frame's two
// writes fails Redact, and the store finishes the frame's rewrite at once
// (its journal) instead of leaving a frame that fails its checksum until
// it is opened again: the event reads back redacted, Verify passes.
func TestRedactFailingWriteFinishedLive(t *testing.T) {
	s, efs, dir, r := openFaultyWithSecret(t)
	ctx := context.Background()
	efs.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Size: 8, Err: errorfs.EIO})
	if err := s.Redact(ctx, r.ID); err == nil {
		t.Fatal("Redact with its frame header write failing: no error")
	}
	ev, err := s.Get(r.ID)
	if err != nil || !ev.Redacted || ev.Payload != nil {
		t.Fatalf("after the failed Redact: redacted %v, payload %q, %v; want it finished", ev.Redacted, ev.Payload, err)
	}
	if _, err := s.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if _, err := os.Stat(dir + "/redact.journal"); !os.IsNotExist(err) {
		t.Fatalf("the redaction journal is still there: %v", err)
	}
}

// TestRedactAgainAfterAFailedFinish: a redaction whose frame header
// writes keep failing leaves its frame half rewritten and its journal
// (the store could not finish it either); once the disk works again,
// asking for the redaction again finishes it rather than reporting the
// frame corrupt.
func TestRedactAgainAfterAFailedFinish(t *testing.T) {
	s, efs, _, r := openFaultyWithSecret(t)
	ctx := context.Background()
	efs.Inject(errorfs.Fault{Op: errorfs.OpWrite, Pattern: "*.seg", Size: 8, Persist: true, Err: errorfs.EIO})
	if err := s.Redact(ctx, r.ID); err == nil {
		t.Fatal("Redact with every frame header write failing: no error")
	}
	efs.Clear()
	if err := s.Redact(ctx, r.ID); err != nil {
		t.Fatalf("Redact again once the disk works: %v", err)
	}
	if ev, err := s.Get(r.ID); err != nil || !ev.Redacted {
		t.Fatalf("after the second Redact: redacted %v, %v", ev.Redacted, err)
	}
	if _, err := s.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

// openFaultyWithSecret opens a store in a new directory through errorfs
// (no fault yet) holding two events of acct, the first one's payload a
// secret, and returns its receipt; the store closes when the test ends.
func openFaultyWithSecret(t *testing.T) (*core.Store, *errorfs.FS, string, core.Receipt) {
	t.Helper()
	efs := errorfs.Wrap(vfs.Default())
	dir := t.TempDir()
	s, err := core.OpenWithFS(redactCrashConfig(dir), efs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, _ := core.NewCoordinate("acct", "s")
	r := mustAppend(t, s, c, kindA, `{"secret":"x"}`)
	mustAppend(t, s, c, kindA, `{"after":1}`)
	return s, efs, dir, r
}
