package core_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// Compaction is crash-safe: a SIGKILL at any point leaves the old segments
// or the new ones (Open finishes a committed compaction and deletes the
// files of one that did not commit), never a mix, a loss or a duplicate.

func init() { helperModes["compactcrash"] = helperCompactCrash }

func ccPayload(round, i int) string {
	t := 0
	if i%4 == 0 {
		t = 1 // tombstoned by the compactions
	}
	return fmt.Sprintf(`{"round":%d,"i":%d,"t":%d,"pad":"%s"}`, round, i, t, strings.Repeat("c", 100+(i*37)%400))
}

func ccTomb(ev core.StoredEvent) bool { return strings.Contains(string(ev.Payload), `"t":1`) }

// ccFastWrites is how many events a compactcrash child writes as fast as
// it can; after them it writes one every ccSlowWrite, so that compactions
// (which rewrite every sealed segment) keep up and the store stays small.
const (
	ccFastWrites = 1500
	ccSlowWrite  = 2 * time.Millisecond
)

// helperCompactCrash writes (singles and batches) while compacting in a
// loop (Merge and Tombstone only: nothing disappears) until killed. It
// prints "ACK id seq i" for each acknowledged event, and "BEGIN n" and
// "COMPACT n" around each compaction.
func helperCompactCrash(dir string) error {
	cfg := testConfig(dir)
	smallSegments(&cfg)
	cfg.Sync.EveryNEvents, cfg.Sync.Interval = 0, 0 // written is enough for a SIGKILL
	round, _ := strconv.Atoi(os.Getenv("BATPAK_ROUND"))
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	say := func(format string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Printf(format+"\n", args...)
		return err
	}
	// BATPAK_STAGE=name:n stops the n-th compaction that reaches that point
	// of its commit (announced "STAGE name"), for the kill to land there.
	if st := os.Getenv("BATPAK_STAGE"); st != "" {
		name, nstr, _ := strings.Cut(st, ":")
		n, _ := strconv.Atoi(nstr)
		core.SetCompactHook(s, func(stage string) {
			if stage != name {
				return
			}
			if n--; n > 0 {
				return
			}
			_ = say("STAGE %s", stage)
			select {} // until killed
		})
	}
	errs := make(chan error, 2)
	go func() {
		ctx := context.Background()
		for i := 0; ; {
			if i >= ccFastWrites {
				time.Sleep(ccSlowWrite)
			}
			c, _ := core.NewCoordinate(fmt.Sprintf("cc:%d", i%5), "s")
			if i%20 == 0 {
				items := []core.BatchItem{
					{Coordinate: c, Kind: kindA, Payload: []byte(ccPayload(round, i))},
					{Coordinate: c, Kind: kindB, Payload: []byte(ccPayload(round, i+1))},
				}
				rs, err := s.AppendBatch(ctx, items)
				if err != nil {
					errs <- err
					return
				}
				for k, r := range rs {
					if err := say("ACK %s %d %d", r.ID, r.GlobalSequence, i+k); err != nil {
						errs <- err
						return
					}
				}
				i += 2
				continue
			}
			r, err := s.AppendWithOptions(ctx, c, kindA, []byte(ccPayload(round, i)), core.AppendOptions{IdempotencyKey: fmt.Sprintf("cc-%d-%d", round, i)})
			if err != nil {
				errs <- err
				return
			}
			if err := say("ACK %s %d %d", r.ID, r.GlobalSequence, i); err != nil {
				errs <- err
				return
			}
			i++
		}
	}()
	go func() {
		cc := core.CompactConfig{Merge: true, Tombstone: ccTomb}
		for n := 1; ; n++ {
			if err := say("BEGIN %d", n); err != nil {
				errs <- err
				return
			}
			if _, err := s.Compact(context.Background(), cc); err != nil {
				errs <- err
				return
			}
			if err := say("COMPACT %d", n); err != nil {
				errs <- err
				return
			}
		}
	}()
	return <-errs
}

type ccAck struct {
	id       core.EventID
	seq      uint64
	round, i int
}

// Random-moment rounds of TestCompactSurvivesKill: at least
// ccRandomRounds, and more until ccMinMidway of them killed a compaction
// in its file work, up to ccMaxRandomRounds.
const (
	ccRandomRounds    = 3
	ccMinMidway       = 3
	ccMaxRandomRounds = 30
)

