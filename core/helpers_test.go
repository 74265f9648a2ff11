package core_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/core/internal/format"
)

// Shared fixtures and helpers for the behaviour tests. Everything here goes
// through the public API, except the on-disk helpers, which read and damage
// segment files as a crash or a bad disk would, following the format
// documented in the package comment.

var (
	kindA = core.MustKind(1, 1)
	kindB = core.MustKind(1, 2)
	kindC = core.MustKind(2, 1)
)

// quietLogger discards the store's recovery warnings so test output stays
// readable.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testConfig is DefaultConfig in dir with a quiet logger.
func testConfig(dir string) core.Config {
	cfg := core.DefaultConfig(dir)
	cfg.Logger = quietLogger()
	return cfg
}

// openStore opens a fresh store in a temporary directory (optionally
// adjusting the config) and closes it when the test ends.
func openStore(t testing.TB, adjust ...func(*core.Config)) *core.Store {
	t.Helper()
	cfg := testConfig(t.TempDir())
	for _, f := range adjust {
		f(&cfg)
	}
	return openWith(t, cfg)
}

// openWith opens cfg and closes the store when the test ends.
func openWith(t testing.TB, cfg core.Config) *core.Store {
	t.Helper()
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.Dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reopen closes s and opens its directory again with the same config.
func reopen(t testing.TB, s *core.Store) *core.Store {
	t.Helper()
	cfg := s.Config()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openWith(t, cfg)
}

func mustCoord(t testing.TB, entity, scope string) core.Coordinate {
	t.Helper()
	c, err := core.NewCoordinate(entity, scope)
	if err != nil {
		t.Fatalf("NewCoordinate(%q, %q): %v", entity, scope, err)
	}
	return c
}

func mustAppend(t testing.TB, s *core.Store, c core.Coordinate, k core.Kind, payload string) core.Receipt {
	t.Helper()
	r, err := s.Append(context.Background(), c, k, []byte(payload))
	if err != nil {
		t.Fatalf("Append(%v, %v, %s): %v", c, k, payload, err)
	}
	return r
}

func mustAppendOpts(t testing.TB, s *core.Store, c core.Coordinate, k core.Kind, payload string, o core.AppendOptions) core.Receipt {
	t.Helper()
	r, err := s.AppendWithOptions(context.Background(), c, k, []byte(payload), o)
	if err != nil {
		t.Fatalf("AppendWithOptions(%v, %v, %s): %v", c, k, payload, err)
	}
	return r
}

func mustQuery(t testing.TB, s *core.Store, r core.Region) []core.StoredEvent {
	t.Helper()
	evs, err := s.Query(r)
	if err != nil {
		t.Fatalf("Query(%v): %v", r, err)
	}
	return evs
}

func mustVerify(t testing.TB, s *core.Store) core.VerifyReport {
	t.Helper()
	rep, err := s.Verify()
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

// ids returns the event ids of evs, in order.
func ids(evs []core.StoredEvent) []core.EventID {
	out := make([]core.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.Header.ID
	}
	return out
}

// payloads returns the payloads of evs as strings, in order.
func payloads(evs []core.StoredEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Payload)
	}
	return out
}

// sameEvents fails the test unless a and b hold the same events, field for
// field, in the same order.
func sameEvents(t testing.TB, what string, a, b []core.StoredEvent) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d events vs %d", what, len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Coordinate != y.Coordinate || x.Header != y.Header || x.GlobalSequence != y.GlobalSequence ||
			x.IdempotencyKey != y.IdempotencyKey || !bytes.Equal(x.Payload, y.Payload) {
			t.Fatalf("%s: event %d differs:\n %+v\n %+v", what, i, x, y)
		}
	}
}

// ---- on-disk helpers ----

// segmentFiles returns the store's segment file paths, oldest first.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func lastSegment(t testing.TB, dir string) string {
	t.Helper()
	segs := segmentFiles(t, dir)
	if len(segs) == 0 {
		t.Fatalf("no segment files in %s", dir)
	}
	return segs[len(segs)-1]
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// dirSizes maps every file in dir to its size.
func dirSizes(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ents {
		fi, err := e.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue // a temporary file a writer's sealer renamed or removed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Size()
	}
	return out
}

// frame is one frame found in a segment file.
type frame struct {
	Off int // offset of the frame header in the file
	Len int // record length
}

func (f frame) recStart() int { return f.Off + format.FrameHeaderSize }
func (f frame) end() int      { return f.Off + format.FrameHeaderSize + f.Len }

// frames lists the frames of a segment file's contents, stopping at the
// first one that does not check out (or at zero padding).
func frames(data []byte) []frame {
	var out []frame
	format.ScanFrames(data, format.SegmentHeaderSize, func(off int, rec []byte) error {
		out = append(out, frame{Off: off, Len: len(rec)})
		return nil
	})
	return out
}

func readFrames(t testing.TB, path string) ([]byte, []frame) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data, frames(data)
}

// fixFrameCRC recomputes the CRC of the frame at off, so that a deliberately
// edited record passes the frame check.
func fixFrameCRC(data []byte, off int) {
	n := int(binary.LittleEndian.Uint32(data[off:]))
	format.SealFrame(data[off : off+format.FrameHeaderSize+n])
}

// recordID reads the event id of the record of f.
func recordID(data []byte, f frame) core.EventID {
	return format.EventView(data[f.recStart():f.end()]).ID()
}

// payloadOffset is the file offset of the first payload byte of f.
func payloadOffset(data []byte, f frame) int {
	return f.recStart() + format.EventView(data[f.recStart():f.end()]).StringsEnd()
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func isErr(err, target error) bool { return err != nil && errors.Is(err, target) }

func jsonString(n int) string {
	if n < 2 {
		panic("jsonString needs at least 2 bytes")
	}
	return `"` + strings.Repeat("a", n-2) + `"`
}

func payloadN(i int) string { return fmt.Sprintf(`{"n":%d}`, i) }

// crashRNG skips a crash test under -short and returns a random source
// whose seed is logged, so a failing run can be replayed.
func crashRNG(t *testing.T) *rand.Rand {
	t.Helper()
	if testing.Short() {
		t.Skip("crash test: skipped with -short")
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	return rand.New(rand.NewSource(seed))
}

// writeLeakingFence writes n events (payload {"leak":true}) under a fence
// and cancels it: they are on disk and must never be seen.
func writeLeakingFence(t testing.TB, s *core.Store, c core.Coordinate, k core.Kind, n int) {
	t.Helper()
	ctx := context.Background()
	f, err := s.BeginFence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := f.Submit(ctx, c, k, []byte(`{"leak":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
}
