//go:build unix

package core_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
)

// pipeTestEvents is how many events closedSegmentedStore writes: enough
// for several 64 KiB segments.
const pipeTestEvents = 1500

// closedSegmentedStore makes a closed store of a few sealed segments in a fresh
// directory and returns its directory and its segment files in order.
func closedSegmentedStore(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.SegmentMaxBytes = 64 << 10
	s, err := core.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, "order:1", 0, pipeTestEvents)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	sort.Strings(segs)
	if len(segs) < 3 {
		t.Fatalf("want several segments, have %d", len(segs))
	}
	return dir, segs
}

// openWithin opens cfg on another goroutine and fails the test if it has
// not returned within a minute (a FIFO once made Open wait for ever).
func openWithin(t *testing.T, cfg core.Config, readOnly bool) (*core.Store, error) {
	t.Helper()
	type result struct {
		s   *core.Store
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		if readOnly {
			r.s, r.err = core.OpenReadOnly(cfg)
		} else {
			r.s, r.err = core.Open(cfg)
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.s != nil {
			t.Cleanup(func() { _ = r.s.Close() })
		}
		return r.s, r.err
	case <-time.After(time.Minute):
		t.Fatal("Open did not return within a minute")
		return nil, nil
	}
}

// TestNamedPipeInTheStoreIsRefused: a named pipe where a segment, a
// footer or the checkpoint belongs is refused at Open (read-write and
// read-only) with an error naming the file — never a wait for a writer
// that will not come.
func TestNamedPipeInTheStoreIsRefused(t *testing.T) {
	dir, segs := closedSegmentedStore(t)
	for _, victim := range []string{segs[1], strings.TrimSuffix(segs[0], ".seg") + ".idx", filepath.Join(dir, "index.ckpt")} {
		t.Run(filepath.Base(victim), func(t *testing.T) {
			d := t.TempDir()
			if err := os.CopyFS(d, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(d, filepath.Base(victim))
			_ = os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, ro := range []bool{false, true} {
				s, err := openWithin(t, testConfig(d), ro)
				if err == nil {
					// A footer or checkpoint is only an accelerator: the
					// store may open without it, reading the segments.
					if strings.HasSuffix(p, ".seg") {
						t.Fatalf("Open (read-only %v) with a named pipe as a segment succeeded", ro)
					}
					if n := s.Stats().Events; n != pipeTestEvents {
						t.Fatalf("Open (read-only %v) without a usable %s: %d events, want %d", ro, filepath.Base(p), n, pipeTestEvents)
					}
					continue
				}
				if !errors.Is(err, fs.ErrInvalid) && !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), filepath.Base(p)) {
					t.Fatalf("Open (read-only %v): %v, want an error naming %s as not a regular file", ro, err, filepath.Base(p))
				}
			}
		})
	}
}

// TestSymlinkAsSegmentIsNotWrittenThrough: a symbolic link named as the
// store's next segment, pointing at a short file elsewhere (what a crash
// during rotation leaves looks the same: a segment under a header long),
// makes Open fail naming it; the file it points at is left as it was.
func TestSymlinkAsSegmentIsNotWrittenThrough(t *testing.T) {
	dir, segs := closedSegmentedStore(t)
	victim := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	last := filepath.Base(segs[len(segs)-1])
	next := []byte(last)
	for i := len(next) - len(".seg") - 1; i >= 0; i-- { // the name of the segment after the last
		if next[i] < '9' {
			next[i]++
			break
		}
		next[i] = '0'
	}
	link := filepath.Join(dir, string(next))
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	_, err := openWithin(t, testConfig(dir), false)
	if err == nil || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), string(next)) {
		t.Fatalf("Open with a symbolic link as the next segment: %v, want an error naming it as a link", err)
	}
	if b, _ := os.ReadFile(victim); !bytes.Equal(b, []byte("precious\n")) {
		t.Fatalf("the file the link points at was written: %q", b)
	}
}

// TestErasureEpochThatIsAPipe: a named pipe where the store keeps its
// erasure epoch is damage naming it, and opening the store never waits
// for the pipe's writer.
func TestErasureEpochThatIsAPipe(t *testing.T) {
	cfg := core.DefaultConfig(t.TempDir())
	s := openWith(t, cfg)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	erasures := filepath.Join(cfg.Dir, "erasures")
	if err := syscall.Mkfifo(erasures, 0o644); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	if _, err := core.Open(cfg); !errors.Is(err, core.ErrCorrupt) || !strings.Contains(err.Error(), "the erasure epoch is not a regular file") {
		t.Fatalf("a named pipe as the erasure epoch: %v", err)
	}
}
