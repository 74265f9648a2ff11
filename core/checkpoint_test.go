package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// The index checkpoint: Open restores the index saved at Close and reads
// only the log after its watermark; any checkpoint that is damaged or does
// not match the segment files is ignored, and every path shows the same
// store.

func smallSegments(c *core.Config) { c.SegmentMaxBytes = 64 << 10 }

// checkpointBase builds a closed store in dir with a rich history over several
// 64 KiB segments (hidden events and a redaction included) and returns
// its config.
func checkpointBase(t *testing.T, dir string) core.Config {
	t.Helper()
	cfg := testConfig(dir)
	smallSegments(&cfg)
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs := richHistory(t, s, 6)
	if err := s.Redact(context.Background(), rs[3].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segmentFiles(t, dir)); n < 3 {
		t.Fatalf("want at least 3 segments, have %d", n)
	}
	return cfg
}

// scanRef opens a copy of dir without its checkpoint: the reference a
// checkpoint path must match. It returns the state, the open report and
// what continueWrites answers there.
func scanRef(t *testing.T, dir string, entities ...string) (visibleState, core.OpenReport, []string) {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "ref")
	copyTree(t, dir, cp, noCheckpoint)
	cfg := testConfig(cp)
	smallSegments(&cfg)
	s, rep := openPath(t, cfg)
	if rep.Path != "scan" {
		t.Fatalf("reference open: path %q, want scan", rep.Path)
	}
	st := captureState(t, s)
	w := continueWrites(t, s, entities...)
	mustVerify(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return st, rep, w
}

// readOnlyScanRef is scanRef for read-only opens (which write nothing, not
// even the cancellation of a fence a crash left open).
func readOnlyScanRef(t *testing.T, dir string) visibleState {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "roref")
	copyTree(t, dir, cp, noCheckpoint)
	s, err := core.OpenReadOnly(testConfig(cp))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p := s.Diagnostics().Open.Path; p != "scan" {
		t.Fatalf("reference open: path %q", p)
	}
	return captureState(t, s)
}

var checkpointEntities = []string{"acct:0", "acct:3", "order:1", "acct:ghost", "new:1"}

