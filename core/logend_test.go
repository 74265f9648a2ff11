package core_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
)

// A cleanly closed store whose last segment is then damaged has lost
// acknowledged events. The checkpoint, the segment footers and the named
// cursor positions each recorded how far the log went: Open must refuse
// the shorter log with a *LogTruncatedError, and Config.Salvage must record
// the loss and never give a lost sequence to a new event.

const lostBase = 600

// lossBase writes lostBase events over several segments, commits the
// named cursor "reader" at the end and closes the store.
func lossBase(t *testing.T) core.Config {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := mustCoord(t, "e:1", "s")
	for i := 0; i < lostBase; i++ {
		mustAppend(t, s, c, kindA, `{"pad":`+jsonString(200)+`}`)
	}
	cur := mustNamedCursor(t, s, "reader", core.Entity("e:"))
	if evs, err := cur.Poll(lostBase + 10); err != nil || len(evs) != lostBase {
		t.Fatalf("poll: %d events, %v", len(evs), err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentFiles(t, cfg.Dir)); n < 3 {
		t.Fatalf("only %d segments", n)
	}
	return cfg
}

var lastSegmentDamages = map[string]func(t *testing.T, path string){
	"deleted": func(t *testing.T, path string) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	},
	"truncated": func(t *testing.T, path string) {
		_, fs := readFrames(t, path)
		if err := os.Truncate(path, int64(fs[len(fs)/2].Off+20)); err != nil {
			t.Fatal(err)
		}
	},
	"zeroed": func(t *testing.T, path string) {
		writeFile(t, path, make([]byte, fileSize(t, path)))
	},
}

func TestDamagedLastSegmentFailsOpen(t *testing.T) {
	for name, damage := range lastSegmentDamages {
		t.Run(name, func(t *testing.T) {
			cfg := lossBase(t)
			damage(t, lastSegment(t, cfg.Dir))
			before := dirSizes(t, cfg.Dir)
			for _, open := range []func(core.Config) (*core.Store, error){core.Open, core.OpenReadOnly} {
				s, err := open(cfg)
				var le *core.LogTruncatedError
				if !errors.As(err, &le) || !errors.Is(err, core.ErrLogTruncated) {
					if s != nil {
						s.Close()
					}
					t.Fatalf("Open = %v; want a *LogTruncatedError", err)
				}
				if le.Recorded != lostBase || le.Found >= lostBase || le.Evidence == "" {
					t.Fatalf("error %+v: want Recorded %d, Found below it, and evidence", le, lostBase)
				}
				if !strings.Contains(err.Error(), "Salvage") {
					t.Errorf("error %q does not say how to open anyway", err)
				}
			}
			if after := dirSizes(t, cfg.Dir); len(after) != len(before) {
				t.Fatalf("a refused Open changed the directory: %v -> %v", before, after)
			}
		})
	}
}

func TestSalvageRecordsLossAndNeverReusesSequences(t *testing.T) {
	for name, damage := range lastSegmentDamages {
		t.Run(name, func(t *testing.T) {
			cfg := lossBase(t)
			damage(t, lastSegment(t, cfg.Dir))
			cfg.Salvage = true
			s, err := core.Open(cfg)
			if err != nil {
				t.Fatalf("Open with Salvage: %v", err)
			}
			defer s.Close()
			rep := s.Diagnostics().Open
			left := uint64(len(mustQuery(t, s, core.Entity("e:"))))
			if rep.LostSequences != lostBase-left || left >= lostBase {
				t.Fatalf("LostSequences %d, %d events left of %d", rep.LostSequences, left, lostBase)
			}
			// The loss is recorded in the log, at the recorded end.
			sys := mustQuery(t, s, core.Entity("batpak:log").WithKind(core.KindLogSalvaged))
			if len(sys) != 1 || sys[0].GlobalSequence != lostBase {
				t.Fatalf("salvage events %+v; want one at sequence %d", sys, lostBase)
			}
			var p struct {
				Recorded, Found, Lost uint64
				Evidence              string
			}
			if err := json.Unmarshal(sys[0].Payload, &p); err != nil || p.Recorded != lostBase || p.Found != left || p.Lost != lostBase-left || p.Evidence == "" {
				t.Fatalf("salvage payload %s (%v)", sys[0].Payload, err)
			}
			// New events never reuse a lost sequence, and the cursor committed
			// at the recorded end delivers them.
			c := mustCoord(t, "e:1", "s")
			for i := 0; i < 5; i++ {
				if r := mustAppend(t, s, c, kindA, payloadN(i)); r.GlobalSequence <= lostBase {
					t.Fatalf("new event got sequence %d, at or below the recorded end %d", r.GlobalSequence, lostBase)
				}
			}
			cur := mustNamedCursor(t, s, "reader", core.Entity("e:"))
			if evs, err := cur.Poll(100); err != nil || len(evs) != 5 {
				t.Fatalf("cursor at %d delivered %d of the 5 new events (%v)", cur.Committed(), len(evs), err)
			}
			mustVerify(t, s)
			// Reopened without Salvage: the loss is recorded, nothing is missing.
			cfg.Salvage = false
			s = reopen(t, s)
			if n := len(mustQuery(t, s, core.Entity("e:"))); uint64(n) != left+5 {
				t.Fatalf("after reopen: %d events, want %d", n, left+5)
			}
			if r := mustAppend(t, s, c, kindA, `{}`); r.GlobalSequence != lostBase+6 {
				t.Fatalf("after reopen the next sequence is %d, want %d", r.GlobalSequence, lostBase+6)
			}
			mustVerify(t, s)
		})
	}
}

