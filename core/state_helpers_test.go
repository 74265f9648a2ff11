package core_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
	"github.com/zeebo/blake3"
)

// Helpers shared by the cold-start and maintenance tests (checkpoint,
// snapshot, compaction, redaction, export/import).

// helperModes are the child-process modes of those tests, looked up
// by TestHelperProcess for modes it does not know itself.
var helperModes = map[string]func(dir string) error{}

// visibleState is what readers can see of a store: every visible event in
// global order and the counts Stats reports (minus fsyncs and the index
// size, which depend on how the index was built, not on what it holds).
type visibleState struct {
	events []core.StoredEvent
	stats  core.Stats
}

func captureState(t testing.TB, s *core.Store) visibleState {
	t.Helper()
	st := s.Stats()
	st.Fsyncs, st.IndexBytes, st.GroupCommits, st.SyncTime = 0, 0, 0, 0
	return visibleState{events: mustQuery(t, s, core.All()), stats: st}
}

// sameState fails unless a and b show the same events and counts.
func sameState(t testing.TB, what string, a, b visibleState) {
	t.Helper()
	if a.stats != b.stats {
		t.Fatalf("%s: stats differ:\n %+v\n %+v", what, a.stats, b.stats)
	}
	sameEvents(t, what, a.events, b.events)
}

// copyTree copies the files of a store directory (and its cursors/
// subdirectory) into dst, skipping names for which skip returns true.
func copyTree(t testing.TB, src, dst string, skip func(name string) bool) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if skip != nil && skip(e.Name()) {
			continue
		}
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if e.IsDir() {
			copyTree(t, from, to, nil)
			continue
		}
		b, err := os.ReadFile(from)
		if errors.Is(err, os.ErrNotExist) {
			continue // a temporary file of background work, gone meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, to, b)
	}
}

const checkpointFile = format.CheckpointName

// noCheckpoint leaves out the checkpoint and the segment footers, so the
// copy opens by a frame scan.
func noCheckpoint(name string) bool { return name == checkpointFile || strings.HasSuffix(name, ".idx") }

// openPath opens cfg and reports how Open rebuilt the index.
func openPath(t testing.TB, cfg core.Config) (*core.Store, core.OpenReport) {
	t.Helper()
	s := openWith(t, cfg)
	return s, s.Diagnostics().Open
}

// continueWrites appends one event to each of entities and returns the
// receipts' clocks and sequences: two stores with the same history must
// give the same answers.
func continueWrites(t testing.TB, s *core.Store, entities ...string) []string {
	t.Helper()
	var out []string
	for _, e := range entities {
		r := mustAppend(t, s, mustCoord(t, e, "after"), kindA, `{"after":true}`)
		out = append(out, fmt.Sprintf("%s clock %d seq %d", e, r.Clock, r.GlobalSequence))
	}
	return out
}