func TestCheckpointOpenPath(t *testing.T) {
	dir := t.TempDir()
	cfg := checkpointBase(t, dir)
	ref, refRep, refW := scanRef(t, dir, checkpointEntities...)
	if refRep.Hidden == 0 {
		t.Fatal("the base history should hold hidden events")
	}

	s, rep := openPath(t, cfg)
	if rep.Path != "checkpoint" || rep.Restored != refRep.Entries || rep.Entries != refRep.Entries || rep.TailReplayed != 0 {
		t.Fatalf("open report %+v; scan gave %+v", rep, refRep)
	}
	if rep.Hidden != refRep.Hidden || rep.Segments != refRep.Segments {
		t.Errorf("checkpoint path reports %d hidden events in %d segments, a scan %d in %d", rep.Hidden, rep.Segments, refRep.Hidden, refRep.Segments)
	}
	sameState(t, "checkpoint vs scan", captureState(t, s), ref)
	allGettable(t, s, ref.events)
	noLeak(t, "checkpoint path", ref.events)
	sameStrings(t, "writes after the checkpoint open", continueWrites(t, s, checkpointEntities...), refW)

	// Writes after the watermark (singles, a batch, a cancelled fence),
	// then a copy of the directory as a crash would leave it: the
	// checkpoint of the last Close plus a tail.
	var tail []core.Receipt
	for i := 0; i < 300; i++ {
		tail = append(tail, mustAppendOpts(t, s, mustCoord(t, fmt.Sprintf("acct:%d", i%5), "eu"), kindA,
			fmt.Sprintf(`{"tail":%d,"pad":"%s"}`, i, strings.Repeat("t", 200)), core.AppendOptions{IdempotencyKey: fmt.Sprintf("tail-%d", i)}))
	}
	if _, err := s.AppendBatch(context.Background(), []core.BatchItem{
		{Coordinate: mustCoord(t, "order:9", "eu"), Kind: kindA, Payload: []byte(`{"b":1}`)},
		{Coordinate: mustCoord(t, "order:9", "eu"), Kind: kindB, Payload: []byte(`{"b":2}`)},
	}); err != nil {
		t.Fatal(err)
	}
	writeCancelledFence(t, s, false)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	live := captureState(t, s)
	crashed := filepath.Join(t.TempDir(), "crashed")
	copyTree(t, dir, crashed, nil)

	ref2, refRep2, refW2 := scanRef(t, crashed, checkpointEntities...)
	cfg2 := cfg
	cfg2.Dir = crashed
	s2, rep2 := openPath(t, cfg2)
	if rep2.Path != "checkpoint" || rep2.Restored != rep.Entries || rep2.TailReplayed != refRep2.Entries-rep.Entries || rep2.TailReplayed < 300+2+6 {
		t.Fatalf("after writes past the watermark: %+v (entries before %d, a scan finds %d)", rep2, rep.Entries, refRep2.Entries)
	}
	if rep2.Hidden != refRep2.Hidden {
		t.Errorf("checkpoint+tail reports %d hidden, a scan %d", rep2.Hidden, refRep2.Hidden)
	}
	sameState(t, "checkpoint+tail vs the live store", captureState(t, s2), live)
	sameState(t, "checkpoint+tail vs scan", captureState(t, s2), ref2)
	noLeak(t, "checkpoint+tail", ref2.events)
	for _, r := range tail[len(tail)-3:] {
		if ev, err := s2.Get(r.ID); err != nil || ev.GlobalSequence != r.GlobalSequence {
			t.Fatalf("tail event %s: %+v, %v", r.ID, ev, err)
		}
	}
	// Idempotency keys of the tail and of the checkpoint both dedupe.
	d := mustAppendOpts(t, s2, mustCoord(t, "acct:4", "eu"), kindA, fmt.Sprintf(`{"tail":%d,"pad":"%s"}`, 299, strings.Repeat("t", 200)),
		core.AppendOptions{IdempotencyKey: "tail-299"})
	if !d.Deduplicated || d.ID != tail[299].ID {
		t.Fatalf("tail idempotency key after a checkpoint open: %+v", d)
	}
	sameStrings(t, "writes after the checkpoint+tail open", continueWrites(t, s2, checkpointEntities...), refW2)
	mustVerify(t, s2)
}

// checkpointDamageCase damages the checkpoint (and possibly the segments) of dir.
type checkpointDamageCase struct {
	name string
	fn   func(t *testing.T, dir, other string)
	// segmentsToo: the damage also changes the segment files, so the
	// reference is a scan of the damaged copy rather than the original.
	segmentsToo bool
}

func flipCheckpointByte(at func(n int) int) func(t *testing.T, dir, _ string) {
	return func(t *testing.T, dir, _ string) {
		p := filepath.Join(dir, checkpointFile)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[at(len(b))] ^= 0x40
		writeFile(t, p, b)
	}
}