func TestCompactSurvivesKill(t *testing.T) {
	rng := crashRNG(t)
	var dir string
	var cfg core.Config
	var acks []ccAck
	start := time.Now()
	// First a kill at each point of the commit (writes going on), then
	// kills at random moments of a compaction until enough of them landed
	// in its file work.
	stages := []string{"written", "committed", "renaming", "switched", "deleting", "deleted"}
	midway, random := 0, 0
	round := 0
	for ; round < len(stages) || random < ccRandomRounds || midway < ccMinMidway; round++ {
		if random == ccMaxRandomRounds {
			t.Fatalf("only %d of %d kills at random moments landed in a compaction's file work; want at least %d",
				midway, random, ccMinMidway)
		}
		if round%3 == 0 { // a fresh store every three rounds keeps compactions short
			dir, acks = t.TempDir(), nil
			cfg = testConfig(dir)
			smallSegments(&cfg)
		}
		var c *child
		var lines []string
		if round < len(stages) {
			stage := fmt.Sprintf("%s:%d", stages[round], 1+rng.Intn(3))
			c = startHelper(t, "compactcrash", dir, "BATPAK_ROUND="+strconv.Itoa(round), "BATPAK_STAGE="+stage)
			lines = c.killWhen(t, func(ln string) bool { return strings.HasPrefix(ln, "STAGE") }, time.Duration(rng.Intn(2000))*time.Microsecond)
		} else {
			random++
			c = startHelper(t, "compactcrash", dir, "BATPAK_ROUND="+strconv.Itoa(round))
			// A random moment of a compaction, once a random number of
			// events were acknowledged: within the time the compaction
			// before it took (as seen from here), so that the kill lands
			// in the compaction whatever the speed of the machine.
			target := 100 + rng.Intn(900)
			nAck := 0
			var begun time.Time
			var took time.Duration
			lines = c.killWhen(t, func(ln string) bool {
				switch {
				case strings.HasPrefix(ln, "ACK"):
					nAck++
				case strings.HasPrefix(ln, "COMPACT") && !begun.IsZero():
					took = time.Since(begun)
				case strings.HasPrefix(ln, "BEGIN"):
					begun = time.Now()
					if nAck >= target && took > 0 {
						time.Sleep(time.Duration(rng.Int63n(int64(took))))
						return true
					}
				}
				return false
			}, 0)
		}
		nCompact, nAcks, stage := 0, 0, ""
		for _, ln := range lines {
			f := strings.Fields(ln)
			switch f[0] {
			case "COMPACT":
				nCompact++
				continue
			case "BEGIN":
				continue
			case "STAGE":
				stage = f[1]
				continue
			}
			nAcks++
			if len(f) != 4 || f[0] != "ACK" {
				t.Fatalf("helper said %q", ln)
			}
			id, err := core.ParseEventID(f[1])
			if err != nil {
				t.Fatal(err)
			}
			a := ccAck{id: id, round: round}
			a.seq, _ = strconv.ParseUint(f[2], 10, 64)
			a.i, _ = strconv.Atoi(f[3])
			acks = append(acks, a)
		}
		// What the kill left: temporary segments (before the commit point)
		// or a journal (after it) show it interrupted a compaction.
		left := leftovers(t, dir)
		switch {
		case round < len(stages) && len(left) == 0:
			t.Fatalf("round %d: killed at %q, yet no temporary segment or journal was left", round, stage)
		case round >= len(stages) && len(left) > 0:
			midway++
		}
		checkAfterCompactCrash(t, cfg, acks)
		t.Logf("round %d: killed %s after %d acknowledgements and %d compactions, leaving %v", round, stage, nAcks, nCompact, left)
	}
	t.Logf("%d rounds (%d of %d random kills inside a compaction's file work) in %v", round, midway, random, time.Since(start).Round(time.Millisecond))
}