// Each record of the log's end is enough on its own.
func TestLogEndRecords(t *testing.T) {
	cases := map[string]func(dir string) bool{ // keep: which files survive
		"checkpoint only": func(n string) bool { return !strings.HasSuffix(n, ".idx") && !strings.HasSuffix(n, ".pos") },
		"footers only":    func(n string) bool { return n != "index.ckpt" && !strings.HasSuffix(n, ".pos") },
		"cursor only":     func(n string) bool { return n != "index.ckpt" && !strings.HasSuffix(n, ".idx") },
	}
	for name, keep := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := lossBase(t)
			last := lastSegment(t, cfg.Dir)
			if err := os.Remove(last); err != nil {
				t.Fatal(err)
			}
			err := filepath.Walk(cfg.Dir, func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() && !keep(fi.Name()) {
					return os.Remove(p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = core.Open(cfg)
			var le *core.LogTruncatedError
			if !errors.As(err, &le) {
				t.Fatalf("Open = %v; want a *LogTruncatedError", err)
			}
			t.Logf("%v", err)
		})
	}
}

// A torn tail left by a crash is not a loss: nothing recorded it.
func TestTornTailIsNotALoss(t *testing.T) {
	cfg := testConfig(t.TempDir())
	s := openWith(t, cfg)
	c := mustCoord(t, "e:1", "s")
	for i := 0; i < 20; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	cur := mustNamedCursor(t, s, "reader", core.All())
	if _, err := cur.Poll(10); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openWith(t, cfg)
	for i := 0; i < 5; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	// As a crash leaves it: no Close (copy the files now), the last
	// frame torn.
	crashed := t.TempDir()
	copyTree(t, cfg.Dir, crashed, func(n string) bool { return n == "LOCK" })
	last := lastSegment(t, crashed)
	_, fs := readFrames(t, last)
	if err := os.Truncate(last, int64(fs[len(fs)-1].Off+30)); err != nil {
		t.Fatal(err)
	}
	ccfg := cfg
	ccfg.Dir = crashed
	s2 := openWith(t, ccfg)
	if n := s2.Stats().GlobalSequence; n != 24 {
		t.Fatalf("after the torn tail: next sequence %d, want 24", n)
	}
}

// A cursor committed past the end of the log is an error, never a skip.
func TestNamedCursorAheadOfLog(t *testing.T) {
	big := openStore(t)
	c := mustCoord(t, "e:1", "s")
	for i := 0; i < 50; i++ {
		mustAppend(t, big, c, kindA, payloadN(i))
	}
	bc := mustNamedCursor(t, big, "ahead", core.All())
	if _, err := bc.Poll(100); err != nil {
		t.Fatal(err)
	}
	if err := bc.Commit(); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	// The cursor file of another, longer log lands in this store.
	b, err := os.ReadFile(filepath.Join(big.Dir(), "cursors", "ahead.pos"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir(), "cursors"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.Dir(), "cursors", "ahead.pos"), b)
	cur, err := s.NamedCursor("ahead", core.All())
	var ae *core.CursorAheadError
	if !errors.As(err, &ae) || !errors.Is(err, core.ErrCursorAhead) || cur != nil {
		t.Fatalf("NamedCursor = %v, %v; want a *CursorAheadError", cur, err)
	}
	if ae.Position != 50 || ae.LogEnd != 10 || ae.Name != "ahead" {
		t.Fatalf("error %+v", ae)
	}
}

// Under EveryNEvents = 1000 the events a commit covers are not yet synced:
// Commit syncs the log before the position becomes durable, and only when
// needed.
func TestCursorCommitSyncsLogFirst(t *testing.T) {
	s := openStore(t, func(c *core.Config) {
		c.Sync.EveryNEvents = 1000
		c.Sync.Interval = 0
	})
	c := mustCoord(t, "e:1", "s")
	for i := 0; i < 10; i++ {
		mustAppend(t, s, c, kindA, payloadN(i))
	}
	cur := mustNamedCursor(t, s, "reader", core.All())
	if _, err := cur.Poll(5); err != nil {
		t.Fatal(err)
	}
	before := s.Stats().Fsyncs
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	after := s.Stats().Fsyncs
	if after <= before {
		t.Fatalf("Commit at %d did not sync the log (fsyncs %d -> %d)", cur.Committed(), before, after)
	}
	// The rest is synced already: committing it costs no log sync.
	if _, err := cur.Poll(5); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Fsyncs; n != after {
		t.Fatalf("Commit of synced events synced again (fsyncs %d -> %d)", after, n)
	}
	// A new unsynced event, then a commit past it: synced again.
	mustAppend(t, s, c, kindA, `{}`)
	if _, err := cur.Poll(5); err != nil {
		t.Fatal(err)
	}
	if err := cur.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Fsyncs; n <= after {
		t.Fatalf("Commit past an unsynced event did not sync (fsyncs %d -> %d)", after, n)
	}
	_ = context.Background()
}