var checkpointDamageCases = []checkpointDamageCase{
	{name: "flipped byte in the header", fn: flipCheckpointByte(func(int) int { return 13 })},
	{name: "flipped byte in the middle", fn: flipCheckpointByte(func(n int) int { return n / 2 })},
	{name: "flipped byte in the checksum", fn: flipCheckpointByte(func(n int) int { return n - 1 })},
	{name: "truncated", fn: func(t *testing.T, dir, _ string) {
		p := filepath.Join(dir, checkpointFile)
		if err := os.Truncate(p, fileSize(t, p)*2/3); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "truncated to the header", fn: func(t *testing.T, dir, _ string) {
		if err := os.Truncate(filepath.Join(dir, checkpointFile), format.CheckpointHeaderSize); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "garbage", fn: func(t *testing.T, dir, _ string) {
		b := make([]byte, 4096)
		rand.New(rand.NewSource(7)).Read(b)
		writeFile(t, filepath.Join(dir, checkpointFile), b)
	}},
	{name: "garbage with the right magic and checksum", fn: func(t *testing.T, dir, _ string) {
		b := make([]byte, 4096)
		rand.New(rand.NewSource(8)).Read(b)
		copy(b, format.CheckpointMagic)
		writeCheckpoint(t, dir, b)
	}},
	{name: "zero-length", fn: func(t *testing.T, dir, _ string) {
		writeFile(t, filepath.Join(dir, checkpointFile), nil)
	}},
	{name: "from another store with the same layout", fn: func(t *testing.T, dir, other string) {
		b, err := os.ReadFile(filepath.Join(other, checkpointFile))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, checkpointFile), b)
	}},
	{name: "from a smaller store", fn: func(t *testing.T, dir, _ string) {
		small := filepath.Join(t.TempDir(), "small")
		cfg := testConfig(small)
		smallSegments(&cfg)
		s, err := core.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 37; i++ {
			mustAppend(t, s, mustCoord(t, fmt.Sprintf("other:%d", i%3), "x"), kindB, fmt.Sprintf(`{"o":%d}`, i))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(small, checkpointFile))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, checkpointFile), b)
	}},
	{name: "naming a missing segment", fn: func(t *testing.T, dir, _ string) {
		body := readCheckpoint(t, dir)
		segs := checkpointSegments(body)
		le.PutUint32(body[segs[1]:], 999)
		writeCheckpoint(t, dir, body)
	}},
	{name: "listing a segment end past the data", fn: func(t *testing.T, dir, _ string) {
		body := readCheckpoint(t, dir)
		at := checkpointSegments(body)[0] + 4
		le.PutUint64(body[at:], le.Uint64(body[at:])+64)
		writeCheckpoint(t, dir, body)
	}},
	{name: "watermark past the data", fn: func(t *testing.T, dir, _ string) {
		body := readCheckpoint(t, dir)
		wseg, wend := le.Uint32(body[8:]), le.Uint64(body[12:])
		last := lastSegment(t, dir)
		if fileSize(t, last) < int64(wend)+128 {
			t.Skip("no zero fill after the watermark to point into")
		}
		le.PutUint64(body[12:], wend+96)
		for _, at := range checkpointSegments(body) {
			if le.Uint32(body[at:]) == wseg {
				le.PutUint64(body[at+4:], wend+96)
			}
		}
		writeCheckpoint(t, dir, body)
	}},
	{name: "watermark inside a frame", fn: func(t *testing.T, dir, _ string) {
		body := readCheckpoint(t, dir)
		_, fs := readFrames(t, lastSegment(t, dir))
		f := fs[len(fs)-1]
		le.PutUint64(body[12:], uint64(f.Off+3))
		for _, at := range checkpointSegments(body) {
			if le.Uint32(body[at:]) == le.Uint32(body[8:]) {
				le.PutUint64(body[at+4:], uint64(f.Off+3))
			}
		}
		writeCheckpoint(t, dir, body)
	}},
	{name: "watermark beyond a truncated segment", segmentsToo: true, fn: func(t *testing.T, dir, _ string) {
		last := lastSegment(t, dir)
		_, fs := readFrames(t, last)
		// Cut the file inside its last frame, as a lost write would.
		if err := os.Truncate(last, int64(fs[len(fs)-1].Off+20)); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "watermark beyond a segment whose tail was zeroed", segmentsToo: true, fn: func(t *testing.T, dir, _ string) {
		last := lastSegment(t, dir)
		data, fs := readFrames(t, last)
		for i := fs[len(fs)-2].Off; i < len(data); i++ {
			data[i] = 0
		}
		writeFile(t, last, data)
	}},
}

func TestCheckpointDamageFallsBackToScan(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	checkpointBase(t, base)
	// Another store with exactly the same history (same sizes, offsets
	// and watermark) but other ids.
	other := filepath.Join(t.TempDir(), "other")
	checkpointBase(t, other)
	orig, _, origW := scanRef(t, base, checkpointEntities...)

	for _, d := range checkpointDamageCases {
		for _, footers := range []bool{true, false} {
			name, want := d.name+", footers", "footers"
			if !footers {
				name, want = d.name+", no footers", "scan"
			}
			t.Run(name, func(t *testing.T) { checkpointDamage(t, d, base, other, footers, want, orig, origW) })
		}
	}
}