func checkAfterCompactCrash(t *testing.T, cfg core.Config, acks []ccAck) {
	t.Helper()
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open after a SIGKILL during compaction: %v", err)
	}
	defer s.Close()
	if l := leftovers(t, cfg.Dir); len(l) > 0 {
		t.Fatalf("Open left %v behind", l)
	}
	mustVerify(t, s)
	all := mustQuery(t, s, core.All())
	seen := map[core.EventID]bool{}
	for i, ev := range all {
		if seen[ev.Header.ID] {
			t.Fatalf("event %s twice", ev.Header.ID)
		}
		seen[ev.Header.ID] = true
		if i > 0 && ev.GlobalSequence <= all[i-1].GlobalSequence {
			t.Fatalf("global order broken at %d", i)
		}
	}
	if st := s.Stats(); st.Events != uint64(len(all)) {
		t.Fatalf("Stats counts %d events, Query finds %d", st.Events, len(all))
	}
	for _, a := range acks {
		ev, err := s.Get(a.id)
		if err != nil {
			t.Fatalf("acknowledged event %s (round %d, i %d) lost: %v", a.id, a.round, a.i, err)
		}
		want := ccPayload(a.round, a.i)
		if ev.GlobalSequence != a.seq || ev.Header.PayloadHash != payloadDigest([]byte(want)) {
			t.Fatalf("acknowledged event %s read back as seq %d (want %d), digest changed", a.id, ev.GlobalSequence, a.seq)
		}
		switch {
		case ev.Redacted && ev.Payload == nil && want[strings.Index(want, `"t":`)+4] == '1':
			// tombstoned by a compaction that committed
		case string(ev.Payload) != want || ev.Redacted:
			t.Fatalf("acknowledged event %s reads %s (redacted %v), want %s", a.id, ev.Payload, ev.Redacted, want)
		}
	}
	// Writable, chains continuing.
	for g := 0; g < 5; g++ {
		e := fmt.Sprintf("cc:%d", g)
		evs, err := s.Stream(e)
		if err != nil {
			t.Fatal(err)
		}
		r := mustAppend(t, s, mustCoord(t, e, "s"), kindC, `{"after":"kill"}`)
		if len(evs) > 0 && r.Clock != evs[len(evs)-1].Header.Clock+1 {
			t.Fatalf("%s: clock %d after %d", e, r.Clock, evs[len(evs)-1].Header.Clock)
		}
	}
	if _, err := s.Compact(context.Background(), core.Merge()); err != nil {
		t.Fatalf("Compact after recovery: %v", err)
	}
	mustVerify(t, s)
}

// ---- finishing a compaction from a hand-made journal ----

// regenerate returns a copy of a segment file's header and frames (no zero
// fill) renamed to generation gen of the same id, as a compaction writes it.
func regenerate(t *testing.T, path string, gen uint32) []byte {
	t.Helper()
	data, fs := readFrames(t, path)
	end := format.SegmentHeaderSize
	if len(fs) > 0 {
		end = fs[len(fs)-1].end()
	}
	out := append([]byte(nil), data[:end]...)
	key := le.Uint64(out[12:]) | uint64(gen)<<24
	le.PutUint64(out[12:], key)
	le.PutUint32(out[20:], format.CRC32C(out[:20]))
	return out
}

func segGenName(path string, gen int) string {
	base := strings.TrimSuffix(filepath.Base(path), ".seg")
	return fmt.Sprintf("%s.%d.seg", base, gen)
}