func sameStrings(t testing.TB, what string, a, b []string) {
	t.Helper()
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("%s differ:\n%s\n--- vs ---\n%s", what, strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
}

// rotate appends filler events until the store starts a new segment file,
// so that everything written before sits in sealed segments; it returns
// the receipts of the fillers (the last one is in the new segment).
func rotate(t testing.TB, s *core.Store) []core.Receipt {
	t.Helper()
	n := len(segmentFiles(t, s.Dir()))
	c := mustCoord(t, "filler", "fill")
	var rs []core.Receipt
	for len(segmentFiles(t, s.Dir())) == n {
		rs = append(rs, mustAppend(t, s, c, kindC, fmt.Sprintf(`{"fill":"%s"}`, strings.Repeat("f", 2000))))
		if len(rs) > 10000 {
			t.Fatal("rotate: no new segment")
		}
	}
	return rs
}

func payloadDigest(p []byte) core.Hash { return core.Hash(blake3.Sum256(p)) }

// noLeak fails if any visible event carries a payload written under a
// fence that never committed (they say "leak":true).
func noLeak(t testing.TB, what string, evs []core.StoredEvent) {
	t.Helper()
	for _, e := range evs {
		if strings.Contains(string(e.Payload), `"leak":true`) {
			t.Fatalf("%s: hidden event %s (seq %d) is visible: %s", what, e.Header.ID, e.GlobalSequence, e.Payload)
		}
	}
}

// richHistory writes a varied history: several entities and scopes, all
// three kinds, idempotency keys, correlation and causation, flags,
// batches, a committed fence and a cancelled one (6 hidden events), over
// several segments when the config's segments are small. It returns the
// receipts of the visible events it wrote.
func richHistory(t *testing.T, s *core.Store, rounds int) []core.Receipt {
	t.Helper()
	ctx := context.Background()
	var rs []core.Receipt
	pad := strings.Repeat("p", 300)
	for r := 0; r < rounds; r++ {
		for i := 0; i < 40; i++ {
			ent := fmt.Sprintf("acct:%d", i%7)
			o := core.AppendOptions{Flags: uint16(i % 3)}
			if i%4 == 0 {
				o.IdempotencyKey = fmt.Sprintf("key-%d-%d", r, i)
			}
			if len(rs) > 0 && i%5 == 0 {
				o.CausationID = rs[len(rs)-1].ID
				o.CorrelationID = rs[0].ID
			}
			k := []core.Kind{kindA, kindB, kindC}[i%3]
			rs = append(rs, mustAppendOpts(t, s, mustCoord(t, ent, []string{"eu", "us"}[i%2]), k,
				fmt.Sprintf(`{"r":%d,"i":%d,"pad":"%s"}`, r, i, pad), o))
		}
		brs, err := s.AppendBatch(ctx, []core.BatchItem{
			{Coordinate: mustCoord(t, "order:1", "eu"), Kind: kindA, Payload: []byte(fmt.Sprintf(`{"batch":%d,"item":0}`, r))},
			{Coordinate: mustCoord(t, "order:2", "eu"), Kind: kindB, Payload: []byte(fmt.Sprintf(`{"batch":%d,"item":1}`, r)), Causation: core.PriorItem(0),
				Options: core.AppendOptions{IdempotencyKey: fmt.Sprintf("bkey-%d", r)}},
			{Coordinate: mustCoord(t, "order:1", "eu"), Kind: kindC, Payload: []byte(fmt.Sprintf(`{"batch":%d,"item":2}`, r))},
		})
		if err != nil {
			t.Fatalf("AppendBatch: %v", err)
		}
		rs = append(rs, brs...)
		switch r % 3 {
		case 0:
			writeCancelledFence(t, s, r%2 == 0)
		case 1:
			f, err := s.BeginFence(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var tks []*core.Ticket
			for i := 0; i < 3; i++ {
				tk, err := f.Submit(ctx, mustCoord(t, fmt.Sprintf("acct:%d", i), "eu"), kindA, []byte(fmt.Sprintf(`{"fenced":%d}`, i)))
				if err != nil {
					t.Fatal(err)
				}
				tks = append(tks, tk)
			}
			if err := f.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			for _, tk := range tks {
				rc, err := tk.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				rs = append(rs, rc)
			}
		}
	}
	return rs
}

// ---- checkpoint file surgery (format: see core/checkpoint.go) ----

var le = binary.LittleEndian

// readCheckpoint returns the checkpoint's bytes without its CRC.
func readCheckpoint(t testing.TB, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	if len(b) < format.CheckpointHeaderSize+4 || string(b[:8]) != format.CheckpointMagic {
		t.Fatalf("checkpoint does not look like one (%d bytes)", len(b))
	}
	return b[:len(b)-4]
}

// writeCheckpoint writes body with a correct CRC.
func writeCheckpoint(t testing.TB, dir string, body []byte) {
	t.Helper()
	b := append([]byte(nil), body...)
	b = le.AppendUint32(b, format.CRC32C(b))
	writeFile(t, filepath.Join(dir, checkpointFile), b)
}

// checkpointSegments returns the offsets of the (id, end) pairs of the
// checkpoint's segment list.
func checkpointSegments(body []byte) []int {
	n := int(le.Uint32(body[format.CheckpointHeaderSize:]))
	out := make([]int, n)
	for i := range out {
		out[i] = format.CheckpointHeaderSize + 4 + i*format.CheckpointSegmentSize
	}
	return out
}

// leftovers lists files in dir that a finished compaction or atomic write
// must not leave behind.
// sealerTemp matches the temporary file of a footer the sealer is
// writing (an atomic write's random suffix; a compaction's footers are
// "<name>.idx.tmp" exactly).
var sealerTemp = regexp.MustCompile(`\.idx\.tmp[0-9]+$`)

func leftovers(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if sealerTemp.MatchString(n) {
			continue // the background sealer writing a footer right now
		}
		if strings.Contains(n, ".tmp") || strings.HasPrefix(n, "compact.journal") {
			out = append(out, n)
		}
	}
	return out
}

// allGettable fails unless Get finds every one of evs, as it was.
func allGettable(t testing.TB, s *core.Store, evs []core.StoredEvent) {
	t.Helper()
	for _, want := range evs {
		got, err := s.Get(want.Header.ID)
		if err != nil {
			t.Fatalf("Get(%s) (seq %d): %v", want.Header.ID, want.GlobalSequence, err)
		}
		sameEvents(t, "Get", []core.StoredEvent{got}, []core.StoredEvent{want})
	}
}