// checkpointDamage opens a copy of base with its checkpoint damaged by d
// (and its segment footers removed unless footers): Open must take path
// want and restore what a frame scan does.
func checkpointDamage(t *testing.T, d checkpointDamageCase, base, other string, footers bool, want string, orig visibleState, origW []string) {
	dir := filepath.Join(t.TempDir(), "damaged")
	skip := func(string) bool { return false }
	if !footers {
		skip = func(n string) bool { return strings.HasSuffix(n, ".idx") }
	}
	copyTree(t, base, dir, skip)
	d.fn(t, dir, other)
	cfg := testConfig(dir)
	smallSegments(&cfg)
	if d.segmentsToo {
		// The segments lost events the checkpoint recorded: not a fallback
		// but a loss, which Open refuses (see TestDamagedLastSegmentFailsOpen).
		for _, open := range []func(core.Config) (*core.Store, error){core.OpenReadOnly, core.Open} {
			if s, err := open(cfg); !errors.Is(err, core.ErrLogTruncated) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v; want ErrLogTruncated", err)
			}
		}
		return
	}
	ref, refRep, refW := orig, core.OpenReport{}, origW
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	if p := ro.Diagnostics().Open.Path; p != want {
		t.Errorf("read-only open: path %q, want %s", p, want)
	}
	sameState(t, "read-only open of the damaged store vs scan", captureState(t, ro), ref)
	ro.Close()

	s, rep := openPath(t, cfg)
	if rep.Path != want || rep.Restored != 0 || rep.TailReplayed != 0 {
		t.Fatalf("open report %+v, want path %s", rep, want)
	}
	if d.segmentsToo && (rep.Entries != refRep.Entries || rep.Hidden != refRep.Hidden) {
		t.Fatalf("open report %+v, a scan of the same files gives %+v", rep, refRep)
	}
	got := captureState(t, s)
	sameState(t, "damaged checkpoint vs scan", got, ref)
	allGettable(t, s, ref.events)
	noLeak(t, d.name, got.events)
	sameStrings(t, "writes after the fallback", continueWrites(t, s, checkpointEntities...), refW)
	mustVerify(t, s)

	// Close writes a sound checkpoint again.
	after := captureState(t, s)
	s2 := reopen(t, s)
	if p := s2.Diagnostics().Open.Path; p != "checkpoint" {
		t.Fatalf("reopen after the fallback: path %q", p)
	}
	sameState(t, "reopened", captureState(t, s2), after)
}

// coveredDamageFailsOpen checks that Open and OpenReadOnly of cfg both
// fail with a *CorruptionError (ErrCorrupt) naming the damaged frame at
// off in the segment file path, which the checkpoint covers.
func coveredDamageFailsOpen(t *testing.T, cfg core.Config, path string, off int) {
	t.Helper()
	for _, open := range []func(core.Config) (*core.Store, error){core.Open, core.OpenReadOnly} {
		s, err := open(cfg)
		if err == nil {
			s.Close()
			t.Fatal("Open succeeded over a damaged frame the checkpoint covers")
		}
		var ce *core.CorruptionError
		if !errors.As(err, &ce) || !errors.Is(err, core.ErrCorrupt) {
			t.Fatalf("got %v, want a *CorruptionError", err)
		}
		if ce.File != path || ce.Offset != int64(off) {
			t.Fatalf("CorruptionError names %s at %d, want %s at %d", ce.File, ce.Offset, path, off)
		}
	}
}

func TestCheckpointCoveredFrameDamageFailsOpen(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	checkpointBase(t, base)
	segs := segmentFiles(t, base)
	for _, which := range []int{0, 1, len(segs) - 1} {
		t.Run(fmt.Sprintf("segment %d of %d", which+1, len(segs)), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			copyTree(t, base, dir, nil)
			path := segmentFiles(t, dir)[which]
			data, fs := readFrames(t, path)
			f := fs[len(fs)/2]
			data[f.recStart()+format.EventFixedSize+2] ^= 0x01 // a byte of the coordinate or payload
			writeFile(t, path, data)
			cfg := testConfig(dir)
			smallSegments(&cfg)
			coveredDamageFailsOpen(t, cfg, path, f.Off)
		})
	}
}