// journalStore builds a closed store over several segments and returns
// its config and visible state.
func journalStore(t *testing.T) (core.Config, visibleState) {
	t.Helper()
	dir := t.TempDir()
	cfg := checkpointBase(t, dir)
	s := openWith(t, cfg)
	st := captureState(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// As a committing compaction does: the checkpoint goes first.
	if err := os.Remove(filepath.Join(dir, checkpointFile)); err != nil {
		t.Fatal(err)
	}
	return cfg, st
}

func TestFinishCompactionJournal(t *testing.T) {
	t.Run("rename and delete", func(t *testing.T) {
		cfg, want := journalStore(t)
		segs := segmentFiles(t, cfg.Dir)
		// Segments 1 and 2 merged into 1.1 (written as a temporary file),
		// segment 3 rewritten as 3.1 and already renamed before the crash.
		merged := regenerate(t, segs[0], 1)
		data2, fs2 := readFrames(t, segs[1])
		merged = append(merged, data2[format.SegmentHeaderSize:fs2[len(fs2)-1].end()]...)
		writeFile(t, filepath.Join(cfg.Dir, segGenName(segs[0], 1)+".tmp"), merged)
		writeFile(t, filepath.Join(cfg.Dir, segGenName(segs[2], 1)), regenerate(t, segs[2], 1))
		j := sealJournal(
			fmt.Sprintf("rename %s.tmp %s", segGenName(segs[0], 1), segGenName(segs[0], 1)),
			fmt.Sprintf("rename %s.tmp %s", segGenName(segs[2], 1), segGenName(segs[2], 1)),
			"delete "+filepath.Base(segs[0]), "delete "+filepath.Base(segs[1]), "delete "+filepath.Base(segs[2]))
		writeFile(t, filepath.Join(cfg.Dir, "compact.journal"), j)

		s := openWith(t, cfg)
		if l := leftovers(t, cfg.Dir); len(l) > 0 {
			t.Fatalf("left behind: %v", l)
		}
		var names []string
		for _, p := range segmentFiles(t, cfg.Dir) {
			names = append(names, filepath.Base(p))
		}
		wantNames := []string{segGenName(segs[0], 1), segGenName(segs[2], 1)}
		for _, p := range segs[3:] {
			wantNames = append(wantNames, filepath.Base(p))
		}
		sameStrings(t, "segment files", names, wantNames)
		got := captureState(t, s)
		want.stats.Segments, want.stats.Bytes = got.stats.Segments, got.stats.Bytes
		sameState(t, "after finishing the journal", got, want)
		allGettable(t, s, want.events)
		mustVerify(t, s)
		mustAppend(t, s, mustCoord(t, "acct:1", "eu"), kindA, `{}`)
		mustVerify(t, s)
	})

	t.Run("a journal with a bad line", func(t *testing.T) {
		cfg, _ := journalStore(t)
		segs := segmentFiles(t, cfg.Dir)
		for _, j := range []string{
			"rename a\n",
			fmt.Sprintf("delete %s\nmove x y\n", filepath.Base(segs[0])+".gone"),
			"rename a b c\n",
			"\x00\x01garbage",
		} {
			writeFile(t, filepath.Join(cfg.Dir, "compact.journal"), []byte(j))
			s, err := core.Open(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("Open with journal %q succeeded", j)
			}
			var ce *core.CorruptionError
			if !errors.As(err, &ce) || filepath.Base(ce.File) != "compact.journal" {
				t.Fatalf("journal %q: got %v, want a *CorruptionError naming the journal", j, err)
			}
		}
		// The segments were not touched.
		if n := len(segmentFiles(t, cfg.Dir)); n != len(segs) {
			t.Fatalf("%d segments, had %d", n, len(segs))
		}
	})

	t.Run("stray temporary files without a journal", func(t *testing.T) {
		cfg, want := journalStore(t)
		segs := segmentFiles(t, cfg.Dir)
		// A compaction killed before its commit point, and atomic writes
		// killed before their rename.
		writeFile(t, filepath.Join(cfg.Dir, segGenName(segs[0], 1)+".tmp"), regenerate(t, segs[0], 1))
		writeFile(t, filepath.Join(cfg.Dir, segGenName(segs[1], 3)+".tmp"), []byte("partial"))
		for _, n := range []string{"compact.journal.tmp123", "index.ckpt.tmp456", "erasures.tmp789"} {
			writeFile(t, filepath.Join(cfg.Dir, n), []byte("partial"))
		}
		ro, err := core.OpenReadOnly(cfg)
		if err != nil {
			t.Fatalf("OpenReadOnly beside stray files: %v", err)
		}
		sameState(t, "read-only", captureState(t, ro), want)
		ro.Close()
		s := openWith(t, cfg)
		if l := leftovers(t, cfg.Dir); len(l) > 0 {
			t.Fatalf("left behind: %v", l)
		}
		if n := len(segmentFiles(t, cfg.Dir)); n != len(segs) {
			t.Fatalf("%d segments, had %d", n, len(segs))
		}
		sameState(t, "after deleting stray files", captureState(t, s), want)
		mustVerify(t, s)
	})
}