// TestCheckpointHiddenOnEveryPath: events of fences that never committed
// stay hidden whether they are in the checkpoint, in the tail after it, or
// left open by a crash, on every open path.
func TestCheckpointHiddenOnEveryPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := checkpointBase(t, dir) // cancelled fences inside the checkpoint
	s := openWith(t, cfg)
	mustAppend(t, s, mustCoord(t, "acct:1", "eu"), kindA, `{"x":1}`)
	writeCancelledFence(t, s, true) // hidden, in the tail
	mustAppend(t, s, mustCoord(t, "acct:1", "eu"), kindA, `{"x":2}`)
	// A fence still open when the "crash" copy is taken.
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := f.Submit(ctx, mustCoord(t, "acct:ghost", "bank"), kindA, ledgerJSON(5, true)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "crashed")
	copyTree(t, dir, crashed, nil)
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}

	ref, refRep, refW := scanRef(t, crashed, checkpointEntities...)
	if refRep.Hidden != 2*6+6+3 {
		t.Fatalf("scan found %d hidden events", refRep.Hidden)
	}
	noLeak(t, "scan", ref.events)
	c2 := testConfig(crashed)
	smallSegments(&c2)

	ro, err := core.OpenReadOnly(c2)
	if err != nil {
		t.Fatal(err)
	}
	if rep := ro.Diagnostics().Open; rep.Path != "checkpoint" || rep.TailReplayed == 0 || rep.Hidden != refRep.Hidden {
		t.Errorf("read-only: %+v (scan: %+v)", rep, refRep)
	}
	sameState(t, "read-only checkpoint+tail", captureState(t, ro), readOnlyScanRef(t, crashed))
	ro.Close()

	s2, rep := openPath(t, c2)
	if rep.Path != "checkpoint" || rep.TailReplayed == 0 || rep.Hidden != refRep.Hidden {
		t.Errorf("checkpoint+tail: %+v (scan: %+v)", rep, refRep)
	}
	sameState(t, "checkpoint+tail with a fence left open", captureState(t, s2), ref)
	sameStrings(t, "writes after", continueWrites(t, s2, checkpointEntities...), refW)
	mustVerify(t, s2)
	after := captureState(t, s2)
	s3 := reopen(t, s2)
	if rep := s3.Diagnostics().Open; rep.Path != "checkpoint" || rep.Hidden != refRep.Hidden {
		t.Errorf("checkpoint: %+v (scan: %+v)", rep, refRep)
	}
	sameState(t, "checkpoint after the dangling fence was cancelled", captureState(t, s3), after)
	noLeak(t, "checkpoint", after.events)
}

// TestCheckpointReadOnlyBesideWriter: a read-only open beside a live
// writer uses the checkpoint and replays what the writer added since.
func TestCheckpointReadOnlyBesideWriter(t *testing.T) {
	dir := t.TempDir()
	cfg := checkpointBase(t, dir)
	ro0, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep := ro0.Diagnostics().Open; rep.Path != "checkpoint" || rep.TailReplayed != 0 || rep.Restored == 0 {
		t.Fatalf("read-only after Close: %+v", rep)
	}
	ro0.Close()
	s := openWith(t, cfg)
	for i := 0; i < 50; i++ {
		mustAppend(t, s, mustCoord(t, "ro:1", "s"), kindA, payloadN(i))
	}
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ro, err := core.OpenReadOnly(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if rep := ro.Diagnostics().Open; rep.Path != "checkpoint" || rep.TailReplayed != 50 {
		t.Fatalf("read-only beside a writer: %+v", rep)
	}
	sameState(t, "read-only vs writer", captureState(t, ro), captureState(t, s))
}

// ---- SIGKILL after a checkpoint ----

func init() { helperModes["ckptcrash"] = helperCheckpointCrash }

func checkpointCrashPayload(g, i int) string {
	return fmt.Sprintf(`{"g":%d,"i":%d,"pad":"%s"}`, g, i, strings.Repeat("k", 50+(g*7+i)%150))
}

// helperCheckpointCrash opens a store that has a checkpoint and appends
// from two goroutines until killed, printing "ACK id seq g i".
func helperCheckpointCrash(dir string) error {
	cfg := testConfig(dir)
	smallSegments(&cfg)
	cfg.Sync.EveryNEvents = 0 // write only: a SIGKILL loses nothing written
	cfg.Sync.Interval = 0
	s, err := core.Open(cfg)
	if err != nil {
		return err
	}
	if p := s.Diagnostics().Open.Path; p != "checkpoint" {
		return fmt.Errorf("child opened by %q", p)
	}
	round := os.Getenv("BATPAK_ROUND")
	var mu sync.Mutex
	errs := make(chan error, 2)
	for g := 0; g < 2; g++ {
		go func(g int) {
			c, _ := core.NewCoordinate(fmt.Sprintf("kc:%s:%d", round, g), "s")
			for i := 0; ; i++ {
				var r core.Receipt
				var err error
				if i%50 == 49 {
					var rs []core.Receipt
					rs, err = s.AppendBatch(context.Background(), []core.BatchItem{{Coordinate: c, Kind: kindA, Payload: []byte(checkpointCrashPayload(g, i))}})
					if err == nil {
						r = rs[0]
					}
				} else {
					r, err = s.Append(context.Background(), c, kindA, []byte(checkpointCrashPayload(g, i)))
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				_, err = fmt.Printf("ACK %s %d %d %d\n", r.ID, r.GlobalSequence, g, i)
				mu.Unlock()
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	return <-errs
}

func TestCheckpointSurvivesKill(t *testing.T) {
	rng := crashRNG(t)
	dir := t.TempDir()
	cfg := checkpointBase(t, dir)
	for round := 0; round < 2; round++ {
		before, err := core.OpenReadOnly(cfg)
		if err != nil {
			t.Fatal(err)
		}
		entries := before.Diagnostics().Open.Entries
		prev := captureState(t, before)
		before.Close()

		target := 300 + rng.Intn(1500)
		c := startHelper(t, "ckptcrash", dir, "BATPAK_ROUND="+strconv.Itoa(round))
		n := 0
		lines := c.killWhen(t, func(string) bool { n++; return n >= target }, 0)
		type ackT struct {
			id   core.EventID
			seq  uint64
			g, i int
		}
		var acks []ackT
		for _, ln := range lines {
			f := strings.Fields(ln)
			if len(f) != 5 || f[0] != "ACK" {
				t.Fatalf("helper said %q", ln)
			}
			id, err := core.ParseEventID(f[1])
			if err != nil {
				t.Fatal(err)
			}
			a := ackT{id: id}
			a.seq, _ = strconv.ParseUint(f[2], 10, 64)
			a.g, _ = strconv.Atoi(f[3])
			a.i, _ = strconv.Atoi(f[4])
			acks = append(acks, a)
		}

		ref, refRep, refW := scanRef(t, dir, "acct:0", fmt.Sprintf("kc:%d:0", round))
		s, rep := openPath(t, cfg)
		if rep.Path != "checkpoint" || rep.Restored != entries || rep.TailReplayed < uint64(len(acks)) || rep.Entries != refRep.Entries {
			t.Fatalf("round %d: open after SIGKILL: %+v (checkpoint had %d entries, %d acknowledged since, scan %+v)", round, rep, entries, len(acks), refRep)
		}
		got := captureState(t, s)
		sameState(t, "checkpoint+tail after SIGKILL vs scan", got, ref)
		sameEvents(t, "events before the checkpoint", got.events[:len(prev.events)], prev.events)
		for _, a := range acks {
			ev, err := s.Get(a.id)
			if err != nil {
				t.Fatalf("acknowledged event %s lost: %v", a.id, err)
			}
			if ev.GlobalSequence != a.seq || string(ev.Payload) != checkpointCrashPayload(a.g, a.i) {
				t.Fatalf("acknowledged event %s read back as seq %d %s", a.id, ev.GlobalSequence, ev.Payload)
			}
		}
		mustVerify(t, s)
		sameStrings(t, "writes after", continueWrites(t, s, "acct:0", fmt.Sprintf("kc:%d:0", round)), refW)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: %d acknowledged, %d replayed after the checkpoint", round, len(acks), rep.TailReplayed)
	}
}
